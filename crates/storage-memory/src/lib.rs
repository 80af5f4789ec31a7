//! The in-memory peer store, registered as chihaya's `memory` storage.
//!
//! Swarms are spread over `shard_count` shards by the first four bytes of the
//! info hash (chihaya's rule); each shard is a `std::sync::Mutex` around one map
//! of IPv4 swarms and one of IPv6 swarms. A std mutex rather than an async one:
//! nothing awaits while holding it and every critical section is a few map and
//! slice operations, so an announce reads and writes its swarm under one short
//! lock and returns a ready future.
//!
//! One background thread expires stale peers every `gc_interval` and
//! publishes totals every `prometheus_reporting_interval`; it stops when the
//! store is stopped or dropped.
//!
//! `config.rs` holds the options and their check, `entry.rs` a stored peer,
//! `swarm.rs` one swarm and peer selection, `ops.rs` what an announce or a
//! write does to a swarm, `clock.rs` the ticks peers are aged in; this file
//! the shards, the store and its background thread.

#![forbid(unsafe_code)]

mod clock;
mod config;
mod entry;
mod ops;
mod swarm;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use hashbrown::HashMap;
use tracker::bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, InfoHash, Peer, Scrape, ScrapeRequest,
    ScrapeResponse,
};
use tracker::stats::{Histogram, HistogramSnapshot, StoreTotals};
use tracker::{
    ConfigError, DriverConfig, PeerStore, ReadyOrBoxed, Registry, StoreError, StoreFuture,
    StoreStats, SwarmChange,
};

pub use config::MemoryConfig;

use clock::Clock;
use entry::{Entry, Key, V4Entry, V6Entry, key_of};
use ops::{Announce, Change, Delete, Select, SwarmOp};
use swarm::{Delta, Role, Swarm};

/// The name chihaya registers this store under.
pub const NAME: &str = "memory";

/// Registers `memory` in a registry.
pub fn register(registry: &mut Registry) {
    registry.register_store(NAME, |config: MemoryConfig| {
        Ok(Arc::new(MemoryStore::new(config)?) as Arc<dyn PeerStore>)
    });
}

#[derive(Default)]
struct Shard {
    v4: HashMap<InfoHash, Swarm<V4Entry>>,
    v6: HashMap<InfoHash, Swarm<V6Entry>>,
    seeders: u64,
    leechers: u64,
}

impl Shard {
    fn apply(&mut self, d: Delta) {
        self.seeders = self.seeders.wrapping_add_signed(d.seeders);
        self.leechers = self.leechers.wrapping_add_signed(d.leechers);
    }

    fn swarms(&self) -> u64 {
        (self.v4.len() + self.v6.len()) as u64
    }
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: Option<usize>,
    /// Same-subnet preference: IPv4 and IPv6 prefix lengths, when on.
    subnet: Option<(u8, u8)>,
    clock: Clock,
    totals: StoreTotals,
    gc_durations: Histogram,
}

/// The snatches of a torrent's swarm in the other family's map; an empty map
/// (an IPv4-only tracker's IPv6 map) costs no hashing.
fn other_family_snatches<E: Entry>(map: &HashMap<InfoHash, Swarm<E>>, ih: &InfoHash) -> u32 {
    if map.is_empty() {
        return 0;
    }
    map.get(ih).map_or(0, |s| s.snatches)
}

/// [`Inner::with_swarm`] in one family's map, `mine`, next to the other
/// family's, `other`.
fn run_in_family<E: Entry, F: Entry, O: SwarmOp>(
    mine: &mut HashMap<InfoHash, Swarm<E>>,
    other: &HashMap<InfoHash, Swarm<F>>,
    ih: InfoHash,
    key: E::Key,
    create: bool,
    op: O,
) -> (Option<(O::Out, Delta)>, u32) {
    let other = other_family_snatches(other, &ih);
    let swarm = match create {
        true => Some(mine.entry(ih).or_default()),
        false => mine.get_mut(&ih),
    };
    (swarm.map(|s| op.run(s, key)), other)
}

impl Inner {
    fn shard(&self, ih: &InfoHash) -> MutexGuard<'_, Shard> {
        let first = u32::from_be_bytes([ih.0[0], ih.0[1], ih.0[2], ih.0[3]]) as usize;
        // chihaya's rule (first four bytes modulo the count); a mask when the
        // count is a power of two, as the default 1024 is.
        let n = match self.shard_mask {
            Some(mask) => first & mask,
            None => first % self.shards.len(),
        };
        // A panic while holding a shard lock cannot leave a swarm half-updated
        // in a way later operations trip over, so a poisoned lock is reused.
        self.shards[n].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the swarm of the peer's family, creating the swarm if
    /// `create`; `None` when it does not exist and was not created. Also
    /// returns the snatches of the torrent's swarm of the other family, read
    /// under the same lock.
    fn with_swarm<O: SwarmOp>(
        &self,
        ih: InfoHash,
        peer: &Peer,
        create: bool,
        op: O,
    ) -> (Option<O::Out>, u32) {
        let mut shard = self.shard(&ih);
        let shard = &mut *shard;
        let (swarm_result, other) = match key_of(peer) {
            Key::V4(k) => run_in_family(&mut shard.v4, &shard.v6, ih, k, create, op),
            Key::V6(k) => run_in_family(&mut shard.v6, &shard.v4, ih, k, create, op),
        };
        match swarm_result {
            Some((out, delta)) => {
                shard.apply(delta);
                (Some(out), other)
            }
            None => (None, other),
        }
    }

    /// Applies a change; `Remove` of a peer that is not there is an error
    /// and creates no swarm.
    fn apply(&self, ih: InfoHash, peer: Peer, change: SwarmChange) -> Result<(), StoreError> {
        let now = self.clock.now();
        let create = change != SwarmChange::Remove;
        match self.with_swarm(ih, &peer, create, Change { change, now }) {
            (Some(true), _) => Ok(()),
            _ => Err(StoreError::ResourceDoesNotExist),
        }
    }

    fn delete(&self, ih: InfoHash, peer: Peer, role: Role) -> Result<(), StoreError> {
        match self.with_swarm(ih, &peer, false, Delete(role)) {
            (Some(true), _) => Ok(()),
            _ => Err(StoreError::ResourceDoesNotExist),
        }
    }

    fn announce(&self, req: &AnnounceRequest, resp: &mut AnnounceResponse) {
        let change = SwarmChange::of(req);
        let op = Announce {
            change: Change {
                change,
                now: self.clock.now(),
            },
            want: req.num_want as usize,
            subnet: self.subnet,
            resp: &mut *resp,
        };
        // A `stopped` for a swarm that does not exist must not create one.
        let created = change != SwarmChange::Remove;
        let (_, other_family_snatches) = self.with_swarm(req.info_hash, &req.peer, created, op);
        resp.snatches = resp.snatches.saturating_add(other_family_snatches);
    }

    fn announce_peers(
        &self,
        ih: InfoHash,
        seeder: bool,
        want: u32,
        peer: Peer,
        out: &mut AnnounceResponse,
    ) -> Result<(), StoreError> {
        let role = if seeder { Role::Seeder } else { Role::Leecher };
        self.with_swarm(
            ih,
            &peer,
            false,
            Select {
                role,
                want: want as usize,
                subnet: self.subnet,
                out,
            },
        )
        .0
        .ok_or(StoreError::ResourceDoesNotExist)
    }

    /// Seeders and leechers of the family's swarm; snatches of the torrent,
    /// both families together (BEP 48's `downloaded` is per torrent).
    fn scrape(&self, ih: InfoHash, family: AddressFamily) -> Scrape {
        let shard = self.shard(&ih);
        let v4 = shard
            .v4
            .get(&ih)
            .map(|s| (s.seeders(), s.leechers(), s.snatches));
        let v6 = shard
            .v6
            .get(&ih)
            .map(|s| (s.seeders(), s.leechers(), s.snatches));
        let (complete, incomplete, _) = match family {
            AddressFamily::V4 => v4,
            AddressFamily::V6 => v6,
        }
        .unwrap_or_default();
        let snatches = v4.map_or(0, |c| c.2).saturating_add(v6.map_or(0, |c| c.2));
        Scrape {
            info_hash: ih,
            complete,
            incomplete,
            snatches,
        }
    }

    /// Expires stale peers and removes empty swarms, one shard at a time so
    /// announces to other shards are never held up.
    fn collect_garbage(&self) {
        let lifetime = self.clock.lifetime_ticks;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let now = self.clock.now();
            let mut total = Delta::default();
            shard.v4.retain(|_, s| {
                let d = s.expire(now, lifetime);
                total.seeders += d.seeders;
                total.leechers += d.leechers;
                !s.is_empty()
            });
            shard.v6.retain(|_, s| {
                let d = s.expire(now, lifetime);
                total.seeders += d.seeders;
                total.leechers += d.leechers;
                !s.is_empty()
            });
            shard.apply(total);
        }
    }

    fn report(&self) {
        let mut totals = StoreStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            totals.swarms += shard.swarms();
            totals.seeders += shard.seeders;
            totals.leechers += shard.leechers;
        }
        self.totals.publish(totals);
    }
}

struct Worker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// chihaya's `memory` store. See the crate documentation.
pub struct MemoryStore {
    inner: Arc<Inner>,
    worker: Mutex<Option<Worker>>,
}

impl MemoryStore {
    /// Builds the store and starts its background thread. A config that
    /// [`DriverConfig::validate`] refuses is refused here with the same error.
    pub fn new(config: MemoryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let gc_interval = config.gc_interval.0;
        let lifetime = config.peer_lifetime.0;
        let reporting = config.prometheus_reporting_interval.0;
        let shard_count = config.shard_count;
        let inner = Arc::new(Inner {
            shards: (0..shard_count)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            shard_mask: shard_count.is_power_of_two().then(|| shard_count - 1),
            subnet: config
                .prefer_same_subnet
                .then_some((config.subnet_ipv4_prefix, config.subnet_ipv6_prefix)),
            clock: Clock::new(lifetime, gc_interval),
            totals: StoreTotals::default(),
            gc_durations: Histogram::default(),
        });
        let (stop, stopped) = mpsc::channel();
        let background = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("memory-store-gc".into())
            .spawn(move || {
                let mut next_gc = Instant::now() + gc_interval;
                let mut next_report = Instant::now();
                let publish_every = background.clock.publish_every();
                let mut next_tick = Instant::now();
                loop {
                    let now = Instant::now();
                    if now >= next_tick {
                        background.clock.advance();
                        next_tick = now + publish_every;
                    }
                    if now >= next_report {
                        background.report();
                        next_report = now + reporting;
                    }
                    if now >= next_gc {
                        background.clock.advance();
                        let started = Instant::now();
                        background.collect_garbage();
                        let took = started.elapsed();
                        background.gc_durations.record(took);
                        tracing::debug!(elapsed = ?took, "memory store: garbage collected");
                        next_gc = Instant::now() + gc_interval;
                    }
                    let wait = next_gc
                        .min(next_report)
                        .min(next_tick)
                        .saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawning the memory store's background thread");
        tracing::debug!(shard_count, ?gc_interval, ?lifetime, "memory store started");
        Ok(MemoryStore {
            inner,
            worker: Mutex::new(Some(Worker { stop, thread })),
        })
    }

    fn stop_worker(&self) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.stop.send(());
            let _ = worker.thread.join();
        }
    }

    /// Runs one garbage collection now (tests and benchmarks).
    pub fn collect_garbage(&self) {
        self.inner.collect_garbage();
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl PeerStore for MemoryStore {
    /// Everything is in memory under short locks: never waits.
    fn may_wait(&self) -> bool {
        false
    }

    fn announce<'a>(
        &'a self,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()> {
        self.inner.announce(req, resp);
        ReadyOrBoxed::ready(Ok(()))
    }

    fn apply(&self, ih: InfoHash, peer: Peer, change: SwarmChange) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(self.inner.apply(ih, peer, change))
    }

    fn put_seeder(&self, ih: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(self.inner.apply(ih, peer, SwarmChange::PutSeeder))
    }

    fn delete_seeder(&self, ih: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(self.inner.delete(ih, peer, Role::Seeder))
    }

    fn put_leecher(&self, ih: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(self.inner.apply(ih, peer, SwarmChange::PutLeecher))
    }

    fn delete_leecher(&self, ih: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(self.inner.delete(ih, peer, Role::Leecher))
    }

    fn graduate_leecher(&self, ih: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(self.inner.apply(ih, peer, SwarmChange::Graduate))
    }

    fn announce_peers<'a>(
        &'a self,
        ih: InfoHash,
        seeder: bool,
        num_want: u32,
        peer: Peer,
        out: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()> {
        ReadyOrBoxed::ready(self.inner.announce_peers(ih, seeder, num_want, peer, out))
    }

    fn scrape(&self, ih: InfoHash, family: AddressFamily) -> StoreFuture<'_, Scrape> {
        ReadyOrBoxed::ready(Ok(self.inner.scrape(ih, family)))
    }

    fn scrape_many<'a>(
        &'a self,
        req: &'a ScrapeRequest,
        resp: &'a mut ScrapeResponse,
    ) -> StoreFuture<'a, ()> {
        resp.files.extend(
            req.info_hashes
                .iter()
                .map(|ih| self.inner.scrape(*ih, req.address_family)),
        );
        ReadyOrBoxed::ready(Ok(()))
    }

    fn stats(&self) -> StoreStats {
        self.inner.totals.read()
    }

    fn gc_durations(&self) -> Option<HistogramSnapshot> {
        Some(self.inner.gc_durations.snapshot())
    }

    fn stop(&self) -> StoreFuture<'_, ()> {
        self.stop_worker();
        ReadyOrBoxed::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tracker::config::ConfigDuration;

    use super::*;

    #[test]
    fn new_refuses_what_validate_refuses_with_the_same_error() {
        let zero = ConfigDuration(Duration::ZERO);
        for bad in [
            MemoryConfig {
                shard_count: 0,
                ..MemoryConfig::default()
            },
            MemoryConfig {
                gc_interval: zero,
                ..MemoryConfig::default()
            },
            MemoryConfig {
                peer_lifetime: zero,
                ..MemoryConfig::default()
            },
            MemoryConfig {
                prometheus_reporting_interval: zero,
                ..MemoryConfig::default()
            },
            MemoryConfig {
                subnet_ipv4_prefix: 33,
                ..MemoryConfig::default()
            },
        ] {
            let refused = bad.validate().unwrap_err();
            let Err(built) = MemoryStore::new(bad) else {
                panic!("built a store from a config validate refuses ({refused})");
            };
            assert_eq!(built, refused);
        }
        MemoryStore::new(MemoryConfig::default()).expect("the defaults are valid");
    }
}
