//! What each worker counts. Every worker has its own counters (no cache line
//! is shared between workers on the hot path); readers add them up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracker::stats::{RequestMetrics, TimedAction};

/// Counters of one worker. Relaxed atomics: each is only ever added to by
/// its worker and read as a snapshot.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub packets_received: AtomicU64,
    /// Shorter than a header, a bad connect magic, truncated by the buffer,
    /// or an unverified error reply that would be larger than its request.
    pub packets_dropped: AtomicU64,
    pub bad_connection_ids: AtomicU64,
    pub recv_errors: AtomicU64,
    pub send_errors: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Answered requests by action, family and error; durations when
    /// `enable_request_timing` is on.
    pub requests: RequestMetrics,
}

/// The workers' counters, kept for the life of the process: a frontend
/// restarted by a reload takes its workers' counters back, so exported
/// counters never go backwards.
#[derive(Debug, Default)]
pub struct UdpMetrics {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
}

impl UdpMetrics {
    /// The counters of worker `i`, created on first use.
    pub(crate) fn worker(&self, i: usize) -> Arc<WorkerStats> {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        while workers.len() <= i {
            workers.push(Arc::default());
        }
        Arc::clone(&workers[i])
    }

    /// Every worker's counters so far.
    pub fn workers(&self) -> Vec<Arc<WorkerStats>> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counters summed over the workers.
    pub fn totals(&self) -> UdpStats {
        UdpStats::sum(self.workers().iter().map(|w| &**w))
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
    /// Requests answered with an error packet.
    pub errors_sent: u64,
    pub recv_errors: u64,
    pub send_errors: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl UdpStats {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Self {
        let mut s = UdpStats::default();
        for w in workers {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            s.packets_received += get(&w.packets_received);
            s.packets_dropped += get(&w.packets_dropped);
            s.connects += w.requests.total(TimedAction::Connect);
            s.announces += w.requests.total(TimedAction::Announce);
            s.scrapes += w.requests.total(TimedAction::Scrape);
            s.bad_connection_ids += get(&w.bad_connection_ids);
            s.errors_sent += TimedAction::ALL
                .iter()
                .flat_map(|&a| [false, true].map(|f| w.requests.count(a, f, true)))
                .sum::<u64>();
            s.recv_errors += get(&w.recv_errors);
            s.send_errors += get(&w.send_errors);
            s.bytes_received += get(&w.bytes_received);
            s.bytes_sent += get(&w.bytes_sent);
        }
        s
    }
}
