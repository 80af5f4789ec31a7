//! Redis goes away under a steady stream of announces: clients get "storage
//! is unavailable" quickly (never a hang), `/health` says so, and when
//! redis-server is back on the same port the same karuta process serves
//! again within seconds, without a panic.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Karuta, TempDir, free_tcp_port};

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A redis-server on `port` in `dir`, ready.
fn start_redis(dir: &TempDir, port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Kills the redis-server child when dropped.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP GET; the status code and body.
fn get(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn announce(addr: SocketAddr, n: u32) -> String {
    let ih: String = [0x77u8; 20].iter().map(|b| format!("%{b:02X}")).collect();
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
    let port = free_tcp_port();
    let mut redis = Reaper(Some(start_redis(&dir, port)));
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
    if let Some(mut c) = redis.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
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
    redis.0 = Some(start_redis(&dir, port));
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
