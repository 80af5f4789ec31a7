//! What each worker counts. Every worker has its own counters (no cache line
//! is shared between workers on the hot path); readers add them up.

use std::sync::atomic::{AtomicU64, Ordering};

use tracker::timing::Timings;

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
