//! Real BitTorrent clients find each other through karuta's UDP frontend and
//! complete downloads, all on 127.0.0.1.
//!
//! The clients are driven by `tests/clients/udp_swarm.py` under Debian's
//! `/usr/bin/python3` (python3-libtorrent) and `aria2c`; `scripts/test`
//! installs both. When they are missing these tests fail, they never skip.
//!
//! - A libtorrent seeder and two libtorrent leechers (DHT, LSD, PEX, UPnP and
//!   NAT-PMP off: the tracker is the only peer source) complete a download
//!   through karuta's UDP frontend, then aria2c (a second client program)
//!   does too; every copy's SHA-256 equals the original's. A UDP scrape then
//!   shows the three libtorrent seeders and the two snatches, and, once the
//!   clients have announced `stopped`, an empty swarm that keeps its snatches.
//! - The negative control: with a tracker address where nothing answers, a
//!   libtorrent leecher finds no peer and downloads nothing within 10 s.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bittorrent::InfoHash;
use frontend_udp::client::{ScrapeEntry, UdpTrackerClient};

const PYTHON: &str = "/usr/bin/python3";
const HOW_TO_INSTALL: &str = "run scripts/test, which installs python3-libtorrent and aria2 \
     (apt-get install python3-libtorrent aria2)";

/// Fails (never skips) when a client the tests need is missing.
fn require_clients(aria2: bool) {
    let lt = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .output();
    match lt {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{PYTHON} cannot import libtorrent ({}): {HOW_TO_INSTALL}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {PYTHON} ({e}): {HOW_TO_INSTALL}"),
    }
    if aria2 {
        match Command::new("aria2c").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("aria2c --version failed ({}): {HOW_TO_INSTALL}", out.status),
            Err(e) => panic!("cannot run aria2c ({e}): {HOW_TO_INSTALL}"),
        }
    }
}

/// A directory removed when dropped, also when the test panics.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "karuta-real-clients-udp-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines of a child's stdout and stderr (marked with `stderr_prefix`), in
/// arrival order.
fn read_lines(child: &mut Child, stderr_prefix: &'static str) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    fn pump(r: impl std::io::Read + Send + 'static, prefix: &'static str, tx: Sender<String>) {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(format!("{prefix}{line}")).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        pump(out, "", tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, stderr_prefix, tx);
    }
    rx
}

/// The real karuta binary with a UDP frontend on a free 127.0.0.1 port.
struct Karuta {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    addr: SocketAddr,
}

impl Karuta {
    fn start(dir: &Path) -> Karuta {
        let config = dir.join("karuta.yaml");
        std::fs::write(
            &config,
            "chihaya:\n  announce_interval: 5s\n  min_announce_interval: 1s\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"test\"\n  storage:\n    name: memory\n",
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_karuta"))
            .arg("--config")
            .arg(&config)
            .arg("--nocolors")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting karuta");
        let lines = read_lines(&mut child, "");
        let mut k = Karuta {
            child,
            lines,
            seen: Vec::new(),
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        let line = k.wait_for("udp frontend listening");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        k.addr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
        k.wait_for("karuta started");
        k
    }

    /// Waits (at most 10 s) for a log line containing `text`; returns it.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "karuta logged no line with {text:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// SIGTERM, then the exit code (at most 5 s).
    fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                self.drain();
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "karuta did not exit within 5 s of SIGTERM; logged:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Karuta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `udp_swarm.py` in its own process group, so that dropping it (also on a
/// panic) kills the aria2c it may have started too.
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    exited: Option<ExitStatus>,
}

impl Driver {
    fn start(workdir: &Path, tracker: &str, mode: &str) -> Driver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/udp_swarm.py");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .args(["--mode", mode, "--tracker", tracker, "--workdir"])
            .arg(workdir)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON} {}: {e}", script.display()));
        let stdin = child.stdin.take();
        let lines = read_lines(&mut child, "stderr| ");
        Driver {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            exited: None,
        }
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    fn record(&mut self, line: String) {
        eprintln!("udp_swarm| {line}");
        self.seen.push(line);
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    fn wait_for(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let rest = line.strip_prefix(prefix).map(str::to_owned);
                    self.record(line);
                    if let Some(rest) = rest {
                        return rest;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!(
                        "udp_swarm.py exited ({status}) before printing {prefix:?}; output:\n{}",
                        self.output()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "udp_swarm.py printed no {prefix:?} within {limit:?}; output:\n{}",
                    self.output()
                ),
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap();
    }

    /// Waits for the script to exit (at most `limit`) and for all its output.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.stdin.take();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.record(line),
                // Both pipes closed: the script (and anything it started
                // with them) is gone.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "udp_swarm.py did not exit within {limit:?}; output:\n{}",
                    self.output()
                ),
            }
        }
        let status = self.child.wait().unwrap();
        self.exited = Some(status);
        status
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        let pid = self.child.id() as i32;
        // SIGTERM first: the script then kills and reaps its aria2c (which
        // would otherwise be left to init).
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the process group we created for it.
        // SAFETY: kill(2) on that process group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Scrapes `ih` until `good` holds or `limit` passes; returns the last entry.
fn scrape_until(
    tracker: SocketAddr,
    ih: InfoHash,
    limit: Duration,
    good: impl Fn(&ScrapeEntry) -> bool,
) -> ScrapeEntry {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let mut client = UdpTrackerClient::new(tracker, Duration::from_secs(1)).unwrap();
        match client.scrape(&[ih]) {
            Ok(entries) => {
                assert_eq!(entries.len(), 1, "{entries:?}");
                let entry = entries[0];
                if good(&entry) {
                    return entry;
                }
                last = Some(entry);
            }
            Err(e) => eprintln!("scrape of {ih}: {e}"),
        }
        if Instant::now() > deadline {
            return last
                .unwrap_or_else(|| panic!("no scrape reply from {tracker} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn libtorrent_and_aria2_complete_downloads_through_the_udp_frontend() {
    require_clients(true);
    let started = Instant::now();
    let dir = TempDir::new("swarm");
    let mut karuta = Karuta::start(&dir.0);
    let tracker_url = format!("udp://{}/announce", karuta.addr);
    let workdir = dir.0.join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(&workdir, &tracker_url, "swarm");

    // The script's phases are bounded at 10 + 15 + 20 s.
    let hex = driver.wait_for("ready-for-scrape infohash=", Duration::from_secs(55));
    let ih = InfoHash::from_str(hex.trim()).unwrap();

    // The three libtorrent sessions are seeding; aria2c has announced
    // `stopped`; the two libtorrent leechers announced `completed` (aria2c
    // with --seed-time=0 never does).
    let live = scrape_until(karuta.addr, ih, Duration::from_secs(10), |e| {
        e.seeders == 3 && e.leechers == 0 && e.completed >= 2
    });
    eprintln!("scrape while the clients run: {live:?}");
    assert_eq!(
        (live.seeders, live.leechers),
        (3, 0),
        "scrape {live:?}; output:\n{}",
        driver.output()
    );
    assert!(
        (2..=3).contains(&live.completed),
        "scrape {live:?}: want the 2 libtorrent snatches (3 if aria2c sent completed); output:\n{}",
        driver.output()
    );

    driver.send_line("go");
    // Its stop phase is bounded at 10 s.
    let status = driver.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "udp_swarm.py: {status}; output:\n{}",
        driver.output()
    );
    assert!(
        driver.seen.iter().any(|l| l == "clients-stopped"),
        "{}",
        driver.output()
    );

    // Every client announced `stopped`: the swarm is empty, its snatches stay.
    let after = scrape_until(karuta.addr, ih, Duration::from_secs(5), |e| {
        e.seeders == 0 && e.leechers == 0
    });
    eprintln!("scrape after the clients stopped: {after:?}");
    assert_eq!((after.seeders, after.leechers), (0, 0), "scrape {after:?}");
    assert_eq!(after.completed, live.completed, "snatches are kept");

    assert_eq!(karuta.stop(), Some(0), "{}", karuta.seen.join("\n"));
    let errors: Vec<_> = karuta
        .seen
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(
        errors.is_empty(),
        "karuta logged:\n{}",
        karuta.seen.join("\n")
    );
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn without_the_tracker_no_leecher_finds_the_seeder() {
    require_clients(false);
    let dir = TempDir::new("no-tracker");
    // A tracker address where nothing answers: the socket is held so that no
    // one else gets the port; it only counts what arrives.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let senders = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let listener = {
        let (received, senders, done) = (received.clone(), senders.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok((_, from)) = silent.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    senders.lock().unwrap().push(from);
                }
            }
        })
    };

    let workdir = dir.0.join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(
        &workdir,
        &format!("udp://{silent_addr}/announce"),
        "no-tracker",
    );
    // 10 s of window after at most 10 s of set-up.
    let status = driver.wait_exit(Duration::from_secs(40));
    done.store(true, Ordering::Relaxed);
    listener.join().unwrap();
    assert!(
        status.success(),
        "udp_swarm.py --mode no-tracker: {status}; output:\n{}",
        driver.output()
    );
    assert!(
        driver.seen.iter().any(|l| l == "no-peers-as-expected"),
        "{}",
        driver.output()
    );
    // The clients did try the tracker: it was their only way to each other.
    let n = received.load(Ordering::Relaxed);
    let mut from = senders.lock().unwrap().clone();
    from.sort();
    from.dedup();
    eprintln!("the silent tracker address got {n} datagrams from {from:?}");
    assert!(
        from.len() >= 2,
        "both clients should have tried the tracker; {n} datagrams from {from:?}"
    );
}
