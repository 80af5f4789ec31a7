//! Two karuta processes on one Redis serve one swarm: a peer announced to A
//! over HTTP is handed out by B over UDP, scrapes agree, and a UDP connection
//! id from A is accepted by B (shared `private_key`), and `karuta e2e`
//! passes against each instance.

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use support::tracker_http::{http_announce, http_scrape, int_after};
use support::{Karuta, karuta_command};
use test_support::TempDir;
use test_support::redis::RedisServer;

fn config(redis_port: u16) -> String {
    format!(
        "chihaya:\n  announce_interval: 30m\n  min_announce_interval: 15m\n  http:\n    addr: \"127.0.0.1:0\"\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"shared two-instance key\"\n  storage:\n    name: redis\n    config:\n      redis_broker: \"redis://127.0.0.1:{redis_port}/0\"\n      redis_read_timeout: 2s\n      redis_write_timeout: 2s\n      redis_connect_timeout: 2s\n      key_prefix: \"two:\"\n"
    )
}

fn udp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn udp_call(s: &UdpSocket, to: SocketAddr, req: &[u8]) -> Vec<u8> {
    s.send_to(req, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).expect("udp reply");
    buf[..n].to_vec()
}

fn udp_connect(s: &UdpSocket, to: SocketAddr) -> u64 {
    let mut req = Vec::new();
    req.extend_from_slice(&0x41727101980u64.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&7u32.to_be_bytes());
    let r = udp_call(s, to, &req);
    assert_eq!(&r[..4], &0u32.to_be_bytes(), "connect reply {r:?}");
    u64::from_be_bytes(r[8..16].try_into().unwrap())
}

/// Announces over UDP; the reply's action, (seeders, leechers) and peers.
fn udp_announce(
    s: &UdpSocket,
    to: SocketAddr,
    conn: u64,
    ih: &[u8; 20],
    peer_id: &[u8; 20],
    left: u64,
) -> (u32, (u32, u32), Vec<SocketAddrV4>, Vec<u8>) {
    let mut req = Vec::new();
    req.extend_from_slice(&conn.to_be_bytes());
    req.extend_from_slice(&1u32.to_be_bytes());
    req.extend_from_slice(&9u32.to_be_bytes());
    req.extend_from_slice(ih);
    req.extend_from_slice(peer_id);
    req.extend_from_slice(&0u64.to_be_bytes());
    req.extend_from_slice(&left.to_be_bytes());
    req.extend_from_slice(&0u64.to_be_bytes());
    req.extend_from_slice(&2u32.to_be_bytes()); // started
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&50i32.to_be_bytes());
    req.extend_from_slice(&7000u16.to_be_bytes());
    let r = udp_call(s, to, &req);
    let action = u32::from_be_bytes(r[..4].try_into().unwrap());
    if action != 1 {
        return (action, (0, 0), Vec::new(), r);
    }
    let leechers = u32::from_be_bytes(r[12..16].try_into().unwrap());
    let seeders = u32::from_be_bytes(r[16..20].try_into().unwrap());
    let peers = r[20..]
        .chunks(6)
        .map(|c| {
            SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_be_bytes([c[4], c[5]]),
            )
        })
        .collect();
    (action, (seeders, leechers), peers, r)
}

/// (seeders, completed, leechers) from a UDP scrape.
fn udp_scrape(s: &UdpSocket, to: SocketAddr, conn: u64, ih: &[u8; 20]) -> (u32, u32, u32) {
    let mut req = Vec::new();
    req.extend_from_slice(&conn.to_be_bytes());
    req.extend_from_slice(&2u32.to_be_bytes());
    req.extend_from_slice(&11u32.to_be_bytes());
    req.extend_from_slice(ih);
    let r = udp_call(s, to, &req);
    assert_eq!(&r[..4], &2u32.to_be_bytes(), "scrape reply {r:?}");
    let n = |i: usize| u32::from_be_bytes(r[i..i + 4].try_into().unwrap());
    (n(8), n(12), n(16))
}

#[test]
fn two_instances_share_one_swarm_through_redis() {
    let redis = RedisServer::start("redis-two");
    let dir_a = TempDir::new("redis-two-a");
    let dir_b = TempDir::new("redis-two-b");
    let mut a = Karuta::start_text(dir_a.path(), &config(redis.port()));
    let mut b = Karuta::start_text(dir_b.path(), &config(redis.port()));
    let (a_http, a_udp) = (a.listening("http"), a.listening("udp"));
    let (b_http, b_udp) = (b.listening("http"), b.listening("udp"));

    let ih = [0x5au8; 20];
    // A seeder announces to A over HTTP.
    let seeder_id = *b"-KR0001-seeder000001";
    let first = http_announce(a_http, &ih, &seeder_id, 6881, 0);
    assert_eq!(
        int_after(&first, "complete"),
        1,
        "{}",
        String::from_utf8_lossy(&first)
    );

    // A leecher announces to B over UDP and is given the seeder.
    let sock = udp_socket();
    let conn_b = udp_connect(&sock, b_udp);
    let leecher_id = *b"-KR0001-leecher00001";
    let (action, counts, peers, raw) = udp_announce(&sock, b_udp, conn_b, &ih, &leecher_id, 100);
    assert_eq!(
        action,
        1,
        "announce failed: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(counts, (1, 1));
    assert_eq!(peers, vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6881)]);

    // Both instances scrape the same counts, over both protocols.
    assert_eq!(http_scrape(a_http, &ih), (1, 1, 0));
    assert_eq!(http_scrape(b_http, &ih), (1, 1, 0));
    let conn_a = udp_connect(&sock, a_udp);
    assert_eq!(udp_scrape(&sock, a_udp, conn_a, &ih), (1, 0, 1));
    assert_eq!(udp_scrape(&sock, b_udp, conn_b, &ih), (1, 0, 1));

    // A connection id from A is accepted by B (and the other way round).
    let (action, counts, _, raw) = udp_announce(&sock, b_udp, conn_a, &ih, &leecher_id, 100);
    assert_eq!(
        action,
        1,
        "B refused A's connection id: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(counts, (1, 1));
    let (action, _, _, raw) = udp_announce(&sock, a_udp, conn_b, &ih, &leecher_id, 100);
    assert_eq!(
        action,
        1,
        "A refused B's connection id: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // chihaya's end-to-end check passes against each instance, both protocols.
    for (name, http, udp) in [("A", a_http, a_udp), ("B", b_http, b_udp)] {
        let out = karuta_command(&["e2e"])
            .args(["--http", &format!("http://{http}/announce")])
            .args(["--udp", &format!("udp://{udp}")])
            .args(["--delay", "0s", "--timeout", "5s"])
            .stdin(Stdio::null())
            .output()
            .expect("running karuta e2e");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("all checks passed"),
            "karuta e2e against {name}: {:?}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    a.stop_cleanly();
    b.stop_cleanly();
}
