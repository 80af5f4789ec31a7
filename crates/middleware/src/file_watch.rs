//! Re-reading a file when it changes: its modification time and length are
//! checked every interval on a thread of its own.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

/// The entries of a list file: each line's text before any `#`, trimmed,
/// with its 1-based line number; blank lines skipped.
pub fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(n, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((n + 1, line))
    })
}

/// A file's modification time and length: what "changed" means here.
pub fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A running watch; stopped by [`FileWatch::stop`] or when dropped.
pub struct FileWatch {
    stop: mpsc::Sender<()>,
}

impl FileWatch {
    /// Calls `changed` whenever `path`'s stamp differs from the last one
    /// seen (`seen` is the stamp taken before the caller's first read, so a
    /// change made during it is seen next time).
    pub fn start(
        name: &str,
        path: PathBuf,
        seen: Option<(SystemTime, u64)>,
        every: Duration,
        mut changed: impl FnMut(&Path) + Send + 'static,
    ) -> std::io::Result<FileWatch> {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut seen = seen;
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = stamp(&path);
                    if now != seen {
                        seen = now;
                        changed(&path);
                    }
                }
            })?;
        Ok(FileWatch { stop })
    }

    pub fn stop(&self) {
        let _ = self.stop.send(());
    }
}
