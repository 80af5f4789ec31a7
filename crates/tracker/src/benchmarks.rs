//! The storage benchmarks: every [`PeerStore`] runs chihaya's with one call.
//!
//! ```ignore
//! // benches/store.rs of a store crate, with `harness = false`:
//! fn store(c: &mut criterion::Criterion) {
//!     tracker::benchmarks::peer_store_benchmarks(c, "memory", &|| {
//!         std::sync::Arc::new(MyStore::new(..)) as std::sync::Arc<dyn tracker::PeerStore>
//!     });
//! }
//! criterion::criterion_group! {
//!     name = benches;
//!     config = tracker::benchmarks::criterion_config();
//!     targets = store
//! }
//! criterion::criterion_main!(benches);
//! ```
//!
//! The benchmarks are chihaya's `storage_bench.go`, under its names, on the
//! same data: 1000 info hashes and 1000 IPv4 peers, generated from a fixed
//! seed. `Put` puts one seeder into one swarm again and again; a `1k` suffix
//! cycles through the 1000 peers, `1kInfohash` through the 1000 info hashes
//! (both together pair info hash `i` with peer `3i`). `DeleteNonexist` and
//! `GradNonexist` work on peers that are not in the swarm (the error is
//! expected and ignored); `PutDelete` puts a seeder then deletes it;
//! `PutGradDelete` puts a leecher, graduates it and deletes the seeder. The
//! read benchmarks (`AnnounceLeecher`, `AnnounceSeeder`: `announce_peers` with
//! numwant 50; `ScrapeSwarm`) run on 1000 swarms of 500 seeders and 500
//! leechers each, and so does karuta's one-step announce, `Announce1kInfohash`
//! (a regular announce of a leecher already in the swarm, numwant 50: karuta's
//! hot path). `Nop` does nothing, on a store holding 1000 swarms of 10 peers:
//! the cost of the harness itself.
//!
//! chihaya runs most of its benchmarks in parallel (`b.RunParallel`); these
//! run on one thread, so they measure the latency of one operation, not a
//! store's throughput under contention.
//!
//! Each write benchmark gets a fresh store from the factory and stops it
//! afterwards; the read benchmarks share one prefilled store (none of them
//! changes a swarm's membership). A store is only made when a benchmark that
//! needs it is selected, so a filter (`cargo bench -- Put`) skips the prefill.
//! The factory must return an empty store.
//!
//! Futures are polled once with a no-op waker: a store that answers with a
//! ready future (the memory store) is measured without any executor overhead.
//! A future that is still pending is finished on a current-thread tokio
//! runtime (I/O and timers enabled) that the factory and every poll run inside,
//! so a store that talks to a server may spawn its connection tasks there.

use std::cell::OnceCell;
use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bittorrent::{AddressFamily, AnnounceRequest, AnnounceResponse, Event, InfoHash, Peer, PeerId};
use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

use crate::PeerStore;

pub use criterion;

/// Info hashes and peers of the benchmark data (chihaya's sizes).
const N: usize = 1000;

/// Peers wanted by the announce benchmarks.
const NUM_WANT: u32 = 50;

/// The Criterion settings the store benchmarks are tuned for: short enough
/// that the whole set finishes in about a minute and a half on a small machine.
/// Command-line options (`--quick`, `--measurement-time`, ...) still override
/// them when the group is built with `criterion_group!`'s `config`.
pub fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// The data every benchmark works on.
struct BenchData {
    infohashes: Vec<InfoHash>,
    peers: Vec<Peer>,
}

/// splitmix64: a fixed, dependency-free stream of pseudo-random bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
    }
}

impl BenchData {
    fn generate() -> Self {
        let mut rng = Rng(0);
        let infohashes = (0..N)
            .map(|_| {
                let mut b = [0u8; 20];
                rng.fill(&mut b);
                InfoHash(b)
            })
            .collect();
        let mut rng = Rng(1);
        let mut peers: Vec<Peer> = Vec::with_capacity(N);
        while peers.len() < N {
            let mut ip = [0u8; 4];
            rng.fill(&mut ip);
            let mut id = [0u8; 20];
            rng.fill(&mut id);
            let port = rng.next() as u16;
            let peer = Peer::new(PeerId(id), IpAddr::V4(Ipv4Addr::from(ip)), port);
            // Distinct addresses, so a prefilled swarm really holds 1000 peers.
            if port != 0 && !peers.iter().any(|p| p.addr() == peer.addr()) {
                peers.push(peer);
            }
        }
        BenchData { infohashes, peers }
    }
}

/// Drives store futures: a direct poll, then a runtime for what is pending.
struct Exec {
    rt: tokio::runtime::Runtime,
}

impl Exec {
    fn new() -> Self {
        Exec {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for the store benchmarks"),
        }
    }

    #[inline(always)]
    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => self.rt.block_on(fut),
        }
    }
}

/// One store per benchmark, made the first time the benchmark runs.
struct Fresh<'a> {
    make: &'a dyn Fn() -> Arc<dyn PeerStore>,
    exec: &'a Exec,
    store: OnceCell<Arc<dyn PeerStore>>,
}

impl<'a> Fresh<'a> {
    fn new(make: &'a dyn Fn() -> Arc<dyn PeerStore>, exec: &'a Exec) -> Self {
        Fresh {
            make,
            exec,
            store: OnceCell::new(),
        }
    }

    fn get_or_init(&self, fill: impl FnOnce(&dyn PeerStore)) -> &dyn PeerStore {
        &**self.store.get_or_init(|| {
            let store = (self.make)();
            fill(&*store);
            store
        })
    }
}

impl Drop for Fresh<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            self.exec
                .block_on(store.stop())
                .expect("stopping the benchmarked store");
        }
    }
}

/// Puts `per_swarm` peers into each of the 1000 swarms: the first half as
/// leechers, the rest as seeders (chihaya's `putPeers`).
fn put_peers(store: &dyn PeerStore, exec: &Exec, bd: &BenchData, per_swarm: usize) {
    for ih in &bd.infohashes {
        for (j, peer) in bd.peers[..per_swarm].iter().enumerate() {
            let put = if j < per_swarm / 2 {
                store.put_leecher(*ih, *peer)
            } else {
                store.put_seeder(*ih, *peer)
            };
            exec.block_on(put)
                .expect("prefilling the benchmarked store");
        }
    }
}

/// Benchmarks `op(i, store)` for i = 0, 1, 2, ... on a fresh store.
fn write_bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    make: &dyn Fn() -> Arc<dyn PeerStore>,
    exec: &Exec,
    mut op: impl FnMut(usize, &dyn PeerStore),
) {
    let fresh = Fresh::new(make, exec);
    let mut i = 0usize;
    group.bench_function(id, |b| {
        let store = fresh.get_or_init(|_| {});
        b.iter(|| {
            op(i, store);
            i = i.wrapping_add(1);
        })
    });
}

/// Benchmarks `op(i, store)` on the shared store of 1000 full swarms.
fn read_bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    full: &Fresh<'_>,
    bd: &BenchData,
    mut op: impl FnMut(usize, &dyn PeerStore),
) {
    let mut i = 0usize;
    group.bench_function(id, |b| {
        let store = full.get_or_init(|s| put_peers(s, full.exec, bd, N));
        b.iter(|| {
            op(i, store);
            i = i.wrapping_add(1);
        })
    });
}

/// Runs chihaya's storage benchmarks, plus karuta's one-step announce, for the
/// store `make` builds, as the Criterion group `name` (benchmark ids are
/// `name/Put`, `name/AnnounceLeecher`, ...).
pub fn peer_store_benchmarks(c: &mut Criterion, name: &str, make: &dyn Fn() -> Arc<dyn PeerStore>) {
    let exec = Exec::new();
    let _runtime = exec.rt.enter();
    let bd = BenchData::generate();
    let (ihs, peers) = (&bd.infohashes, &bd.peers);
    let ex = &exec;
    let mut group = c.benchmark_group(name);

    // The harness alone.
    {
        let fresh = Fresh::new(make, ex);
        group.bench_function("Nop", |b| {
            fresh.get_or_init(|s| put_peers(s, ex, &bd, 10));
            b.iter(|| black_box(()))
        });
    }

    // Put: the same seeder again and again, or cycling peers and info hashes.
    type Pick = fn(usize) -> (usize, usize);
    const SPREADS: [(&str, Pick); 4] = [
        ("", |_| (0, 0)),
        ("1k", |i| (0, i % N)),
        ("1kInfohash", |i| (i % N, 0)),
        ("1kInfohash1k", |i| (i % N, (i * 3) % N)),
    ];
    type Write = fn(&Exec, &dyn PeerStore, InfoHash, Peer);
    let writes: [(&str, Write); 5] = [
        ("Put", |ex, s, h, p| {
            ex.block_on(s.put_seeder(h, p)).expect("put_seeder");
        }),
        ("DeleteNonexist", |ex, s, h, p| {
            let _ = black_box(ex.block_on(s.delete_seeder(h, p)));
        }),
        ("PutDelete", |ex, s, h, p| {
            ex.block_on(s.put_seeder(h, p)).expect("put_seeder");
            ex.block_on(s.delete_seeder(h, p)).expect("delete_seeder");
        }),
        ("GradNonexist", |ex, s, h, p| {
            let _ = black_box(ex.block_on(s.graduate_leecher(h, p)));
        }),
        ("PutGradDelete", |ex, s, h, p| {
            ex.block_on(s.put_leecher(h, p)).expect("put_leecher");
            ex.block_on(s.graduate_leecher(h, p))
                .expect("graduate_leecher");
            ex.block_on(s.delete_seeder(h, p)).expect("delete_seeder");
        }),
    ];
    for (name, write) in writes {
        for (suffix, pick) in SPREADS {
            write_bench(&mut group, &format!("{name}{suffix}"), make, ex, |i, s| {
                let (h, p) = pick(i);
                write(ex, s, ihs[h], peers[p]);
            });
        }
    }

    // Reads on 1000 swarms of 500 seeders and 500 leechers.
    let full = Fresh::new(make, ex);
    let mut resp = AnnounceResponse::default();
    for (id, seeder, spread) in [
        ("AnnounceLeecher", false, false),
        ("AnnounceLeecher1kInfohash", false, true),
        ("AnnounceSeeder", true, false),
        ("AnnounceSeeder1kInfohash", true, true),
    ] {
        read_bench(&mut group, id, &full, &bd, |i, s| {
            let h = if spread { i % N } else { 0 };
            resp.clear();
            ex.block_on(s.announce_peers(ihs[h], seeder, NUM_WANT, peers[0], &mut resp))
                .expect("announce_peers");
            black_box(&resp);
        });
    }
    for (id, spread) in [("ScrapeSwarm", false), ("ScrapeSwarm1kInfohash", true)] {
        read_bench(&mut group, id, &full, &bd, |i, s| {
            let h = if spread { i % N } else { 0 };
            black_box(
                ex.block_on(s.scrape(ihs[h], AddressFamily::V4))
                    .expect("scrape"),
            );
        });
    }

    // karuta's hot path: read and write in one step. peers[0] is a leecher of
    // every swarm, so the announce refreshes it and the swarms stay as they are.
    let mut req = AnnounceRequest {
        peer: peers[0],
        event: Event::None,
        num_want: NUM_WANT,
        num_want_provided: true,
        compact: true,
        left: 1,
        ..AnnounceRequest::default()
    };
    read_bench(&mut group, "Announce1kInfohash", &full, &bd, |i, s| {
        req.info_hash = ihs[i % N];
        resp.clear();
        ex.block_on(s.announce(&req, &mut resp)).expect("announce");
        black_box(&resp);
    });

    group.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_futures_finish_on_the_runtime() {
        let exec = Exec::new();
        let _runtime = exec.rt.enter();
        assert_eq!(exec.block_on(std::future::ready(7)), 7);
        let slept = exec.block_on(async {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            8
        });
        assert_eq!(slept, 8);
        // A task spawned from the factory's context runs while a future waits.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { tx.send(9).unwrap() });
        assert_eq!(exec.block_on(rx).unwrap(), 9);
    }

    #[test]
    fn data_is_distinct() {
        let bd = BenchData::generate();
        let mut ihs = bd.infohashes.clone();
        ihs.sort();
        ihs.dedup();
        assert_eq!(ihs.len(), N);
        assert_eq!(bd.peers.len(), N);
    }
}
