//! privtrak's counters: privtrak's own metric names
//! (`chihaya_privtrak_gc_duration_milliseconds`,
//! `chihaya_privtrak_users_count`) and karuta's, read by the metrics endpoint
//! through [`Metrics::samples`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracker::stats::Histogram;
use tracker::telemetry::MetricSample;

#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) gc: Histogram,
    pub(crate) handler: Histogram,
    pub(crate) batches_accepted: AtomicU64,
    pub(crate) batches_failed: AtomicU64,
    pub(crate) deltas_applied: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) busy: AtomicU64,
    /// Recomputed every `prometheus_reporting_interval`.
    records: AtomicU64,
    users: AtomicU64,
    memory: AtomicU64,
    /// The handler's last error while it refuses batches; `None` once it
    /// takes them again.
    pub(crate) failing: Mutex<Option<String>>,
}

impl Metrics {
    pub(crate) fn set_counts(&self, records: usize, users: usize, memory: usize) {
        self.records.store(records as u64, Ordering::Relaxed);
        self.users.store(users as u64, Ordering::Relaxed);
        self.memory.store(memory as u64, Ordering::Relaxed);
    }

    /// Why the handler refuses batches, while it does.
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_failing(&self, why: Option<String>) {
        *self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Announces refused as busy so far.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Batches the handler accepted, and calls that failed.
    pub fn batches(&self) -> (u64, u64) {
        (
            self.batches_accepted.load(Ordering::Relaxed),
            self.batches_failed.load(Ordering::Relaxed),
        )
    }

    /// Everything, for `/metrics`; `pending` and `journal_bytes` are read by
    /// the caller from the journal.
    pub fn samples(&self, pending: u64, journal_bytes: u64, syncs: u64) -> Vec<MetricSample> {
        let c = |n: &AtomicU64| n.load(Ordering::Relaxed);
        vec![
            MetricSample::histogram(
                "chihaya_privtrak_gc_duration_milliseconds",
                "The time it takes to purge stale peer records",
                self.gc.snapshot(),
            ),
            MetricSample::gauge(
                "chihaya_privtrak_users_count",
                "Users with at least one peer record",
                c(&self.users) as f64,
            ),
            MetricSample::gauge(
                "karuta_privtrak_records",
                "Peer records held (one per user, torrent and peer id)",
                c(&self.records) as f64,
            ),
            MetricSample::gauge(
                "karuta_privtrak_memory_bytes",
                "Heap bytes of the peer records (deltas waiting for the handler are in the journal, not in memory)",
                c(&self.memory) as f64,
            ),
            MetricSample::gauge(
                "karuta_privtrak_deltas_pending",
                "Deltas in the journal the handler has not applied yet",
                pending as f64,
            ),
            MetricSample::gauge(
                "karuta_privtrak_journal_bytes",
                "Journal bytes the handler has not applied yet (back-pressure starts at journal_max_bytes)",
                journal_bytes as f64,
            ),
            MetricSample::counter(
                "karuta_privtrak_journal_syncs_total",
                "Group syncs of the journal",
                syncs,
            ),
            MetricSample::counter(
                "karuta_privtrak_batches_total",
                "Batches the handler accepted",
                c(&self.batches_accepted),
            )
            .label("result", "accepted"),
            MetricSample::counter(
                "karuta_privtrak_batches_total",
                "Batches the handler accepted",
                c(&self.batches_failed),
            )
            .label("result", "failed"),
            MetricSample::counter(
                "karuta_privtrak_deltas_applied_total",
                "Deltas the handler applied",
                c(&self.deltas_applied),
            ),
            MetricSample::counter(
                "karuta_privtrak_expired_total",
                "Peer records expired by garbage collection",
                c(&self.expired),
            ),
            MetricSample::counter(
                "karuta_privtrak_busy_total",
                "Announces refused because the journal was full",
                c(&self.busy),
            ),
            MetricSample::histogram(
                "karuta_privtrak_handler_duration_milliseconds",
                "How long the handler takes per batch",
                self.handler.snapshot(),
            ),
        ]
    }
}
