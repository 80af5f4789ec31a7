//! The journal: every delta is appended here and made durable before its
//! announce is answered, so a crash at any moment loses nothing.
//!
//! - **Group commit.** Announces append encoded deltas to one in-memory
//!   buffer (a short mutex, taken under the records shard lock so a peer's
//!   entries keep the order of its baseline changes) and get a sequence
//!   number. One writer thread writes the buffer and `fdatasync`s it every
//!   `sync_interval`, or sooner once 64 entries wait, then wakes every
//!   announce whose entry is on disk. An fdatasync costs 0.1-0.3 ms, so with
//!   the default 2 ms an announce waits about a millisecond when the load is
//!   light and less under load, and the disk sees at most 500 syncs a second
//!   plus one per 64 entries beyond.
//! - **Segments.** Files named by their first sequence number; a new one is
//!   started past [`SEGMENT_BYTES`]. The newest is zero-filled a megabyte
//!   ahead of its records, so a group sync overwrites space the file has
//!   (see `zero_fill`); finished and closed segments end at their last
//!   record. Segments whose entries the handler has
//!   acknowledged (and a snapshot covers, when restarts restore from one) are
//!   deleted, except the newest, whose name and records carry the sequence on
//!   past a restart.
//! - **Recovery.** At open every record is checked (length, checksum,
//!   consecutive sequence numbers); a torn tail of the newest segment — a
//!   write a crash cut short — is cut off; damage anywhere else is an error
//!   naming the file and offset, never skipped.
//! - **Failure closes it.** A failed write or sync (the disk is full or
//!   broken) fails every waiting announce and every later append: after a
//!   failed fsync the state of the file is unknown, so the tracker stops
//!   accounting rather than guess, and the next start reads what is on disk.

mod codec;
mod files;
mod reader;
pub mod snapshot;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::delta::Delta;

pub use codec::RECORD_LEN;
pub use codec::{Malformed, decode, encode};
pub use files::{JournalId, scan_segment};
pub use reader::Reader;

/// Past this size the writer starts a new segment (the default of
/// `journal_segment_bytes`).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: damaged record at byte {offset} ({what}); the journal cannot be read past it")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: the journal is in use by another process")]
    Locked { path: PathBuf },
    /// A write or sync failed; nothing is appended any more.
    #[error("the journal failed: {0}")]
    Failed(String),
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

struct Pending {
    buf: Vec<u8>,
    next_seq: u64,
}

/// A segment file as the reader sees it.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    /// Bytes known to be on disk.
    pub durable_len: u64,
}

pub(crate) struct Shared {
    id: JournalId,
    dir: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Every entry with a sequence number up to this is on disk.
    durable_seq: AtomicU64,
    durable: Notify,
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    segments: Mutex<Vec<Segment>>,
    appended_bytes: AtomicU64,
    acked_bytes: AtomicU64,
    acked: Notify,
    sync_interval_ns: AtomicU64,
    segment_bytes: u64,
    syncs: AtomicU64,
    stop: AtomicBool,
    /// The directory's lock, held until [`Journal::close`].
    lock: Mutex<Option<File>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`Journal::open`] found on disk.
#[derive(Debug)]
pub struct Opened {
    pub journal: Journal,
    /// The first sequence number still in the journal (older ones were
    /// acknowledged and deleted).
    pub first_seq: u64,
    /// The last entry's sequence number (0: none ever).
    pub last_seq: u64,
    /// Bytes cut off a torn tail.
    pub truncated: u64,
}

/// An open journal. Appends are synchronous and cheap; [`Journal::durable`]
/// waits for the group sync.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, whose parent must exist.
    /// Entries wait up to `sync_interval` for a group sync; a segment past
    /// `segment_bytes` is followed by a new one.
    pub fn open(
        dir: &Path,
        sync_interval: Duration,
        segment_bytes: u64,
    ) -> Result<Opened, JournalError> {
        let found = files::recover(dir)?;
        let last_seq = found.next_seq - 1;
        let segments: Vec<Segment> = found.segments;
        let first_seq = segments.first().map_or(found.next_seq, |s| s.first_seq);
        let tail = segments
            .last()
            .expect("recover leaves a segment to append to");
        let file = files::open_write(&tail.path)?;
        let end = tail.durable_len;
        let shared = Arc::new(Shared {
            id: found.id,
            dir: dir.to_owned(),
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 << 10),
                next_seq: found.next_seq,
            }),
            wake: Condvar::new(),
            durable_seq: AtomicU64::new(last_seq),
            durable: Notify::new(),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            segments: Mutex::new(segments),
            appended_bytes: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            acked: Notify::new(),
            sync_interval_ns: AtomicU64::new(sync_interval.as_nanos() as u64),
            segment_bytes,
            syncs: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(Some(found.lock)),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("privtrak-journal".into())
                .spawn(move || write_loop(&shared, file, end))
                .map_err(io_error(dir))?
        };
        Ok(Opened {
            journal: Journal {
                shared,
                writer: Mutex::new(Some(writer)),
            },
            first_seq,
            last_seq,
            truncated: found.truncated,
        })
    }

    pub fn id(&self) -> JournalId {
        self.shared.id
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends `delta` with the next sequence number (set in `delta.seq`
    /// before encoding) and returns it. The entry is durable once
    /// [`durable`](Self::durable) says so.
    pub fn append(&self, delta: &mut Delta) -> Result<u64, JournalError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(self.failure());
        }
        let mut pending = lock(&self.shared.pending);
        let seq = pending.next_seq;
        pending.next_seq += 1;
        delta.seq = seq;
        let before = pending.buf.len();
        encode(delta, &mut pending.buf);
        let after = pending.buf.len();
        drop(pending);
        self.shared
            .appended_bytes
            .fetch_add((after - before) as u64, Ordering::Relaxed);
        // The writer waits for a first entry, then for a full group.
        if before == 0 || (before < GROUP_BYTES && after >= GROUP_BYTES) {
            self.shared.wake.notify_one();
        }
        Ok(seq)
    }

    fn failure(&self) -> JournalError {
        JournalError::Failed(
            lock(&self.shared.failure)
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        )
    }

    /// Waits until the entry `seq` is on disk.
    pub async fn durable(&self, seq: u64) -> Result<(), JournalError> {
        loop {
            let notified = self.shared.durable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.durable_seq.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if self.shared.failed.load(Ordering::Acquire) {
                return Err(self.failure());
            }
            notified.await;
        }
    }

    /// Every entry up to this sequence number is on disk.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        lock(&self.shared.pending).next_seq - 1
    }

    /// Resolves when more entries are durable than `seen` (or the journal
    /// failed): the drain's wake-up.
    pub async fn wait_beyond(&self, seen: u64) {
        loop {
            let notified = self.shared.durable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.durable_seq.load(Ordering::Acquire) > seen
                || self.shared.failed.load(Ordering::Acquire)
            {
                return;
            }
            notified.await;
        }
    }

    /// A reader of durable entries from `seq` on.
    pub fn reader(&self, seq: u64) -> Reader {
        Reader::new(Arc::clone(&self.shared), seq)
    }

    /// Counts bytes of entries recovered at open that the handler has not
    /// acknowledged, so back-pressure sees them.
    pub fn count_unacknowledged(&self, bytes: u64) {
        self.shared
            .appended_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// The handler acknowledged entries worth `bytes`.
    pub fn acknowledge(&self, bytes: u64) {
        self.shared.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.shared.acked.notify_waiters();
    }

    /// Bytes appended that the handler has not acknowledged yet.
    pub fn unacknowledged_bytes(&self) -> u64 {
        let appended = self.shared.appended_bytes.load(Ordering::Relaxed);
        appended.saturating_sub(self.shared.acked_bytes.load(Ordering::Relaxed))
    }

    /// Resolves at the next acknowledgement (back-pressure waits on it).
    pub async fn acknowledged(&self) {
        self.shared.acked.notified().await;
    }

    /// Deletes the segments whose entries all have sequence numbers up to
    /// `seq`; the newest segment always stays.
    pub fn trim_through(&self, seq: u64) -> Result<(), JournalError> {
        let mut segments = lock(&self.shared.segments);
        while segments.len() > 1 && segments[1].first_seq <= seq + 1 {
            let gone = segments.remove(0);
            std::fs::remove_file(&gone.path).map_err(io_error(&gone.path))?;
        }
        Ok(())
    }

    /// Segment files held now.
    pub fn segment_count(&self) -> usize {
        lock(&self.shared.segments).len()
    }

    pub fn set_sync_interval(&self, interval: Duration) {
        self.shared
            .sync_interval_ns
            .store(interval.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Group syncs done since open.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Whether a write or sync failed (the journal refuses appends).
    pub fn failed(&self) -> Option<String> {
        self.shared
            .failed
            .load(Ordering::Acquire)
            .then(|| lock(&self.shared.failure).clone().unwrap_or_default())
    }

    /// Writes and syncs what is pending, then stops the writer. Appends after
    /// this fail.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(writer) = lock(&self.writer).take()
            && writer.join().is_err()
        {
            tracing::error!("the privtrak journal writer panicked");
        }
        // Another journal may open the directory now.
        lock(&self.shared.lock).take();
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// A group this large is synced at once, without waiting out the interval.
const GROUP_BYTES: usize = GROUP_ENTRIES * RECORD_LEN;
/// Under load no announce waits out the interval once 64 are waiting with
/// it (a closed loop of 128 connections went from 55,000 to 68,000-70,000
/// announces/s with this, the wait from 2.08 to 1.6-1.7 ms), and the disk
/// still sees one sync per 64 entries at most beyond the interval's.
const GROUP_ENTRIES: usize = 64;

/// Zero-filled space kept ahead of the newest segment's end.
const PREALLOCATE: u64 = 1 << 20;

/// Makes the file at least `needed` bytes long with zeros, [`PREALLOCATE`]
/// past it at a time: a group sync then overwrites blocks the file already
/// has, and its `fdatasync` writes the data and flushes the disk's cache with
/// no new size or block allocation to write (on this project's machine 0.1
/// ms at the median against 0.2-2.7 ms for an append, the same data). The
/// space is cut off when the segment is finished or closed, and at a start
/// after a crash (all zeros: not a torn tail).
fn zero_fill(file: &File, zeroed: &mut u64, needed: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    if needed <= *zeroed {
        return Ok(());
    }
    let target = needed + PREALLOCATE;
    while *zeroed < target {
        let n = ((target - *zeroed) as usize).min(ZEROS.len());
        file.write_all_at(&ZEROS[..n], *zeroed)?;
        *zeroed += n as u64;
    }
    Ok(())
}

/// Cuts the zero-filled space off the segment (made durable): a finished
/// or closed segment ends at its last record.
fn cut_to(file: &File, end: u64) -> std::io::Result<()> {
    file.set_len(end)?;
    file.sync_all()
}

/// The writer thread: group commits until stopped, then a last one. `end`
/// is where the newest segment's records end (its file is no longer).
fn write_loop(shared: &Shared, mut file: File, mut end: u64) {
    let mut spare: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut last_sync: Option<Instant> = None;
    let mut zeroed = end;
    loop {
        let mut pending = lock(&shared.pending);
        while pending.buf.is_empty() && !shared.stop.load(Ordering::Acquire) {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.buf.is_empty() {
            drop(pending);
            // Closed: the segment ends at its last record.
            if let Err(e) = cut_to(&file, end) {
                fail_writing(shared, &e);
            }
            break;
        }
        let stopping = shared.stop.load(Ordering::Acquire);
        drop(pending);
        // Group commit: let announces gather until the interval since the
        // previous sync began has passed or a group is full (not when
        // stopping: flush now).
        let interval = Duration::from_nanos(shared.sync_interval_ns.load(Ordering::Relaxed));
        if let Some(at) = last_sync
            && !stopping
        {
            let due = at + interval;
            let mut pending = lock(&shared.pending);
            loop {
                let now = Instant::now();
                if due <= now
                    || pending.buf.len() >= GROUP_BYTES
                    || shared.stop.load(Ordering::Acquire)
                {
                    break;
                }
                pending = shared
                    .wake
                    .wait_timeout(pending, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let mut pending = lock(&shared.pending);
        std::mem::swap(&mut pending.buf, &mut spare);
        let last = pending.next_seq - 1;
        drop(pending);
        // The interval runs from the start of one sync to the start of the
        // next: a disk slower than the interval gets syncs back to back.
        last_sync = Some(Instant::now());
        let result = zero_fill(&file, &mut zeroed, end + spare.len() as u64)
            .and_then(|()| file.write_all_at(&spare, end))
            .and_then(|()| file.sync_data());
        if let Err(e) = result {
            fail_writing(shared, &e);
            return;
        }
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        end += spare.len() as u64;
        let rotate = {
            let mut segments = lock(&shared.segments);
            let tail = segments.last_mut().expect("a segment to append to");
            tail.durable_len += spare.len() as u64;
            tail.durable_len >= shared.segment_bytes
        };
        spare.clear();
        shared.durable_seq.store(last, Ordering::Release);
        shared.durable.notify_waiters();
        if rotate {
            // Cut before the next segment exists: only the newest may end
            // in zeros.
            if let Err(e) = cut_to(&file, end) {
                fail_writing(shared, &e);
                return;
            }
            match files::start_segment(&shared.dir, last + 1) {
                Ok((next, path)) => {
                    file = next;
                    (end, zeroed) = (0, 0);
                    lock(&shared.segments).push(Segment {
                        first_seq: last + 1,
                        path,
                        durable_len: 0,
                    });
                }
                Err(e) => {
                    fail(shared, e.to_string());
                    return;
                }
            }
        }
    }
}

/// A write, sync or cut of the journal's files failed.
fn fail_writing(shared: &Shared, e: &dyn std::fmt::Display) {
    fail(shared, format!("writing {}: {e}", shared.dir.display()));
}

fn fail(shared: &Shared, why: String) {
    tracing::error!(error = %why, "the privtrak journal failed: announces are refused until a restart");
    *lock(&shared.failure) = Some(why);
    shared.failed.store(true, Ordering::Release);
    shared.durable.notify_waiters();
    shared.acked.notify_waiters();
}

#[cfg(test)]
pub(crate) mod tests;
