//! The drain: reads durable journal entries in order, cuts them into batches
//! and hands each to the handler until it is accepted.
//!
//! - A batch is cut when `batch_size` entries are durable, or when the
//!   oldest waiting entry has waited `flush_interval` (at once when
//!   stopping). It never holds a lock an announce needs: it reads the files.
//! - A failed batch is retried unchanged (same id, same deltas), with
//!   backoff from 50 ms to 5 s, before any later entry is handed over: a
//!   batch is never merged with newer deltas, never dropped, never reordered.
//! - An accepted batch is acknowledged: its bytes leave the back-pressure
//!   count and journal segments nobody needs any more are deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Privtrak;
use crate::handler::{Batch, BatchId};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until privtrak stops and everything appended is handed over (or the
/// task is aborted at the shutdown deadline). `applied` is the handler's
/// position, when it said at open.
pub(crate) async fn run(
    p: Arc<Privtrak>,
    applied: Option<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let applied = match applied {
        Some(applied) => applied,
        None => match learn_position(&p, &mut stop).await {
            Some(applied) => applied,
            None => return,
        },
    };
    let mut reader = p.journal.reader(applied + 1);
    let mut deltas = Vec::new();
    loop {
        let next = reader.position();
        let stopping = *stop.borrow();
        if stopping && next > p.journal.last_seq() {
            return;
        }
        if p.journal.durable_seq() < next {
            if p.journal.failed().is_some() {
                // Nothing more will become durable in this process.
                return;
            }
            tokio::select! {
                () = p.journal.wait_beyond(next - 1) => {}
                _ = stop.changed(), if !stopping => {}
            }
            continue;
        }
        // Wait for a whole batch, at most flush_interval.
        let settings = p.settings();
        let deadline = Instant::now() + settings.flush_interval;
        while !*stop.borrow() && p.journal.durable_seq() + 1 - next < settings.batch_size as u64 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let durable = p.journal.durable_seq();
            tokio::select! {
                _ = tokio::time::timeout(left, p.journal.wait_beyond(durable)) => {}
                _ = stop.changed() => {}
            }
        }
        deltas.clear();
        let (n, bytes) = match reader.read(settings.batch_size, &mut deltas) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "privtrak: cannot read the journal; retrying");
                tokio::time::sleep(BACKOFF_MAX).await;
                reader = p.journal.reader(next);
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        let batch = Batch {
            id: BatchId {
                journal: p.journal.id(),
                first: deltas[0].seq,
                last: deltas[n - 1].seq,
            },
            deltas: std::mem::take(&mut deltas),
        };
        hand_over(&p, &batch).await;
        p.acked_through.store(batch.id.last, Ordering::Release);
        p.journal.acknowledge(bytes);
        p.metrics
            .deltas_applied
            .fetch_add(n as u64, Ordering::Relaxed);
        let keep_after = batch
            .id
            .last
            .min(p.snapshot_through.load(Ordering::Acquire));
        if let Err(e) = p.journal.trim_through(keep_after) {
            tracing::warn!(error = %e, "privtrak: cannot delete an old journal segment");
        }
        deltas = batch.deltas;
    }
}

/// Asks the handler what it has applied until it answers (or privtrak
/// stops); counts what it has as acknowledged.
async fn learn_position(
    p: &Privtrak,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<u64> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let error = match p.handler.applied_through(p.journal.id()).await {
            Ok(applied) if applied > p.journal.last_seq() => {
                tracing::error!(
                    applied,
                    last = p.journal.last_seq(),
                    "privtrak: the handler has applied more than this journal holds (the journal was replaced or cut); nothing is handed over until a restart with a new journal"
                );
                return None;
            }
            // A start without the handler merges its baselines first, as of
            // the position it just gave (nothing is handed over before).
            Ok(_) if p.baselines_pending() => match p.merge_handler_baselines().await {
                Ok(()) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "privtrak: the handler answered but its baselines could not be read; retrying");
                    e
                }
            },
            Ok(applied) => {
                tracing::info!(applied, "privtrak: the handler answered; handing over");
                p.metrics.set_failing(None);
                p.acked_through.store(applied, Ordering::Release);
                let already = (applied + 1).saturating_sub(p.first_seq);
                p.journal
                    .acknowledge(already * crate::journal::RECORD_LEN as u64);
                return Some(applied);
            }
            Err(e) => {
                tracing::debug!(error = %e, "privtrak: the handler is still unreachable");
                e
            }
        };
        p.metrics.set_failing(Some(error.to_string()));
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return None,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Calls the handler until it accepts `batch`.
async fn hand_over(p: &Privtrak, batch: &Batch) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = p.handler.handle(batch).await;
        p.metrics.handler.record(started.elapsed());
        match result {
            Ok(()) => {
                p.metrics.batches_accepted.fetch_add(1, Ordering::Relaxed);
                if failures > 0 {
                    p.metrics.set_failing(None);
                    tracing::info!(batch = %batch.id, failures, "privtrak: the handler took the batch");
                }
                return;
            }
            Err(e) => {
                p.metrics.batches_failed.fetch_add(1, Ordering::Relaxed);
                p.metrics.set_failing(Some(e.to_string()));
                failures += 1;
                // Every failure while it starts failing, then one in twenty.
                if failures <= 3 || failures.is_multiple_of(20) {
                    tracing::warn!(batch = %batch.id, failures, error = %e, "privtrak: the handler refused a batch; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
