//! karuta's UDP frontend: BEP 15 with BEP 41 URL data, over IPv4 and IPv6.
//!
//! - One socket per worker thread, all bound to the same address with
//!   `SO_REUSEPORT`, so the kernel spreads clients over the workers; each
//!   worker receives and sends in batches (`recvmmsg` / `sendmmsg`) and owns
//!   all its buffers ([`worker`]).
//! - Connection ids are signed, not stored ([`ConnectionIdSigner`]): any
//!   instance with the same `private_key` accepts them, from any port of the
//!   address they were issued to.
//! - BEP 41 URL data reaches hooks as `AnnounceRequest::params`, exactly like
//!   an HTTP request's path and query, so passkeys work over UDP.
//! - Bad input is dropped when it cannot be a tracker request (shorter than a
//!   header, a wrong connect magic) and answered with a BEP 15 error otherwise,
//!   except that a source without a valid connection id never gets a reply
//!   larger than its request.

mod batch;
pub mod client;
mod config;
mod connection_id;
mod in_flight;
mod stats;
mod worker;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tracker::SharedLogic;
use tracker::frontend::bind_udp;

pub use config::{MAX_WORKERS, UdpConfig};
pub use connection_id::{ConnectionIdError, ConnectionIdSigner};
pub use stats::{UdpMetrics, UdpStats, WorkerStats};
pub use tracker::frontend::StartError;

use worker::{Settings, Worker};

/// Socket buffers asked for (the kernel may grant less: `net.core.rmem_max`).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// The key used when `private_key` is empty: random, the same for the whole
/// process (so a reload does not invalidate the ids clients hold).
fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        key
    })
}

/// Whether two socket addresses are the same host (IPv4-mapped or not).
pub(crate) fn same_host(a: SocketAddr, b: SocketAddr) -> bool {
    bittorrent::canonical_ip(a.ip()) == bittorrent::canonical_ip(b.ip())
}

/// Runs worker `i` on the current thread. A panic (a bug in a hook or a
/// store, say) is logged when it happens, with its message, and ends only this
/// worker: the others keep serving, and `/health` counts the missing one (its
/// liveness guard is dropped with the thread).
fn run_worker(i: usize, worker: impl FnOnce()) {
    // Unwind safety: nothing of the worker is used after the panic, and the
    // state it shares (the logic, the store, counters) is left exactly as an
    // uncaught panic would leave it.
    let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(worker)) else {
        return;
    };
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    tracing::error!(worker = i, panic = message, "a udp worker panicked");
}

/// A running UDP frontend.
pub struct UdpFrontend {
    local_addr: SocketAddr,
    liveness: Arc<tracker::stats::Liveness>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
}

impl UdpFrontend {
    /// Binds the sockets and starts the workers; `Ok(None)` when `addr` is
    /// empty (the frontend is disabled).
    /// Worker `i` counts into `metrics`' worker `i`, which outlives this
    /// frontend.
    pub fn start(
        config: &UdpConfig,
        logic: Arc<SharedLogic>,
        metrics: Arc<UdpMetrics>,
    ) -> Result<Option<Self>, StartError> {
        config.validate()?;
        let Some(addr) = config.listen_addr()? else {
            return Ok(None);
        };
        let key: &[u8] = if config.private_key.is_empty() {
            tracing::warn!(
                "udp.private_key is empty: using a random key; other instances will not accept this one's connection ids"
            );
            process_key()
        } else {
            config.private_key.as_bytes()
        };
        let settings = Arc::new(Settings {
            signer: ConnectionIdSigner::new(
                key,
                config.connection_id_lifetime.0,
                config.max_clock_skew.0,
            ),
            limits: config.limits(),
            allow_ip_spoofing: config.allow_ip_spoofing,
            request_timing: config.enable_request_timing,
        });
        // The first socket fixes the port (which may have been 0); the others
        // join it.
        let workers = config.worker_count();
        let (first, local_addr) = bind_udp(addr, SOCKET_BUFFER_BYTES)?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind_udp(local_addr, SOCKET_BUFFER_BYTES)?.0);
        }
        let (stop, stopped) = watch::channel(false);
        let liveness = Arc::new(tracker::stats::Liveness::default());
        let mut threads = Vec::with_capacity(workers);
        let mut stats = Vec::with_capacity(workers);
        for (i, socket) in sockets.into_iter().enumerate() {
            let worker_stats = metrics.worker(i);
            stats.push(Arc::clone(&worker_stats));
            let (settings, logic, stopped) =
                (Arc::clone(&settings), Arc::clone(&logic), stopped.clone());
            // Counted as running from before the thread starts until it ends.
            let alive = liveness.guard();
            // The worker is built on its thread: its batch buffers hold raw
            // pointers and never leave it.
            let thread = std::thread::Builder::new()
                .name(format!("udp-worker-{i}"))
                .spawn(move || {
                    let _alive = alive;
                    run_worker(i, || {
                        Worker::new(settings, logic, worker_stats).run(socket, stopped)
                    })
                })
                .map_err(|source| StartError::Spawn { worker: i, source })?;
            threads.push(thread);
        }
        tracing::info!(addr = %local_addr, workers, "udp frontend listening");
        Ok(Some(UdpFrontend {
            local_addr,
            liveness,
            stop,
            threads,
            stats,
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Worker threads started, and still running.
    pub fn workers(&self) -> (usize, usize) {
        (self.threads.len(), self.liveness.running())
    }

    /// The running-workers count, to watch after this frontend is borrowed away.
    pub fn liveness(&self) -> Arc<tracker::stats::Liveness> {
        Arc::clone(&self.liveness)
    }

    /// Counters summed over the workers.
    pub fn stats(&self) -> UdpStats {
        UdpStats::sum(self.stats.iter().map(|s| &**s))
    }

    /// Each worker's counters and timings.
    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Stops the workers after their current batch and closes the sockets.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(&mut self.threads);
        // A worker's panic was caught and logged on its thread when it
        // happened, so joining cannot fail.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        tracing::info!(addr = %self.local_addr, "udp frontend stopped");
    }
}

impl Drop for UdpFrontend {
    /// A frontend dropped without [`stop`](Self::stop) still stops its workers.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
