//! karuta on a real Redis Cluster started on 127.0.0.1 (three primaries;
//! with a replica each for the failover): two karuta processes serve one
//! swarm, HTTP on one and UDP on the other, on torrents spread over every
//! primary; a primary killed with SIGKILL is replaced by its replica and
//! both processes serve again by themselves, the swarm intact; and the
//! totals stay exact while both collect garbage. The storage conformance
//! suite on a cluster is `crates/storage-redis/tests/cluster.rs`.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use support::Karuta;
use support::tracker_http::{http_announce, http_scrape, int_after};
use test_support::redis_cluster::RedisCluster;
use test_support::{TempDir, free_tcp_port, http};
use tracker::bittorrent::{InfoHash, PeerId};

const UNAVAILABLE: &str = "tracker storage is unavailable, try again later";

/// Two instances' configuration: both frontends, the cluster, a shared
/// UDP key, and `extra` lines of the storage config.
fn config(broker: &str, metrics_port: u16, extra: &str) -> String {
    format!(
        "chihaya:\n  announce_interval: 30m\n  min_announce_interval: 15m\n  metrics_addr: \"127.0.0.1:{metrics_port}\"\n  http:\n    addr: \"127.0.0.1:0\"\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"shared cluster key\"\n  storage:\n    name: redis\n    config:\n      redis_broker: \"{broker}\"\n      redis_read_timeout: 2s\n      redis_write_timeout: 2s\n      redis_connect_timeout: 2s\n      key_prefix: \"cl:\"\n{extra}"
    )
}

/// One karuta on the cluster, with its HTTP, UDP and metrics addresses.
struct Instance {
    karuta: Karuta,
    http: SocketAddr,
    udp: SocketAddr,
    metrics: SocketAddr,
    _dir: TempDir,
}

impl Instance {
    fn start(tag: &str, broker: &str, extra: &str) -> Instance {
        let dir = TempDir::new(tag);
        let metrics_port = free_tcp_port();
        let karuta = Karuta::start_text(dir.path(), &config(broker, metrics_port, extra));
        Instance {
            http: karuta.listening("http"),
            udp: karuta.listening("udp"),
            metrics: ([127, 0, 0, 1], metrics_port).into(),
            karuta,
            _dir: dir,
        }
    }

    /// (swarms, seeders, leechers) from `/stats.json`.
    fn totals(&self) -> (u64, u64, u64) {
        let body = http::get(self.metrics, "/stats.json")
            .send()
            .unwrap()
            .text();
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k} in {body}"));
        (n("swarms"), n("seeders"), n("leechers"))
    }

    /// How many garbage collections this instance has finished.
    fn collections(&self) -> u64 {
        let metrics = http::get(self.metrics, "/metrics").send().unwrap().text();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("chihaya_storage_gc_duration_milliseconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no gc count in:\n{metrics}"))
    }

    fn health(&self) -> u16 {
        http::get(self.metrics, "/health").send().unwrap().status
    }
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (complete, incomplete) of an HTTP announce reply; panics with the reply
/// when it is a failure.
fn http_counts(body: &[u8]) -> (i64, i64) {
    (int_after(body, "complete"), int_after(body, "incomplete"))
}

fn leecher(ih: InfoHash, n: u8) -> AnnounceParams {
    let mut id = *b"-KR0001-leecher00000";
    id[19] = n;
    AnnounceParams::new(ih, PeerId(id), 7000 + u16::from(n))
}

/// The Redis Cluster hash tag of a torrent's keys: its bucket, the info
/// hash's first ten bits in hex (the layout in `storage_redis`'s doc).
fn hash_tag(ih: &InfoHash) -> String {
    format!(
        "{{{:03x}}}",
        (u16::from(ih.0[0]) << 2) | u16::from(ih.0[1] >> 6)
    )
}

/// Torrents whose keys are on each primary of `cluster`, one per primary.
fn one_torrent_per_primary(cluster: &RedisCluster) -> Vec<InfoHash> {
    let mut primaries = cluster.primaries();
    let mut torrents = Vec::new();
    for first in 0..=255u8 {
        let ih = InfoHash([first; 20]);
        let primary = cluster.primary_of(&hash_tag(&ih)).expect("a primary");
        if let Some(i) = primaries.iter().position(|p| *p == primary) {
            primaries.swap_remove(i);
            torrents.push(ih);
        }
        if primaries.is_empty() {
            return torrents;
        }
    }
    panic!("no torrent for primaries {primaries:?}");
}

#[test]
fn two_instances_share_swarms_on_every_primary_http_on_one_udp_on_the_other() {
    let cluster = RedisCluster::start("karuta-cluster-share", 3);
    let a = Instance::start("cluster-share-a", &cluster.broker(), "");
    let b = Instance::start("cluster-share-b", &cluster.broker(), "");
    let torrents = one_torrent_per_primary(&cluster);
    assert_eq!(torrents.len(), 3);
    let mut udp = UdpTrackerClient::new(b.udp, Duration::from_secs(5)).unwrap();
    for (t, ih) in torrents.iter().enumerate() {
        // A seeder announces to A over HTTP.
        let mut seeder_id = *b"-KR0001-seeder000000";
        seeder_id[19] = b'0' + t as u8;
        let port = 6881 + t as u16;
        assert_eq!(
            http_counts(&http_announce(a.http, &ih.0, &seeder_id, port, 0)),
            (1, 0)
        );
        // A leecher announces to B over UDP and is given the seeder.
        let reply = udp.announce(&leecher(*ih, t as u8)).unwrap();
        assert_eq!((reply.seeders, reply.leechers), (1, 1));
        assert_eq!(
            reply.peers,
            vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]
        );
        // Both instances scrape the same counts, over both protocols.
        assert_eq!(http_scrape(a.http, &ih.0), (1, 1, 0));
        assert_eq!(http_scrape(b.http, &ih.0), (1, 1, 0));
        for to in [a.udp, b.udp] {
            let mut c = UdpTrackerClient::new(to, Duration::from_secs(5)).unwrap();
            let s = c.scrape(&[*ih]).unwrap();
            assert_eq!((s[0].seeders, s[0].completed, s[0].leechers), (1, 0, 1));
        }
    }
    // One UDP scrape over every primary's torrent.
    let all = udp.scrape(&torrents).unwrap();
    assert!(
        all.iter().all(|s| (s.seeders, s.leechers) == (1, 1)),
        "{all:?}"
    );
    // A connection id from B is accepted by A.
    let mut via_a = UdpTrackerClient::new(a.udp, Duration::from_secs(5)).unwrap();
    via_a.set_connection_id(udp.connect().unwrap());
    let reply = via_a.announce(&leecher(torrents[0], 0)).unwrap();
    assert_eq!((reply.seeders, reply.leechers), (1, 1));
    // Totals, summed over the buckets on every primary, are the same on both.
    for instance in [&a, &b] {
        eventually(Duration::from_secs(5), "totals of 3 swarms", || {
            instance.totals() == (3, 3, 3)
        });
    }
    for mut instance in [a, b] {
        instance.karuta.stop_cleanly();
    }
}

#[test]
fn a_primary_lost_to_sigkill_fails_over_and_both_instances_serve_again() {
    let mut cluster = RedisCluster::start_with_replicas(
        "karuta-cluster-failover",
        3,
        Duration::from_millis(1000),
    );
    let a = Instance::start("cluster-failover-a", &cluster.broker(), "");
    let b = Instance::start("cluster-failover-b", &cluster.broker(), "");
    let ih = InfoHash([0x5a; 20]);
    let tag = hash_tag(&ih);
    let seeder_id = *b"-KR0001-seeder000001";
    assert_eq!(
        http_counts(&http_announce(a.http, &ih.0, &seeder_id, 6881, 0)),
        (1, 0)
    );

    // The swarm is on the primary of its tag's slot, and on its replica.
    let lost = cluster.primary_of(&tag).expect("a primary");
    let replica = cluster.replicas_of(lost);
    assert_eq!(replica.len(), 1, "{replica:?}");
    let seeders_key = format!("cl:{tag}{ih}:4:S");
    assert_eq!(cluster.cli(lost, &["EXISTS", &seeders_key]), "1");
    assert_eq!(cluster.cli(lost, &["WAIT", "1", "5000"]), "1");

    cluster.kill(lost);
    let killed = Instant::now();
    // Announces through B keep coming: each is answered (a failure while no
    // primary serves the slot), none hangs, until they succeed again.
    let mut udp = UdpTrackerClient::new(b.udp, Duration::from_secs(5)).unwrap();
    udp.connect().unwrap();
    let mut failures = 0;
    let reply = loop {
        let started = Instant::now();
        let result = udp.announce(&leecher(ih, 1));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "an announce took {took:?}");
        match result {
            Ok(reply) => break reply,
            Err(UdpClientError::Tracker(message)) => {
                assert_eq!(message, UNAVAILABLE);
                failures += 1;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no announce served within 30 s of the kill ({failures} failed)"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let recovered = killed.elapsed();
    assert!(
        failures > 0,
        "no announce failed while the primary was lost"
    );
    // The replica took over with the swarm: the leecher is given the seeder.
    assert_eq!((reply.seeders, reply.leechers), (1, 1));
    assert_eq!(
        reply.peers,
        vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 6881))]
    );
    assert_eq!(
        cluster.wait_for_failover(&tag, lost, Duration::from_secs(10)),
        replica[0]
    );
    // A serves again too, over HTTP, without a restart.
    eventually(Duration::from_secs(10), "A announcing again", || {
        http_announce(a.http, &ih.0, b"-KR0001-leecher00002", 7002, 1)
            .windows(8)
            .any(|w| w == b"complete")
    });
    for instance in [&a, &b] {
        eventually(Duration::from_secs(10), "healthy and exact totals", || {
            instance.health() == 200 && instance.totals() == (1, 1, 2)
        });
    }
    eprintln!("served again {recovered:?} after the kill, {failures} announces refused");
    for mut instance in [a, b] {
        assert_eq!(instance.karuta.stop(), Some(0), "{}", instance.karuta.log());
    }
}

#[test]
fn totals_stay_exact_while_both_instances_collect_garbage() {
    let cluster = RedisCluster::start("karuta-cluster-gc", 3);
    let gc = "      gc_interval: 1s\n      peer_lifetime: 4s\n      prometheus_reporting_interval: 100ms\n";
    let a = Instance::start("cluster-gc-a", &cluster.broker(), gc);
    let b = Instance::start("cluster-gc-b", &cluster.broker(), gc);
    // 64 torrents over the buckets of every primary. Through A: a seeder on
    // each that goes quiet. Through B: a leecher on every other torrent
    // that keeps announcing, until the end of the checks.
    let torrents: Vec<InfoHash> = (0..64u8).map(|t| InfoHash([t * 4 + 1; 20])).collect();
    for (t, ih) in torrents.iter().enumerate() {
        let mut id = *b"-KR0001-stale0000000";
        id[18] = t as u8;
        http_announce(a.http, &ih.0, &id, 6881, 0);
    }
    let kept: Vec<InfoHash> = torrents.iter().step_by(2).copied().collect();
    let mut udp = UdpTrackerClient::new(b.udp, Duration::from_secs(5)).unwrap();
    let mut refresh = move || {
        for (n, ih) in kept.iter().enumerate() {
            udp.announce(&leecher(*ih, n as u8)).unwrap();
        }
    };
    refresh();
    for instance in [&a, &b] {
        eventually(Duration::from_secs(3), "every peer counted", || {
            instance.totals() == (64, 64, 32)
        });
    }
    let collected = (a.collections(), b.collections());
    let done = std::sync::atomic::AtomicBool::new(false);
    // Bounded, so that a failed check (which never says `done`) ends too.
    let deadline = Instant::now() + Duration::from_secs(40);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                refresh();
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        // The stale seeders expire; each instance collects several times.
        for instance in [&a, &b] {
            eventually(Duration::from_secs(15), "only the fresh leechers", || {
                instance.totals() == (32, 0, 32)
            });
        }
        eventually(Duration::from_secs(5), "three collections by each", || {
            a.collections() >= collected.0 + 3 && b.collections() >= collected.1 + 3
        });
        for (i, ih) in torrents.iter().enumerate() {
            let want = if i % 2 == 0 { (0, 1, 0) } else { (0, 0, 0) };
            assert_eq!(http_scrape(b.http, &ih.0), want, "torrent {i}");
        }
        assert_eq!(a.totals(), (32, 0, 32));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for mut instance in [a, b] {
        instance.karuta.stop_cleanly();
    }
}
