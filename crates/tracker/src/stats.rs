//! Counters and histograms the frontends and stores fill on the hot path and
//! the metrics endpoint reads: relaxed atomics in fixed arrays, so recording
//! is an addition or two, with no lock and no allocation.
//!
//! Label sets are closed (action × address family × error), which keeps every
//! series in a fixed slot. chihaya labels its response-duration histograms with
//! the error text; karuta's `error` label is `""` on success and `"error"`
//! otherwise, so the number of series stays bounded (the text is in the logs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::StoreStats;

/// Upper bounds of chihaya's duration buckets in milliseconds: 9.375 · 2^k for
/// k = 0..10; a last bucket takes the rest (+Inf).
pub const BUCKETS_MS: [f64; 10] = [
    9.375, 18.75, 37.5, 75.0, 150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0,
];

/// A histogram of durations in chihaya's buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is +Inf.
    buckets: [AtomicU64; 11],
    sum_ns: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket counts, the last one +Inf.
    pub buckets: [u64; 11],
    pub sum: Duration,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let bucket = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
        }
    }
}

/// A store's totals as its background work last counted them, so
/// [`PeerStore::stats`](crate::PeerStore::stats) is three relaxed loads: the
/// memory store publishes what it summed over its shards, the Redis store what
/// it read from its `stats` hash.
#[derive(Debug, Default)]
pub struct StoreTotals {
    swarms: AtomicU64,
    seeders: AtomicU64,
    leechers: AtomicU64,
}

impl StoreTotals {
    pub fn publish(&self, totals: StoreStats) {
        self.swarms.store(totals.swarms, Ordering::Relaxed);
        self.seeders.store(totals.seeders, Ordering::Relaxed);
        self.leechers.store(totals.leechers, Ordering::Relaxed);
    }

    /// The last published totals (zero before the first).
    pub fn read(&self) -> StoreStats {
        StoreStats {
            swarms: self.swarms.load(Ordering::Relaxed),
            seeders: self.seeders.load(Ordering::Relaxed),
            leechers: self.leechers.load(Ordering::Relaxed),
        }
    }
}

/// Which request (chihaya's `action` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedAction {
    /// UDP only.
    Connect = 0,
    Announce = 1,
    Scrape = 2,
}

impl TimedAction {
    pub const ALL: [TimedAction; 3] = [
        TimedAction::Connect,
        TimedAction::Announce,
        TimedAction::Scrape,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimedAction::Connect => "connect",
            TimedAction::Announce => "announce",
            TimedAction::Scrape => "scrape",
        }
    }
}

/// Requests answered, by action, address family and whether the answer was
/// an error; with their durations when timing is on.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    /// `[action][ipv6][error]`
    counts: [[[AtomicU64; 2]; 2]; 3],
    durations: [[[Histogram; 2]; 2]; 3],
}

impl RequestMetrics {
    /// Counts one answered request; `took` is `Some` when timing is on.
    pub fn record(&self, action: TimedAction, ipv6: bool, error: bool, took: Option<Duration>) {
        let (a, f, e) = (action as usize, usize::from(ipv6), usize::from(error));
        self.counts[a][f][e].fetch_add(1, Ordering::Relaxed);
        if let Some(took) = took {
            self.durations[a][f][e].record(took);
        }
    }

    pub fn count(&self, action: TimedAction, ipv6: bool, error: bool) -> u64 {
        self.counts[action as usize][usize::from(ipv6)][usize::from(error)].load(Ordering::Relaxed)
    }

    /// All requests of an action, both families, errors included.
    pub fn total(&self, action: TimedAction) -> u64 {
        [false, true]
            .into_iter()
            .flat_map(|f| [false, true].map(|e| self.count(action, f, e)))
            .sum()
    }

    /// Adds another set's figures for one label combination (to sum workers).
    pub fn add(
        &self,
        action: TimedAction,
        ipv6: bool,
        error: bool,
        count: u64,
        durations: &HistogramSnapshot,
    ) {
        let (a, f, e) = (action as usize, usize::from(ipv6), usize::from(error));
        self.counts[a][f][e].fetch_add(count, Ordering::Relaxed);
        let h = &self.durations[a][f][e];
        for (slot, n) in h.buckets.iter().zip(durations.buckets) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
        h.sum_ns
            .fetch_add(durations.sum.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn durations(&self, action: TimedAction, ipv6: bool, error: bool) -> HistogramSnapshot {
        self.durations[action as usize][usize::from(ipv6)][usize::from(error)].snapshot()
    }
}

/// How many of a frontend's workers (threads, accept loops) are running:
/// each holds a [`LivenessGuard`] for as long as it runs, so one that exits
/// or panics is no longer counted. `/health` compares it with the expected
/// number.
#[derive(Debug, Default)]
pub struct Liveness {
    running: std::sync::atomic::AtomicUsize,
}

impl Liveness {
    /// Counts the caller as running until the guard is dropped.
    pub fn guard(self: &std::sync::Arc<Self>) -> LivenessGuard {
        self.running.fetch_add(1, Ordering::Relaxed);
        LivenessGuard(std::sync::Arc::clone(self))
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

/// See [`Liveness`].
#[derive(Debug)]
pub struct LivenessGuard(std::sync::Arc<Liveness>);

impl Drop for LivenessGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_chihayas_buckets() {
        let h = Histogram::default();
        h.record(Duration::from_millis(1));
        h.record(Duration::from_millis(10));
        h.record(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[10], 1);
        assert_eq!(s.count(), 3);
        assert_eq!(s.sum, Duration::from_millis(10_011));
    }

    #[test]
    fn store_totals_read_what_was_published() {
        let t = StoreTotals::default();
        assert_eq!(t.read(), StoreStats::default());
        let published = StoreStats {
            swarms: 3,
            seeders: 5,
            leechers: 8,
        };
        t.publish(published);
        assert_eq!(t.read(), published);
    }

    #[test]
    fn liveness_counts_guards() {
        let l = std::sync::Arc::new(Liveness::default());
        let a = l.guard();
        let b = l.guard();
        assert_eq!(l.running(), 2);
        drop(a);
        assert_eq!(l.running(), 1);
        let t = std::thread::spawn(move || {
            let _b = b;
            panic!("a worker dies");
        });
        assert!(t.join().is_err());
        assert_eq!(l.running(), 0, "a panicking worker is no longer counted");
    }

    #[test]
    fn requests_by_label() {
        let m = RequestMetrics::default();
        m.record(TimedAction::Announce, false, false, None);
        m.record(
            TimedAction::Announce,
            true,
            true,
            Some(Duration::from_millis(2)),
        );
        assert_eq!(m.count(TimedAction::Announce, false, false), 1);
        assert_eq!(m.count(TimedAction::Announce, true, true), 1);
        assert_eq!(m.total(TimedAction::Announce), 2);
        assert_eq!(m.total(TimedAction::Scrape), 0);
        assert_eq!(
            m.durations(TimedAction::Announce, false, false).count(),
            0,
            "no timing asked"
        );
        assert_eq!(m.durations(TimedAction::Announce, true, true).count(), 1);
    }
}
