//! The UDP frontend over real sockets on 127.0.0.1 and ::1: every action,
//! BEP 41 URL data reaching hooks, and every kind of bad input.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bittorrent::udp;
use bittorrent::{ClientError, InfoHash, PeerId};
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use frontend_udp::{ConnectionIdSigner, UdpConfig, UdpFrontend};
use test_support::logic::shared_memory_logic;
use tracker::NamedHook;
use tracker::config::ConfigDuration;
use tracker::testing::FnHook;

const KEY: &str = "a shared test key";
const WAIT: Duration = Duration::from_secs(3);
/// How long to wait to be sure no reply comes.
const SILENCE: Duration = Duration::from_millis(300);

/// Tells the client what the hooks saw: an announce whose query has `echo`
/// is rejected with its path and passkey; the info hash 0xee… is unapproved.
fn echo() -> FnHook {
    FnHook::new().on_announce(|_, req, _| {
        if req.params.get("echo").is_some() {
            let msg = format!(
                "path={} passkey={} ip={}",
                req.params.path(),
                req.params.get_str("passkey").unwrap_or("-"),
                req.peer.ip()
            );
            return Err(ClientError::owned(msg).into());
        }
        if req.info_hash == InfoHash([0xee; 20]) {
            return Err(ClientError::new("unapproved torrent").into());
        }
        Ok(())
    })
}

struct Tracker {
    frontend: UdpFrontend,
}

impl Tracker {
    fn start(addr: &str, tweak: impl FnOnce(&mut UdpConfig)) -> Tracker {
        let mut config = UdpConfig {
            addr: addr.to_owned(),
            private_key: KEY.to_owned(),
            workers: 2,
            max_scrape_infohashes: 3,
            ..UdpConfig::default()
        };
        tweak(&mut config);
        let logic = shared_memory_logic(vec![NamedHook::new("echo", Arc::new(echo()))], vec![]);
        let frontend = UdpFrontend::start(&config, logic, Default::default())
            .expect("starts")
            .expect("enabled");
        Tracker { frontend }
    }

    fn client(&self) -> UdpTrackerClient {
        UdpTrackerClient::new(self.frontend.local_addr(), WAIT).unwrap()
    }

    async fn stop(self) {
        self.frontend.stop().await;
    }
}

fn ih(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

fn pid(n: u8) -> PeerId {
    PeerId([n; 20])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tracker_error(r: Result<impl std::fmt::Debug, UdpClientError>) -> String {
    match r {
        Err(UdpClientError::Tracker(msg)) => msg,
        other => panic!("expected a tracker error, got {other:?}"),
    }
}

fn header(connection_id: u64, action: u32, tid: u32) -> Vec<u8> {
    let mut p = connection_id.to_be_bytes().to_vec();
    p.extend_from_slice(&action.to_be_bytes());
    p.extend_from_slice(&tid.to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_announce_scrape_over_ipv4() {
    let t = Tracker::start("127.0.0.1:0", |_| {});
    let mut a = t.client();
    let id = a.connect().unwrap();
    let signer = ConnectionIdSigner::new(
        KEY.as_bytes(),
        Duration::from_secs(120),
        Duration::from_secs(10),
    );
    assert_eq!(
        signer.verify(id, IpAddr::V4(Ipv4Addr::LOCALHOST), now()),
        Ok(())
    );

    let reply = a
        .announce(&AnnounceParams::new(ih(1), pid(1), 7001))
        .unwrap();
    assert_eq!(reply.interval, 1800);
    assert_eq!((reply.seeders, reply.leechers), (0, 1));
    assert!(reply.peers.is_empty(), "never the announcer itself");

    let mut b = t.client();
    let mut seed = AnnounceParams::new(ih(1), pid(2), 7002);
    seed.left = 0;
    seed.event = 1; // completed
    let reply = b.announce(&seed).unwrap();
    assert_eq!((reply.seeders, reply.leechers), (1, 1));
    assert_eq!(
        reply.peers,
        vec!["127.0.0.1:7001".parse::<SocketAddr>().unwrap()],
        "6-byte IPv4 peers"
    );

    let entries = b.scrape(&[ih(1), ih(9)]).unwrap();
    assert_eq!(
        (
            entries[0].seeders,
            entries[0].completed,
            entries[0].leechers
        ),
        (1, 1, 1)
    );
    assert_eq!(
        (
            entries[1].seeders,
            entries[1].completed,
            entries[1].leechers
        ),
        (0, 0, 0)
    );

    // `stopped` removes the peer.
    let mut stop = AnnounceParams::new(ih(1), pid(1), 7001);
    stop.event = 3;
    a.announce(&stop).unwrap();
    assert_eq!(b.scrape(&[ih(1)]).unwrap()[0].leechers, 0);
    let s = t.frontend.stats();
    assert_eq!((s.connects, s.announces, s.scrapes), (2, 3, 2));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_replies_carry_18_byte_peers() {
    let t = Tracker::start("[::1]:0", |_| {});
    let mut a = t.client();
    a.announce(&AnnounceParams::new(ih(2), pid(1), 7001))
        .unwrap();
    let mut b = t.client();
    let reply = b
        .announce(&AnnounceParams::new(ih(2), pid(2), 7002))
        .unwrap();
    assert_eq!(
        reply.peers,
        vec!["[::1]:7001".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(b.scrape(&[ih(2)]).unwrap()[0].leechers, 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dual_stack_socket_keeps_ipv4_clients_in_the_ipv4_swarm() {
    let t = Tracker::start("[::]:0", |_| {});
    let port = t.frontend.local_addr().port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut c4 = UdpTrackerClient::new(v4, WAIT).unwrap();
    let mut c6 = UdpTrackerClient::new(v6, WAIT).unwrap();
    c4.announce(&AnnounceParams::new(ih(3), pid(1), 7001))
        .unwrap();
    c6.announce(&AnnounceParams::new(ih(3), pid(2), 7002))
        .unwrap();
    let mut c4b = UdpTrackerClient::new(v4, WAIT).unwrap();
    let reply = c4b
        .announce(&AnnounceParams::new(ih(3), pid(3), 7003))
        .unwrap();
    assert_eq!(
        reply.peers,
        vec!["127.0.0.1:7001".parse::<SocketAddr>().unwrap()],
        "IPv4 peers only, 6 bytes each"
    );
    assert_eq!(reply.leechers, 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn num_want_default_and_cap() {
    let t = Tracker::start("127.0.0.1:0", |c| {
        c.default_numwant = 2;
        c.max_numwant = 3;
    });
    let mut c = t.client();
    for n in 1..=6 {
        c.announce(&AnnounceParams::new(ih(4), pid(n), 7000 + u16::from(n)))
            .unwrap();
    }
    let mut p = AnnounceParams::new(ih(4), pid(9), 7009);
    p.num_want = -1;
    assert_eq!(
        c.announce(&p).unwrap().peers.len(),
        2,
        "-1 means the default"
    );
    p.num_want = 100;
    assert_eq!(
        c.announce(&p).unwrap().peers.len(),
        3,
        "capped at max_numwant"
    );
    p.num_want = 0;
    assert_eq!(c.announce(&p).unwrap().peers.len(), 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bep41_url_data_reaches_hooks_like_an_http_request() {
    let t = Tracker::start("127.0.0.1:0", |_| {});
    let mut c = t.client();
    // Split across three URL-data options with a NOP between them.
    let mut p = AnnounceParams::new(ih(5), pid(1), 7001);
    let parts: [&[u8]; 3] = [b"/ab12cd/annou", b"nce?passkey=s%65cret", b"&echo=1"];
    p.options.clear();
    for (i, part) in parts.iter().enumerate() {
        if i == 1 {
            p.options.push(0x1);
        }
        p.options.push(0x2);
        p.options.push(part.len() as u8);
        p.options.extend_from_slice(part);
    }
    p.options.push(0x0);
    assert_eq!(
        tracker_error(c.announce(&p)),
        "path=/ab12cd/announce passkey=secret ip=127.0.0.1"
    );
    // Long URL data spans several options too.
    let long = format!("/announce?passkey={}&echo", "k".repeat(600));
    let p = AnnounceParams::new(ih(5), pid(1), 7001).with_url_data(long.as_bytes());
    assert!(tracker_error(c.announce(&p)).contains(&"k".repeat(600)));
    // A hook's rejection is an error packet with the hook's text.
    assert_eq!(
        tracker_error(c.announce(&AnnounceParams::new(ih(0xee), pid(1), 7001))),
        "unapproved torrent"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_options_and_fields_get_error_replies() {
    let t = Tracker::start("127.0.0.1:0", |_| {});
    let mut c = t.client();
    let mut p = AnnounceParams::new(ih(6), pid(1), 7001);
    p.options = vec![0x9];
    assert_eq!(tracker_error(c.announce(&p)), "unknown option type 9");
    p.options = vec![0x2, 40, b'/', b'a'];
    assert_eq!(
        tracker_error(c.announce(&p)),
        "truncated URL data option: shorter than its length"
    );
    p.options = vec![0x2, 2, 0xff, 0xfe];
    assert_eq!(
        tracker_error(c.announce(&p)),
        "malformed URL data: not UTF-8"
    );
    let mut p = AnnounceParams::new(ih(6), pid(1), 7001);
    p.event = 7;
    assert_eq!(tracker_error(c.announce(&p)), "unknown event");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_packets_are_dropped_or_answered_with_what_was_wrong() {
    let t = Tracker::start("127.0.0.1:0", |_| {});
    let c = t.client();
    let error_of = |reply: Option<Vec<u8>>| -> (u32, String) {
        let reply = reply.expect("an error reply");
        match udp::Reply::parse(&reply).unwrap() {
            udp::Reply::Error {
                transaction_id,
                message,
            } => (transaction_id, String::from_utf8(message.to_vec()).unwrap()),
            other => panic!("not an error: {other:?}"),
        }
    };
    let quiet = UdpTrackerClient::new(t.frontend.local_addr(), SILENCE).unwrap();

    // Shorter than a header: dropped.
    quiet.send_raw(&[0u8; 15]).unwrap();
    assert_eq!(quiet.recv_raw().unwrap(), None);
    // A connect with the wrong magic: dropped.
    quiet
        .send_raw(&header(0x1234, udp::ACTION_CONNECT, 1))
        .unwrap();
    assert_eq!(quiet.recv_raw().unwrap(), None);
    // A bad connection id on a bare header: the error would be larger than
    // the request, so nothing is sent.
    quiet
        .send_raw(&header(42, udp::ACTION_ANNOUNCE, 2))
        .unwrap();
    assert_eq!(quiet.recv_raw().unwrap(), None);

    // A bad connection id on a full announce: an error no larger than the request.
    let packet = AnnounceParams::new(ih(7), pid(1), 7001).encode(42, 3);
    c.send_raw(&packet).unwrap();
    let reply = c.recv_raw().unwrap().unwrap();
    assert!(reply.len() <= packet.len());
    assert_eq!(error_of(Some(reply)), (3, "invalid connection id".into()));

    // With a valid id: each mistake is named.
    let mut valid = t.client();
    let id = valid.connect().unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (header(id, 9, 10), "unknown action 9"),
        (
            header(id, udp::ACTION_ANNOUNCE_V6_LEGACY, 11),
            "action 4 (the old IPv6 announce) is not supported: send action 1 over IPv6",
        ),
        (
            AnnounceParams::new(ih(7), pid(1), 1).encode(id, 12)[..60].to_vec(),
            "truncated announce: 60 bytes, expected at least 98",
        ),
        (
            [header(id, udp::ACTION_SCRAPE, 13), vec![1; 10]].concat(),
            "malformed scrape: 10 bytes after the header, expected a multiple of 20 (at least one info hash)",
        ),
        (
            header(id, udp::ACTION_SCRAPE, 14),
            "malformed scrape: 0 bytes after the header, expected a multiple of 20 (at least one info hash)",
        ),
    ];
    for (packet, want) in cases {
        let tid = u32::from_be_bytes(packet[12..16].try_into().unwrap());
        valid.send_raw(&packet).unwrap();
        assert_eq!(error_of(valid.recv_raw().unwrap()), (tid, want.to_owned()));
    }
    // Longer than the 2048-byte buffer: with a valid connection id, an error
    // saying so (far smaller than the request); with a bad one, nothing.
    let mut huge = AnnounceParams::new(ih(7), pid(1), 7001).encode(id, 16);
    huge.resize(3000, 0);
    valid.send_raw(&huge).unwrap();
    assert_eq!(
        error_of(valid.recv_raw().unwrap()),
        (16, "request too large: at most 2048 bytes".to_owned())
    );
    let mut spoofed = AnnounceParams::new(ih(7), pid(1), 7001).encode(42, 17);
    spoofed.resize(3000, 0);
    quiet.send_raw(&spoofed).unwrap();
    assert_eq!(quiet.recv_raw().unwrap(), None);

    // A scrape of more than max_scrape_infohashes is answered for the first
    // ones (as over HTTP, as chihaya).
    valid
        .send_raw(&[header(id, udp::ACTION_SCRAPE, 15), vec![1; 80]].concat())
        .unwrap();
    let reply = valid.recv_raw().unwrap().unwrap();
    assert_eq!(&reply[..4], &udp::ACTION_SCRAPE.to_be_bytes());
    assert_eq!(reply.len(), 8 + 3 * 12, "three of the four hashes answered");
    let s = t.frontend.stats();
    assert_eq!(s.packets_dropped, 4);
    assert_eq!(s.bad_connection_ids, 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_ids_expire_and_are_shared_by_key() {
    let a = Tracker::start("127.0.0.1:0", |_| {});
    let b = Tracker::start("127.0.0.1:0", |_| {});
    let other_key = Tracker::start("127.0.0.1:0", |c| c.private_key = "another key".into());

    // An id from instance A works on B (same key), from another port of the same IP.
    let mut on_a = a.client();
    let id = on_a.connect().unwrap();
    let mut on_b = b.client();
    on_b.set_connection_id(id);
    assert!(
        on_b.announce(&AnnounceParams::new(ih(8), pid(1), 7001))
            .is_ok()
    );
    // ... but not on an instance with another key.
    let mut on_other = other_key.client();
    on_other.set_connection_id(id);
    assert_eq!(
        tracker_error(on_other.announce(&AnnounceParams::new(ih(8), pid(1), 7001))),
        "invalid connection id"
    );

    // An id issued three minutes ago has expired (lifetime 2 min).
    let signer = ConnectionIdSigner::new(
        KEY.as_bytes(),
        Duration::from_secs(120),
        Duration::from_secs(10),
    );
    let old = signer.issue(IpAddr::V4(Ipv4Addr::LOCALHOST), now() - 180);
    on_a.set_connection_id(old);
    assert_eq!(
        tracker_error(on_a.announce(&AnnounceParams::new(ih(8), pid(1), 7001))),
        "expired connection id"
    );
    assert_eq!(
        tracker_error(on_a.scrape(&[ih(8)])),
        "expired connection id"
    );
    // A longer configured lifetime accepts it (uTorrent keeps ids ~5 min).
    let lenient = Tracker::start("127.0.0.1:0", |c| {
        c.connection_id_lifetime = ConfigDuration(Duration::from_secs(600))
    });
    let mut on_lenient = lenient.client();
    on_lenient.set_connection_id(old);
    assert!(on_lenient.scrape(&[ih(8)]).is_ok());
    // An id issued to another address is refused.
    let elsewhere = signer.issue(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), now());
    on_a.set_connection_id(elsewhere);
    assert_eq!(
        tracker_error(on_a.scrape(&[ih(8)])),
        "invalid connection id"
    );
    for t in [a, b, other_key, lenient] {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_addresses_only_when_allowed() {
    let strict = Tracker::start("127.0.0.1:0", |_| {});
    let spoofable = Tracker::start("127.0.0.1:0", |c| c.allow_ip_spoofing = true);
    for (t, want) in [(&strict, "ip=127.0.0.1"), (&spoofable, "ip=10.1.2.3")] {
        let mut c = t.client();
        let mut p = AnnounceParams::new(ih(9), pid(1), 7001).with_url_data(b"/announce?echo");
        p.ip = u32::from(Ipv4Addr::new(10, 1, 2, 3));
        assert!(tracker_error(c.announce(&p)).ends_with(want));
    }
    strict.stop().await;
    spoofable.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_zero_is_answered_but_not_handed_out() {
    let t = Tracker::start("127.0.0.1:0", |_| {});
    let mut c = t.client();
    c.announce(&AnnounceParams::new(ih(10), pid(1), 7001))
        .unwrap();
    let reply = c.announce(&AnnounceParams::new(ih(10), pid(2), 0)).unwrap();
    assert_eq!(reply.peers.len(), 1, "it gets peers");
    assert_eq!(
        c.scrape(&[ih(10)]).unwrap()[0].leechers,
        1,
        "but is not stored"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_answered_in_full_across_workers() {
    let t = Tracker::start("127.0.0.1:0", |c| c.workers = 4);
    let mut clients: Vec<_> = (0..8).map(|_| t.client()).collect();
    let ids: Vec<u64> = clients.iter_mut().map(|c| c.connect().unwrap()).collect();
    // 8 clients × 50 announces sent back to back, then every reply read.
    for round in 0..50u32 {
        for (i, c) in clients.iter().enumerate() {
            let p = AnnounceParams::new(ih(11), pid(i as u8), 7000 + i as u16);
            c.send_raw(&p.encode(ids[i], round)).unwrap();
        }
    }
    for c in &clients {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let r = c.recv_raw().unwrap().expect("a reply for every request");
            match udp::Reply::parse(&r) {
                Ok(udp::Reply::Announce { transaction_id, .. }) => {
                    assert!(seen.insert(transaction_id))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen.len(), 50);
    }
    let s = t.frontend.stats();
    assert_eq!(s.announces, 400);
    assert_eq!(s.packets_received, 408);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_frontend_frees_its_port() {
    let t = Tracker::start("127.0.0.1:0", |_| {});
    let addr = t.frontend.local_addr();
    t.stop().await;
    let quiet = UdpTrackerClient::new(addr, SILENCE).unwrap();
    quiet
        .send_raw(&header(udp::PROTOCOL_ID, udp::ACTION_CONNECT, 1))
        .unwrap();
    assert_eq!(
        quiet.recv_raw().unwrap(),
        None,
        "nothing answers after stop"
    );
    let again = Tracker::start(&addr.to_string(), |_| {});
    assert!(
        again.client().connect().is_ok(),
        "the address can be bound again"
    );
    again.stop().await;
}

#[test]
fn an_empty_addr_disables_the_frontend() {
    let started = UdpFrontend::start(
        &UdpConfig::default(),
        shared_memory_logic(vec![], vec![]),
        Default::default(),
    )
    .unwrap();
    assert!(started.is_none());
}
