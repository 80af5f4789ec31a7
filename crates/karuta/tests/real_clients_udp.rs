//! Real BitTorrent clients find each other through karuta's UDP frontend and
//! complete downloads, all on 127.0.0.1.
//!
//! The clients are driven by `tests/clients/swarm.py` under Debian's
//! `/usr/bin/python3` (python3-libtorrent) and `aria2c`; `scripts/test`
//! installs both. When they are missing these tests fail, they never skip.
//!
//! - A libtorrent seeder and two libtorrent leechers (DHT, LSD, PEX, UPnP and
//!   NAT-PMP off: the tracker is the only peer source) complete a download
//!   through karuta's UDP frontend, then aria2c (a second client program)
//!   does too; every copy's SHA-256 equals the original's. A UDP scrape then
//!   shows the three libtorrent seeders and the two snatches, and, once the
//!   clients have announced `stopped`, an empty swarm that keeps its snatches.
//! - The negative control: with a tracker address where nothing answers, a
//!   libtorrent leecher finds no peer and downloads nothing within 10 s.

#[path = "clients/harness.rs"]
mod harness;
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bittorrent::InfoHash;
use frontend_udp::client::{ScrapeEntry, UdpTrackerClient};
use harness::{Driver, require_clients};
use support::Karuta;
use test_support::TempDir;

const CONFIG: &str = "chihaya:\n  announce_interval: 5s\n  min_announce_interval: 1s\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"test\"\n  storage:\n    name: memory\n";

/// Scrapes `ih` until `good` holds or `limit` passes; returns the last entry.
fn scrape_until(
    tracker: SocketAddr,
    ih: InfoHash,
    limit: Duration,
    good: impl Fn(&ScrapeEntry) -> bool,
) -> ScrapeEntry {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let mut client = UdpTrackerClient::new(tracker, Duration::from_secs(1)).unwrap();
        match client.scrape(&[ih]) {
            Ok(entries) => {
                assert_eq!(entries.len(), 1, "{entries:?}");
                let entry = entries[0];
                if good(&entry) {
                    return entry;
                }
                last = Some(entry);
            }
            Err(e) => eprintln!("scrape of {ih}: {e}"),
        }
        if Instant::now() > deadline {
            return last
                .unwrap_or_else(|| panic!("no scrape reply from {tracker} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn libtorrent_and_aria2_complete_downloads_through_the_udp_frontend() {
    require_clients(true);
    let started = Instant::now();
    let dir = TempDir::new("real-clients-udp-swarm");
    let mut karuta = Karuta::start_text(dir.path(), CONFIG);
    let tracker = karuta.listening("udp");
    let tracker_url = format!("udp://{tracker}/announce");
    let workdir = dir.path().join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(&workdir, &tracker_url, "swarm");

    // The script's phases are bounded at 10 + 15 + 20 s.
    let hex = driver.wait_for("ready-for-scrape infohash=", Duration::from_secs(55));
    let ih = InfoHash::from_str(hex.trim()).unwrap();

    // The three libtorrent sessions are seeding; aria2c has announced
    // `stopped`; the two libtorrent leechers announced `completed` (aria2c
    // with --seed-time=0 never does).
    let live = scrape_until(tracker, ih, Duration::from_secs(10), |e| {
        e.seeders == 3 && e.leechers == 0 && e.completed >= 2
    });
    eprintln!("scrape while the clients run: {live:?}");
    assert_eq!(
        (live.seeders, live.leechers),
        (3, 0),
        "scrape {live:?}; output:\n{}",
        driver.output()
    );
    assert!(
        (2..=3).contains(&live.completed),
        "scrape {live:?}: want the 2 libtorrent snatches (3 if aria2c sent completed); output:\n{}",
        driver.output()
    );

    driver.send_line("go");
    // Its stop phase is bounded at 10 s.
    driver.expect_success(Duration::from_secs(15), "clients-stopped");

    // Every client announced `stopped`: the swarm is empty, its snatches stay.
    let after = scrape_until(tracker, ih, Duration::from_secs(5), |e| {
        e.seeders == 0 && e.leechers == 0
    });
    eprintln!("scrape after the clients stopped: {after:?}");
    assert_eq!((after.seeders, after.leechers), (0, 0), "scrape {after:?}");
    assert_eq!(after.completed, live.completed, "snatches are kept");

    karuta.stop_cleanly();
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn without_the_tracker_no_leecher_finds_the_seeder() {
    require_clients(false);
    let dir = TempDir::new("real-clients-udp-no-tracker");
    // A tracker address where nothing answers: the socket is held so that no
    // one else gets the port; it only counts what arrives.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let senders = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let listener = {
        let (received, senders, done) = (received.clone(), senders.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok((_, from)) = silent.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    senders.lock().unwrap().push(from);
                }
            }
        })
    };

    let workdir = dir.path().join("clients");
    std::fs::create_dir(&workdir).unwrap();
    let mut driver = Driver::start(
        &workdir,
        &format!("udp://{silent_addr}/announce"),
        "no-tracker",
    );
    // 10 s of window after at most 10 s of set-up.
    let status = driver.wait_exit(Duration::from_secs(40));
    done.store(true, Ordering::Relaxed);
    listener.join().unwrap();
    assert!(
        status.success(),
        "swarm.py --mode no-tracker: {status}; output:\n{}",
        driver.output()
    );
    assert!(
        driver.seen.iter().any(|l| l == "no-peers-as-expected"),
        "{}",
        driver.output()
    );
    // The clients did try the tracker: it was their only way to each other.
    let n = received.load(Ordering::Relaxed);
    let mut from = senders.lock().unwrap().clone();
    from.sort();
    from.dedup();
    eprintln!("the silent tracker address got {n} datagrams from {from:?}");
    assert!(
        from.len() >= 2,
        "both clients should have tried the tracker; {n} datagrams from {from:?}"
    );
}
