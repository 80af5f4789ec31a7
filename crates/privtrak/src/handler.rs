//! Where deltas go: the [`DeltaHandler`] trait and the batches it is given.
//!
//! privtrak hands a handler one batch at a time, in journal order, and
//! retries a failed batch unchanged until it succeeds; a batch counts as done
//! only when the handler returns `Ok`, which must mean "durably applied".
//!
//! **Exactly once** rests on the batch's id: the journal position of its
//! first and last delta. A handler records, in the same atomic step that
//! applies a batch, the last position it applied for the batch's journal
//! ([`BatchId::journal`]); it acknowledges a batch at or below that without
//! applying it again, and skips the deltas at or below it in a batch that
//! straddles it (a start can cut batches differently from the run before it).
//! So a crash between a handler's commit and privtrak's hearing of it, a
//! retry, or a replay at start never counts a delta twice. The shared suite
//! [`crate::conformance`] checks exactly this for any handler.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::delta::{Baseline, Delta};
use crate::journal::JournalId;
use crate::records::PeerRecord;

/// A batch's identity: stays the same across retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchId {
    pub journal: JournalId,
    /// Journal positions of the first and last delta (inclusive); every
    /// position in between is a delta of the batch.
    pub first: u64,
    pub last: u64,
}

impl fmt::Display for BatchId {
    /// `journal:first-last`, e.g. `9f2c…:1025-2048`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}-{}", self.journal, self.first, self.last)
    }
}

impl std::str::FromStr for BatchId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (journal, range) = s.split_once(':').ok_or(())?;
        let (first, last) = range.split_once('-').ok_or(())?;
        Ok(BatchId {
            journal: journal.parse()?,
            first: first.parse().map_err(|_| ())?,
            last: last.parse().map_err(|_| ())?,
        })
    }
}

/// Deltas in journal order, positions `id.first..=id.last`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub id: BatchId,
    pub deltas: Vec<Delta>,
}

impl Batch {
    /// The part of the batch after position `applied` (what a handler that
    /// has applied up to `applied` still has to do), with its narrowed id;
    /// `None` when it has applied all of it. Borrowed: nothing is copied.
    pub fn after(&self, applied: u64) -> Option<(BatchId, &[Delta])> {
        if applied >= self.id.last {
            return None;
        }
        let from = self.deltas.partition_point(|d| d.seq <= applied);
        let first = self.id.first.max(applied + 1);
        Some((BatchId { first, ..self.id }, &self.deltas[from..]))
    }
}

/// Why a handler could not take a batch. The batch is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(e: impl fmt::Display) -> Self {
        HandlerError(e.to_string())
    }
}

pub type HandlerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send + 'a>>;

/// Receives baselines a handler restores at start.
pub type BaselineSink<'a> = dyn FnMut(PeerRecord) + Send + 'a;

/// A destination for deltas (a database, a file, an event stream).
///
/// Calls never overlap: privtrak awaits each before the next.
pub trait DeltaHandler: Send + Sync + 'static {
    /// The last journal position of `journal` this handler has applied (0:
    /// none). Called at start, before any batch; on an error privtrak starts
    /// from its local snapshot and journal and asks again until it answers,
    /// handing nothing over before. (A handler that must be reachable at
    /// start checks that when it is built.)
    fn applied_through<'a>(&'a self, journal: JournalId) -> HandlerFuture<'a, u64>;

    /// Applies `batch` atomically and durably (see the module documentation
    /// for what "exactly once" asks). `Err` leaves nothing applied.
    fn handle<'a>(&'a self, batch: &'a Batch) -> HandlerFuture<'a, ()>;

    /// Whether this handler stores every peer's baseline (its last delta's
    /// totals) with the deltas, so a start without a local snapshot (a new
    /// machine, a lost disk) restores from it.
    fn keeps_baselines(&self) -> bool {
        false
    }

    /// Streams the stored baselines of `journal`'s peers as of the position
    /// [`applied_through`](Self::applied_through) returned. Only called when
    /// [`keeps_baselines`](Self::keeps_baselines).
    fn load_baselines<'a>(
        &'a self,
        _journal: JournalId,
        _sink: &'a mut BaselineSink<'a>,
    ) -> HandlerFuture<'a, u64> {
        Box::pin(async { Ok(0) })
    }

    /// Releases connections and files. Called once, after the last batch.
    fn close(&self) -> HandlerFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// The baseline a delta leaves behind (what restoring from deltas computes).
pub fn baseline_after(d: &Delta) -> Option<Baseline> {
    (!d.event.closes()).then(|| Baseline {
        uploaded: d.total_uploaded,
        downloaded: d.total_downloaded,
        last_seen: (d.reported_at_ms() / 1000) as u32,
        seeding: d.left == 0,
    })
}
