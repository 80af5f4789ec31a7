//! What each worker counts. Every worker has its own counters (no cache line
//! is shared between workers on the hot path); readers add them up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one worker. Relaxed atomics: each is only ever added to by
/// its worker and read as a snapshot.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub packets_received: AtomicU64,
    /// Shorter than a header, a bad connect magic, truncated by the buffer,
    /// or an unverified error reply that would be larger than its request.
    pub packets_dropped: AtomicU64,
    pub connects: AtomicU64,
    pub announces: AtomicU64,
    pub scrapes: AtomicU64,
    pub bad_connection_ids: AtomicU64,
    /// Error replies sent (bad input, hook rejections, store failures).
    pub errors_sent: AtomicU64,
    pub recv_errors: AtomicU64,
    pub send_errors: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Request durations, when `enable_request_timing` is on.
    pub timing: Timings,
}

#[cfg(test)]
impl WorkerStats {
    pub(crate) fn snapshot_announces(&self) -> u64 {
        self.announces.load(Ordering::Relaxed)
    }
}

/// A snapshot of counters, summed over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub packets_received: u64,
    pub packets_dropped: u64,
    pub connects: u64,
    pub announces: u64,
    pub scrapes: u64,
    pub bad_connection_ids: u64,
    pub errors_sent: u64,
    pub recv_errors: u64,
    pub send_errors: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl UdpStats {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Self {
        let mut s = UdpStats::default();
        for w in workers {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            s.packets_received += get(&w.packets_received);
            s.packets_dropped += get(&w.packets_dropped);
            s.connects += get(&w.connects);
            s.announces += get(&w.announces);
            s.scrapes += get(&w.scrapes);
            s.bad_connection_ids += get(&w.bad_connection_ids);
            s.errors_sent += get(&w.errors_sent);
            s.recv_errors += get(&w.recv_errors);
            s.send_errors += get(&w.send_errors);
            s.bytes_received += get(&w.bytes_received);
            s.bytes_sent += get(&w.bytes_sent);
        }
        s
    }
}

/// Upper bounds of chihaya's response-duration buckets in milliseconds:
/// 9.375 · 2^k for k = 0..10 (then +Inf).
pub const BUCKETS_MS: [f64; 10] = [
    9.375, 18.75, 37.5, 75.0, 150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0,
];

/// Which request a duration belongs to (chihaya's `action` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedAction {
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
        bump(&self.buckets[a][f][e][bucket]);
        add(&self.sums_ns[a][f][e], took.as_nanos() as u64);
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
