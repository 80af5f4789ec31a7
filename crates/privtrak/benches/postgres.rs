//! The `postgres` handler's throughput and privtrak's restore from it, on a
//! PostgreSQL started here on this machine (fsync and full page writes on,
//! synchronous commit, 1 GB of shared buffers):
//! `cargo bench -p privtrak --bench postgres`.
//!
//! - Sustained deltas per second for `SECONDS` (60; `BENCH_SECONDS` to
//!   change), batches of `BATCH` (1024; `BENCH_BATCH`) applied by `writers`
//!   transactions (1, one per batch; `BENCH_WRITERS`), over 1,000,000 peers
//!   of 100,000 users on 200,000 torrents announcing in turn; then a check
//!   that the database holds exactly what was handed over (zero loss).
//! - Restoring 1,000,000 baselines from `karuta.peers` at privtrak's start.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bittorrent::{InfoHash, PeerId};
use database::PgOptions;
use privtrak::handlers::postgres::{PostgresConfig, PostgresHandler};
use privtrak::{
    Batch, BatchId, Delta, DeltaEvent, DeltaHandler, JournalId, Privtrak, PrivtrakConfig, UserId,
};
use test_support::postgres::Postgres;

const PEERS: u64 = 1_000_000;

fn hash<const N: usize>(n: u64, salt: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    for chunk in out.chunks_mut(8) {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 29;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    out
}

/// The `k`-th announce of the run: peer `k % PEERS`, its round `k / PEERS`.
fn delta(k: u64, seq: u64) -> Delta {
    let peer = k % PEERS;
    let user = peer % 100_000;
    let torrent = (user * 7 + peer / 100_000 * 1009) % 200_000;
    Delta {
        seq,
        user: UserId(hash(user, 1)),
        info_hash: InfoHash(hash(torrent, 2)),
        peer_id: PeerId(hash(peer, 3)),
        addr: Some("10.1.2.3:6881".parse().unwrap()),
        event: DeltaEvent::None,
        uploaded: 1000,
        downloaded: 500,
        left: 100,
        seed_seconds: 0,
        leech_seconds: 30,
        reported_at: SystemTime::now(),
        total_uploaded: 1000 * (k / PEERS + 1),
        total_downloaded: 500 * (k / PEERS + 1),
        site_user: None,
        upload_factor: 1.0,
        download_factor: 1.0,
        baseline_unknown: false,
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches`: nothing to check here.
        return;
    }
    let seconds = env("BENCH_SECONDS", 60);
    let batch_size = env("BENCH_BATCH", 1024);
    let writers = env("BENCH_WRITERS", 1) as usize;
    let pg = Postgres::start_durable("bench-postgres");
    let url = format!(
        "postgresql://{}@{}:{}/{}?sslmode=disable",
        pg.user(),
        pg.host(),
        pg.port(),
        pg.dbname()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = PostgresConfig {
        database: PgOptions {
            url: url.clone(),
            ..PgOptions::default()
        },
        writers,
        ..PostgresConfig::default()
    };
    config.validate().unwrap();
    let handler = Arc::new(rt.block_on(PostgresHandler::open(&config)).unwrap());
    let journal = JournalId([7; 16]);

    // Every peer once (its first sighting makes its rows), then announces
    // in turn for the measured time.
    let mut seq = 0u64;
    let mut k = 0u64;
    let send = |count: u64, seq: &mut u64, k: &mut u64| {
        let first = *seq + 1;
        let deltas: Vec<Delta> = (0..count)
            .map(|_| {
                *seq += 1;
                *k += 1;
                delta(*k - 1, *seq)
            })
            .collect();
        let batch = Batch {
            id: BatchId {
                journal,
                first,
                last: *seq,
            },
            deltas,
        };
        rt.block_on(handler.handle(&batch)).unwrap();
    };
    let fill = Instant::now();
    while k < PEERS {
        send(8192.min(PEERS - k), &mut seq, &mut k);
    }
    println!(
        "postgres: {PEERS} peers' first deltas in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let measured_from = k;
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        send(batch_size, &mut seq, &mut k);
        latencies.push(t.elapsed());
    }
    let took = started.elapsed();
    let deltas = k - measured_from;
    latencies.sort();
    println!(
        "postgres: {deltas} deltas in {:.1} s in batches of {batch_size}, {writers} writer(s): {:.0} deltas/s; per batch p50 {:.1} ms, p99 {:.1} ms",
        took.as_secs_f64(),
        deltas as f64 / took.as_secs_f64(),
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e3,
    );
    // Zero loss: every delta handed over is in the totals.
    let sums =
        pg.psql("SELECT sum(uploaded), sum(downloaded), sum(announces) FROM karuta.transfers");
    assert_eq!(
        sums,
        format!("{}|{}|{}", 1000 * k, 500 * k, k),
        "the database lost or doubled deltas"
    );
    println!("postgres: karuta.transfers sums to exactly the {k} deltas handed over");

    // Restore: a start without a local snapshot loads every baseline.
    let dir = tempfile::tempdir().unwrap();
    let pconfig = PrivtrakConfig {
        journal_path: dir.path().join("journal"),
        ..PrivtrakConfig::default()
    };
    let started = Instant::now();
    let p = rt
        .block_on(Privtrak::open(&pconfig, handler.clone()))
        .unwrap();
    let (records, users) = p.counts();
    println!(
        "postgres: restored {records} baselines of {users} users from karuta.peers in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(records as u64, PEERS);
    rt.block_on(p.crash());
}
