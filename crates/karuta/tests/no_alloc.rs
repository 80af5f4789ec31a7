//! The announce hot path allocates nothing in steady state: once a swarm's
//! peers are known and the frontend's response buffers have grown, an announce
//! through the tracker logic and the memory store touches no heap.
//!
//! A counting global allocator counts this thread's allocations only; the
//! store's background thread is not counted.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use karuta::config::{self, ConfigSource};
use tracker::RequestContext;
use tracker::bittorrent::{AnnounceResponse, Event, InfoHash, Peer, PeerId};
use tracker::conformance::announce;

#[global_allocator]
static GLOBAL: counting_allocator::Counting = counting_allocator::Counting;

/// Polls a future that must finish without waiting (the memory store's do).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store's path should never wait"),
    }
}

#[test]
fn steady_state_announces_do_not_allocate() {
    let registry = Arc::new(karuta::default_registry());
    let loaded = config::parse(
        &ConfigSource::Embedded,
        "karuta:\n  storage:\n    config:\n      shard_count: 64\n",
        &registry,
    )
    .unwrap();
    let tracker = now(karuta::Tracker::start(registry, loaded)).unwrap();
    let logic = tracker.logic();

    let peer = |n: u16| {
        let ip = if n.is_multiple_of(2) {
            IpAddr::V4(Ipv4Addr::new(10, 1, (n >> 8) as u8, n as u8))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, n))
        };
        Peer::new(PeerId([n as u8; 20]), ip, 6000 + n)
    };
    let requests: Vec<_> = (0..400u16)
        .map(|n| {
            let ih = InfoHash([(n % 7) as u8; 20]);
            let (event, left) = if n.is_multiple_of(3) {
                (Event::None, 0)
            } else {
                (Event::None, 100)
            };
            announce(ih, peer(n), event, left, 50)
        })
        .collect();

    // What a frontend worker keeps between requests.
    let mut ctx = RequestContext::new();
    let mut resp = AnnounceResponse::default();
    let mut one_round = |check: &mut dyn FnMut(&AnnounceResponse)| {
        for req in &requests {
            ctx.clear();
            resp.clear();
            now(logic.handle_announce(&mut ctx, req, &mut resp)).unwrap();
            check(&resp);
            now(logic.after_announce(&mut ctx, req, &mut resp));
        }
    };
    // Warm-up: swarms are created and the response buffers grow.
    for _ in 0..3 {
        one_round(&mut |_| {});
    }
    let mut peers_handed_out = 0;
    let allocations = counting_allocator::allocations_during(|| {
        for _ in 0..5 {
            one_round(&mut |r| peers_handed_out += r.peer_count());
        }
    });
    assert!(
        peers_handed_out > 10_000,
        "the announces did real work ({peers_handed_out} peers)"
    );
    assert_eq!(allocations, 0, "allocations in 2000 steady-state announces");
    // The request loop's handle on the logic is gone before the stop.
    drop(logic);
    now(tracker.shutdown());
}
