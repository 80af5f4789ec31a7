//! `karuta e2e` against the real binary: it passes against a running karuta
//! over both protocols (also with passkey routes), fails with a one-line
//! reason and in bounded time where nothing listens or where the reply is
//! garbage, and exits 2 on usage errors.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Karuta, karuta_command};
use test_support::{TempDir, free_tcp_port, free_udp_port};

const BOTH_FRONTENDS: &str = "chihaya:\n  announce_interval: 30m\n  min_announce_interval: 15m\n  http:\n    addr: \"127.0.0.1:0\"\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"e2e test\"\n  storage:\n    name: memory\n";

const PASSKEY_ROUTES: &str = "chihaya:\n  announce_interval: 30m\n  min_announce_interval: 15m\n  http:\n    addr: \"127.0.0.1:0\"\n    announce_routes: [\"/:passkey/announce\"]\n    scrape_routes: [\"/:passkey/scrape\"]\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"e2e test\"\n  storage:\n    name: memory\n";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `karuta e2e ARGS`, killing it after `limit`.
fn e2e(args: &[&str], limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = karuta_command(&["e2e"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting karuta e2e");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "karuta e2e {args:?} ran longer than {limit:?}; stdout so far:\n{}",
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    }
}

/// The one-line reason on stderr of a failed run (exit code 1).
fn reason(run: &Run) -> &str {
    assert_eq!(run.code, Some(1), "{}", run.show());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line of reason; {}", run.show());
    assert!(
        lines[0].starts_with("karuta e2e: "),
        "reason without prefix; {}",
        run.show()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.show());
    lines[0]
}

#[test]
fn passes_over_http_and_udp_against_a_running_karuta() {
    let dir = TempDir::new("e2e-both");
    let karuta = Karuta::start_text(dir.path(), BOTH_FRONTENDS);
    let http = format!("http://{}/announce", karuta.listening("http"));
    let udp = format!("udp://{}", karuta.listening("udp"));
    let run = e2e(
        &["--http", &http, "--udp", &udp, "--delay", "100ms"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(run.stderr, "", "{}", run.show());
    for want in [
        "http: announce A (started, port 10000) ... ok (0 peers, 0 seeders, 1 leecher)",
        "http: announce B (started, port 10001) ... ok (1 peer: 127.0.0.1:10000, 0 seeders, 2 leechers)",
        "http: scrape ... ok (0 seeders, 2 leechers",
        "http: scrape after stopped ... ok (0 seeders, 0 leechers",
        "udp: connect to",
        "udp: announce A (started, port 10000) ... ok (0 peers, 0 seeders, 1 leecher)",
        "udp: announce B (started, port 10001) ... ok (1 peer: 127.0.0.1:10000, 0 seeders, 2 leechers)",
        "udp: scrape ... ok (0 seeders, 2 leechers",
        "udp: scrape after stopped ... ok (0 seeders, 0 leechers",
        "karuta e2e: all checks passed: http (6 steps), udp (7 steps)",
    ] {
        assert!(run.stdout.contains(want), "no {want:?}; {}", run.show());
    }
    assert!(!run.stdout.contains("FAILED"), "{}", run.show());

    // Each run picks a fresh info hash, so a second run passes too.
    let again = e2e(&["--udp", &udp, "--delay", "0s"], Duration::from_secs(20));
    assert_eq!(again.code, Some(0), "{}", again.show());
}

#[test]
fn passkey_routes_work_over_http_and_udp() {
    let dir = TempDir::new("e2e-passkey");
    let karuta = Karuta::start_text(dir.path(), PASSKEY_ROUTES);
    let http_addr = karuta.listening("http");
    let http = format!("http://{http_addr}/0123abcd/announce");
    let udp = format!("udp://{}/0123abcd/announce", karuta.listening("udp"));
    let run = e2e(
        &["--http", &http, "--udp", &udp, "--delay", "100ms"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert!(
        run.stdout.contains(&format!(
            "http: checking {http} (scrape http://{http_addr}/0123abcd/scrape)"
        )),
        "{}",
        run.show()
    );
    assert!(
        run.stdout.contains("(URL data \"/0123abcd/announce\")"),
        "{}",
        run.show()
    );
    assert!(
        run.stdout.contains("all checks passed: http"),
        "{}",
        run.show()
    );

    // Without the passkey the route does not match: a failure, not a pass.
    let bare = format!("http://{http_addr}/announce");
    let run = e2e(&["--http", &bare], Duration::from_secs(20));
    let why = reason(&run);
    assert!(
        why.starts_with("karuta e2e: http: announce A: HTTP 404"),
        "{why}"
    );
}

#[test]
fn fails_quickly_with_a_reason_where_nothing_listens() {
    let (tcp_port, udp_port) = (free_tcp_port(), free_udp_port());
    let http = format!("http://127.0.0.1:{tcp_port}/announce");
    let udp = format!("udp://127.0.0.1:{udp_port}");

    // HTTP first: the connection is refused at once.
    let run = e2e(
        &["--http", &http, "--udp", &udp, "--timeout", "1s"],
        Duration::from_secs(10),
    );
    let why = reason(&run);
    assert!(
        why.starts_with(&format!(
            "karuta e2e: http: announce A: cannot connect to 127.0.0.1:{tcp_port}"
        )),
        "{why}"
    );
    assert!(why.to_lowercase().contains("refused"), "{why}");
    assert!(
        run.stdout
            .contains("http: announce A (started, port 10000) ... FAILED")
    );
    assert!(!run.stdout.contains("udp:"), "stops at the first failure");

    // UDP alone: no reply within the timeout.
    let run = e2e(
        &["--udp", &udp, "--timeout", "500ms"],
        Duration::from_secs(10),
    );
    let why = reason(&run);
    assert_eq!(
        why,
        format!("karuta e2e: udp: connect: no reply from 127.0.0.1:{udp_port} within 500ms"),
    );
    assert!(run.took < Duration::from_secs(5), "{}", run.show());
}

#[test]
fn fails_with_a_reason_on_garbage_and_silence() {
    // An HTTP server that answers with broken bencode.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in garbage.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nd5:peer");
        }
    });
    let run = e2e(
        &["--http", &format!("http://{garbage_addr}/announce")],
        Duration::from_secs(10),
    );
    let why = reason(&run);
    assert!(
        why.starts_with("karuta e2e: http: announce A: malformed bencode"),
        "{why}"
    );

    // A TCP listener that never accepts: connected, but no reply.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let run = e2e(
        &[
            "--http",
            &format!("http://{silent_addr}/announce"),
            "--timeout",
            "300ms",
        ],
        Duration::from_secs(10),
    );
    let why = reason(&run);
    assert!(why.contains("no whole reply"), "{why}");
    assert!(why.contains("within 300ms"), "{why}");
    drop(silent);

    // A UDP server that answers every packet with junk.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk_addr = junk.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = junk.recv_from(&mut buf) {
            let _ = junk.send_to(b"\x00\x00\x00\x07junk", from);
        }
    });
    let run = e2e(
        &["--udp", &format!("udp://{junk_addr}"), "--timeout", "1s"],
        Duration::from_secs(10),
    );
    let why = reason(&run);
    assert!(
        why.starts_with("karuta e2e: udp: connect: malformed reply"),
        "{why}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--delay", "1s"],
        &["--http", "https://127.0.0.1:6969/announce"],
        &["--udp", "http://127.0.0.1:6969"],
        &["--udp", "udp://127.0.0.1"],
        &["--http", "http://127.0.0.1:6969/"],
        &[
            "--http",
            "http://127.0.0.1:6969/announce",
            "--delay",
            "soon",
        ],
        &["--udp", "udp://127.0.0.1:6969", "--timeout", "0s"],
    ] {
        let run = e2e(args, Duration::from_secs(10));
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.show());
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.show());
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.show());
    }
    let run = e2e(&[], Duration::from_secs(10));
    assert!(run.stderr.contains("--http"), "{}", run.show());
    let run = e2e(
        &["--http", "https://127.0.0.1:6969/announce"],
        Duration::from_secs(10),
    );
    assert!(
        run.stderr.contains("only http:// and udp://"),
        "{}",
        run.show()
    );
}
