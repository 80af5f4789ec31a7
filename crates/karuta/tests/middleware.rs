//! The built-in hooks over real HTTP and UDP requests to a running tracker:
//! approved and refused clients and torrents, a whitelist file edited while
//! karuta runs, interval variation, and chihaya's example configuration with
//! its commented hooks switched on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use karuta::config::{self, ConfigSource};
use test_support::bencode::failure_reason;
use test_support::{TempDir, http, percent_encode};
use tracker::bittorrent::{InfoHash, PeerId};

const APPROVED: &str = "a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5";
const REFUSED: &str = "e1d2c3b4a5e1b2c3b4a5e1d2c3b4e5e1d2c3b4a5";

fn ih(hex: &str) -> InfoHash {
    hex.parse().unwrap()
}

async fn start(hooks: &str) -> karuta::Tracker {
    let yaml = format!(
        "chihaya:\n  announce_interval: 30m\n  min_announce_interval: 15m\n  http:\n    addr: \"127.0.0.1:0\"\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"mw\"\n  prehooks:\n{hooks}"
    );
    let registry = Arc::new(karuta::default_registry());
    let loaded = config::parse(&ConfigSource::Embedded, &yaml, &registry).unwrap();
    karuta::Tracker::start(registry, loaded).await.unwrap()
}

/// An HTTP announce: the failure reason, or the body when it was served.
fn http_announce(addr: SocketAddr, hash: &InfoHash, peer_id: &[u8; 20]) -> Result<String, String> {
    let q = format!(
        "/announce?info_hash={}&peer_id={}&port=7001&uploaded=0&downloaded=0&left=1",
        percent_encode(&hash.0),
        percent_encode(peer_id)
    );
    let reply = http::get(addr, &q).send().unwrap();
    match failure_reason(&reply.body) {
        Some(reason) => Err(reason),
        None => Ok(reply.text()),
    }
}

fn udp_announce(t: &karuta::Tracker, hash: InfoHash, peer_id: [u8; 20]) -> Result<u32, String> {
    let mut c =
        UdpTrackerClient::new(t.udp().unwrap().local_addr(), Duration::from_secs(3)).unwrap();
    match c.announce(&AnnounceParams::new(hash, PeerId(peer_id), 7002)) {
        Ok(r) => Ok(r.interval),
        Err(UdpClientError::Tracker(msg)) => Err(msg),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_approval_over_http_and_udp() {
    let t =
        start("    - name: \"client approval\"\n      options:\n        whitelist: [\"TR3000\"]\n")
            .await;
    let http = t.http().unwrap().local_addr().unwrap();
    tokio::task::block_in_place(|| {
        assert!(http_announce(http, &ih(APPROVED), b"-TR3000-000000000001").is_ok());
        assert_eq!(
            http_announce(http, &ih(APPROVED), b"-LT2080-000000000001"),
            Err("unapproved client".into())
        );
        assert!(udp_announce(&t, ih(APPROVED), *b"-TR3000-000000000002").is_ok());
        assert_eq!(
            udp_announce(&t, ih(APPROVED), *b"-LT2080-000000000002"),
            Err("unapproved client".into())
        );
    });
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn torrent_approval_from_a_file_edited_while_running() {
    let dir = TempDir::new("mw-whitelist");
    let list = dir.path().join("whitelist.txt");
    std::fs::write(&list, format!("{APPROVED}\n")).unwrap();
    let hooks = format!(
        "    - name: \"torrent approval\"\n      options:\n        whitelist_file: \"{}\"\n        file_check_interval: 100ms\n",
        list.display()
    );
    let t = start(&hooks).await;
    let http = t.http().unwrap().local_addr().unwrap();
    tokio::task::block_in_place(|| {
        assert!(http_announce(http, &ih(APPROVED), b"-TR3000-000000000001").is_ok());
        assert_eq!(
            http_announce(http, &ih(REFUSED), b"-TR3000-000000000001"),
            Err("unapproved torrent".into())
        );
        assert_eq!(
            udp_announce(&t, ih(REFUSED), *b"-TR3000-000000000002"),
            Err("unapproved torrent".into())
        );
        // Approve the second torrent by editing the file: no restart, no signal.
        std::fs::write(&list, format!("{APPROVED}\n{REFUSED}\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while http_announce(http, &ih(REFUSED), b"-TR3000-000000000001").is_err()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            http_announce(http, &ih(REFUSED), b"-TR3000-000000000001").is_ok(),
            "picked up from the file"
        );
        assert!(udp_announce(&t, ih(REFUSED), *b"-TR3000-000000000002").is_ok());
        // A broken file keeps the list in use.
        std::fs::write(&list, "this is not a hash\n").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(http_announce(http, &ih(REFUSED), b"-TR3000-000000000001").is_ok());
    });
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interval_variation_changes_intervals_deterministically() {
    let t = start(
        "    - name: \"interval variation\"\n      options:\n        modify_response_probability: 1.0\n        max_increase_delta: 60\n        modify_min_interval: true\n",
    )
    .await;
    tokio::task::block_in_place(|| {
        let first = udp_announce(&t, ih(APPROVED), *b"-TR3000-000000000003").unwrap();
        assert!(
            (1801..=1860).contains(&first),
            "30 min plus 1 to 60 s: {first}"
        );
        assert_eq!(
            udp_announce(&t, ih(APPROVED), *b"-TR3000-000000000003").unwrap(),
            first,
            "the same for the same peer"
        );
        // Over HTTP too: interval and min interval both grew (modify_min_interval).
        let http = t.http().unwrap().local_addr().unwrap();
        let body = http_announce(http, &ih(APPROVED), b"-TR3000-000000000004").unwrap();
        let int_after = |key: &str| -> u64 {
            let rest = body.split_once(key).unwrap().1;
            rest[1..rest.find('e').unwrap()].parse().unwrap()
        };
        let (interval, min) = (int_after("8:interval"), int_after("12:min interval"));
        assert!((1801..=1860).contains(&interval), "{interval}");
        assert_eq!(interval - 1800, min - 900, "min interval grew by as much");
    });
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chihayas_example_with_its_hooks_enabled_loads_and_behaves() {
    // chihaya's example_config.yaml ships these hooks commented out; switch on
    // all but jwt (which needs a key server) and give the frontends free ports.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chihaya/example_config.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut enabled = String::new();
    let mut in_jwt = false;
    for line in text.lines() {
        if line.starts_with("# - name: \"jwt\"") {
            in_jwt = true;
        } else if line.starts_with("# - name:") || line.starts_with("# This block") {
            in_jwt = false;
        }
        let uncommented = match line.strip_prefix("# ") {
            Some(rest) if !in_jwt && (rest.starts_with("- name:") || rest.starts_with("  ")) => {
                format!("  {rest}")
            }
            _ => line.to_owned(),
        };
        enabled.push_str(
            &uncommented
                .replace("0.0.0.0:6969", "127.0.0.1:0")
                .replace("0.0.0.0:6880", ""),
        );
        enabled.push('\n');
    }
    let registry = Arc::new(karuta::default_registry());
    // As written, client approval has a whitelist and a blacklist: refused,
    // naming the hook (chihaya refuses it too).
    let err = config::parse(&ConfigSource::Embedded, &enabled, &registry).unwrap_err();
    assert_eq!(
        err.detail,
        "chihaya.prehooks[0].options: \"client approval\" takes a whitelist or a blacklist, not both"
    );
    // Without the blacklists, everything loads and behaves as described.
    let mut whitelists_only = String::new();
    let mut skipping = false;
    for line in enabled.lines() {
        if line.trim() == "blacklist:" {
            skipping = true;
            continue;
        }
        if skipping && line.trim_start().starts_with("- \"") {
            continue;
        }
        skipping = false;
        whitelists_only.push_str(line);
        whitelists_only.push('\n');
    }
    let loaded = config::parse(&ConfigSource::Embedded, &whitelists_only, &registry)
        .expect("loads with the hooks on");
    let names: Vec<_> = loaded
        .tracker
        .prehooks
        .iter()
        .flatten()
        .map(|h| h.name.clone())
        .collect();
    assert_eq!(
        names,
        ["client approval", "interval variation", "torrent approval"]
    );
    let t = karuta::Tracker::start(registry, loaded).await.unwrap();
    let http = t.http().unwrap().local_addr().unwrap();
    tokio::task::block_in_place(|| {
        // Whitelisted client OP1011, whitelisted torrent a1b2...: served.
        assert!(http_announce(http, &ih(APPROVED), b"-OP1011-000000000001").is_ok());
        // OP1012 is not on the whitelist.
        assert_eq!(
            http_announce(http, &ih(APPROVED), b"-OP1012-000000000001"),
            Err("unapproved client".into())
        );
        assert_eq!(
            http_announce(http, &ih(REFUSED), b"-OP1011-000000000001"),
            Err("unapproved torrent".into())
        );
    });
    t.shutdown().await;
}
