//! The storage conformance suite: every [`PeerStore`] runs it with one line.
//!
//! ```ignore
//! tracker::peer_store_conformance!(|cfg: tracker::conformance::StoreTestConfig| {
//!     std::sync::Arc::new(MyStore::new(cfg)) as std::sync::Arc<dyn tracker::PeerStore>
//! });
//! ```
//!
//! The cases are chihaya's `TestPeerStore` (run for IPv4 and IPv6) plus what
//! karuta adds: snatch counts, the one-step announce, never returning the
//! announcer, random selection, address-family separation, garbage collection
//! of stale peers, statistics, and concurrent announces. Each case gets a fresh
//! store from the factory.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, Event, InfoHash, Params, Peer, PeerId,
    ScrapeRequest, ScrapeResponse,
};

use crate::{PeerStore, StoreError, StoreStats, SwarmChange};

pub use tokio;

/// Timings a store under test is built with.
#[derive(Clone, Copy, Debug)]
pub struct StoreTestConfig {
    pub peer_lifetime: Duration,
    pub gc_interval: Duration,
    pub reporting_interval: Duration,
}

impl Default for StoreTestConfig {
    fn default() -> Self {
        StoreTestConfig {
            peer_lifetime: Duration::from_secs(30 * 60),
            gc_interval: Duration::from_secs(3 * 60),
            reporting_interval: Duration::from_millis(50),
        }
    }
}

/// The factory a store's test passes in.
pub type MakeStore<'a> = &'a (dyn Fn(StoreTestConfig) -> Arc<dyn PeerStore> + Sync);

/// Runs one case on a fresh multi-threaded runtime.
pub fn run<F: std::future::Future<Output = ()>>(case: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(case)
}

/// Generates one `#[test]` per conformance case for the store `$make` builds.
#[macro_export]
macro_rules! peer_store_conformance {
    ($make:expr) => {
        $crate::peer_store_conformance!(@cases $make;
            empty_store_v4, empty_store_v6,
            put_leecher_v4, put_leecher_v6,
            delete_leecher_v4, delete_leecher_v6,
            put_seeder_v4, put_seeder_v6,
            delete_seeder_v4, delete_seeder_v6,
            graduate_leecher_v4, graduate_leecher_v6,
            graduate_unknown_peer_adds_seeder,
            stop_returns_ok,
            apply_changes_the_swarm_like_an_announce,
            announce_applies_events,
            announce_never_returns_announcer,
            seeder_gets_leechers_only,
            leecher_gets_seeders_first,
            num_want_is_honoured,
            selection_is_random_across_swarm,
            selection_is_uniform_and_unordered,
            families_are_separate,
            snatches_counted_once_per_completion,
            scrape_many_in_request_order,
            stale_peers_expire,
            stats_count_swarms_and_peers,
            concurrent_announces_are_all_counted,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let make = $make;
                $crate::conformance::run($crate::conformance::$case(&make));
            }
        )*
    };
}

fn ip(family: AddressFamily, n: u16) -> IpAddr {
    match family {
        AddressFamily::V4 => IpAddr::V4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
        AddressFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)),
    }
}

/// The `n`th distinct test peer of a family.
pub fn peer(family: AddressFamily, n: u16) -> Peer {
    let mut id = [0u8; 20];
    id[..2].copy_from_slice(&n.to_be_bytes());
    Peer::new(PeerId(id), ip(family, n), 6881 + n)
}

fn ih(n: u8) -> InfoHash {
    let mut b = [0xabu8; 20];
    b[0] = n;
    b[19] = n;
    InfoHash(b)
}

/// An announce request for `peer` on `info_hash`.
pub fn announce(
    info_hash: InfoHash,
    peer: Peer,
    event: Event,
    left: u64,
    num_want: u32,
) -> AnnounceRequest {
    AnnounceRequest {
        info_hash,
        peer,
        event,
        event_provided: event != Event::None,
        num_want,
        num_want_provided: true,
        ip_provided: false,
        compact: true,
        uploaded: 0,
        downloaded: 0,
        left,
        key: None,
        params: Params::default(),
    }
}

fn addrs(resp: &AnnounceResponse) -> Vec<SocketAddr> {
    resp.peers().collect()
}

async fn peers_for(
    s: &dyn PeerStore,
    h: InfoHash,
    seeder: bool,
    n: u32,
    p: Peer,
) -> Result<Vec<SocketAddr>, StoreError> {
    let mut resp = AnnounceResponse::default();
    s.announce_peers(h, seeder, n, p, &mut resp).await?;
    Ok(addrs(&resp))
}

async fn counts(s: &dyn PeerStore, h: InfoHash, family: AddressFamily) -> (u32, u32, u32) {
    let sc = s.scrape(h, family).await.expect("scrape");
    assert_eq!(sc.info_hash, h, "scrape names the info hash asked for");
    (sc.complete, sc.incomplete, sc.snatches)
}

const DNE: Result<(), StoreError> = Err(StoreError::ResourceDoesNotExist);

async fn empty_store(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p) = (ih(1), peer(f, 1));
    assert_eq!(s.delete_seeder(h, p).await, DNE);
    assert_eq!(s.delete_leecher(h, p).await, DNE);
    assert_eq!(
        peers_for(&*s, h, false, 50, p).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    assert_eq!(
        peers_for(&*s, h, true, 50, p).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    assert_eq!(counts(&*s, h, f).await, (0, 0, 0));
    s.stop().await.unwrap();
}
pub async fn empty_store_v4(make: MakeStore<'_>) {
    empty_store(make, AddressFamily::V4).await
}
pub async fn empty_store_v6(make: MakeStore<'_>) {
    empty_store(make, AddressFamily::V6).await
}

async fn put_leecher(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_leecher(h, p).await.unwrap();
    // A seeder sees both leechers; another leecher sees p; p does not see itself.
    let seeder = peer(f, 3);
    let seen = peers_for(&*s, h, true, 50, seeder).await.unwrap();
    assert!(
        seen.contains(&p.addr()) && seen.contains(&helper.addr()),
        "{seen:?}"
    );
    let seen = peers_for(&*s, h, false, 50, helper).await.unwrap();
    assert_eq!(seen, vec![p.addr()]);
    assert_eq!(counts(&*s, h, f).await, (0, 2, 0));
    // Putting again changes nothing.
    s.put_leecher(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 2, 0));
}
pub async fn put_leecher_v4(make: MakeStore<'_>) {
    put_leecher(make, AddressFamily::V4).await
}
pub async fn put_leecher_v6(make: MakeStore<'_>) {
    put_leecher(make, AddressFamily::V6).await
}

async fn delete_leecher(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_leecher(h, p).await.unwrap();
    s.delete_leecher(h, p).await.unwrap();
    let seen = peers_for(&*s, h, true, 50, peer(f, 3)).await.unwrap();
    assert_eq!(seen, vec![helper.addr()]);
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    assert_eq!(s.delete_leecher(h, p).await, DNE);
    // A leecher is not a seeder.
    assert_eq!(s.delete_seeder(h, helper).await, DNE);
}
pub async fn delete_leecher_v4(make: MakeStore<'_>) {
    delete_leecher(make, AddressFamily::V4).await
}
pub async fn delete_leecher_v6(make: MakeStore<'_>) {
    delete_leecher(make, AddressFamily::V6).await
}

async fn put_seeder(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_seeder(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (1, 1, 0));
    // A leecher sees the seeder; another seeder does not.
    assert_eq!(
        peers_for(&*s, h, false, 50, helper).await.unwrap(),
        vec![p.addr()]
    );
    let other_seeder = peer(f, 3);
    assert_eq!(
        peers_for(&*s, h, true, 50, other_seeder).await.unwrap(),
        vec![helper.addr()]
    );
    // put_seeder on a leecher moves it.
    s.put_seeder(h, helper).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (2, 0, 0));
}
pub async fn put_seeder_v4(make: MakeStore<'_>) {
    put_seeder(make, AddressFamily::V4).await
}
pub async fn put_seeder_v6(make: MakeStore<'_>) {
    put_seeder(make, AddressFamily::V6).await
}

async fn delete_seeder(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_seeder(h, p).await.unwrap();
    s.delete_seeder(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    assert!(
        peers_for(&*s, h, false, 50, helper)
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(s.delete_seeder(h, p).await, DNE);
}
pub async fn delete_seeder_v4(make: MakeStore<'_>) {
    delete_seeder(make, AddressFamily::V4).await
}
pub async fn delete_seeder_v6(make: MakeStore<'_>) {
    delete_seeder(make, AddressFamily::V6).await
}

async fn graduate_leecher(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_leecher(h, p).await.unwrap();
    s.graduate_leecher(h, p).await.unwrap();
    assert_eq!(s.delete_leecher(h, p).await, DNE);
    assert_eq!(
        peers_for(&*s, h, false, 50, helper).await.unwrap(),
        vec![p.addr()]
    );
    assert_eq!(counts(&*s, h, f).await, (1, 1, 1));
    s.delete_seeder(h, p).await.unwrap();
    s.delete_leecher(h, helper).await.unwrap();
    assert_eq!(counts(&*s, h, f).await.0 + counts(&*s, h, f).await.1, 0);
}
pub async fn graduate_leecher_v4(make: MakeStore<'_>) {
    graduate_leecher(make, AddressFamily::V4).await
}
pub async fn graduate_leecher_v6(make: MakeStore<'_>) {
    graduate_leecher(make, AddressFamily::V6).await
}

pub async fn graduate_unknown_peer_adds_seeder(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let (h, p) = (ih(1), peer(AddressFamily::V4, 1));
    s.graduate_leecher(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, AddressFamily::V4).await, (1, 0, 1));
    // Graduating a seeder again is not another snatch.
    s.graduate_leecher(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, AddressFamily::V4).await, (1, 0, 1));
}

pub async fn stop_returns_ok(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    s.put_leecher(ih(1), peer(AddressFamily::V4, 1))
        .await
        .unwrap();
    assert_eq!(s.stop().await, Ok(()));
}

pub async fn apply_changes_the_swarm_like_an_announce(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V6;
    let (h, p) = (ih(14), peer(f, 1));
    // Removing from a swarm that does not exist fails and creates nothing.
    assert_eq!(s.apply(h, p, SwarmChange::Remove).await, DNE);
    assert_eq!(
        peers_for(&*s, h, true, 50, peer(f, 2)).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    s.apply(h, p, SwarmChange::PutLeecher).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    s.apply(h, p, SwarmChange::Graduate).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (1, 0, 1));
    s.apply(h, p, SwarmChange::PutSeeder).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (1, 0, 1));
    s.apply(h, p, SwarmChange::Remove).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 0, 1));
    assert_eq!(s.apply(h, p, SwarmChange::Remove).await, DNE);
}

pub async fn announce_applies_events(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let (h, a, b) = (ih(7), peer(f, 1), peer(f, 2));
    let mut resp = AnnounceResponse::default();

    s.announce(&announce(h, a, Event::Started, 100, 50), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (0, 1, 0));
    assert!(addrs(&resp).is_empty(), "the announcer never gets itself");

    resp.clear();
    s.announce(&announce(h, b, Event::Started, 100, 50), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete), (0, 2));
    assert_eq!(addrs(&resp), vec![a.addr()]);

    resp.clear();
    s.announce(&announce(h, a, Event::Completed, 0, 50), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 1, 1));
    assert_eq!(addrs(&resp), vec![b.addr()]);

    // A regular announce with left = 0 keeps a seeder a seeder.
    resp.clear();
    s.announce(&announce(h, a, Event::None, 0, 50), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 1, 1));

    resp.clear();
    s.announce(&announce(h, b, Event::Stopped, 100, 50), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete), (1, 0));
    assert_eq!(counts(&*s, h, f).await, (1, 0, 1));

    // Stopping an unknown peer on an unknown swarm is harmless.
    resp.clear();
    s.announce(&announce(ih(8), b, Event::Stopped, 100, 50), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete), (0, 0));
}

pub async fn announce_never_returns_announcer(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    for f in [AddressFamily::V4, AddressFamily::V6] {
        let h = ih(2);
        for n in 1..=20 {
            s.put_leecher(h, peer(f, n)).await.unwrap();
        }
        for n in 1..=20 {
            let me = peer(f, n);
            let mut resp = AnnounceResponse::default();
            s.announce(&announce(h, me, Event::None, 5, 200), &mut resp)
                .await
                .unwrap();
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
    for n in 1..=5 {
        s.put_seeder(h, peer(f, n)).await.unwrap();
    }
    for n in 6..=8 {
        s.put_leecher(h, peer(f, n)).await.unwrap();
    }
    let mut resp = AnnounceResponse::default();
    s.announce(&announce(h, peer(f, 1), Event::None, 0, 50), &mut resp)
        .await
        .unwrap();
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
    for n in 1..=5 {
        s.put_seeder(h, peer(f, n)).await.unwrap();
    }
    for n in 6..=30 {
        s.put_leecher(h, peer(f, n)).await.unwrap();
    }
    let me = peer(f, 6);
    let mut resp = AnnounceResponse::default();
    s.announce(&announce(h, me, Event::None, 1, 8), &mut resp)
        .await
        .unwrap();
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
    for n in 1..=40 {
        s.put_leecher(h, peer(f, n)).await.unwrap();
    }
    for (want, expect) in [(0u32, 0usize), (1, 1), (10, 10), (39, 39), (100, 39)] {
        let mut resp = AnnounceResponse::default();
        s.announce(&announce(h, peer(f, 1), Event::None, 1, want), &mut resp)
            .await
            .unwrap();
        assert_eq!(resp.peer_count(), expect, "num_want {want}");
    }
}

pub async fn selection_is_random_across_swarm(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(6);
    for n in 1..=200 {
        s.put_leecher(h, peer(f, n)).await.unwrap();
    }
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
    for n in 1..=150 {
        s.put_leecher(h, peer(f, n)).await.unwrap();
    }
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
    let mut resp = AnnounceResponse::default();
    s.announce(
        &announce(h, peer(AddressFamily::V6, 2), Event::None, 1, 50),
        &mut resp,
    )
    .await
    .unwrap();
    assert!(resp.ipv4_peers.is_empty());
    assert_eq!(addrs(&resp), vec![v6.addr()]);
    assert_eq!((resp.complete, resp.incomplete), (0, 2));
    resp.clear();
    s.announce(
        &announce(h, peer(AddressFamily::V4, 2), Event::None, 1, 50),
        &mut resp,
    )
    .await
    .unwrap();
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

pub async fn snatches_counted_once_per_completion(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(10);
    let mut resp = AnnounceResponse::default();
    for n in 1..=3 {
        s.announce(&announce(h, peer(f, n), Event::Started, 10, 0), &mut resp)
            .await
            .unwrap();
        s.announce(&announce(h, peer(f, n), Event::Completed, 0, 0), &mut resp)
            .await
            .unwrap();
    }
    // A repeated `completed` from a seeder is not a new snatch.
    s.announce(&announce(h, peer(f, 1), Event::Completed, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(counts(&*s, h, f).await, (3, 0, 3));
    resp.clear();
    s.announce(&announce(h, peer(f, 9), Event::None, 10, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(resp.snatches, 3);
    // Leaving does not undo a snatch.
    s.announce(&announce(h, peer(f, 2), Event::Stopped, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(counts(&*s, h, f).await, (2, 1, 3));
    // Snatches are the torrent's: a completion over IPv6 counts for IPv4
    // scrapes and announces too, while seeders and leechers stay per family.
    let v6 = AddressFamily::V6;
    s.announce(&announce(h, peer(v6, 1), Event::Completed, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 0, 4));
    assert_eq!(counts(&*s, h, f).await, (2, 1, 4));
    assert_eq!(counts(&*s, h, v6).await, (1, 0, 4));
    resp.clear();
    s.announce(&announce(h, peer(f, 3), Event::None, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(resp.snatches, 4);
}

pub async fn scrape_many_in_request_order(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    s.put_seeder(ih(1), peer(f, 1)).await.unwrap();
    s.put_leecher(ih(2), peer(f, 1)).await.unwrap();
    s.put_leecher(ih(2), peer(f, 2)).await.unwrap();
    let req = ScrapeRequest {
        address_family: f,
        info_hashes: vec![ih(2), ih(3), ih(1)],
        params: Params::default(),
    };
    let mut resp = ScrapeResponse::default();
    s.scrape_many(&req, &mut resp).await.unwrap();
    let got: Vec<_> = resp
        .files
        .iter()
        .map(|f| (f.info_hash, f.complete, f.incomplete))
        .collect();
    assert_eq!(got, vec![(ih(2), 0, 2), (ih(3), 0, 0), (ih(1), 1, 0)]);
}

pub async fn stale_peers_expire(make: MakeStore<'_>) {
    let cfg = StoreTestConfig {
        peer_lifetime: Duration::from_secs(1),
        gc_interval: Duration::from_millis(200),
        reporting_interval: Duration::from_millis(50),
    };
    let s = make(cfg);
    let f = AddressFamily::V4;
    let (h, stale, fresh) = (ih(11), peer(f, 1), peer(f, 2));
    s.put_leecher(h, stale).await.unwrap();
    s.put_seeder(ih(12), stale).await.unwrap();
    // `fresh` keeps announcing; `stale` goes quiet.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while tokio::time::Instant::now() < deadline {
        s.put_leecher(h, fresh).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    assert_eq!(
        peers_for(&*s, h, true, 50, peer(f, 3)).await.unwrap(),
        vec![fresh.addr()]
    );
    // A swarm whose peers all expired is gone.
    assert_eq!(
        peers_for(&*s, ih(12), false, 50, peer(f, 3)).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    tokio::time::sleep(cfg.reporting_interval * 4).await;
    assert_eq!(
        s.stats(),
        StoreStats {
            swarms: 1,
            seeders: 0,
            leechers: 1
        }
    );
    s.stop().await.unwrap();
}

pub async fn stats_count_swarms_and_peers(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    s.put_seeder(ih(1), peer(AddressFamily::V4, 1))
        .await
        .unwrap();
    s.put_leecher(ih(1), peer(AddressFamily::V4, 2))
        .await
        .unwrap();
    s.put_leecher(ih(1), peer(AddressFamily::V6, 2))
        .await
        .unwrap();
    s.put_leecher(ih(2), peer(AddressFamily::V4, 3))
        .await
        .unwrap();
    s.put_leecher(ih(2), peer(AddressFamily::V4, 4))
        .await
        .unwrap();
    let want = StoreStats {
        swarms: 3,
        seeders: 1,
        leechers: 4,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.stats() != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.stats(), want);
}

pub async fn concurrent_announces_are_all_counted(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    const TASKS: u16 = 8;
    const PER_TASK: u16 = 250;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let mut resp = AnnounceResponse::default();
            for i in 0..PER_TASK {
                let n = t * PER_TASK + i + 1;
                let f = if n.is_multiple_of(2) {
                    AddressFamily::V4
                } else {
                    AddressFamily::V6
                };
                let event = if i.is_multiple_of(5) {
                    Event::Completed
                } else {
                    Event::Started
                };
                let left = if event == Event::Completed { 0 } else { 1 };
                resp.clear();
                s.announce(&announce(ih(20), peer(f, n), event, left, 30), &mut resp)
                    .await
                    .unwrap();
                assert!(resp.peer_count() <= 30);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let total = u32::from(TASKS * PER_TASK);
    let (c4, i4, s4) = counts(&*s, ih(20), AddressFamily::V4).await;
    let (c6, i6, s6) = counts(&*s, ih(20), AddressFamily::V6).await;
    assert_eq!(c4 + i4 + c6 + i6, total);
    assert_eq!(c4 + c6, total / 5);
    // Snatches are per torrent: both families report all of them.
    assert_eq!((s4, s6), (total / 5, total / 5));
}
