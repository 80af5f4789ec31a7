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
//!
//! This file holds the macro, the timings and the shared helpers; the cases
//! live by subject: `chihaya` (chihaya's per-family cases), `announce` (the
//! one-step announce, snatches, scrapes), `selection` (which peers a reply
//! hands out) and `upkeep` (expiry, statistics, concurrency).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, Event, InfoHash, Params, Peer, PeerId,
};

use crate::{PeerStore, StoreError};

mod announce;
mod chihaya;
mod selection;
mod upkeep;

pub use announce::*;
pub use chihaya::*;
pub use selection::*;
pub use tokio;
pub use upkeep::*;

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

/// The reply to `req`, which the store must accept.
async fn announced(s: &dyn PeerStore, req: &AnnounceRequest) -> AnnounceResponse {
    let mut resp = AnnounceResponse::default();
    s.announce(req, &mut resp).await.unwrap();
    resp
}

/// Puts the test peers numbered `ns` of family `f` in swarm `h` as leechers.
async fn put_leechers(s: &dyn PeerStore, h: InfoHash, f: AddressFamily, ns: RangeInclusive<u16>) {
    for n in ns {
        s.put_leecher(h, peer(f, n)).await.unwrap();
    }
}

/// Puts the test peers numbered `ns` of family `f` in swarm `h` as seeders.
async fn put_seeders(s: &dyn PeerStore, h: InfoHash, f: AddressFamily, ns: RangeInclusive<u16>) {
    for n in ns {
        s.put_seeder(h, peer(f, n)).await.unwrap();
    }
}
