//! Announces through the hook chain with and without privtrak:
//! `cargo bench -p privtrak --bench chain`.
//!
//! Each measured round is 1,024 announces in flight at once (as a busy
//! tracker has them), of 1,024 users' peers on 256 torrents re-announcing
//! with grown counters, over the memory store. With privtrak every announce
//! yields a delta and waits for the journal's group sync (fdatasync on this
//! machine's disk, 2 ms interval), so the figure is the cost per announce
//! with durability, not one announce's latency. A third case times the
//! hook's own work per announce (passkey, record, journal append) without
//! the wait: its CPU cost.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittorrent::{AnnounceRequest, AnnounceResponse, InfoHash, Params, Peer, PeerId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::stream::{FuturesUnordered, StreamExt};
use privtrak::handlers::memory::MemoryHandler;
use privtrak::{Privtrak, PrivtrakConfig, PrivtrakHook};
use storage_memory::{MemoryConfig, MemoryStore};
use tracker::{Hook, LogicConfig, NamedHook, RequestContext, TrackerLogic};

const IN_FLIGHT: usize = 1024;

fn requests() -> Vec<AnnounceRequest> {
    (0..IN_FLIGHT)
        .map(|n| {
            let mut params = Params::default();
            params.set_route_param("passkey", &format!("{:032x}", n as u128 + 1));
            AnnounceRequest {
                info_hash: InfoHash([(n % 256) as u8; 20]),
                peer: Peer::new(
                    PeerId([(n / 256) as u8 + 1; 20]),
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n as u32)),
                    6881,
                ),
                left: 100,
                num_want: 50,
                compact: true,
                params,
                ..AnnounceRequest::default()
            }
        })
        .collect()
}

/// `rounds` rounds of `IN_FLIGHT` concurrent announces; the time taken.
async fn rounds(logic: &TrackerLogic, reqs: &mut [AnnounceRequest], rounds: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..rounds {
        for r in reqs.iter_mut() {
            r.uploaded += 1000;
            r.downloaded += 500;
        }
        let mut running: FuturesUnordered<_> = reqs
            .iter()
            .map(|req| async move {
                let mut ctx = RequestContext::new();
                let mut resp = AnnounceResponse::default();
                logic
                    .handle_announce(&mut ctx, req, &mut resp)
                    .await
                    .unwrap();
                // As a frontend does before it replies.
                if let Some(gate) = ctx.take_reply_gate() {
                    gate.await.unwrap();
                }
            })
            .collect();
        while running.next().await.is_some() {}
    }
    started.elapsed()
}

fn chain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = || Arc::new(MemoryStore::new(MemoryConfig::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = PrivtrakConfig {
        journal_path: dir.path().join("journal"),
        journal_max_bytes: privtrak::ByteSize(1 << 40),
        ..PrivtrakConfig::default()
    };
    let privtrak: Arc<Privtrak> = rt
        .block_on(Privtrak::open(&config, Arc::new(MemoryHandler::new())))
        .unwrap();
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook = PrivtrakHook::new(
        Arc::clone(&privtrak),
        Box::new(privtrak::identifier(&config)),
        live,
    );
    let plain = TrackerLogic::new(LogicConfig::default(), store(), vec![], vec![]);
    let with = TrackerLogic::new(
        LogicConfig::default(),
        store(),
        vec![NamedHook::new("privtrak", Arc::new(hook) as Arc<dyn Hook>)],
        vec![],
    );

    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for (name, logic) in [("no hooks", &plain), ("privtrak", &with)] {
        let mut reqs = requests();
        // First sightings and swarm entries out of the way.
        rt.block_on(rounds(logic, &mut reqs, 2));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(rounds(logic, &mut reqs, iters)))
        });
    }
    // The hook's own work (passkey, record, journal append), without waiting
    // for the sync: what privtrak costs the CPU per announce.
    let mut reqs = requests();
    let hook = &with.hooks().next().expect("the privtrak hook").hook;
    let mut ctx = RequestContext::new();
    let mut resp = AnnounceResponse::default();
    let mut i = 0;
    g.throughput(Throughput::Elements(1));
    g.bench_function("privtrak hook, not waiting for the sync", |b| {
        b.iter(|| {
            let r = &mut reqs[i % IN_FLIGHT];
            i += 1;
            r.uploaded += 1000;
            drop(hook.handle_announce(&mut ctx, r, &mut resp));
            // Its reply gate, not awaited.
            ctx.clear();
        })
    });
    g.finish();
    rt.block_on(privtrak.crash());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = chain
}
criterion_main!(benches);
