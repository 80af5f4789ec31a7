//! A reply held back by a hook (`RequestContext::hold_reply`, what privtrak
//! does until an announce's delta is on disk), over real sockets on both
//! frontends: the store and the other requests go on while it waits, the
//! reply comes once the gate opens, and a gate that fails turns the reply into
//! its error (a `failure reason`, a BEP 15 error) with no post-reply phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bittorrent::{ClientError, InfoHash, PeerId};
use frontend_http::{HttpConfig, HttpFrontend};
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use frontend_udp::{UdpConfig, UdpFrontend};
use test_support::logic::shared_memory_logic;
use test_support::{bencode, http, percent_encode};
use tracker::testing::FnHook;
use tracker::{NamedHook, ReadyOrBoxed, SharedLogic};

/// Announces from this port are held until the gate opens.
const HELD: u16 = 7001;
/// Announces from this port get a gate that fails.
const FAILING: u16 = 7002;
/// Announces from any other port pass at once.
const FREE: u16 = 7003;

struct Fixture {
    logic: Arc<SharedLogic>,
    /// Opens every held gate.
    open: Arc<tokio::sync::Semaphore>,
    /// Announces the pre-hook saw from `HELD`.
    held: Arc<AtomicUsize>,
    /// Post-hook runs by port: `HELD`, `FAILING`.
    post_held: Arc<AtomicUsize>,
    post_failing: Arc<AtomicUsize>,
}

fn fixture() -> Fixture {
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let (gates, seen) = (Arc::clone(&open), Arc::clone(&held));
    // Built from a future-returning closure so it says it may wait, as a
    // hook that holds replies must.
    let pre = FnHook::new().on_announce_future(move |ctx, req, _| {
        match req.peer.port {
            HELD => {
                seen.fetch_add(1, Ordering::SeqCst);
                let gates = Arc::clone(&gates);
                ctx.hold_reply(Box::pin(async move {
                    gates.acquire().await.expect("open").forget();
                    Ok(())
                }));
            }
            FAILING => ctx.hold_reply(Box::pin(async {
                Err(ClientError::new("the journal failed").into())
            })),
            _ => {}
        }
        ReadyOrBoxed::ready(Ok(()))
    });
    let (post_held, post_failing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, f) = (Arc::clone(&post_held), Arc::clone(&post_failing));
    let post = FnHook::new().on_announce(move |_, req, _| {
        match req.peer.port {
            HELD => h.fetch_add(1, Ordering::SeqCst),
            FAILING => f.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        Ok(())
    });
    Fixture {
        logic: shared_memory_logic(
            vec![NamedHook::new("gate", Arc::new(pre))],
            vec![NamedHook::new("count", Arc::new(post))],
        ),
        open,
        held,
        post_held,
        post_failing,
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How one frontend's client announces: `(leechers in the reply)` or the
/// failure it was told.
type Announce = Arc<dyn Fn(InfoHash, u16) -> Result<u64, String> + Send + Sync>;

/// The same story on either frontend.
async fn story(f: &Fixture, announce: Announce, hash: InfoHash) {
    // A held announce waits for its gate ...
    let held = {
        let announce = Arc::clone(&announce);
        tokio::task::spawn_blocking(move || announce(hash, HELD))
    };
    let seen = Arc::clone(&f.held);
    until("the held announce reached the hook", || {
        seen.load(Ordering::SeqCst) == 1
    })
    .await;
    // ... while the store already has it and other announces are answered.
    let free = {
        let announce = Arc::clone(&announce);
        tokio::task::spawn_blocking(move || announce(hash, FREE))
    };
    assert_eq!(
        free.await.unwrap(),
        Ok(2),
        "the free announce sees the held peer"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !held.is_finished(),
        "the held reply came before its gate opened"
    );
    assert_eq!(
        f.post_held.load(Ordering::SeqCst),
        0,
        "no post phase before the reply"
    );
    f.open.add_permits(1);
    // Built before the wait, so before the free peer came.
    assert_eq!(held.await.unwrap(), Ok(1));
    let post = Arc::clone(&f.post_held);
    until("the held announce's post phase ran", || {
        post.load(Ordering::SeqCst) == 1
    })
    .await;

    // A gate that fails is the reply, and the post phase does not run.
    let failing = tokio::task::spawn_blocking(move || announce(hash, FAILING));
    assert_eq!(failing.await.unwrap(), Err("the journal failed".to_owned()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.post_failing.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_replies_wait_for_their_gate_and_a_failed_gate_is_the_reply() {
    let f = fixture();
    let config = HttpConfig {
        addr: "127.0.0.1:0".into(),
        ..HttpConfig::default()
    };
    let frontend = HttpFrontend::start(&config, Arc::clone(&f.logic), Default::default())
        .expect("starts")
        .expect("enabled");
    let addr = frontend.local_addr().expect("bound");
    let announce: Announce = Arc::new(move |hash: InfoHash, port: u16| {
        let target = format!(
            "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=1&compact=1",
            percent_encode(&hash.0),
            percent_encode(&[port as u8; 20]),
        );
        let reply = http::get(addr, &target).send().expect("a reply");
        assert_eq!(reply.status, 200);
        if let Some(reason) = bencode::failure_reason(&reply.body) {
            return Err(reason);
        }
        let body = bencode::strict(&reply.body).expect("bencoded");
        Ok(body
            .get("incomplete")
            .and_then(|v| v.as_int())
            .expect("incomplete") as u64)
    });
    story(&f, announce, InfoHash([1; 20])).await;
    frontend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_wait_for_their_gate_and_a_failed_gate_is_the_reply() {
    let f = fixture();
    let config = UdpConfig {
        addr: "127.0.0.1:0".into(),
        private_key: "k".into(),
        workers: 1,
        ..UdpConfig::default()
    };
    let frontend = UdpFrontend::start(&config, Arc::clone(&f.logic), Default::default())
        .expect("starts")
        .expect("enabled");
    let addr = frontend.local_addr();
    let announce: Announce = Arc::new(move |hash: InfoHash, port: u16| {
        let mut client = UdpTrackerClient::new(addr, Duration::from_secs(10)).expect("a socket");
        let params = AnnounceParams::new(hash, PeerId([port as u8; 20]), port);
        match client.announce(&params) {
            Ok(reply) => Ok(u64::from(reply.leechers)),
            Err(UdpClientError::Tracker(reason)) => Err(reason),
            Err(e) => panic!("announce from port {port}: {e}"),
        }
    });
    story(&f, announce, InfoHash([2; 20])).await;
    frontend.stop().await;
}
