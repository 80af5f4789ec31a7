//! `jsonl`: every delta as one JSON object per line, appended to a file and
//! synced before the batch is acknowledged — for event pipelines and for
//! sites without PostgreSQL.
//!
//! ```json
//! {"batch":"<journal>:<first>-<last>","seq":0,"user":"<32 hex>","info_hash":"<40 hex>",
//!  "peer_id":"<40 hex>","ip":"10.0.0.1","port":6881,"event":"none","uploaded":0,
//!  "downloaded":0,"left":0,"seed_seconds":0,"leech_seconds":0,"reported_at":"2026-12-01T20:45:12.123Z"}
//! ```
//!
//! `seq` is the line's position in its batch; an expiry has `ip` and `port`
//! null. The file holds every delta exactly once, crashes included:
//!
//! - A batch is written in one write and synced; after a crash the last batch
//!   may be torn (a partial line, or fewer lines than its id spans). At open
//!   the file is read from the last checkpoint on and a torn last batch is
//!   cut off: privtrak hands it over again, since it was never acknowledged.
//! - Each batch id spans the journal positions `first..=last`, one line each.
//!   The handler remembers, per journal, the last position written; a batch
//!   at or below it is acknowledged without writing, and one that straddles
//!   it is written from the next position on under its narrowed id.
//! - A checkpoint file beside it (`<path>.state`: the byte offset and those
//!   positions) spares reading the whole file at open; it is only a hint —
//!   without it, or if it is stale, the file itself is read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tracker::ConfigError;

use bittorrent::push_hex;

use crate::delta::Delta;
use crate::handler::{Batch, BatchId, DeltaHandler, HandlerError, HandlerFuture};
use crate::journal::JournalId;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub path: PathBuf,
}

impl JsonlConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("path", "must name a file"));
        }
        if self.path.is_dir() {
            return Err(ConfigError::new(
                "path",
                format!("{} is a directory", self.path.display()),
            ));
        }
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(ConfigError::new(
                "path",
                format!("{} is not a directory", parent.display()),
            ));
        }
        Ok(())
    }
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: line at byte {offset} is not a delta ({what}); the file was changed by something else"
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

/// What recovery reads of a line.
#[derive(Deserialize)]
struct LineId {
    batch: String,
    seq: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Checkpoint {
    offset: u64,
    applied: HashMap<String, u64>,
}

struct State {
    file: File,
    /// Bytes of whole batches in the file.
    len: u64,
    applied: HashMap<JournalId, u64>,
    /// The lines of the batch being written (kept: a batch is ~360 KiB).
    out: Vec<u8>,
    /// When the checkpoint was last written.
    saved: Option<std::time::Instant>,
}

/// How often the checkpoint is rewritten (it is a hint: a stale one only
/// makes the next open read more of the file).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub struct JsonlHandler {
    path: Arc<PathBuf>,
    state: Arc<Mutex<State>>,
    /// One batch is written at a time (the drain hands over one at a time;
    /// this keeps a second caller from racing the positions).
    writing: tokio::sync::Mutex<()>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JsonlError + '_ {
    move |source| JsonlError::Io {
        path: path.to_owned(),
        source,
    }
}

fn state_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

/// RFC 3339 in UTC with milliseconds, from unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(&mut out, ms);
    String::from_utf8(out).expect("digits and ASCII punctuation")
}

fn write_rfc3339(out: &mut Vec<u8>, ms: u64) {
    use std::io::Write as _;
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    );
}

/// Appends the JSON lines of `deltas` (batch `id`) to `out`. Every value is a
/// number, a hex string, an address or an event name, so nothing needs
/// escaping and the line is written straight into the buffer (a serializer
/// would allocate a string per field).
fn write_lines(id: &BatchId, deltas: &[Delta], out: &mut Vec<u8>) {
    use std::io::Write as _;
    let batch = id.to_string();
    for (i, d) in deltas.iter().enumerate() {
        let _ = write!(out, r#"{{"batch":"{batch}","seq":{i},"user":""#);
        push_hex(out, &d.user.0);
        out.extend_from_slice(br#"","info_hash":""#);
        push_hex(out, &d.info_hash.0);
        out.extend_from_slice(br#"","peer_id":""#);
        push_hex(out, &d.peer_id.0);
        match d.addr {
            Some(a) => {
                let _ = write!(out, r#"","ip":"{}","port":{}"#, a.ip(), a.port());
            }
            None => out.extend_from_slice(br#"","ip":null,"port":null"#),
        }
        let _ = write!(
            out,
            r#","event":"{}","uploaded":{},"downloaded":{},"left":{},"seed_seconds":{},"leech_seconds":{},"reported_at":""#,
            d.event.as_str(),
            d.uploaded,
            d.downloaded,
            d.left,
            d.seed_seconds,
            d.leech_seconds
        );
        write_rfc3339(out, d.reported_at_ms());
        out.extend_from_slice(b"\"}\n");
    }
}

impl JsonlHandler {
    /// Opens (or creates) the file and recovers its state.
    pub fn open(path: &Path) -> Result<Self, JsonlError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let checkpoint: Checkpoint = std::fs::read(state_path(path))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let size = file.metadata().map_err(io(path))?.len();
        // A checkpoint past the end belongs to another file: ignore it.
        let (start, mut applied) = if checkpoint.offset <= size {
            let applied = checkpoint
                .applied
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                .collect();
            (checkpoint.offset, applied)
        } else {
            (0, HashMap::new())
        };
        let len = recover(path, &mut file, start, size, &mut applied)?;
        if len < size {
            tracing::warn!(path = %path.display(), bytes = size - len, "jsonl handler: cut off a torn last batch");
            file.set_len(len).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        Ok(JsonlHandler {
            path: Arc::new(path.to_owned()),
            state: Arc::new(Mutex::new(State {
                file,
                len,
                applied,
                out: Vec::new(),
                saved: None,
            })),
            writing: tokio::sync::Mutex::new(()),
        })
    }
}

/// Writes the lines of `deltas` (batch `id`) and syncs them, then moves the
/// journal's position on. Blocking: runs on a blocking thread.
fn append(
    path: &Path,
    state: &Mutex<State>,
    id: BatchId,
    deltas: &[Delta],
) -> Result<(), HandlerError> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let state = &mut *state;
    state.out.clear();
    write_lines(&id, deltas, &mut state.out);
    let len = state.len;
    let written = state
        .file
        .write_all(&state.out)
        .and_then(|()| state.file.sync_data());
    if let Err(e) = written {
        // Leave the file as it was: a partial batch would be cut at the
        // next open anyway, but this process keeps appending.
        let _ = state.file.set_len(len);
        return Err(HandlerError::new(format!("{}: {e}", path.display())));
    }
    state.len += state.out.len() as u64;
    state.applied.insert(id.journal, id.last);
    if state
        .saved
        .is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY)
    {
        save_checkpoint(path, state);
        state.saved = Some(std::time::Instant::now());
    }
    Ok(())
}

fn save_checkpoint(path: &Path, state: &State) {
    let checkpoint = Checkpoint {
        offset: state.len,
        applied: state
            .applied
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    };
    let path = state_path(path);
    let tmp = path.with_extension("state.tmp");
    // Not synced: a lost or stale checkpoint only makes the next open read
    // more of the file.
    let written = serde_json::to_vec(&checkpoint)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "jsonl checkpoint not written");
    }
}

/// Reads whole lines from `start`, updating `applied` with every complete
/// batch; returns the length of the file up to the end of the last complete
/// batch.
fn recover(
    path: &Path,
    file: &mut File,
    start: u64,
    size: u64,
    applied: &mut HashMap<JournalId, u64>,
) -> Result<u64, JsonlError> {
    file.seek(SeekFrom::Start(start)).map_err(io(path))?;
    let mut r = BufReader::with_capacity(1 << 20, &*file);
    let mut offset = start;
    // The batch being read: its id, where it starts, lines seen.
    let mut open: Option<(BatchId, u64, u64)> = None;
    let mut complete_end = start;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).map_err(io(path))?;
        if n == 0 {
            break;
        }
        let line_start = offset;
        offset += n as u64;
        let torn = || JsonlError::Damaged {
            path: path.to_owned(),
            offset: line_start,
            what: "a partial line".into(),
        };
        if line.last() != Some(&b'\n') {
            // Only the end of the file can be a partial line.
            if offset == size {
                break;
            }
            return Err(torn());
        }
        let parsed: Result<(BatchId, u64), String> = serde_json::from_slice::<LineId>(&line)
            .map_err(|e| e.to_string())
            .and_then(|l| {
                let id = l
                    .batch
                    .parse()
                    .map_err(|()| format!("batch id {:?}", l.batch))?;
                Ok((id, l.seq))
            });
        let (id, seq) = match parsed {
            Ok(p) => p,
            // A line garbled by a torn write can only be in the last batch:
            // nothing readable may follow it.
            Err(what) => {
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    if r.read_until(b'\n', &mut rest).map_err(io(path))? == 0 {
                        return Ok(complete_end);
                    }
                    if serde_json::from_slice::<LineId>(&rest).is_ok() {
                        return Err(JsonlError::Damaged {
                            path: path.to_owned(),
                            offset: line_start,
                            what,
                        });
                    }
                }
            }
        };
        let lines = match open {
            Some((open_id, _, seen)) if open_id == id => seen,
            Some(_) => {
                // A new batch began before the open one was whole: the open
                // one was torn, and only the last batch can be.
                return Err(JsonlError::Damaged {
                    path: path.to_owned(),
                    offset: line_start,
                    what: "a batch cut short in the middle of the file".into(),
                });
            }
            None => 0,
        };
        if seq != lines {
            return Err(JsonlError::Damaged {
                path: path.to_owned(),
                offset: line_start,
                what: format!("line {seq} of batch {id} where line {lines} was expected"),
            });
        }
        let start_of_batch = open.map_or(line_start, |(_, s, _)| s);
        if lines + 1 == id.last - id.first + 1 {
            let a = applied.entry(id.journal).or_default();
            *a = (*a).max(id.last);
            complete_end = offset;
            open = None;
        } else {
            open = Some((id, start_of_batch, lines + 1));
        }
    }
    Ok(complete_end)
}

impl DeltaHandler for JsonlHandler {
    fn applied_through<'a>(&'a self, journal: JournalId) -> HandlerFuture<'a, u64> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let applied = state.applied.get(&journal).copied().unwrap_or(0);
        Box::pin(async move { Ok(applied) })
    }

    fn handle<'a>(&'a self, batch: &'a Batch) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            let _one = self.writing.lock().await;
            let applied = {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.applied.get(&batch.id.journal).copied().unwrap_or(0)
            };
            let Some((id, deltas)) = batch.after(applied) else {
                return Ok(());
            };
            // Formatting, the write and its sync go to a blocking thread:
            // a sync takes milliseconds, and announces must go on meanwhile
            // (a copy of the deltas is far cheaper than their lines).
            let deltas = deltas.to_vec();
            let (path, state) = (Arc::clone(&self.path), Arc::clone(&self.state));
            tokio::task::spawn_blocking(move || append(&path, &state, id, &deltas))
                .await
                .map_err(|e| HandlerError::new(format!("{}: {e}", self.path.display())))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_157_912_123), "2026-12-01T20:45:12.123Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
