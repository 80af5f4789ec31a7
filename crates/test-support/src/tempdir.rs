//! Temp dirs that never outlive the test process.
//!
//! Dropping a [`TempDir`] removes it. A test process that is killed drops
//! nothing, so each dir also has a guardian: a `sh` in its own process group
//! (a timeout that kills the test's group spares it) reading a pipe that only
//! the test process holds open. When the test process ends, however it ends,
//! the pipe closes and the guardian removes the dir, retrying for a moment
//! while a server that was killed with the test (PostgreSQL shuts down on its
//! death signal) still writes into it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the guardian runs, with the dir as `$1`: wait for the end of its
/// standard input, then remove the dir.
const GUARDIAN: &str = r#"read -r line
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  rm -rf -- "$1" 2>/dev/null
  [ -e "$1" ] || exit 0
  sleep 0.2
done"#;

/// A directory removed when dropped (also when the test panics) and when the
/// test process dies.
pub struct TempDir {
    path: PathBuf,
    guardian: Option<Child>,
}

impl TempDir {
    /// A new, empty `karuta-{tag}-{pid}-{n}` in the system's temp dir; `n`
    /// counts the dirs this process made, so no two share a path.
    pub fn new(tag: &str) -> TempDir {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("karuta-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
        let guardian = Command::new("sh")
            .args(["-c", GUARDIAN, "guardian"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the guardian of {path:?}: {e}"));
        TempDir {
            path,
            guardian: Some(guardian),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        if let Some(mut guardian) = self.guardian.take() {
            // The end of its input: the guardian finds nothing left to remove
            // and exits at once.
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }
}
