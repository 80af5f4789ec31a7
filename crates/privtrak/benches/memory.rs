//! privtrak's memory per tracked peer at a million peers (goal: at most 64
//! bytes; privtrak's README expects it to double an optmem tracker's
//! ~34 bytes a peer).
//!
//! `cargo bench -p privtrak --bench memory` records one million first
//! sightings in two shapes and prints the records' heap bytes (capacities of
//! every map and vector, the torrent table included) and the process's
//! resident memory growth, per peer:
//!
//! - **site**: 50,000 users, 200,000 torrents, each user on 20 torrents
//!   (a private tracker's seedboxes and casual users, averaged);
//! - **worst**: every peer its own user and its own torrent.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bittorrent::{AnnounceRequest, InfoHash, Peer, PeerId};
use privtrak::handlers::memory::MemoryHandler;
use privtrak::{Privtrak, PrivtrakConfig, UserId};
use tracker::config::ConfigDuration;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn hash(n: u64, salt: u64) -> [u8; 20] {
    let mut out = [0u8; 20];
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

fn run(shape: &str, users: u64, torrents: u64, peers: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = PrivtrakConfig {
        journal_path: dir.path().join("journal"),
        journal_max_bytes: privtrak::ByteSize(1 << 40),
        journal_sync_interval: ConfigDuration(Duration::from_millis(20)),
        ..PrivtrakConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handler = MemoryHandler::new();
    handler.set_down(true); // Deltas stay in the journal, out of this count.
    let p = rt
        .block_on(Privtrak::open(&config, Arc::new(handler)))
        .unwrap();
    let rss_before = rss_bytes();
    let started = Instant::now();
    let now = SystemTime::now();
    for n in 0..peers {
        let user = n % users;
        // Each user on `peers / users` torrents spread over all of them.
        let torrent = (user * 7919 + n / users) % torrents;
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash(user, 1)[..16]);
        let req = AnnounceRequest {
            info_hash: InfoHash(hash(torrent, 2)),
            peer: Peer::new(
                PeerId(hash(n, 3)),
                IpAddr::V4(Ipv4Addr::from(n as u32)),
                6881,
            ),
            left: n % 3,
            ..AnnounceRequest::default()
        };
        p.record(UserId(id), &req, now).unwrap();
    }
    let took = started.elapsed();
    let (records, with_records) = p.counts();
    let heap = p.heap_bytes();
    let rss = rss_bytes().saturating_sub(rss_before);
    println!(
        "{shape:>5}: {records} peers of {with_records} users on {torrents} torrents: \
         {:.1} B/peer heap (records, users, torrents), {:.1} B/peer RSS growth; \
         {:.0} ns a first sighting (journal append included)",
        heap as f64 / records as f64,
        rss as f64 / records as f64,
        took.as_nanos() as f64 / peers as f64
    );
    rt.block_on(p.crash());
}

fn main() {
    // A test runner asking what is in here: nothing it should run.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --benches` runs this without `--bench`: keep it quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let peers = if quick { 20_000 } else { 1_000_000 };
    run("site", peers / 20, peers / 5, peers);
    run("worst", peers, peers, peers);
}
