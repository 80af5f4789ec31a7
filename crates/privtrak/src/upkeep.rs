//! Background upkeep: expiring records of peers that went away (each one an
//! `expired` delta, so the handler knows), counting users and records for
//! the metrics, and snapshots of the baselines so restarts restore quickly
//! and the journal can be trimmed.
//!
//! One task owns all three, each on its own timer; it ends when privtrak
//! stops (the snapshot at stop is [`Privtrak::shutdown`]'s).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tokio::time::{Instant as TokioInstant, sleep_until};

use crate::Privtrak;
use crate::delta::{Delta, DeltaEvent};
use crate::journal::JournalError;
use crate::journal::snapshot::SnapshotWriter;
use crate::privtrak::unix_secs;

pub(crate) async fn run(p: Arc<Privtrak>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let start = TokioInstant::now();
    let mut next_gc = start + p.settings().gc_interval;
    let mut next_report = start + p.settings().reporting_interval;
    let mut next_snapshot = start + p.settings().snapshot_interval;
    loop {
        let soonest = next_gc.min(next_report).min(next_snapshot);
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = sleep_until(soonest) => {}
            _ = stop.changed() => return,
        }
        let now = TokioInstant::now();
        let settings = p.settings();
        if now >= next_gc {
            collect_garbage(&p);
            next_gc = now + settings.gc_interval;
        }
        if now >= next_report {
            let (records, users, bytes) = p.records.stats();
            p.metrics.set_counts(records, users, bytes);
            next_report = now + settings.reporting_interval;
        }
        // Not while the handler's baselines are still to be merged in: a
        // start from such a snapshot would never merge them.
        if now >= next_snapshot && !p.baselines_pending() {
            match snapshot(&p).await {
                Ok(count) => tracing::debug!(records = count, "privtrak snapshot written"),
                Err(e) => {
                    tracing::error!(error = %e, "privtrak: snapshot failed; the journal is kept until one succeeds")
                }
            }
            next_snapshot = TokioInstant::now() + settings.snapshot_interval;
        }
    }
}

/// Removes records not seen for the peer lifetime and journals an `expired`
/// delta for each. Records restored at start count as seen at the start.
pub(crate) fn collect_garbage(p: &Privtrak) -> usize {
    let started = Instant::now();
    let now = SystemTime::now();
    let now_s = unix_secs(now);
    let lifetime = p.settings().peer_lifetime;
    let mut failed = false;
    let removed = p.records.remove_where(
        |b| now_s.saturating_sub(b.last_seen.max(p.started_at)) > lifetime,
        |rec| {
            let mut delta = Delta {
                seq: 0,
                user: rec.user,
                info_hash: rec.info_hash,
                peer_id: rec.peer_id,
                addr: None,
                event: DeltaEvent::Expired,
                uploaded: 0,
                downloaded: 0,
                left: if rec.baseline.seeding { 0 } else { 1 },
                seed_seconds: 0,
                leech_seconds: 0,
                reported_at: now,
                total_uploaded: rec.baseline.uploaded,
                total_downloaded: rec.baseline.downloaded,
                // No bytes: nothing to credit, the row keeps its user.
                site_user: None,
                upload_factor: 1.0,
                download_factor: 1.0,
                baseline_unknown: false,
            };
            // A failed journal refuses everything; the record comes back
            // from the journal at the next start and expires then.
            failed |= p.journal.append(&mut delta).is_err();
        },
    );
    if failed {
        tracing::warn!("privtrak: expiries could not be journaled (the journal failed)");
    }
    p.metrics
        .expired
        .fetch_add(removed as u64, Ordering::Relaxed);
    p.metrics.gc.record(started.elapsed());
    if removed > 0 {
        tracing::debug!(removed, "privtrak expired stale peer records");
    }
    removed
}

/// Writes every baseline to a new snapshot and, once every entry it reflects
/// is durable, puts it in place; the journal then only needs what follows.
pub(crate) async fn snapshot(p: &Privtrak) -> Result<u64, JournalError> {
    // Every entry up to `through` changed the records before this point (an
    // entry is appended under its record's lock), so the copy reflects it.
    let through = p.journal.last_seq();
    let dir = p.journal.dir().to_owned();
    let mut writer = SnapshotWriter::create(&dir, p.journal.id(), through)?;
    let mut result = Ok(());
    p.records.for_each(|r| {
        if result.is_ok() {
            result = writer.record(r);
        }
    });
    result?;
    // The copy may reflect entries after `through` that are not on disk yet;
    // a crash must not leave a snapshot ahead of the journal.
    p.journal.durable(p.journal.last_seq()).await?;
    let count = writer.finish(&dir)?;
    p.snapshot_through.store(through, Ordering::Release);
    let acked = p.acked_through.load(Ordering::Acquire);
    p.journal.trim_through(through.min(acked))?;
    Ok(count)
}
