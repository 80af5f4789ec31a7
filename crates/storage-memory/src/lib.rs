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

#![forbid(unsafe_code)]

mod swarm;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use serde::Deserialize;
use tracker::bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, InfoHash, Peer, Scrape, ScrapeRequest,
    ScrapeResponse,
};
use tracker::config::ConfigDuration;
use tracker::stats::{Histogram, HistogramSnapshot};
use tracker::{
    ConfigError, DriverConfig, PeerStore, ReadyOrBoxed, Registry, StoreError, StoreFuture,
    StoreStats, SwarmChange,
};

use swarm::{Delta, Entry, Role, Swarm, V4Entry, V6Entry, v4_key, v6_key};

/// The name chihaya registers this store under.
pub const NAME: &str = "memory";

/// The `storage.config` section of `memory` (chihaya's keys and code defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemoryConfig {
    /// How often stale peers are removed.
    pub gc_interval: ConfigDuration,
    /// How long a peer stays without announcing.
    pub peer_lifetime: ConfigDuration,
    /// Number of shards (locks); more means less contention.
    pub shard_count: usize,
    /// How often the swarm and peer totals are recomputed for metrics.
    pub prometheus_reporting_interval: ConfigDuration,
    /// karuta: hand out peers of the announcer's own network first (chihaya
    /// issue #267; Facebook's rack-local deployments), then the rest.
    pub prefer_same_subnet: bool,
    /// karuta: the network an IPv4 announcer's peers are preferred from.
    pub subnet_ipv4_prefix: u8,
    /// karuta: the same for IPv6.
    pub subnet_ipv6_prefix: u8,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            gc_interval: ConfigDuration(Duration::from_secs(3 * 60)),
            peer_lifetime: ConfigDuration(Duration::from_secs(30 * 60)),
            shard_count: 1024,
            prometheus_reporting_interval: ConfigDuration(Duration::from_secs(1)),
            prefer_same_subnet: false,
            subnet_ipv4_prefix: 24,
            subnet_ipv6_prefix: 64,
        }
    }
}

impl DriverConfig for MemoryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let zero = |key: &str| ConfigError::new(key, "must be greater than zero");
        if self.shard_count == 0 {
            return Err(zero("shard_count"));
        }
        if self.shard_count > 1 << 20 {
            return Err(ConfigError::new("shard_count", "must be at most 1048576"));
        }
        if self.gc_interval.0.is_zero() {
            return Err(zero("gc_interval"));
        }
        if self.peer_lifetime.0.is_zero() {
            return Err(zero("peer_lifetime"));
        }
        if self.prometheus_reporting_interval.0.is_zero() {
            return Err(zero("prometheus_reporting_interval"));
        }
        if self.subnet_ipv4_prefix > 32 {
            return Err(ConfigError::new("subnet_ipv4_prefix", "must be at most 32"));
        }
        if self.subnet_ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "subnet_ipv6_prefix",
                "must be at most 128",
            ));
        }
        if self.peer_lifetime.0 + self.gc_interval.0 > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new(
                "peer_lifetime",
                "peer_lifetime plus gc_interval must be under a year",
            ));
        }
        Ok(())
    }
}

/// Registers `memory` in a registry.
pub fn register(registry: &mut Registry) {
    registry.register_store(NAME, |config: MemoryConfig| {
        Ok(Arc::new(MemoryStore::new(config)) as Arc<dyn PeerStore>)
    });
}

/// Time in ticks since the store started, wrapping at 2^16.
///
/// Peers store their last-seen tick in 16 bits. A tick is one second unless
/// `peer_lifetime + gc_interval` would not fit in half the wrap-around range,
/// in which case ticks get longer, so an age is always measured unambiguously.
#[derive(Debug)]
///
/// Reading the time costs more than a small announce's own work, so the
/// background thread publishes the current tick a few times per tick and
/// operations read that ([`Clock::now`]); an age is off by at most a quarter
/// tick.
struct Clock {
    start: Instant,
    tick: Duration,
    lifetime_ticks: u16,
    current: AtomicU16,
}

impl Clock {
    fn new(lifetime: Duration, gc_interval: Duration) -> Self {
        let horizon = (lifetime + gc_interval).as_secs_f64();
        let tick_secs = (horizon / 16_384.0).ceil().max(1.0);
        let tick = Duration::from_secs_f64(tick_secs);
        Clock {
            start: Instant::now(),
            tick,
            lifetime_ticks: (lifetime.as_secs_f64() / tick_secs).ceil() as u16,
            current: AtomicU16::new(0),
        }
    }

    /// The last published tick.
    fn now(&self) -> u16 {
        self.current.load(Ordering::Relaxed)
    }

    /// Publishes the current tick (the background thread, a few times a tick).
    fn advance(&self) -> u16 {
        let now = (self.start.elapsed().as_nanos() / self.tick.as_nanos()) as u16;
        self.current.store(now, Ordering::Relaxed);
        now
    }

    /// How often [`advance`](Self::advance) runs.
    fn publish_every(&self) -> Duration {
        self.tick / 4
    }
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
    stats: [AtomicU64; 3],
    gc_durations: Histogram,
}

/// A peer's address in the form its family's swarms key it by.
enum Key {
    V4([u8; 6]),
    V6([u8; 18]),
}

fn key_of(peer: &Peer) -> Key {
    match peer.ip() {
        IpAddr::V4(ip) => Key::V4(v4_key(ip, peer.port)),
        IpAddr::V6(ip) => Key::V6(v6_key(ip, peer.port)),
    }
}

thread_local! {
    static RNG: std::cell::RefCell<fastrand::Rng> = std::cell::RefCell::new(fastrand::Rng::new());
}

/// An operation on one swarm, generic over the address family's entry type.
trait SwarmOp {
    type Out;
    fn run<E: Entry>(self, swarm: &mut Swarm<E>, key: E::Key) -> (Self::Out, Delta);
}

/// Applies a [`SwarmChange`].
struct Change {
    change: SwarmChange,
    now: u16,
}

/// `false` only when `Remove` found no such peer.
impl SwarmOp for Change {
    type Out = bool;
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> (bool, Delta) {
        match self.change {
            SwarmChange::Remove => s
                .delete(k, None)
                .map_or((false, Delta::default()), |d| (true, d)),
            SwarmChange::Graduate => (true, s.graduate(k, self.now)),
            SwarmChange::PutSeeder => (true, s.put(k, Role::Seeder, self.now)),
            SwarmChange::PutLeecher => (true, s.put(k, Role::Leecher, self.now)),
        }
    }
}

/// Removes a peer of a given role; `true` if it was there.
struct Delete(Role);

impl SwarmOp for Delete {
    type Out = bool;
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> (bool, Delta) {
        s.delete(k, Some(self.0))
            .map_or((false, Delta::default()), |d| (true, d))
    }
}

/// Picks peers for an announcer without changing the swarm.
struct Select<'r> {
    role: Role,
    want: usize,
    /// Same-subnet preference: the IPv4 and IPv6 prefix lengths.
    subnet: Option<(u8, u8)>,
    out: &'r mut AnnounceResponse,
}

impl SwarmOp for Select<'_> {
    type Out = ();
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> ((), Delta) {
        if self.want > 0 {
            let subnet = self.subnet.map(|(v4, v6)| if E::IPV6 { v6 } else { v4 });
            RNG.with(|rng| {
                s.select(
                    k,
                    self.role,
                    self.want,
                    subnet,
                    &mut rng.borrow_mut(),
                    self.out,
                )
            });
        }
        ((), Delta::default())
    }
}

/// The one-step announce: apply the change, then read counts and peers.
struct Announce<'r> {
    change: Change,
    want: usize,
    subnet: Option<(u8, u8)>,
    resp: &'r mut AnnounceResponse,
}

impl SwarmOp for Announce<'_> {
    type Out = ();
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> ((), Delta) {
        let role = if self.change.change.leaves_seeder() {
            Role::Seeder
        } else {
            Role::Leecher
        };
        let (_, delta) = self.change.run(s, k);
        self.resp.complete = s.seeders();
        self.resp.incomplete = s.leechers();
        self.resp.snatches = s.snatches;
        Select {
            role,
            want: self.want,
            subnet: self.subnet,
            out: self.resp,
        }
        .run(s, k);
        ((), delta)
    }
}

/// The snatches of a torrent's swarm in the other family's map; an empty map
/// (an IPv4-only tracker's IPv6 map) costs no hashing.
fn other_family_snatches<E: Entry>(map: &HashMap<InfoHash, Swarm<E>>, ih: &InfoHash) -> u32 {
    if map.is_empty() {
        return 0;
    }
    map.get(ih).map_or(0, |s| s.snatches)
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
            Key::V4(k) => {
                let other = other_family_snatches(&shard.v6, &ih);
                let swarm = match create {
                    true => Some(shard.v4.entry(ih).or_default()),
                    false => shard.v4.get_mut(&ih),
                };
                (swarm.map(|s| op.run(s, k)), other)
            }
            Key::V6(k) => {
                let other = other_family_snatches(&shard.v4, &ih);
                let swarm = match create {
                    true => Some(shard.v6.entry(ih).or_default()),
                    false => shard.v6.get_mut(&ih),
                };
                (swarm.map(|s| op.run(s, k)), other)
            }
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
        let mut totals = [0u64; 3];
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            totals[0] += shard.swarms();
            totals[1] += shard.seeders;
            totals[2] += shard.leechers;
        }
        for (slot, value) in self.stats.iter().zip(totals) {
            slot.store(value, Ordering::Relaxed);
        }
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
    /// Builds the store and starts its background thread. `config` should have
    /// passed [`DriverConfig::validate`]; zero values are replaced by defaults.
    pub fn new(config: MemoryConfig) -> Self {
        let defaults = MemoryConfig::default();
        let pick = |d: ConfigDuration, default: ConfigDuration| {
            if d.0.is_zero() { default.0 } else { d.0 }
        };
        let gc_interval = pick(config.gc_interval, defaults.gc_interval);
        let lifetime = pick(config.peer_lifetime, defaults.peer_lifetime);
        let reporting = pick(
            config.prometheus_reporting_interval,
            defaults.prometheus_reporting_interval,
        );
        let shard_count = config.shard_count.max(1);
        let inner = Arc::new(Inner {
            shards: (0..shard_count)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            shard_mask: shard_count.is_power_of_two().then(|| shard_count - 1),
            subnet: config
                .prefer_same_subnet
                .then_some((config.subnet_ipv4_prefix, config.subnet_ipv6_prefix)),
            clock: Clock::new(lifetime, gc_interval),
            stats: Default::default(),
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
        MemoryStore {
            inner,
            worker: Mutex::new(Some(Worker { stop, thread })),
        }
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
        let [swarms, seeders, leechers] = &self.inner.stats;
        StoreStats {
            swarms: swarms.load(Ordering::Relaxed),
            seeders: seeders.load(Ordering::Relaxed),
            leechers: leechers.load(Ordering::Relaxed),
        }
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
    use super::*;

    #[test]
    fn clock_ticks_fit_the_lifetime() {
        let c = Clock::new(Duration::from_secs(31 * 60), Duration::from_secs(180));
        assert_eq!(c.tick, Duration::from_secs(1));
        assert_eq!(c.lifetime_ticks, 1860);
        let long = Clock::new(
            Duration::from_secs(7 * 24 * 3600),
            Duration::from_secs(3600),
        );
        assert!(long.tick > Duration::from_secs(1));
        assert!(u32::from(long.lifetime_ticks) < 1 << 15);
    }

    #[test]
    fn config_validation_names_keys() {
        let mut c = MemoryConfig {
            shard_count: 0,
            ..MemoryConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "shard_count");
        c.shard_count = 4;
        c.gc_interval = ConfigDuration(Duration::ZERO);
        assert_eq!(c.validate().unwrap_err().key, "gc_interval");
    }
}
