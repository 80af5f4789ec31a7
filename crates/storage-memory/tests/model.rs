//! The memory store against a simple model, by property testing.
//!
//! Random sequences of store operations over a few info hashes and a few
//! peers of each address family run against both the store and a plain
//! model (sets of seeders and leechers and a snatch count per swarm, reported
//! summed over both families). After
//! every operation the store's answer is checked against the model: errors,
//! counts, and for peer lists the exact count, that every peer is eligible
//! (right family, right role, not the announcer), that none is repeated, and
//! that a leecher is given every seeder before any leecher.
//!
//! Garbage collection is not modelled: the store is built with the default
//! 30-minute peer lifetime, so nothing expires while a case runs, and an
//! emptied swarm keeps existing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;
use storage_memory::{MemoryConfig, MemoryStore};
use tracker::bittorrent::{
    AddressFamily, AnnounceResponse, Event, InfoHash, Peer, PeerId, Scrape, ScrapeRequest,
    ScrapeResponse,
};
use tracker::config::ConfigDuration;
use tracker::conformance::{StoreTestConfig, announce, peer};
use tracker::{PeerStore, StoreError, StoreFuture, SwarmChange};

const INFO_HASHES: u8 = 3;
const PEERS_PER_FAMILY: u16 = 6;

fn make_store() -> Arc<dyn PeerStore> {
    let cfg = StoreTestConfig::default();
    Arc::new(
        MemoryStore::new(MemoryConfig {
            gc_interval: ConfigDuration(cfg.gc_interval),
            peer_lifetime: ConfigDuration(cfg.peer_lifetime),
            // Few shards: the info hashes below all land in the same one, so
            // swarms sharing a shard are exercised too.
            shard_count: 4,
            prometheus_reporting_interval: ConfigDuration(cfg.reporting_interval),
            ..MemoryConfig::default()
        })
        .expect("a valid memory config"),
    )
}

fn info_hash(n: u8) -> InfoHash {
    let mut b = [0xabu8; 20];
    b[0] = n;
    b[19] = n;
    InfoHash(b)
}

/// A peer as an operation names it: which one (family and number), plus
/// details that must not matter to the store.
#[derive(Clone, Copy, Debug)]
struct PeerSel {
    family: AddressFamily,
    n: u16,
    /// The peer id: a peer is identified by address and port only.
    id: u8,
    /// For IPv4 peers: given as an IPv4-mapped IPv6 address, which is
    /// canonicalised to the same IPv4 peer.
    mapped: bool,
}

impl PeerSel {
    fn peer(self) -> Peer {
        let mut p = peer(self.family, self.n);
        p.id = PeerId([self.id; 20]);
        if self.mapped
            && let IpAddr::V4(v4) = p.ip()
        {
            p.set_ip(IpAddr::V6(v4.to_ipv6_mapped()));
        }
        p
    }

    fn addr(self) -> SocketAddr {
        peer(self.family, self.n).addr()
    }
}

#[derive(Clone, Debug)]
enum Op {
    PutSeeder(u8, PeerSel),
    PutLeecher(u8, PeerSel),
    DeleteSeeder(u8, PeerSel),
    DeleteLeecher(u8, PeerSel),
    Graduate(u8, PeerSel),
    Announce {
        ih: u8,
        peer: PeerSel,
        event: Event,
        left: u64,
        num_want: u32,
    },
    AnnouncePeers {
        ih: u8,
        seeder: bool,
        num_want: u32,
        peer: PeerSel,
    },
    Scrape(u8, AddressFamily),
    ScrapeMany(Vec<u8>, AddressFamily),
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

fn peer_sel() -> impl Strategy<Value = PeerSel> {
    (family(), 1..=PEERS_PER_FAMILY, any::<u8>(), any::<bool>()).prop_map(
        |(family, n, id, mapped)| PeerSel {
            family,
            n,
            id,
            mapped: mapped && family == AddressFamily::V4,
        },
    )
}

fn ih() -> impl Strategy<Value = u8> {
    0..INFO_HASHES
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::None),
        2 => Just(Event::Started),
        2 => Just(Event::Stopped),
        2 => Just(Event::Completed),
    ]
}

fn left() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1..u64::MAX]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (ih(), peer_sel()).prop_map(|(h, p)| Op::PutSeeder(h, p)),
        3 => (ih(), peer_sel()).prop_map(|(h, p)| Op::PutLeecher(h, p)),
        2 => (ih(), peer_sel()).prop_map(|(h, p)| Op::DeleteSeeder(h, p)),
        2 => (ih(), peer_sel()).prop_map(|(h, p)| Op::DeleteLeecher(h, p)),
        2 => (ih(), peer_sel()).prop_map(|(h, p)| Op::Graduate(h, p)),
        6 => (ih(), peer_sel(), event(), left(), 0u32..10).prop_map(
            |(ih, peer, event, left, num_want)| Op::Announce {
                ih,
                peer,
                event,
                left,
                num_want,
            }
        ),
        3 => (ih(), any::<bool>(), 0u32..10, peer_sel()).prop_map(
            |(ih, seeder, num_want, peer)| Op::AnnouncePeers {
                ih,
                seeder,
                num_want,
                peer,
            }
        ),
        1 => (ih(), family()).prop_map(|(h, f)| Op::Scrape(h, f)),
        1 => (proptest::collection::vec(ih(), 0..5), family())
            .prop_map(|(hs, f)| Op::ScrapeMany(hs, f)),
    ]
}

/// One swarm in the model: peers by number within the swarm's family.
#[derive(Clone, Debug, Default)]
struct ModelSwarm {
    seeders: BTreeSet<u16>,
    leechers: BTreeSet<u16>,
    snatches: u32,
}

impl ModelSwarm {
    fn counts(&self) -> (u32, u32, u32) {
        (
            self.seeders.len() as u32,
            self.leechers.len() as u32,
            self.snatches,
        )
    }

    fn put_seeder(&mut self, n: u16) {
        self.leechers.remove(&n);
        self.seeders.insert(n);
    }

    fn put_leecher(&mut self, n: u16) {
        self.seeders.remove(&n);
        self.leechers.insert(n);
    }

    fn graduate(&mut self, n: u16) {
        if !self.seeders.contains(&n) {
            self.snatches += 1;
        }
        self.put_seeder(n);
    }
}

#[derive(Debug, Default)]
struct Model {
    swarms: HashMap<(u8, AddressFamily), ModelSwarm>,
}

impl Model {
    fn swarm(&mut self, ih: u8, f: AddressFamily) -> &mut ModelSwarm {
        self.swarms.entry((ih, f)).or_default()
    }

    /// Seeders and leechers of the family's swarm; snatches of the torrent
    /// (both families), as BEP 48's `downloaded` is per torrent.
    fn counts(&self, ih: u8, f: AddressFamily) -> (u32, u32, u32) {
        let (seeders, leechers, _) = self
            .swarms
            .get(&(ih, f))
            .map_or((0, 0, 0), ModelSwarm::counts);
        let snatches = [AddressFamily::V4, AddressFamily::V6]
            .iter()
            .filter_map(|&fam| self.swarms.get(&(ih, fam)))
            .map(|sw| sw.snatches)
            .sum();
        (seeders, leechers, snatches)
    }

    /// Checks a store's scrape of `ih` in family `f` against the model.
    fn check_scrape(
        &self,
        sc: &Scrape,
        ih: u8,
        f: AddressFamily,
        ctx: &str,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(sc.info_hash, info_hash(ih), "{}", ctx);
        prop_assert_eq!(
            (sc.complete, sc.incomplete, sc.snatches),
            self.counts(ih, f),
            "{}",
            ctx
        );
        Ok(())
    }

    fn delete(&mut self, ih: u8, p: PeerSel, seeder: bool) -> Result<(), StoreError> {
        let removed = self.swarms.get_mut(&(ih, p.family)).is_some_and(|s| {
            if seeder {
                s.seeders.remove(&p.n)
            } else {
                s.leechers.remove(&p.n)
            }
        });
        if removed {
            Ok(())
        } else {
            Err(StoreError::ResourceDoesNotExist)
        }
    }
}

fn addrs(resp: &AnnounceResponse) -> Vec<SocketAddr> {
    resp.peers().collect()
}

/// Checks a peer list given to `me` (a seeder or not) of the model swarm `s`.
fn check_peers(
    resp: &AnnounceResponse,
    s: &ModelSwarm,
    me: PeerSel,
    seeder: bool,
    num_want: u32,
) -> Result<(), TestCaseError> {
    let other_family = match me.family {
        AddressFamily::V4 => resp.ipv6_peers.len(),
        AddressFamily::V6 => resp.ipv4_peers.len(),
    };
    prop_assert_eq!(other_family, 0, "peers of the other family returned");

    // The addresses of a role's peers but the announcer.
    let others = |ns: &BTreeSet<u16>| -> HashSet<SocketAddr> {
        ns.iter()
            .filter(|&&n| n != me.n)
            .map(|&n| peer(me.family, n).addr())
            .collect()
    };
    let (seeders, leechers) = (others(&s.seeders), others(&s.leechers));
    let want = num_want as usize;

    let got = addrs(resp);
    let unique: HashSet<SocketAddr> = got.iter().copied().collect();
    prop_assert_eq!(unique.len(), got.len(), "duplicate peers: {:?}", got);
    prop_assert!(
        !unique.contains(&me.addr()),
        "announcer returned: {:?}",
        got
    );

    if seeder {
        prop_assert_eq!(got.len(), want.min(leechers.len()), "count: {:?}", got);
        prop_assert!(
            unique.is_subset(&leechers),
            "seeder given non-leechers: got {:?}, leechers {:?}",
            got,
            leechers
        );
    } else {
        let eligible = seeders.len() + leechers.len();
        prop_assert_eq!(got.len(), want.min(eligible), "count: {:?}", got);
        let eligible: HashSet<SocketAddr> = seeders.union(&leechers).copied().collect();
        prop_assert!(
            unique.is_subset(&eligible),
            "ineligible peers: got {:?}, eligible {:?}",
            got,
            eligible
        );
        let seeders_got = got.iter().filter(|a| seeders.contains(a)).count();
        prop_assert_eq!(
            seeders_got,
            want.min(seeders.len()),
            "leecher not given seeders first: got {:?}, seeders {:?}",
            got,
            seeders
        );
    }
    Ok(())
}

/// Checks that the store accepts a call the model says must succeed.
fn accepted(
    rt: &tokio::runtime::Runtime,
    call: StoreFuture<'_, ()>,
    ctx: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(rt.block_on(call), Ok(()), "{}", ctx);
    Ok(())
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let store = make_store();
    let s = &*store;
    let mut model = Model::default();

    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        match *op {
            Op::PutSeeder(h, p) => {
                accepted(&rt, s.put_seeder(info_hash(h), p.peer()), &ctx)?;
                model.swarm(h, p.family).put_seeder(p.n);
            }
            Op::PutLeecher(h, p) => {
                accepted(&rt, s.put_leecher(info_hash(h), p.peer()), &ctx)?;
                model.swarm(h, p.family).put_leecher(p.n);
            }
            Op::DeleteSeeder(h, p) => {
                let got = rt.block_on(s.delete_seeder(info_hash(h), p.peer()));
                prop_assert_eq!(got, model.delete(h, p, true), "{}", ctx);
            }
            Op::DeleteLeecher(h, p) => {
                let got = rt.block_on(s.delete_leecher(info_hash(h), p.peer()));
                prop_assert_eq!(got, model.delete(h, p, false), "{}", ctx);
            }
            Op::Graduate(h, p) => {
                accepted(&rt, s.graduate_leecher(info_hash(h), p.peer()), &ctx)?;
                model.swarm(h, p.family).graduate(p.n);
            }
            Op::Announce {
                ih: h,
                peer: p,
                event,
                left,
                num_want,
            } => {
                let req = announce(info_hash(h), p.peer(), event, left, num_want);
                let mut resp = AnnounceResponse::default();
                accepted(&rt, s.announce(&req, &mut resp), &ctx)?;

                let change = SwarmChange::of(&req);
                let key = (h, p.family);
                match change {
                    SwarmChange::Remove => {
                        if let Some(sw) = model.swarms.get_mut(&key) {
                            sw.seeders.remove(&p.n);
                            sw.leechers.remove(&p.n);
                        }
                    }
                    SwarmChange::Graduate => model.swarm(h, p.family).graduate(p.n),
                    SwarmChange::PutSeeder => model.swarm(h, p.family).put_seeder(p.n),
                    SwarmChange::PutLeecher => model.swarm(h, p.family).put_leecher(p.n),
                }
                prop_assert_eq!(
                    (resp.complete, resp.incomplete, resp.snatches),
                    model.counts(h, p.family),
                    "{}",
                    ctx
                );
                let empty = ModelSwarm::default();
                let sw = model.swarms.get(&key).unwrap_or(&empty);
                check_peers(&resp, sw, p, change.leaves_seeder(), num_want)
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
            }
            Op::AnnouncePeers {
                ih: h,
                seeder,
                num_want,
                peer: p,
            } => {
                let mut resp = AnnounceResponse::default();
                let got = rt.block_on(s.announce_peers(
                    info_hash(h),
                    seeder,
                    num_want,
                    p.peer(),
                    &mut resp,
                ));
                match model.swarms.get(&(h, p.family)) {
                    None => {
                        prop_assert_eq!(got, Err(StoreError::ResourceDoesNotExist), "{}", ctx);
                        prop_assert_eq!(resp.peer_count(), 0, "{}", ctx);
                    }
                    Some(sw) => {
                        prop_assert_eq!(got, Ok(()), "{}", ctx);
                        check_peers(&resp, sw, p, seeder, num_want)
                            .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
                    }
                }
            }
            Op::Scrape(h, f) => {
                let got = rt.block_on(s.scrape(info_hash(h), f));
                let sc = got.map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
                model.check_scrape(&sc, h, f, &ctx)?;
            }
            Op::ScrapeMany(ref hs, f) => {
                let req = ScrapeRequest {
                    info_hashes: hs.iter().map(|&h| info_hash(h)).collect(),
                    address_family: f,
                    ..ScrapeRequest::default()
                };
                let mut resp = ScrapeResponse::default();
                accepted(&rt, s.scrape_many(&req, &mut resp), &ctx)?;
                prop_assert_eq!(resp.files.len(), hs.len(), "{}", ctx);
                for (sc, &h) in resp.files.iter().zip(hs) {
                    model.check_scrape(sc, h, f, &ctx)?;
                }
            }
        }

        // Every swarm's counts agree with the model after every step, not
        // only the one the operation touched.
        for h in 0..INFO_HASHES {
            for f in [AddressFamily::V4, AddressFamily::V6] {
                let sc = rt
                    .block_on(s.scrape(info_hash(h), f))
                    .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
                prop_assert_eq!(
                    (sc.complete, sc.incomplete, sc.snatches),
                    model.counts(h, f),
                    "after {}: swarm {} {:?}",
                    ctx,
                    h,
                    f
                );
            }
        }
    }

    prop_assert_eq!(rt.block_on(s.stop()), Ok(()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(ops)?;
    }
}
