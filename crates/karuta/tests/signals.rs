//! The real binary under signals: SIGUSR1 reloads exactly once per signal
//! (chihaya's handler fired only for the first), a broken file on reload keeps
//! the running configuration, SIGTERM and SIGINT stop it with exit 0.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Karuta, karuta_command, write_config};
use test_support::{TempDir, free_tcp_port, free_udp_port, http};

fn config_with_interval(dir: &Path, minutes: u32) -> PathBuf {
    let path = dir.join("karuta.yaml");
    write_config(
        &path,
        &format!(
            "chihaya:\n  announce_interval: {minutes}m\n  min_announce_interval: 1m\n  udp:\n    addr: \"127.0.0.1:0\"\n  storage:\n    name: memory\n    config:\n      shard_count: 8\n"
        ),
    );
    path
}

#[test]
fn each_sigusr1_reloads_exactly_once_then_sigterm_exits_zero() {
    let dir = TempDir::new("signals-reload");
    let config = config_with_interval(dir.path(), 30);
    let mut k = Karuta::start(&config);
    assert!(k.count("announce_interval=30m0s") == 1);

    for (n, minutes) in [(1, 20), (2, 21), (3, 22)] {
        config_with_interval(dir.path(), minutes);
        k.signal(libc::SIGUSR1);
        let line = k.wait_for("configuration reloaded");
        assert!(line.contains(&format!("reload={n}")), "{line}");
        // The reload read the file as it is now.
        assert_eq!(k.count(&format!("announce_interval={minutes}m0s")), 1);
    }
    // No reload fires twice or late.
    k.drain_for(Duration::from_millis(500));
    assert_eq!(k.count("configuration reloaded"), 3, "{}", k.log());
    assert_eq!(k.count("tracker configured"), 4);

    k.signal(libc::SIGTERM);
    let (code, took) = k.wait_exit(Duration::from_secs(5));
    k.drain_for(Duration::from_millis(100));
    assert_eq!(code, Some(0), "{}", k.log());
    assert!(took < Duration::from_secs(2), "idle stop took {took:?}");
    assert_eq!(k.count("karuta stopped"), 1);
}

#[test]
fn a_broken_file_on_reload_keeps_the_running_configuration() {
    let dir = TempDir::new("signals-broken");
    let config = config_with_interval(dir.path(), 30);
    let mut k = Karuta::start(&config);
    std::fs::write(&config, "chihaya:\n  announce_interval: \"soon\"\n").unwrap();
    k.signal(libc::SIGUSR1);
    let line = k.wait_for("configuration reload failed");
    assert!(line.contains("chihaya.announce_interval"), "{line}");
    // Still running and still reloadable.
    config_with_interval(dir.path(), 25);
    k.signal(libc::SIGUSR1);
    let line = k.wait_for("configuration reloaded");
    assert!(line.contains("reload=1"), "{line}");
    k.signal(libc::SIGINT);
    let (code, _) = k.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
}

/// Runs karuta on `config`, which must fail to start (exit code 1), and
/// returns what it wrote to stderr.
fn failed_start(config: &Path) -> String {
    let out = karuta_command(&["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_config_at_start_exits_non_zero_with_the_key() {
    let dir = TempDir::new("signals-start");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "chihaya:\n  storage:\n    name: nowhere\n").unwrap();
    let stderr = failed_start(&path);
    assert!(
        stderr.contains("chihaya.storage.name: unknown storage \"nowhere\""),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_redis_at_start_exits_non_zero_naming_redis_broker() {
    let dir = TempDir::new("signals-redis");
    let path = dir.path().join("redis.yaml");
    // A port nobody listens on.
    let port = free_tcp_port();
    std::fs::write(
        &path,
        format!(
            "chihaya:\n  http:\n    addr: \"127.0.0.1:0\"\n  storage:\n    name: redis\n    config:\n      redis_broker: \"redis://127.0.0.1:{port}/0\"\n      redis_connect_timeout: 1s\n      redis_read_timeout: 1s\n"
        ),
    )
    .unwrap();
    let stderr = failed_start(&path);
    assert!(
        stderr.contains("chihaya.storage.config.redis_broker: cannot reach Redis"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line_and_debug_adds_detail() {
    let dir = TempDir::new("signals-json");
    let config = config_with_interval(dir.path(), 30);
    let mut k = Karuta::start_with(&config, &["--json", "--debug"]);
    k.signal(libc::SIGTERM);
    let (code, _) = k.wait_exit(Duration::from_secs(5));
    k.drain_for(Duration::from_millis(200));
    assert_eq!(code, Some(0));
    let mut messages = Vec::new();
    for line in &k.seen {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        messages.iter().any(|m| m == "karuta started"),
        "{messages:?}"
    );
    // --debug shows the memory store's start-up detail.
    assert!(
        messages.iter().any(|m| m == "memory store started"),
        "{messages:?}"
    );
}

fn udp_config(dir: &Path, port: u16, minutes: u32, workers: u32) -> PathBuf {
    let path = dir.join("karuta.yaml");
    write_config(
        &path,
        &format!(
            "chihaya:\n  announce_interval: {minutes}m\n  min_announce_interval: 1m\n  udp:\n    addr: \"127.0.0.1:{port}\"\n    private_key: \"reload test\"\n    workers: {workers}\n"
        ),
    );
    path
}

#[test]
fn a_swarm_announced_before_a_reload_is_served_after_it() {
    use frontend_udp::client::{AnnounceParams, UdpTrackerClient};
    use tracker::bittorrent::{InfoHash, PeerId};

    let dir = TempDir::new("signals-udp-reload");
    let port = free_udp_port();
    let config = udp_config(dir.path(), port, 30, 1);
    let mut k = Karuta::start(&config);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ih = InfoHash([0x33; 20]);
    let mut a = UdpTrackerClient::new(addr, Duration::from_secs(3)).unwrap();
    let first = a
        .announce(&AnnounceParams::new(ih, PeerId([1; 20]), 7001))
        .unwrap();
    assert_eq!(first.interval, 30 * 60);

    // Reload with a new interval: the same sockets serve, with the new logic.
    udp_config(dir.path(), port, 20, 1);
    k.signal(libc::SIGUSR1);
    k.wait_for("configuration reloaded");
    assert_eq!(
        k.count("udp frontend listening"),
        1,
        "the frontend was not restarted"
    );
    let mut b = UdpTrackerClient::new(addr, Duration::from_secs(3)).unwrap();
    let reply = b
        .announce(&AnnounceParams::new(ih, PeerId([2; 20]), 7002))
        .unwrap();
    assert_eq!(reply.interval, 20 * 60, "the new configuration answers");
    assert_eq!(
        reply.peers,
        vec!["127.0.0.1:7001".parse::<std::net::SocketAddr>().unwrap()]
    );
    // A connection id issued before the reload is still good.
    assert!(a.scrape(&[ih]).is_ok());

    // Reload with a changed udp section: the frontend restarts on the same
    // address, and the swarm is still there.
    udp_config(dir.path(), port, 20, 2);
    k.signal(libc::SIGUSR1);
    let line = k.wait_for("configuration reloaded");
    assert!(line.contains("reload=2"), "{line}");
    assert_eq!(
        k.count("udp frontend listening"),
        2,
        "the frontend was restarted"
    );
    assert_eq!(k.count("udp frontend stopped"), 1);
    let mut c = UdpTrackerClient::new(addr, Duration::from_secs(3)).unwrap();
    let entries = c.scrape(&[ih]).unwrap();
    assert_eq!(entries[0].leechers, 2);

    k.signal(libc::SIGTERM);
    let (code, _) = k.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
}

#[test]
fn passkeys_and_tokens_never_reach_the_logs() {
    use frontend_udp::client::{AnnounceParams, UdpTrackerClient};
    use tracker::bittorrent::{InfoHash, PeerId};

    const PASSKEY: &str = "d8e8fca2dc0f896fd7cb4cb0031ba249";
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOiJ5ZXMifQ.c2lnbmF0dXJl";
    let dir = TempDir::new("signals-secrets");
    let (udp_port, http_port) = (free_udp_port(), free_udp_port());
    let config = dir.path().join("karuta.yaml");
    std::fs::write(
        &config,
        format!(
            "chihaya:\n  http:\n    addr: \"127.0.0.1:{http_port}\"\n    announce_routes: [\"/:passkey/announce\"]\n  udp:\n    addr: \"127.0.0.1:{udp_port}\"\n"
        ),
    )
    .unwrap();
    let mut k = Karuta::start_with(&config, &["--json", "--debug"]);
    // Good and bad requests over HTTP, with the passkey in the path and a token in the query.
    let http_addr: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    for query in ["left=1&port=1", "left=x"] {
        let target = format!(
            "/{PASSKEY}/announce?info_hash={}&peer_id=-LT2080-abcdefghijkl&uploaded=0&downloaded=0&{query}&jwt={JWT}",
            "%01".repeat(20)
        );
        let _ = http::get(http_addr, &target).send();
    }
    // Over UDP, in BEP 41 URL data, once with a malformed option.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let mut c = UdpTrackerClient::new(addr, Duration::from_secs(3)).unwrap();
    let url = format!("/{PASSKEY}/announce?jwt={JWT}");
    c.announce(
        &AnnounceParams::new(InfoHash([3; 20]), PeerId([1; 20]), 7001)
            .with_url_data(url.as_bytes()),
    )
    .unwrap();
    let mut p =
        AnnounceParams::new(InfoHash([3; 20]), PeerId([2; 20]), 7002).with_url_data(url.as_bytes());
    p.options.push(0x9);
    let _ = c.announce(&p);
    k.signal(libc::SIGTERM);
    k.wait_exit(Duration::from_secs(5));
    k.drain_for(Duration::from_millis(200));
    let log = k.log();
    assert!(
        log.contains("debug") || log.contains("DEBUG"),
        "debug logging was on"
    );
    assert!(!log.contains(PASSKEY), "a passkey in the logs:\n{log}");
    assert!(!log.contains("eyJ"), "a token in the logs:\n{log}");
}
