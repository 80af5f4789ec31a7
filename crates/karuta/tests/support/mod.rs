//! The real karuta binary as a child process, for the tests that run it:
//! start it, read its log, signal it, stop it. Included by each of them with
//! `mod support;`.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use test_support::process::spawn_tied;

pub mod accounting;
pub mod tracker_http;

/// A tracker in this process, from `yaml` and `registry`, with the
/// operations server on a free port of 127.0.0.1.
pub async fn start_in_process(
    registry: tracker::Registry,
    yaml: &str,
) -> (karuta::Tracker, karuta::ops::OpsServer) {
    let registry = std::sync::Arc::new(registry);
    let loaded =
        karuta::config::parse(&karuta::config::ConfigSource::Embedded, yaml, &registry).unwrap();
    let tracker = karuta::Tracker::start(registry, loaded).await.unwrap();
    let ops = karuta::ops::OpsServer::start("127.0.0.1:0".parse().unwrap(), tracker.observed())
        .await
        .unwrap();
    (tracker, ops)
}

/// Writes `text` to `path` through a rename, so that a reload never reads a
/// half-written file.
pub fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Lines of a child's stdout and stderr (marked with `stderr_prefix`), in
/// arrival order.
pub fn read_lines(child: &mut Child, stderr_prefix: &'static str) -> Receiver<String> {
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

/// The karuta binary with `args`, its stdin empty and `RUST_LOG` unset.
pub fn karuta_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_karuta"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// The real karuta binary, killed when dropped.
pub struct Karuta {
    child: Child,
    lines: Receiver<String>,
    /// Every line it has logged so far (that the test has looked at).
    pub seen: Vec<String>,
    config: PathBuf,
}

impl Karuta {
    /// Starts karuta with `text` written to `dir/karuta.yaml`.
    pub fn start_text(dir: &Path, text: &str) -> Karuta {
        let path = dir.join("karuta.yaml");
        write_config(&path, text);
        Karuta::start(&path)
    }

    /// Starts karuta with the configuration file `config`, without colours.
    pub fn start(config: &Path) -> Karuta {
        Karuta::start_with(config, &["--nocolors"])
    }

    /// Starts karuta with `config` and `flags`; returns once it has logged
    /// `karuta started` (after its frontends' `listening` lines).
    pub fn start_with(config: &Path, flags: &[&str]) -> Karuta {
        let mut command = karuta_command(&["--config"]);
        command
            .arg(config)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Killed with the test process too, should that die first.
        let mut child = spawn_tied(command, libc::SIGKILL).expect("starting karuta");
        let lines = read_lines(&mut child, "");
        let mut k = Karuta {
            child,
            lines,
            seen: Vec::new(),
            config: config.to_owned(),
        };
        k.wait_for("karuta started");
        k
    }

    /// Waits (at most 10 s) for a new log line containing `text`; returns it.
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

    /// Collects whatever is logged within `d` (only what is there already
    /// for `Duration::ZERO`).
    pub fn drain_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// How many lines seen so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.seen.iter().filter(|l| l.contains(text)).count()
    }

    /// The lines seen so far.
    pub fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// The address in the line `{frontend} frontend listening addr=...` seen
    /// first.
    pub fn listening(&self, frontend: &str) -> SocketAddr {
        let marker = format!("{frontend} frontend listening");
        let line = self
            .seen
            .iter()
            .find(|l| l.contains(&marker))
            .unwrap_or_else(|| panic!("no {marker:?} line; saw:\n{}", self.log()));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.parse()
            .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
    }

    /// Replaces the configuration file (for a reload).
    pub fn rewrite_config(&self, text: &str) {
        write_config(&self.config, text);
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `limit`; returns its exit code
    /// and how long that took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("karuta did not exit within {limit:?}; saw:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit code (at most 5 s), with what it logged until
    /// then.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let (code, _) = self.wait_exit(Duration::from_secs(5));
        self.drain_for(Duration::from_millis(100));
        code
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
