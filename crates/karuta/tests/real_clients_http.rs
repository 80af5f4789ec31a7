//! Real BitTorrent clients find each other through karuta's HTTP frontend and
//! complete downloads, all on 127.0.0.1.
//!
//! The clients are driven by `tests/clients/swarm.py` under Debian's
//! `/usr/bin/python3` (python3-libtorrent) and `aria2c`; `scripts/test`
//! installs both. When they are missing these tests fail, they never skip.
//! The test reads karuta's replies itself, strictly (test-support's bencode
//! reader: canonical integers, keys in order, nothing after the value).
//!
//! - A libtorrent seeder and two libtorrent leechers (DHT, LSD, PEX, UPnP and
//!   NAT-PMP off: the tracker is the only peer source) complete a download
//!   through karuta's HTTP frontend, then aria2c (a second client program)
//!   does too, with exactly the three libtorrent clients as the peers it got
//!   from the tracker; every copy's SHA-256 equals the original's. An HTTP
//!   scrape then shows the three libtorrent seeders and exactly the two
//!   libtorrent snatches (aria2c with --seed-time=0 sends no `completed`, which
//!   the script checks in aria2c's log), and, once every client has announced
//!   `stopped`, an empty swarm that keeps its snatches.
//! - A reload keeps the swarm: a seeder and leecher 1 announce (on a passkey
//!   route) and finish; karuta reloads a changed configuration on SIGUSR1
//!   without restarting its HTTP frontend; only then leecher 2 starts, gets
//!   the seeder and leecher 1 from the tracker (they have not announced since
//!   the reload) and completes. Announces of the test's own show the new
//!   interval in effect, compact and non-compact.
//! - The negative control: with a tracker address that accepts connections
//!   and never answers, a libtorrent leecher finds no peer and downloads
//!   nothing within 10 s.

#[path = "clients/harness.rs"]
mod harness;
mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bittorrent::InfoHash;
use bittorrent::bencode::Value;
use harness::{Driver, require_clients};
use support::Karuta;
use test_support::bencode::{self, Fields, render};
use test_support::{TempDir, http, percent_encode};

const SWARM_CONFIG: &str = "chihaya:\n  announce_interval: 5s\n  min_announce_interval: 1s\n  http:\n    addr: \"127.0.0.1:0\"\n  storage:\n    name: memory\n";

/// The reload test's configuration: only `announce_interval` changes. The
/// interval is long, so that no client re-announces during the test.
fn reload_config(minutes: u32) -> String {
    format!(
        "chihaya:\n  announce_interval: {minutes}m\n  min_announce_interval: 1m\n  http:\n    addr: \"127.0.0.1:0\"\n    announce_routes: [\"/announce\", \"/:passkey/announce\"]\n    scrape_routes: [\"/scrape\", \"/:passkey/scrape\"]\n  storage:\n    name: memory\n"
    )
}

const PASSKEY: &str = "c2VjcmV0LXBhc3NrZXk";

// ---------------------------------------------------------------------------
// HTTP/1.1, one request per connection.

/// `GET target`: the strictly bencoded value of a 200 reply, which must carry
/// a Content-Length (karuta's always do) and no `failure reason`.
fn bencoded_get(addr: SocketAddr, target: &str) -> Result<Value<'static>, String> {
    let reply = http::get(addr, target)
        .timeout(Duration::from_secs(3))
        .send()
        .map_err(|e| format!("GET {target}: {e}"))?;
    if let Some(te) = reply.header("transfer-encoding") {
        return Err(format!(
            "GET {target}: unexpected Transfer-Encoding {te:?} in {reply:?}"
        ));
    }
    let length = reply
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if length != Some(reply.body.len()) {
        return Err(format!(
            "GET {target}: Content-Length {length:?} but {} body bytes: {reply:?}",
            reply.body.len()
        ));
    }
    let (status, text) = (reply.status, reply.text());
    let value =
        bencode::strict_static(reply.body).map_err(|e| format!("GET {target}: {status}, {e}"))?;
    if status != 200 || value.get("failure reason").is_some() {
        return Err(format!("GET {target}: {status} {text:?}"));
    }
    Ok(value)
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    complete: i64,
    incomplete: i64,
    downloaded: i64,
}

/// `GET {path}?info_hash=...`: the counts for `ih`, the only file in the reply.
fn scrape(addr: SocketAddr, path: &str, ih: InfoHash) -> Result<Counts, String> {
    let target = format!("{path}?info_hash={}", percent_encode(&ih.0));
    let reply = bencoded_get(addr, &target)?;
    let Some(Value::Dict(files)) = reply.get("files") else {
        return Err(format!("scrape reply without files: {}", render(&reply)));
    };
    match &files[..] {
        [(key, entry)] if key[..] == ih.0[..] => {
            if entry.keys() != ["complete", "downloaded", "incomplete"] {
                return Err(format!("scrape entry {}", render(entry)));
            }
            Ok(Counts {
                complete: entry.int_at("complete"),
                incomplete: entry.int_at("incomplete"),
                downloaded: entry.int_at("downloaded"),
            })
        }
        _ => Err(format!("scrape files for {ih}: {}", render(&reply))),
    }
}

/// Scrapes until the counts are `want` or `limit` passes; returns the last.
fn scrape_until(
    addr: SocketAddr,
    path: &str,
    ih: InfoHash,
    limit: Duration,
    want: Counts,
) -> Counts {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        match scrape(addr, path, ih) {
            Ok(counts) if counts == want => return counts,
            Ok(counts) => last = Some(counts),
            Err(e) => eprintln!("scrape of {ih}: {e}"),
        }
        if Instant::now() > deadline {
            return last.unwrap_or_else(|| panic!("no scrape reply from {addr} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An announce of the test's own for `ih`, as a leecher listening on `port`.
fn announce(
    addr: SocketAddr,
    path: &str,
    ih: InfoHash,
    id: u8,
    port: u16,
    compact: bool,
) -> Value<'static> {
    let target = format!(
        "{path}?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=1000&event=started&compact={}",
        percent_encode(&ih.0),
        percent_encode(&[id; 20]),
        u8::from(compact)
    );
    let reply = bencoded_get(addr, &target).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("announce {target}: {}", render(&reply));
    reply
}

/// The peers of an announce reply, compact (6 bytes each) or not.
fn peers(reply: &Value<'_>) -> Vec<SocketAddr> {
    match reply.get("peers") {
        Some(Value::Bytes(b)) if b.len() % 6 == 0 => b
            .chunks(6)
            .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
            .collect(),
        Some(Value::List(list)) => list
            .iter()
            .map(|p| match (p.get("ip"), p.get("port")) {
                (Some(Value::Bytes(ip)), Some(Value::Int(port))) => {
                    let ip = std::str::from_utf8(ip).unwrap().parse().unwrap();
                    SocketAddr::new(ip, u16::try_from(*port).unwrap())
                }
                _ => panic!("peer {} in {}", render(p), render(reply)),
            })
            .collect(),
        _ => panic!("no peers in {}", render(reply)),
    }
}

fn counts(complete: i64, incomplete: i64, downloaded: i64) -> Counts {
    Counts {
        complete,
        incomplete,
        downloaded,
    }
}

// ---------------------------------------------------------------------------

#[test]
fn libtorrent_and_aria2_complete_downloads_through_the_http_frontend() {
    require_clients(true);
    let started = Instant::now();
    let dir = TempDir::new("real-clients-http-swarm");
    let mut karuta = Karuta::start_text(dir.path(), SWARM_CONFIG);
    let addr = karuta.listening("http");
    let workdir = dir.path().join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(&workdir, &format!("http://{addr}/announce"), "swarm");

    // The script's phases are bounded at 10 + 15 + 20 s.
    let hex = driver.wait_for("ready-for-scrape infohash=", Duration::from_secs(55));
    let ih = InfoHash::from_str(hex.trim()).unwrap();

    // The three libtorrent sessions are seeding; aria2c has announced
    // `stopped`; the two libtorrent leechers announced `completed` and aria2c
    // did not (the script checked its log).
    let want = counts(3, 0, 2);
    let live = scrape_until(addr, "/scrape", ih, Duration::from_secs(10), want);
    eprintln!("scrape while the clients run: {live:?}");
    assert_eq!(live, want, "output:\n{}", driver.output());

    driver.send_line("go");
    // Its stop phase is bounded at 10 s.
    driver.expect_success(Duration::from_secs(15), "clients-stopped");

    // Every client announced `stopped`: the swarm is empty, its snatches stay.
    let want = counts(0, 0, 2);
    let after = scrape_until(addr, "/scrape", ih, Duration::from_secs(5), want);
    eprintln!("scrape after the clients stopped: {after:?}");
    assert_eq!(after, want, "output:\n{}", driver.output());

    karuta.stop_cleanly();
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn a_real_swarm_announced_before_a_reload_is_served_after_it() {
    require_clients(false);
    let started = Instant::now();
    let dir = TempDir::new("real-clients-http-reload");
    let mut karuta = Karuta::start_text(dir.path(), &reload_config(10));
    let addr = karuta.listening("http");
    let announce_path = format!("/{PASSKEY}/announce");
    let scrape_path = format!("/{PASSKEY}/scrape");

    // A swarm of the test's own, to read the interval in effect.
    let probe = InfoHash([0x5a; 20]);
    let first = announce(addr, &announce_path, probe, 1, 1001, true);
    assert_eq!(first.int_at("interval"), 600);
    assert_eq!(peers(&first), []);

    let workdir = dir.path().join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(&workdir, &format!("http://{addr}{announce_path}"), "reload");
    // Bounded at 10 + 15 s.
    let hex = driver.wait_for("ready-for-reload infohash=", Duration::from_secs(30));
    let ih = InfoHash::from_str(hex.trim()).unwrap();
    // The seeder, and leecher 1 which has announced `completed`.
    let want = counts(2, 0, 1);
    let before = scrape_until(addr, &scrape_path, ih, Duration::from_secs(5), want);
    assert_eq!(before, want, "output:\n{}", driver.output());

    // Reload a changed file whose http section is the same: the frontend
    // keeps its listener (its address is 127.0.0.1:0, so a new one would
    // have another port and the clients would lose the tracker).
    karuta.rewrite_config(&reload_config(20));
    karuta.signal(libc::SIGUSR1);
    let line = karuta.wait_for("configuration reloaded");
    assert!(line.contains("reload=1"), "{line}");
    assert_eq!(
        karuta.count("announce_interval=20m0s"),
        1,
        "{}",
        karuta.log()
    );
    assert_eq!(
        karuta.count("http frontend listening"),
        1,
        "{}",
        karuta.log()
    );
    assert_eq!(karuta.count("http frontend stopped"), 0, "{}", karuta.log());

    // The new configuration answers, and the probe swarm is still there,
    // compact or not.
    let second = announce(addr, &announce_path, probe, 2, 1002, false);
    assert_eq!(second.int_at("interval"), 1200);
    assert_eq!(peers(&second), ["127.0.0.1:1001".parse().unwrap()]);
    let third = announce(addr, "/announce", probe, 3, 1003, true);
    assert_eq!(third.int_at("interval"), 1200);
    let mut got = peers(&third);
    got.sort();
    assert_eq!(
        got,
        [
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap()
        ]
    );
    assert_eq!(
        scrape(addr, &scrape_path, ih),
        Ok(want),
        "the real swarm is kept"
    );

    // Leecher 2 must find the seeder and leecher 1 through the tracker.
    driver.send_line("go");
    driver.wait_for("ready-for-scrape infohash=", Duration::from_secs(20));
    let want = counts(3, 0, 2);
    let live = scrape_until(addr, "/scrape", ih, Duration::from_secs(10), want);
    eprintln!("scrape after leecher 2: {live:?}");
    assert_eq!(live, want, "output:\n{}", driver.output());

    driver.send_line("go");
    driver.expect_success(Duration::from_secs(15), "clients-stopped");
    let want = counts(0, 0, 2);
    let after = scrape_until(addr, &scrape_path, ih, Duration::from_secs(5), want);
    assert_eq!(after, want, "output:\n{}", driver.output());

    karuta.drain_for(Duration::ZERO);
    assert_eq!(
        karuta.count("http frontend listening"),
        1,
        "{}",
        karuta.log()
    );
    karuta.stop_cleanly();
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn without_the_tracker_no_leecher_finds_the_seeder() {
    require_clients(false);
    let dir = TempDir::new("real-clients-http-no-tracker");
    // A tracker address that accepts connections and never answers; it
    // keeps each request line.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let listener = {
        let (requests, done) = (requests.clone(), done.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(Ordering::Relaxed) {
                match silent.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 2048];
                        let n = s.read(&mut buf).unwrap_or(0);
                        let text = String::from_utf8_lossy(&buf[..n]);
                        let line = text.lines().next().unwrap_or_default().to_owned();
                        requests.lock().unwrap().push(line);
                        // Unanswered until the end.
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };

    let workdir = dir.path().join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(
        &workdir,
        &format!("http://{silent_addr}/announce"),
        "no-tracker",
    );
    // 10 s of window after at most 10 s of set-up.
    driver.expect_success(Duration::from_secs(40), "no-peers-as-expected");
    done.store(true, Ordering::Relaxed);
    listener.join().unwrap();
    // The clients did try the tracker: it was their only way to each other.
    let requests = requests.lock().unwrap().clone();
    eprintln!("the silent tracker got {} requests:", requests.len());
    for r in &requests {
        eprintln!("  {r}");
    }
    let ports: std::collections::BTreeSet<_> = requests
        .iter()
        .filter_map(|r| {
            r.split(['?', '&', ' '])
                .find_map(|p| p.strip_prefix("port="))
        })
        .collect();
    assert!(
        ports.len() >= 2,
        "both clients should have asked the tracker; got {requests:?}"
    );
}
