//! What `real_clients_udp.rs` and `real_clients_http.rs` share: the real
//! karuta binary as a child process, and `swarm.py`, which drives the real
//! BitTorrent clients, as another. Included by both with
//! `#[path = "clients/harness.rs"] mod harness;`.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

pub const PYTHON: &str = "/usr/bin/python3";
const HOW_TO_INSTALL: &str = "run scripts/test, which installs python3-libtorrent and aria2 \
     (apt-get install python3-libtorrent aria2)";

/// Fails (never skips) when a client the tests need is missing.
pub fn require_clients(aria2: bool) {
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
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `karuta-real-clients-{tag}-{pid}` in the system's temp dir.
    pub fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("karuta-real-clients-{tag}-{}", std::process::id()));
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

/// Writes `text` to `path` through a rename, so that a reload never reads a
/// half-written file.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The real karuta binary, killed when dropped.
pub struct Karuta {
    child: Child,
    lines: Receiver<String>,
    /// Every line it has logged so far (that the test has looked at).
    pub seen: Vec<String>,
    /// The address of the frontend named at start.
    pub addr: SocketAddr,
    config: PathBuf,
}

impl Karuta {
    /// Starts karuta with `config` (written to `dir/karuta.yaml`); `addr` is
    /// taken from the log line `{frontend} frontend listening addr=...`.
    pub fn start(dir: &Path, config: &str, frontend: &str) -> Karuta {
        let path = dir.join("karuta.yaml");
        write_config(&path, config);
        let mut child = Command::new(env!("CARGO_BIN_EXE_karuta"))
            .arg("--config")
            .arg(&path)
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
            config: path,
        };
        let line = k.wait_for(&format!("{frontend} frontend listening"));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        k.addr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
        k.wait_for("karuta started");
        k
    }

    /// Waits (at most 10 s) for a log line containing `text`; returns it.
    pub fn wait_for(&mut self, text: &str) -> String {
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
                Err(_) => panic!("karuta logged no line with {text:?}; saw:\n{}", self.log()),
            }
        }
    }

    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// How many lines seen so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.seen.iter().filter(|l| l.contains(text)).count()
    }

    pub fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// Replaces the configuration file (for a reload).
    pub fn rewrite_config(&self, text: &str) {
        write_config(&self.config, text);
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGTERM, then the exit code (at most 5 s).
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
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
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops karuta, which must exit 0 having logged no warning or error.
    pub fn stop_cleanly(&mut self) {
        assert_eq!(self.stop(), Some(0), "{}", self.log());
        assert!(
            !self
                .seen
                .iter()
                .any(|l| l.contains("ERROR") || l.contains("WARN")),
            "karuta logged:\n{}",
            self.log()
        );
    }
}

impl Drop for Karuta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `swarm.py` in its own process group, so that dropping it (also on a
/// panic) kills the aria2c it may have started too.
pub struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Its output so far (stderr lines marked `stderr| `).
    pub seen: Vec<String>,
    exited: Option<ExitStatus>,
}

impl Driver {
    pub fn start(workdir: &Path, tracker: &str, mode: &str) -> Driver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/swarm.py");
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

    pub fn output(&self) -> String {
        self.seen.join("\n")
    }

    fn record(&mut self, line: String) {
        eprintln!("swarm.py| {line}");
        self.seen.push(line);
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    pub fn wait_for(&mut self, prefix: &str, limit: Duration) -> String {
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
                        "swarm.py exited ({status}) before printing {prefix:?}; output:\n{}",
                        self.output()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "swarm.py printed no {prefix:?} within {limit:?}; output:\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Sends one line to the script's stdin (it waits for one at each
    /// checkpoint).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap();
    }

    /// Waits for the script to exit (at most `limit`) and for all its output.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
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
                    "swarm.py did not exit within {limit:?}; output:\n{}",
                    self.output()
                ),
            }
        }
        let status = self.child.wait().unwrap();
        self.exited = Some(status);
        status
    }

    /// Waits for the script to exit, which must be a success after printing
    /// the line `last`.
    pub fn expect_success(&mut self, limit: Duration, last: &str) {
        let status = self.wait_exit(limit);
        assert!(
            status.success(),
            "swarm.py: {status}; output:\n{}",
            self.output()
        );
        assert!(
            self.seen.iter().any(|l| l == last),
            "swarm.py printed no {last:?}; output:\n{}",
            self.output()
        );
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
