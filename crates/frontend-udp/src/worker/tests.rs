use super::*;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bittorrent::InfoHash;
use storage_memory::{MemoryConfig, MemoryStore};
use tracker::{LogicConfig, TrackerLogic};

use crate::client::AnnounceParams;

#[global_allocator]
static GLOBAL: counting_allocator::Counting = counting_allocator::Counting;

/// Polls a future that must not wait (the memory store's never do).
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("waited"),
    }
}

/// A worker's settings and a logic on the memory store, without hooks.
fn fixture() -> (Settings, TrackerLogic, WorkerStats) {
    let settings = Settings {
        signer: ConnectionIdSigner::new(b"k", Duration::from_secs(120), Duration::from_secs(10)),
        limits: RequestLimits::default(),
        allow_ip_spoofing: false,
        request_timing: true,
    };
    let store = Arc::new(
        MemoryStore::new(MemoryConfig {
            shard_count: 16,
            ..MemoryConfig::default()
        })
        .expect("a valid memory config"),
    );
    let logic = TrackerLogic::new(LogicConfig::default(), store, vec![], vec![]);
    (settings, logic, WorkerStats::default())
}

#[test]
fn the_announce_key_reaches_the_request() {
    let (settings, logic, stats) = fixture();
    let handler = Handler {
        settings: &settings,
        logic: &logic,
        stats: &stats,
    };
    let clock = unix_now();
    let source = SocketAddr::from(([192, 0, 2, 1], 40_000));
    let id = settings.signer.issue(source.ip(), clock);
    let mut a = AnnounceParams::new(InfoHash([1; 20]), bittorrent::PeerId([1; 20]), 6881);
    a.key = 0xdead_beef;
    let mut slot = Slot::new();
    let mut out = Vec::new();
    let outcome = now(handler.handle(&mut slot, &a.encode(id, 7), source, clock, &mut out));
    assert!(matches!(outcome, Outcome::Replied { error: false, .. }));
    assert_eq!(slot.announce.key, Some(0xdead_beef));
}

#[test]
fn handling_packets_allocates_nothing_in_steady_state() {
    let (settings, logic, stats) = fixture();
    let clock = unix_now();

    // 300 peers from 300 addresses over 10 torrents: connect, announce
    // (half with BEP 41 URL data), scrape.
    let mut packets = Vec::new();
    for n in 0..300u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        let source = SocketAddr::new(ip, 40_000);
        let id = settings.signer.issue(ip, clock);
        let mut connect = udp::PROTOCOL_ID.to_be_bytes().to_vec();
        connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        let mut a = AnnounceParams::new(
            InfoHash([(n % 10) as u8; 20]),
            bittorrent::PeerId([1; 20]),
            6881,
        );
        a.left = u64::from(n % 3);
        if n % 2 == 0 {
            a = a.with_url_data(format!("/{n:032x}/announce?passkey={n:032x}").as_bytes());
        }
        let mut scrape = id.to_be_bytes().to_vec();
        scrape.extend_from_slice(&udp::ACTION_SCRAPE.to_be_bytes());
        scrape.extend_from_slice(&3u32.to_be_bytes());
        scrape.extend_from_slice(&[(n % 10) as u8; 20]);
        for p in [connect, a.encode(id, 2), scrape] {
            packets.push((p, source));
        }
    }
    let handler = Handler {
        settings: &settings,
        logic: &logic,
        stats: &stats,
    };
    let mut slots: Vec<Slot> = (0..BATCH).map(|_| Slot::new()).collect();
    let mut out = Vec::with_capacity(2048);
    let mut replies = 0usize;
    let mut round = |check: bool| {
        for (i, (packet, source)) in packets.iter().enumerate() {
            let slot = &mut slots[i % BATCH];
            out.clear();
            let outcome = now(handler.handle(slot, packet, *source, clock, &mut out));
            assert!(
                matches!(outcome, Outcome::Replied { error: false, .. }),
                "packet {i}: {:?}",
                udp::Reply::parse(&out)
            );
            if check {
                assert!(!out.is_empty());
            }
            replies += 1;
            now(handler.after_reply(slot));
        }
    };
    // Warm-up: swarms are created, buffers grow.
    round(true);
    round(false);
    let allocations = counting_allocator::allocations_during(|| {
        for _ in 0..5 {
            round(false);
        }
    });
    assert_eq!(allocations, 0, "allocations while handling 4500 packets");
    assert_eq!(replies, 7 * packets.len(), "every packet was answered");
}
