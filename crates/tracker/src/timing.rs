//! Response-time histograms with chihaya's buckets and labels, shared by the
//! frontends (`chihaya_udp_response_duration_milliseconds`,
//! `chihaya_http_response_duration_milliseconds`): counters only, so recording
//! a duration is two relaxed atomic additions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of chihaya's response-duration buckets in milliseconds:
/// 9.375 · 2^k for k = 0..10 (then +Inf).
pub const BUCKETS_MS: [f64; 10] = [
    9.375, 18.75, 37.5, 75.0, 150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0,
];

/// Which request a duration belongs to (chihaya's `action` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedAction {
    /// UDP only.
    Connect = 0,
    Announce = 1,
    Scrape = 2,
}

/// Histograms of request durations by action, address family and whether
/// the reply was an error: chihaya's `chihaya_udp_response_duration_milliseconds`
/// labels, kept as counters so recording is two atomic adds.
#[derive(Debug, Default)]
pub struct Timings {
    /// `[action][family: 0 v4, 1 v6][error: 0 no, 1 yes][bucket, the last +Inf]`
    buckets: [[[[AtomicU64; 11]; 2]; 2]; 3],
    /// Sums in nanoseconds, same indices.
    sums_ns: [[[AtomicU64; 2]; 2]; 3],
}

impl Timings {
    pub fn record(&self, action: TimedAction, ipv6: bool, error: bool, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let bucket = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        let (a, f, e) = (action as usize, usize::from(ipv6), usize::from(error));
        self.buckets[a][f][e][bucket].fetch_add(1, Ordering::Relaxed);
        self.sums_ns[a][f][e].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Non-cumulative bucket counts and the sum, for one label combination.
    pub fn snapshot(&self, action: TimedAction, ipv6: bool, error: bool) -> ([u64; 11], Duration) {
        let (a, f, e) = (action as usize, usize::from(ipv6), usize::from(error));
        let counts = std::array::from_fn(|i| self.buckets[a][f][e][i].load(Ordering::Relaxed));
        (
            counts,
            Duration::from_nanos(self.sums_ns[a][f][e].load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_fall_in_chihayas_buckets() {
        let t = Timings::default();
        t.record(
            TimedAction::Announce,
            false,
            false,
            Duration::from_millis(1),
        );
        t.record(
            TimedAction::Announce,
            false,
            false,
            Duration::from_millis(10),
        );
        t.record(TimedAction::Announce, false, false, Duration::from_secs(10));
        let (counts, sum) = t.snapshot(TimedAction::Announce, false, false);
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[10], 1);
        assert_eq!(sum, Duration::from_millis(10_011));
        assert_eq!(t.snapshot(TimedAction::Scrape, true, true).0, [0; 11]);
    }
}
