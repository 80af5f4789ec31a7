//! privtrak in the real karuta binary, over real sockets: passkeys from the
//! HTTP path, the HTTP query and BEP 41 URL data reach the jsonl handler as
//! exactly the deltas the clients' counters make; and the totals stay exact
//! through SIGKILLs at random moments, a stream of SIGUSR1 reloads, and a
//! SIGTERM, compared with simulated clients whose counters are known.

#[path = "clients/harness.rs"]
mod harness;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bittorrent::{InfoHash, PeerId};
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use support::Karuta;
use support::accounting::{Tracker, clients, drive, jsonl_totals};
use test_support::{TempDir, free_tcp_port, free_udp_port, http, percent_encode};

/// A configuration with privtrak and the jsonl handler on fixed ports, so a
/// restarted tracker is found where the clients look.
fn config(dir: &Path, http_port: u16, udp_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"karuta:
  announce_interval: 30m
  min_announce_interval: 1m
  http:
    addr: "127.0.0.1:{http_port}"
    announce_routes: ["/announce", "/:passkey/announce"]
  udp:
    addr: "127.0.0.1:{udp_port}"
    private_key: "a key every restart shares"
    workers: 2
  storage:
    name: memory
  prehooks:
    - name: privtrak
      options:
        passkey: passkey
        batch_size: 64
        flush_interval: 50ms
        journal_path: {d}/journal
        journal_sync_interval: 1ms
        snapshot_interval: 2s
        handler:
          name: jsonl
          options:
            path: {d}/deltas.jsonl
"#
    )
}

struct Setup {
    _dir: TempDir,
    dir: PathBuf,
    tracker: Tracker,
    config: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let (http_port, udp_port) = (free_tcp_port(), free_udp_port());
    let path = dir.path().join("karuta.yaml");
    support::write_config(&path, &config(dir.path(), http_port, udp_port));
    Setup {
        dir: dir.path().to_owned(),
        _dir: dir,
        tracker: Tracker {
            http: format!("127.0.0.1:{http_port}").parse().unwrap(),
            udp: format!("127.0.0.1:{udp_port}").parse().unwrap(),
        },
        config: path,
    }
}

fn jsonl(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("deltas.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const PASSKEY_A: &str = "0123456789abcdef0123456789abcdef";
const PASSKEY_B: &str = "fedcba9876543210fedcba9876543210";
const PASSKEY_C: &str = "00112233445566778899aabbccddeeff";

fn http_announce(
    t: Tracker,
    target_prefix: &str,
    peer: u8,
    event: &str,
    up: u64,
    down: u64,
    left: u64,
) -> String {
    let sep = if target_prefix.contains('?') {
        '&'
    } else {
        '?'
    };
    let target = format!(
        "{target_prefix}{sep}info_hash={}&peer_id={}&port={}&uploaded={up}&downloaded={down}&left={left}&event={event}",
        percent_encode(&[7; 20]),
        percent_encode(&[peer; 20]),
        6000 + u16::from(peer)
    );
    http::get(t.http, &target).send().unwrap().text()
}

#[test]
fn passkeys_from_the_path_the_query_and_bep41_become_exact_deltas() {
    let s = setup("privtrak-exact");
    let mut k = Karuta::start(&s.config);
    let t = s.tracker;
    let path_a = format!("/{PASSKEY_A}/announce");
    let query_b = format!("/announce?passkey={PASSKEY_B}");
    // The same session from three users, three ways.
    let steps: [(&str, u64, u64, u64); 4] = [
        ("started", 0, 0, 1000),
        ("", 1000, 500, 500),
        ("completed", 1500, 1000, 0),
        ("stopped", 2000, 1000, 0),
    ];
    let mut udp = UdpTrackerClient::new(t.udp, Duration::from_secs(3)).unwrap();
    for (event, up, down, left) in steps {
        for (prefix, peer) in [(&path_a, 1), (&query_b, 2)] {
            let body = http_announce(t, prefix, peer, event, up, down, left);
            assert!(!body.contains("failure"), "{body}");
        }
        let mut p = AnnounceParams::new(InfoHash([7; 20]), PeerId([3; 20]), 6003)
            .with_url_data(format!("/{PASSKEY_C}/announce").as_bytes());
        p.uploaded = up;
        p.downloaded = down;
        p.left = left;
        p.event = match event {
            "started" => 2,
            "completed" => 1,
            "stopped" => 3,
            _ => 0,
        };
        udp.announce(&p).unwrap();
    }
    // Refusals, over both protocols: nothing is recorded for them.
    let body = http_announce(t, "/announce", 4, "started", 0, 0, 5);
    assert!(body.contains("missing passkey"), "{body}");
    let body = http_announce(t, "/announce?passkey=tooshort", 4, "started", 0, 0, 5);
    assert!(body.contains("malformed passkey"), "{body}");
    let p = AnnounceParams::new(InfoHash([7; 20]), PeerId([5; 20]), 6005)
        .with_url_data(b"/not-a-passkey/announce");
    match udp.announce(&p) {
        Err(UdpClientError::Tracker(m)) => assert_eq!(m, "malformed passkey"),
        other => panic!("{other:?}"),
    }
    assert_eq!(k.stop(), Some(0), "{}", k.log());

    let lines = jsonl(&s.dir);
    let mut by_user: BTreeMap<String, Vec<(String, u64, u64, u64)>> = BTreeMap::new();
    for l in &lines {
        by_user
            .entry(l["user"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                l["event"].as_str().unwrap().to_owned(),
                l["uploaded"].as_u64().unwrap(),
                l["downloaded"].as_u64().unwrap(),
                l["left"].as_u64().unwrap(),
            ));
        assert_eq!(l["info_hash"], InfoHash([7; 20]).to_string());
        assert_eq!(l["ip"], "127.0.0.1");
    }
    let expected = vec![
        ("started".to_owned(), 0, 0, 1000),
        ("none".to_owned(), 1000, 500, 500),
        ("completed".to_owned(), 500, 500, 0),
        ("stopped".to_owned(), 500, 0, 0),
    ];
    assert_eq!(by_user.len(), 3, "{lines:#?}");
    for passkey in [PASSKEY_A, PASSKEY_B, PASSKEY_C] {
        assert_eq!(by_user[passkey], expected, "user {passkey}");
    }
}

#[test]
fn totals_are_exact_through_sigkills_at_random_moments() {
    let s = setup("privtrak-kill");
    let mut clients = clients();
    let k = std::sync::Mutex::new(Some(Karuta::start(&s.config)));
    let mut kills = 0;
    let truth = drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(12),
        7,
        |_| {
            let mut slot = k.lock().unwrap();
            if let Some(mut old) = slot.take() {
                old.signal(libc::SIGKILL);
                old.wait_exit(Duration::from_secs(5));
            }
            *slot = Some(Karuta::start(&s.config));
            kills += 1;
        },
        |rng| Duration::from_millis(rng.u64(300..1500)),
    );
    let mut k = k.into_inner().unwrap().unwrap();
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert!(kills >= 4, "only {kills} kills");
    let answered: u64 = clients.iter().map(|c| c.answered).sum();
    let failed: u64 = clients.iter().map(|c| c.failed).sum();
    assert!(answered > 500, "{answered} announces answered");
    assert!(failed > 0, "the kills were never seen by a client");
    assert_eq!(
        jsonl_totals(&s.dir.join("deltas.jsonl")),
        truth,
        "{kills} kills, {answered} answered, {failed} failed"
    );
}

#[test]
fn totals_are_exact_through_fifty_reloads_under_load() {
    let s = setup("privtrak-reload");
    let mut clients = clients();
    let mut k = Karuta::start(&s.config);
    let pid = k.pid();
    let mut reloads = 0;
    let truth = drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(10),
        11,
        |_| {
            // SAFETY: kill(2) on the child's pid.
            unsafe { libc::kill(pid, libc::SIGUSR1) };
            reloads += 1;
        },
        |_| Duration::from_millis(150),
    );
    assert!(reloads >= 50, "{reloads} reloads");
    for _ in 0..reloads {
        k.wait_for("configuration reloaded");
    }
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    let failed: u64 = clients.iter().map(|c| c.failed).sum();
    assert_eq!(failed, 0, "a reload failed an announce");
    assert_eq!(jsonl_totals(&s.dir.join("deltas.jsonl")), truth);
}

/// libtorrent's counters for each client, from `totals NAME uploaded=N downloaded=N`.
fn client_totals(driver: &harness::Driver) -> BTreeMap<String, (u64, u64)> {
    driver
        .seen
        .iter()
        .filter_map(|l| l.split_once("totals "))
        .map(|(_, rest)| {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap().to_owned();
            let mut n = |key: &str| -> u64 {
                words
                    .next()
                    .unwrap()
                    .strip_prefix(key)
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (name, (n("uploaded="), n("downloaded=")))
        })
        .collect()
}

#[test]
fn a_private_swarm_of_real_clients_is_credited_what_it_transferred() {
    harness::require_clients(false);
    let s = setup("privtrak-libtorrent");
    let mut k = Karuta::start(&s.config);
    let workdir = s.dir.join("swarm");
    std::fs::create_dir(&workdir).unwrap();
    let t = s.tracker;
    // A user of its own for each client, each through another kind of URL.
    let urls = [
        format!("http://{}/{PASSKEY_A}/announce", t.http),
        format!("http://{}/announce?passkey={PASSKEY_B}", t.http),
        format!("udp://{}/{PASSKEY_C}/announce", t.udp),
    ];
    let size: u64 = 4 << 20;
    let mut driver = harness::Driver::start(&workdir, &urls.join(","), "private");
    let info_hash = driver.wait_for("infohash ", Duration::from_secs(20));
    driver.wait_for("ready-to-stop", Duration::from_secs(60));
    driver.send_line("go");
    driver.expect_success(Duration::from_secs(30), "clients-stopped");
    let reported = client_totals(&driver);
    assert_eq!(k.stop(), Some(0), "{}", k.log());

    let mut credited: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut snatched = Vec::new();
    for l in jsonl(&s.dir) {
        assert_eq!(l["info_hash"], info_hash.trim(), "{l}");
        let user = l["user"].as_str().unwrap().to_owned();
        if l["event"] == "completed" {
            snatched.push(user.clone());
        }
        let e = credited.entry(user).or_default();
        e.0 += l["uploaded"].as_u64().unwrap();
        e.1 += l["downloaded"].as_u64().unwrap();
    }
    let (seeder, leecher1, leecher2) = (
        credited[PASSKEY_A],
        credited[PASSKEY_B],
        credited[PASSKEY_C],
    );
    eprintln!(
        "credited: seeder {seeder:?}, leecher1 {leecher1:?}, leecher2 {leecher2:?}; libtorrent: {reported:?}"
    );
    assert!(
        seeder.0 >= size,
        "the seeder is credited {} uploaded, less than the payload",
        seeder.0
    );
    assert_eq!(seeder.1, 0, "the seeder downloaded nothing");
    for (name, got) in [("leecher1", leecher1), ("leecher2", leecher2)] {
        let off = got.1.abs_diff(size) as f64 / size as f64;
        assert!(
            off <= 0.01,
            "{name} is credited {} downloaded for a {size}-byte payload",
            got.1
        );
        // Uploads are credited as the client counted them; its downloaded
        // counter leaves out redundant bytes, its payload total does not.
        assert_eq!(got.0, reported[name].0, "{name}");
        assert!(got.1 <= reported[name].1, "{name}");
    }
    assert_eq!(seeder, reported["seeder"], "seeder");
    // Both leechers' `completed` reached the handler (the site's snatches).
    snatched.sort();
    let mut want = vec![PASSKEY_B.to_owned(), PASSKEY_C.to_owned()];
    want.sort();
    assert_eq!(snatched, want);
}
