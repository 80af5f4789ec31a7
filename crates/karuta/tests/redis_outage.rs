//! Redis goes away under a steady stream of announces: clients get "storage
//! is unavailable" quickly (never a hang), `/health` says so, and when
//! redis-server is back on the same port the same karuta process serves
//! again within seconds, without a panic.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::Karuta;
use test_support::redis::RedisServer;
use test_support::{TempDir, free_tcp_port, http, percent_encode};

/// An HTTP GET: the status code and the body as text.
fn get(addr: SocketAddr, target: &str) -> (u16, String) {
    let reply = http::get(addr, target).send().unwrap();
    (reply.status, reply.text())
}

fn announce(addr: SocketAddr, n: u32) -> String {
    let ih = percent_encode(&[0x77u8; 20]);
    let peer_id = format!("-KR0001-{n:012}");
    get(
        addr,
        &format!(
            "/announce?info_hash={ih}&peer_id={peer_id}&port={}&uploaded=0&downloaded=0&left=1&compact=1",
            1000 + n % 50_000
        ),
    )
    .1
}

const UNAVAILABLE: &str = "tracker storage is unavailable, try again later";

#[test]
fn announces_fail_fast_during_an_outage_and_recover_without_a_restart() {
    let dir = TempDir::new("redis-outage");
    let mut redis = RedisServer::start("redis-outage-server");
    let port = redis.port();
    let metrics_port = free_tcp_port();
    let config = format!(
        "chihaya:\n  announce_interval: 30m\n  min_announce_interval: 15m\n  metrics_addr: \"127.0.0.1:{metrics_port}\"\n  http:\n    addr: \"127.0.0.1:0\"\n  storage:\n    name: redis\n    config:\n      redis_broker: \"redis://127.0.0.1:{port}/0\"\n      redis_read_timeout: 1s\n      redis_write_timeout: 1s\n      redis_connect_timeout: 1s\n"
    );
    let mut k = Karuta::start_text(dir.path(), &config);
    let http = k.listening("http");
    let metrics: SocketAddr = ([127, 0, 0, 1], metrics_port).into();

    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    // Steady state.
    for _ in 0..20 {
        let body = announce(http, next());
        assert!(body.contains("8:complete"), "{body}");
    }
    assert_eq!(get(metrics, "/health").0, 200);

    // Redis goes away while announces keep coming.
    redis.kill();
    let mut unavailable = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let body = announce(http, next());
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "an announce took {took:?}"
        );
        assert!(!body.contains("8:complete"), "served without Redis: {body}");
        if body.contains(UNAVAILABLE) {
            unavailable += 1;
        }
    }
    assert!(
        unavailable >= 9,
        "only {unavailable} of 10 said storage is unavailable"
    );
    let (status, body) = get(metrics, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage"), "{body}");

    // Redis is back on the same port: the same process serves again.
    redis.restart();
    let back = Instant::now();
    loop {
        let body = announce(http, next());
        if body.contains("8:complete") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still failing {:?} after Redis came back: {body}",
            back.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("serving again {:?} after Redis came back", back.elapsed());
    let (status, body) = get(metrics, "/health");
    assert_eq!(status, 200, "{body}");
    for _ in 0..10 {
        let body = announce(http, next());
        assert!(body.contains("8:complete"), "{body}");
    }

    // Same process all along (it never exited), and nothing panicked.
    k.drain_for(Duration::from_millis(100));
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert!(!k.log().contains("panicked"), "{}", k.log());
}
