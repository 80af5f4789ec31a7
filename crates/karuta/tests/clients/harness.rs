//! What `real_clients_udp.rs` and `real_clients_http.rs` share besides the
//! karuta process (in `tests/support`): `swarm.py`, which drives the real
//! BitTorrent clients, as a child process. Included by both with
//! `#[path = "clients/harness.rs"] mod harness;`, next to `mod support;`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::support::read_lines;

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
