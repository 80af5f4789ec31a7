//! Same-subnet peer preference (chihaya issue #267; the Facebook use in
//! chihaya's README) through a running tracker: peers in several subnets, their
//! addresses set with `allow_ip_spoofing`; with the preference on an announcer
//! gets its own subnet's peers first, with it off the choice is uniform.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use frontend_udp::client::{AnnounceParams, UdpTrackerClient};
use karuta::config::{self, ConfigSource};
use tracker::bittorrent::{InfoHash, PeerId};

async fn start(prefer: bool) -> karuta::Tracker {
    let yaml = format!(
        "karuta:\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"subnet\"\n    allow_ip_spoofing: true\n  storage:\n    name: memory\n    config:\n      prefer_same_subnet: {prefer}\n      subnet_ipv4_prefix: 24\n"
    );
    let registry = Arc::new(karuta::default_registry());
    let loaded = config::parse(&ConfigSource::Embedded, &yaml, &registry).unwrap();
    karuta::Tracker::start(registry, loaded).await.unwrap()
}

const IH: InfoHash = InfoHash([0x5b; 20]);

/// 4 subnets (10.0.1-4.0/24) of 10 leechers each; returns the peers an
/// announcer at 10.0.2.200 gets for `want`.
fn fill_and_ask(t: &karuta::Tracker, want: i32, rounds: usize) -> Vec<Vec<SocketAddr>> {
    let addr = t.udp().unwrap().local_addr();
    let mut c = UdpTrackerClient::new(addr, Duration::from_secs(3)).unwrap();
    for net in 1..=4u8 {
        for host in 1..=10u8 {
            let mut p =
                AnnounceParams::new(IH, PeerId([net * 16 + host; 20]), 6000 + u16::from(host));
            p.ip = u32::from(Ipv4Addr::new(10, 0, net, host));
            c.announce(&p).unwrap();
        }
    }
    (0..rounds)
        .map(|_| {
            let mut p = AnnounceParams::new(IH, PeerId([0xee; 20]), 7000);
            p.ip = u32::from(Ipv4Addr::new(10, 0, 2, 200));
            p.num_want = want;
            p.event = 0;
            c.announce(&p).unwrap().peers
        })
        .collect()
}

fn subnet_of(a: &SocketAddr) -> u8 {
    match a {
        SocketAddr::V4(v4) => v4.ip().octets()[2],
        SocketAddr::V6(_) => panic!("an IPv6 peer"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_announcers_subnet_comes_first_when_enabled() {
    let t = start(true).await;
    tokio::task::block_in_place(|| {
        for peers in fill_and_ask(&t, 8, 5) {
            assert_eq!(
                peers.iter().map(subnet_of).collect::<Vec<_>>(),
                vec![2; 8],
                "{peers:?}"
            );
        }
        for peers in fill_and_ask(&t, 15, 5) {
            let nets: Vec<u8> = peers.iter().map(subnet_of).collect();
            assert_eq!(nets.len(), 15);
            assert!(
                nets[..10].iter().all(|&n| n == 2),
                "its subnet's 10 first: {nets:?}"
            );
            assert!(
                nets[10..].iter().all(|&n| n != 2),
                "then the others: {nets:?}"
            );
        }
    });
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_the_choice_is_uniform() {
    let t = start(false).await;
    tokio::task::block_in_place(|| {
        let rounds = fill_and_ask(&t, 8, 200);
        let own = rounds
            .iter()
            .flatten()
            .filter(|a| subnet_of(a) == 2)
            .count();
        let total = rounds.iter().map(Vec::len).sum::<usize>();
        assert_eq!(total, 1600);
        // A quarter of the swarm is in subnet 2: 400 expected of 1600, with a
        // standard deviation under 20.
        assert!(
            (300..500).contains(&own),
            "{own} of {total} from the announcer's subnet"
        );
    });
    t.shutdown().await;
}
