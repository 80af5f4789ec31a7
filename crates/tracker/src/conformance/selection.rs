//! Which peers a reply hands out: never the announcer, leechers to seeders,
//! seeders first to leechers, as many as wanted, chosen uniformly and in
//! random order, and only of the announcer's address family.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use bittorrent::{AddressFamily, Event, Peer};

use super::{
    MakeStore, StoreTestConfig, addrs, announce, announced, counts, ih, peer, peers_for,
    put_leechers, put_seeders,
};

pub async fn announce_never_returns_announcer(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    for f in [AddressFamily::V4, AddressFamily::V6] {
        let h = ih(2);
        put_leechers(&*s, h, f, 1..=20).await;
        for n in 1..=20 {
            let me = peer(f, n);
            let resp = announced(&*s, &announce(h, me, Event::None, 5, 200)).await;
            let got = addrs(&resp);
            assert_eq!(got.len(), 19, "everyone but the announcer");
            assert!(!got.contains(&me.addr()));
            let unique: HashSet<_> = got.iter().collect();
            assert_eq!(unique.len(), got.len(), "no duplicates");
        }
    }
}

pub async fn seeder_gets_leechers_only(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(3);
    put_seeders(&*s, h, f, 1..=5).await;
    put_leechers(&*s, h, f, 6..=8).await;
    let resp = announced(&*s, &announce(h, peer(f, 1), Event::None, 0, 50)).await;
    let mut got = addrs(&resp);
    got.sort();
    let mut want: Vec<_> = (6..=8).map(|n| peer(f, n).addr()).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!((resp.complete, resp.incomplete), (5, 3));
}

pub async fn leecher_gets_seeders_first(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V6;
    let h = ih(4);
    put_seeders(&*s, h, f, 1..=5).await;
    put_leechers(&*s, h, f, 6..=30).await;
    let me = peer(f, 6);
    let resp = announced(&*s, &announce(h, me, Event::None, 1, 8)).await;
    let got = addrs(&resp);
    assert_eq!(got.len(), 8);
    let seeders: HashSet<_> = (1..=5).map(|n| peer(f, n).addr()).collect();
    assert!(
        seeders.iter().all(|s| got.contains(s)),
        "all 5 seeders come first: {got:?}"
    );
    assert!(!got.contains(&me.addr()));
}

pub async fn num_want_is_honoured(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(5);
    put_leechers(&*s, h, f, 1..=40).await;
    for (want, expect) in [(0u32, 0usize), (1, 1), (10, 10), (39, 39), (100, 39)] {
        let resp = announced(&*s, &announce(h, peer(f, 1), Event::None, 1, want)).await;
        assert_eq!(resp.peer_count(), expect, "num_want {want}");
    }
}

pub async fn selection_is_random_across_swarm(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(6);
    put_leechers(&*s, h, f, 1..=200).await;
    let seeder = peer(f, 1000);
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let got = peers_for(&*s, h, true, 10, seeder).await.unwrap();
        assert_eq!(got.len(), 10);
        seen.extend(got);
    }
    // 600 picks of 10 out of 200: a fixed or first-N choice would show 10 to
    // 20 peers; a uniform one all but surely over 150.
    assert!(
        seen.len() > 150,
        "only {} distinct peers handed out",
        seen.len()
    );
}

pub async fn selection_is_uniform_and_unordered(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(13);
    // 150 candidates, 100 wanted: the case a fixed stratification gets wrong.
    put_leechers(&*s, h, f, 1..=150).await;
    let seeder = peer(f, 1000);
    const ROUNDS: usize = 3000;
    let mut picked = std::collections::HashMap::<SocketAddr, usize>::new();
    let mut first = HashSet::new();
    for _ in 0..ROUNDS {
        let got = peers_for(&*s, h, true, 100, seeder).await.unwrap();
        assert_eq!(got.len(), 100);
        first.insert(got[0]);
        for a in got {
            *picked.entry(a).or_default() += 1;
        }
    }
    assert_eq!(picked.len(), 150);
    // Each peer is picked with probability 2/3; over 3000 rounds the standard
    // deviation is under 1 %, so 6 % either way is far outside chance.
    for (addr, count) in &picked {
        let share = *count as f64 / ROUNDS as f64;
        assert!(
            (0.6..0.73).contains(&share),
            "{addr} picked in {share:.3} of replies, expected 0.667"
        );
    }
    // The reply order is random too: many different peers come first.
    assert!(
        first.len() > 100,
        "only {} distinct first peers",
        first.len()
    );
}

pub async fn families_are_separate(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let h = ih(9);
    let (v4, v6) = (peer(AddressFamily::V4, 1), peer(AddressFamily::V6, 1));
    s.put_seeder(h, v4).await.unwrap();
    s.put_leecher(h, v6).await.unwrap();
    assert_eq!(counts(&*s, h, AddressFamily::V4).await, (1, 0, 0));
    assert_eq!(counts(&*s, h, AddressFamily::V6).await, (0, 1, 0));
    let resp = announced(
        &*s,
        &announce(h, peer(AddressFamily::V6, 2), Event::None, 1, 50),
    )
    .await;
    assert!(resp.ipv4_peers.is_empty());
    assert_eq!(addrs(&resp), vec![v6.addr()]);
    assert_eq!((resp.complete, resp.incomplete), (0, 2));
    let resp = announced(
        &*s,
        &announce(h, peer(AddressFamily::V4, 2), Event::None, 1, 50),
    )
    .await;
    assert!(resp.ipv6_peers.is_empty());
    assert_eq!(addrs(&resp), vec![v4.addr()]);
    // An IPv4-mapped IPv6 address is the IPv4 peer.
    let mapped = Peer::new(
        v4.id,
        IpAddr::V6(match v4.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        }),
        v4.port,
    );
    assert_eq!(s.delete_seeder(h, mapped).await, Ok(()));
    assert_eq!(counts(&*s, h, AddressFamily::V4).await.0, 0);
}
