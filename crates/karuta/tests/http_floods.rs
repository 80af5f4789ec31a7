//! Floods of connections against the real binary (issue 15, item 6): rounds
//! of 4,000 connections to the HTTP frontend, each sending a partial or a
//! full announce and held open, then all closed. The process's resident
//! memory must come back near its idle figure after every round and must not
//! creep from round to round; its descriptors must come back too.
//!
//! What the memory was, and what brought it back: the binary's `trim`
//! module (`src/main.rs`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::Karuta;
use test_support::{TempDir, free_tcp_port, http, percent_encode};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 4_000;
/// RSS after the last round may exceed the idle figure by at most this.
const ABOVE_IDLE: u64 = 25 * 1024 * 1024;
/// ... and the fifth round's figure by at most this.
const CREEP: u64 = 3 * 1024 * 1024;
/// How long after a round the memory is measured: the binary hands freed
/// memory back every 500 ms.
const SETTLE: Duration = Duration::from_millis(1000);
/// Descriptors this process needs: its end of every connection, and some.
const DESCRIPTORS: u64 = PER_ROUND as u64 + 256;

/// VmRSS in bytes and the number of open descriptors of `pid`.
fn rss_and_fds(pid: i32) -> (u64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (test_support::process::rss_bytes(pid), fds)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A counter from the metrics endpoint.
fn metric(ops: SocketAddr, name: &str) -> u64 {
    let text = http::get(ops, "/metrics").send().unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics")) as u64
}

/// Raises this process's soft limit on open descriptors to at least
/// [`DESCRIPTORS`] (up to the hard limit), for it and for karuta, which
/// inherits it.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < DESCRIPTORS {
            limit.rlim_cur = DESCRIPTORS.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= DESCRIPTORS,
        "the hard limit on descriptors ({}) is below {DESCRIPTORS}",
        limit.rlim_max
    );
}

/// Waits (at most `limit`) for `done`, polling every 20 ms.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rss_comes_back_after_rounds_of_connection_floods() {
    let started = Instant::now();
    raise_descriptor_limit();
    let dir = TempDir::new("http-floods");
    let ops_port = free_tcp_port();
    // Kept-alive and partial requests stay open until the test closes them.
    let mut k = Karuta::start_text(
        dir.path(),
        &format!(
            "chihaya:\n  metrics_addr: \"127.0.0.1:{ops_port}\"\n  http:\n    addr: \"127.0.0.1:0\"\n    enable_keepalive: true\n    read_timeout: 30s\n    idle_timeout: 30s\n  storage:\n    name: memory\n"
        ),
    );
    let addr = k.listening("http");
    let ops: SocketAddr = format!("127.0.0.1:{ops_port}").parse().unwrap();
    let pid = k.pid();
    // One info hash and one peer, so the swarm does not grow.
    let query = format!(
        "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=10",
        percent_encode(&[0x5a; 20]),
        percent_encode(&[0x5b; 20])
    );
    let full = format!("GET /announce?{query} HTTP/1.1\r\nHost: t\r\nUser-Agent: flood\r\n\r\n");
    let partial = format!("GET /announce?{query} HTTP/1.1\r\nHost: t\r\nUser-Agent: fl");

    // One exchange first, so that what every process allocates once is there.
    assert_eq!(
        http::get(addr, &format!("/announce?{query}"))
            .send()
            .unwrap()
            .status,
        200
    );
    std::thread::sleep(SETTLE);
    let (idle, base_fds) = rss_and_fds(pid);
    println!("idle: {:.1} MiB, {base_fds} descriptors", mib(idle));

    let mut after = Vec::new();
    let mut accepted = metric(ops, "karuta_http_connections_total");
    for round in 1..=ROUNDS {
        let mut conns = Vec::with_capacity(PER_ROUND);
        for i in 0..PER_ROUND {
            let mut s = TcpStream::connect(addr).unwrap();
            let request = if i % 2 == 0 { &full } else { &partial };
            s.write_all(request.as_bytes()).unwrap();
            conns.push(s);
        }
        // Every full request is answered and its connection kept.
        let mut buf = [0u8; 4096];
        for s in conns.iter_mut().step_by(2) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        }
        accepted += PER_ROUND as u64;
        wait_until(Duration::from_secs(10), "every connection accepted", || {
            metric(ops, "karuta_http_connections_total") >= accepted
        });
        let (held, held_fds) = rss_and_fds(pid);
        drop(conns);
        wait_until(Duration::from_secs(10), "the descriptors back", || {
            rss_and_fds(pid).1 <= base_fds
        });
        std::thread::sleep(SETTLE);
        let (rss, fds) = rss_and_fds(pid);
        println!(
            "round {round}: {:.1} MiB with {held_fds} descriptors held, {:.1} MiB after ({fds} descriptors)",
            mib(held),
            mib(rss)
        );
        after.push(rss);
    }
    println!("took {:?}", started.elapsed());
    let (fifth, last) = (after[4], after[ROUNDS - 1]);
    assert!(
        last <= idle + ABOVE_IDLE,
        "RSS {:.1} MiB after {ROUNDS} rounds, idle {:.1} MiB",
        mib(last),
        mib(idle)
    );
    assert!(
        last <= fifth + CREEP,
        "RSS grew from {:.1} MiB after round 5 to {:.1} MiB after round {ROUNDS}",
        mib(fifth),
        mib(last)
    );
    k.stop_cleanly();
}
