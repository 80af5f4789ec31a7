//! A hook that waits must not hold up a worker's other requests: with one
//! worker, a request waiting half a second lets the next ones through, many
//! wait at once, post-hooks run after their replies, and a stop lets waiting
//! requests finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bittorrent::udp;
use bittorrent::{InfoHash, PeerId};
use frontend_udp::client::{AnnounceParams, UdpTrackerClient};
use frontend_udp::{UdpConfig, UdpFrontend};
use storage_memory::{MemoryConfig, MemoryStore};
use tracker::testing::FnHook;
use tracker::{Hook, LogicConfig, NamedHook, ReadyOrBoxed, SharedLogic, TrackerLogic};

const SLOW_PORT: u16 = 1111;
const DELAY: Duration = Duration::from_millis(500);

/// A hook that waits `DELAY` on announces from port `SLOW_PORT`, and the
/// count of announces it saw.
fn slow() -> (Arc<dyn Hook>, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let hook = FnHook::new().on_announce_future(move |_, req, _| {
        count.fetch_add(1, Ordering::SeqCst);
        if req.peer.port != SLOW_PORT {
            return ReadyOrBoxed::ready(Ok(()));
        }
        ReadyOrBoxed::boxed(async {
            tokio::time::sleep(DELAY).await;
            Ok(())
        })
    });
    (Arc::new(hook), seen)
}

struct Fixture {
    frontend: UdpFrontend,
    pre: Arc<AtomicUsize>,
    post: Arc<AtomicUsize>,
}

fn start() -> Fixture {
    let config = UdpConfig {
        addr: "127.0.0.1:0".into(),
        private_key: "k".into(),
        workers: 1,
        ..UdpConfig::default()
    };
    let store = Arc::new(MemoryStore::new(MemoryConfig::default()).expect("a valid memory config"));
    let ((pre_hook, pre), (post_hook, post)) = (slow(), slow());
    let logic = TrackerLogic::new(
        LogicConfig::default(),
        store,
        vec![NamedHook::new("slow", pre_hook)],
        vec![NamedHook::new("slow post", post_hook)],
    );
    assert!(logic.may_wait());
    let frontend = UdpFrontend::start(
        &config,
        Arc::new(SharedLogic::new(logic)),
        Default::default(),
    )
    .expect("starts")
    .expect("enabled");
    Fixture {
        frontend,
        pre,
        post,
    }
}

fn client(f: &Fixture) -> UdpTrackerClient {
    UdpTrackerClient::new(f.frontend.local_addr(), Duration::from_secs(5)).unwrap()
}

fn params(port: u16) -> AnnounceParams {
    AnnounceParams::new(InfoHash([1; 20]), PeerId([port as u8; 20]), port)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_request_lets_the_others_of_its_worker_through() {
    let f = start();
    let mut slow = client(&f);
    let id = slow.connect().unwrap();
    let mut fast = client(&f);
    let started = Instant::now();
    tokio::task::block_in_place(|| {
        slow.send_raw(&params(SLOW_PORT).encode(id, 7)).unwrap();
        // Three quick announces, each answered while the slow one waits.
        for port in [2001, 2002, 2003] {
            fast.announce(&params(port)).unwrap();
        }
        let quick = started.elapsed();
        assert!(quick < DELAY, "the quick announces waited {quick:?}");
        let reply = slow
            .recv_raw()
            .unwrap()
            .expect("the slow announce is answered");
        assert_eq!(udp::Reply::parse(&reply).map(|r| r.transaction_id()), Ok(7));
        assert!(started.elapsed() >= DELAY);
    });
    // Post-hooks ran for every announce, after its reply.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.post.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "post-hooks did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.pre.load(Ordering::SeqCst), 4);
    f.frontend.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_requests_wait_at_once() {
    let f = start();
    let mut c = client(&f);
    let id = c.connect().unwrap();
    let started = Instant::now();
    let n = 200u32;
    tokio::task::block_in_place(|| {
        for tid in 0..n {
            c.send_raw(&params(SLOW_PORT).encode(id, tid)).unwrap();
        }
        let mut tids = Vec::new();
        for _ in 0..n {
            let reply = c
                .recv_raw()
                .unwrap()
                .expect("every slow announce is answered");
            tids.push(udp::Reply::parse(&reply).unwrap().transaction_id());
        }
        tids.sort_unstable();
        assert_eq!(tids, (0..n).collect::<Vec<_>>());
    });
    // One after the other this would take 100 s.
    let took = started.elapsed();
    assert!(took < DELAY * 6, "{n} waiting announces took {took:?}");
    f.frontend.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_lets_waiting_requests_finish() {
    let f = start();
    let mut c = client(&f);
    let id = c.connect().unwrap();
    tokio::task::block_in_place(|| c.send_raw(&params(SLOW_PORT).encode(id, 9)).unwrap());
    // The request is in the worker's hands, waiting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.pre.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.frontend.stop().await;
    let reply = tokio::task::block_in_place(|| c.recv_raw().unwrap())
        .expect("answered before the socket closed");
    assert_eq!(udp::Reply::parse(&reply).map(|r| r.transaction_id()), Ok(9));
}
