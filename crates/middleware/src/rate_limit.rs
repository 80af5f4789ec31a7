//! `rate limit` (karuta's; opentracker and aquatic have none): a budget of
//! announces, and one of scrapes, per client address, refilled at a steady
//! rate: a token bucket of `announce_burst` tokens refilled with
//! `announces_per_minute` (and the same for scrapes). An IPv4 client is its
//! address (`ipv4_prefix`, 32); an IPv6 client its network (`ipv6_prefix`,
//! 64), since one host holds a whole /64.
//!
//! The address is the one karuta decided to trust: for an announce
//! `req.peer.ip` (the connection's address, a trusted proxy's header, or
//! the `ip` parameter under `allow_ip_spoofing`), for a scrape
//! `req.client` (the same but for `ip`, which a scrape does not carry).
//!
//! # The table
//!
//! Memory is fixed when the hook is built, whatever the number of addresses:
//! one table per limited kind of request of `table_size` slots of 8 bytes,
//! in sets of 8 slots (one 64-byte cache line). The set of a client is chosen
//! by a keyed hash of its address prefix (keys drawn at random per table, so
//! nobody can aim addresses at one set); the slot holds 22 bits of the same
//! hash (the fingerprint: which client it is) and 42 bits of the bucket's
//! state. That state is one number, the bucket's "theoretical arrival time"
//! (GCRA, the token bucket written as a time): the millisecond at which the
//! bucket will be full again. A request at `now` is admitted when that time
//! is at most `(burst - 1) × interval` ahead of `now`, and then moves it one
//! `interval` (a minute / rate) further; a time in the past is a full bucket.
//!
//! A client not in its set takes an empty slot, else evicts the slot whose
//! time is the earliest: a bucket that is full again (nothing lost), or else
//! the one closest to full. An evicted client starts again with a full bucket
//! (the table errs on the side of admitting). Two fingerprints of 22 bits
//! meeting in one set merely share a budget.
//!
//! Each slot is one `AtomicU64`, read and replaced by compare-and-swap: no
//! lock, no allocation, one cache line per request. A failed swap means
//! another request changed that slot, so someone always makes progress, and
//! a refusal writes nothing: requests over budget cannot keep a swap from
//! succeeding. Two requests of a new client racing for two different slots
//! may both place it; the second copy is a wasted slot until evicted.
//! Counters (entries, evictions, refusals) are striped over 16 cache lines and
//! only touched when something is counted.
//!
//! The table is written (zeroed) when it is built, so its pages are resident
//! from the start: the tracker's memory does not move with the number of
//! clients at all.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bittorrent::{
    AnnounceRequest, AnnounceResponse, ClientError, ScrapeRequest, ScrapeResponse, canonical_ip,
};
use serde::Deserialize;
use tracker::telemetry::MetricSample;
use tracker::{
    ConfigError, DriverConfig, Hook, HookFuture, ReadyOrBoxed, Registry, RequestContext,
    TrackerError,
};

pub const NAME: &str = "rate limit";

/// The highest rate a minute: 1000 a second, one token a millisecond (the
/// clock's resolution).
pub const MAX_PER_MINUTE: u32 = 60_000;
/// The longest an empty bucket may take to fill (`burst` tokens at the
/// rate): 2^40 ms, about 34 years, so that its time fits a slot's 42 bits
/// for a century of uptime.
pub const MAX_REFILL_MS: u64 = 1 << 40;
/// Slots of a set: 8 × 8 bytes, one cache line.
pub const WAYS: usize = 8;
/// The largest table: 2 GiB.
pub const MAX_TABLE_SIZE: u64 = 1 << 28;

/// The options.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// Announces a client's budget regains a minute (a token every
    /// 60,000 / rate ms, rounded to the millisecond); 0: announces are not
    /// limited.
    pub announces_per_minute: u32,
    /// The most announces a client may make at once (the bucket's size).
    pub announce_burst: u32,
    /// Scrapes a client's budget regains a minute; 0: scrapes are not
    /// limited.
    pub scrapes_per_minute: u32,
    /// The most scrapes a client may make at once.
    pub scrape_burst: u32,
    /// Leading bits of an IPv4 address that make one client.
    pub ipv4_prefix: u32,
    /// Leading bits of an IPv6 address that make one client.
    pub ipv6_prefix: u32,
    /// Slots of each table (one per limited kind of request), 8 bytes each,
    /// allocated when the hook is built; a power of two.
    pub table_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // A seedbox of 3600 torrents at a 30-minute interval; its start
            // (every torrent at once) is spread over a few minutes.
            announces_per_minute: 120,
            announce_burst: 600,
            scrapes_per_minute: 60,
            scrape_burst: 120,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            table_size: 1 << 20,
        }
    }
}

fn check_rate(per_minute: u32, burst: u32, keys: (&str, &str)) -> Result<(), ConfigError> {
    if per_minute > MAX_PER_MINUTE {
        return Err(ConfigError::new(
            keys.0,
            format!("{per_minute} is more than {MAX_PER_MINUTE} (1000 a second)"),
        ));
    }
    if per_minute > 0 && burst == 0 {
        return Err(ConfigError::new(keys.1, "must be at least 1"));
    }
    if per_minute > 0 && u64::from(burst) * interval_ms(per_minute) > MAX_REFILL_MS {
        let most = MAX_REFILL_MS / interval_ms(per_minute);
        return Err(ConfigError::new(
            keys.1,
            format!(
                "{burst} is more than {most} at {per_minute} a minute (an empty bucket would take over 34 years to fill)"
            ),
        ));
    }
    Ok(())
}

/// Milliseconds a token takes to come back at `per_minute` (rounded).
fn interval_ms(per_minute: u32) -> u64 {
    (60_000 + u64::from(per_minute) / 2) / u64::from(per_minute)
}

impl DriverConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_rate(
            self.announces_per_minute,
            self.announce_burst,
            ("announces_per_minute", "announce_burst"),
        )?;
        check_rate(
            self.scrapes_per_minute,
            self.scrape_burst,
            ("scrapes_per_minute", "scrape_burst"),
        )?;
        if self.announces_per_minute == 0 && self.scrapes_per_minute == 0 {
            return Err(ConfigError::new(
                "",
                format!(
                    "{NAME:?} limits nothing: announces_per_minute and scrapes_per_minute are both 0"
                ),
            ));
        }
        if !(1..=32).contains(&self.ipv4_prefix) {
            return Err(ConfigError::new(
                "ipv4_prefix",
                format!("{} is not from 1 to 32", self.ipv4_prefix),
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(ConfigError::new(
                "ipv6_prefix",
                format!("{} is not from 1 to 128", self.ipv6_prefix),
            ));
        }
        let n = self.table_size;
        if !n.is_power_of_two() || n < WAYS as u64 || n > MAX_TABLE_SIZE {
            return Err(ConfigError::new(
                "table_size",
                format!("{n} is not a power of two from {WAYS} to {MAX_TABLE_SIZE}"),
            ));
        }
        Ok(())
    }
}

/// What a budget is spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Announce,
    Scrape,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Announce => "announce",
            Kind::Scrape => "scrape",
        }
    }
}

/// Milliseconds on a monotonic clock, for the buckets. Tests inject
/// [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// Milliseconds since the clock was made.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(Instant::now())
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// A clock that moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Relaxed);
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A refused request: how long until the client's budget admits one again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter {
    pub millis: u64,
}

impl RetryAfter {
    /// Whole seconds, rounded up: at least 1, at most 60.
    pub fn seconds(self) -> u64 {
        self.millis.div_ceil(1000).clamp(1, 60)
    }
}

/// The refusal texts, one per second of wait (a wait is at most one
/// interval, at most a minute): a refusal allocates nothing.
static REFUSALS: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..=60)
        .map(|s| format!("rate limit exceeded: try again in {s} s"))
        .collect()
});

/// The text a client is refused with.
pub fn refusal_message(wait: RetryAfter) -> &'static str {
    &REFUSALS[wait.seconds() as usize]
}

/// The state's bits in a slot; the fingerprint has the 22 above.
const TAT_BITS: u32 = 42;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;
const STRIPES: usize = 16;

#[derive(Default)]
#[repr(align(64))]
struct Set([AtomicU64; WAYS]);

#[derive(Default)]
#[repr(align(64))]
struct Stripe {
    entries: AtomicU64,
    evicted_full: AtomicU64,
    evicted_partial: AtomicU64,
    refusals: AtomicU64,
}

/// What a table reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableStats {
    pub slots: u64,
    /// The table's bytes, allocated when it was built.
    pub bytes: u64,
    /// Slots holding a client.
    pub entries: u64,
    /// Clients evicted whose bucket was full again (nothing lost).
    pub evicted_full: u64,
    /// Clients evicted with budget spent (they start again with a full
    /// bucket): many of these say the table is too small.
    pub evicted_partial: u64,
    pub refusals: u64,
}

/// The buckets of one kind of request.
struct Table {
    sets: Box<[Set]>,
    set_mask: usize,
    /// Milliseconds a token takes to come back.
    interval: u64,
    /// How far ahead of now the bucket's time may be for a request to pass:
    /// `(burst - 1) × interval`.
    tolerance: u64,
    /// Hash keys: IPv4 (2), IPv6 (2), final round (2).
    keys: [u64; 6],
    v4_mask: u32,
    v6_mask: u128,
    stripes: [Stripe; STRIPES],
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Table {
    fn new(per_minute: u32, burst: u32, config: &Config) -> Table {
        let sets = (config.table_size as usize) / WAYS;
        let random = RandomState::new();
        // An odd multiplier never loses bits of what it multiplies.
        let keys = std::array::from_fn(|i| random.hash_one(i) | 1);
        let interval = interval_ms(per_minute);
        Table {
            sets: (0..sets).map(|_| Set::default()).collect(),
            set_mask: sets - 1,
            interval,
            tolerance: u64::from(burst - 1) * interval,
            keys,
            v4_mask: u32::MAX << (32 - config.ipv4_prefix),
            v6_mask: u128::MAX << (128 - config.ipv6_prefix),
            stripes: Default::default(),
        }
    }

    /// The keyed hash of the client's prefix.
    #[inline]
    fn hash(&self, ip: IpAddr) -> u64 {
        let k = &self.keys;
        let h = match canonical_ip(ip) {
            IpAddr::V4(v4) => fold(u64::from(u32::from(v4) & self.v4_mask) ^ k[0], k[1]),
            IpAddr::V6(v6) => {
                let p = u128::from(v6) & self.v6_mask;
                fold((p as u64) ^ k[2], ((p >> 64) as u64) ^ k[3])
            }
        };
        fold(h ^ k[4], k[5])
    }

    /// Spends one token of `ip`'s bucket at `now`, or says how long until
    /// one is there.
    #[inline]
    fn admit(&self, ip: IpAddr, now: u64) -> Result<(), RetryAfter> {
        let now = now.min(TAT_MASK);
        let h = self.hash(ip);
        let index = (h as usize) & self.set_mask;
        let set = &self.sets[index].0;
        let fingerprint = (h >> TAT_BITS).max(1);
        loop {
            let (mut slot, mut old, mut found) = (0, 0, false);
            let mut earliest = u64::MAX;
            for (i, word) in set.iter().enumerate() {
                let v = word.load(Relaxed);
                if v >> TAT_BITS == fingerprint {
                    (slot, old, found) = (i, v, true);
                    break;
                }
                // An empty slot (0) comes first, then the earliest time.
                let tat = v & TAT_MASK;
                if tat < earliest || v == 0 {
                    (slot, old, earliest) = (i, v, if v == 0 { 0 } else { tat });
                }
            }
            let tat = if found {
                (old & TAT_MASK).max(now)
            } else {
                now
            };
            let ahead = tat - now;
            if ahead > self.tolerance {
                self.stripe(index).refusals.fetch_add(1, Relaxed);
                return Err(RetryAfter {
                    millis: ahead - self.tolerance,
                });
            }
            let new = (fingerprint << TAT_BITS) | (tat + self.interval).min(TAT_MASK);
            if set[slot]
                .compare_exchange(old, new, Relaxed, Relaxed)
                .is_ok()
            {
                if !found {
                    let stripe = self.stripe(index);
                    let counter = if old == 0 {
                        &stripe.entries
                    } else if old & TAT_MASK <= now {
                        &stripe.evicted_full
                    } else {
                        &stripe.evicted_partial
                    };
                    counter.fetch_add(1, Relaxed);
                }
                return Ok(());
            }
        }
    }

    #[inline]
    fn stripe(&self, set: usize) -> &Stripe {
        &self.stripes[set % STRIPES]
    }

    fn stats(&self) -> TableStats {
        let sum = |f: fn(&Stripe) -> &AtomicU64| {
            self.stripes.iter().map(|s| f(s).load(Relaxed)).sum::<u64>()
        };
        TableStats {
            slots: (self.sets.len() * WAYS) as u64,
            bytes: std::mem::size_of_val::<[Set]>(&self.sets) as u64,
            entries: sum(|s| &s.entries),
            evicted_full: sum(|s| &s.evicted_full),
            evicted_partial: sum(|s| &s.evicted_partial),
            refusals: sum(|s| &s.refusals),
        }
    }
}

/// The tables and their clock: kept across a reload that does not change
/// the options (see [`register`]).
struct Shared<C> {
    config: Config,
    clock: C,
    announces: Option<Table>,
    scrapes: Option<Table>,
}

/// The hook.
pub struct RateLimit<C: Clock = MonotonicClock> {
    shared: Arc<Shared<C>>,
}

impl RateLimit {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        RateLimit::with_clock(config, MonotonicClock::default())
    }
}

impl<C: Clock> RateLimit<C> {
    /// The hook on `clock`.
    pub fn with_clock(config: Config, clock: C) -> Result<Self, ConfigError> {
        config.validate()?;
        let table =
            |per_minute, burst| (per_minute > 0).then(|| Table::new(per_minute, burst, &config));
        let announces = table(config.announces_per_minute, config.announce_burst);
        let scrapes = table(config.scrapes_per_minute, config.scrape_burst);
        Ok(RateLimit {
            shared: Arc::new(Shared {
                config,
                clock,
                announces,
                scrapes,
            }),
        })
    }

    pub fn clock(&self) -> &C {
        &self.shared.clock
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn table(&self, kind: Kind) -> Option<&Table> {
        match kind {
            Kind::Announce => self.shared.announces.as_ref(),
            Kind::Scrape => self.shared.scrapes.as_ref(),
        }
    }

    /// Spends one of `ip`'s tokens for `kind`, or says how long until one
    /// is there. A kind that is not limited always passes.
    #[inline]
    pub fn admit(&self, kind: Kind, ip: IpAddr) -> Result<(), RetryAfter> {
        match self.table(kind) {
            Some(table) => table.admit(ip, self.shared.clock.now_ms()),
            None => Ok(()),
        }
    }

    /// The table of `kind`, if that kind is limited.
    pub fn stats(&self, kind: Kind) -> Option<TableStats> {
        self.table(kind).map(Table::stats)
    }

    #[inline]
    fn verdict(&self, kind: Kind, ip: IpAddr) -> Result<(), TrackerError> {
        self.admit(kind, ip)
            .map_err(|wait| ClientError::new(refusal_message(wait)).into())
    }
}

impl<C: Clock> Hook for RateLimit<C> {
    fn handle_announce<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        ReadyOrBoxed::ready(self.verdict(Kind::Announce, req.peer.ip()))
    }

    fn handle_scrape<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a ScrapeRequest,
        _resp: &'a mut ScrapeResponse,
    ) -> HookFuture<'a> {
        ReadyOrBoxed::ready(self.verdict(Kind::Scrape, req.client))
    }

    fn metrics(&self, out: &mut Vec<MetricSample>) {
        for kind in [Kind::Announce, Kind::Scrape] {
            let Some(s) = self.stats(kind) else { continue };
            let label = |m: MetricSample| m.label("kind", kind.as_str());
            out.push(label(MetricSample::gauge(
                "karuta_rate_limit_table_bytes",
                "Bytes of a rate limit table (fixed when the hook is built).",
                s.bytes as f64,
            )));
            out.push(label(MetricSample::gauge(
                "karuta_rate_limit_table_slots",
                "Slots of a rate limit table.",
                s.slots as f64,
            )));
            out.push(label(MetricSample::gauge(
                "karuta_rate_limit_entries",
                "Slots of a rate limit table holding a client.",
                s.entries as f64,
            )));
            out.push(label(
                MetricSample::counter(
                    "karuta_rate_limit_evictions_total",
                    "Clients evicted from a full set of a rate limit table; bucket=partial: with budget spent, so the table may be too small.",
                    s.evicted_full,
                )
                .label("bucket", "full"),
            ));
            out.push(label(
                MetricSample::counter(
                    "karuta_rate_limit_evictions_total",
                    "Clients evicted from a full set of a rate limit table; bucket=partial: with budget spent, so the table may be too small.",
                    s.evicted_partial,
                )
                .label("bucket", "partial"),
            ));
            out.push(label(MetricSample::counter(
                "karuta_rate_limit_refusals_total",
                "Requests refused for a client over its budget.",
                s.refusals,
            )));
        }
    }
}

/// Registers the hook. A reload with the same options keeps the tables (and
/// every client's budget); other options build new ones.
pub fn register(registry: &mut Registry) {
    let kept = Arc::new(KeptTables::default());
    registry.register_hook(NAME, move |config: Config| {
        Ok(Arc::new(kept.hook(config)?) as Arc<dyn Hook>)
    });
}

/// The tables of the hooks built so far, for their successors.
#[derive(Default)]
struct KeptTables(Mutex<Vec<Weak<Shared<MonotonicClock>>>>);

impl KeptTables {
    /// A hook for `config`: on the tables of a running hook with the same
    /// options, or on new ones.
    ///
    /// Tables held by one hook only are the running configuration's, and
    /// its successor takes them; tables held by two already went to another
    /// hook of the configuration being built (two `rate limit` entries with
    /// the same options), which must not spend from the same buckets. A
    /// reload while the hooks of the one before are still finishing their
    /// requests (at most 5 s) finds three holders and starts afresh: the
    /// table errs on the side of admitting.
    fn hook(&self, config: Config) -> Result<RateLimit, ConfigError> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|shared| shared.strong_count() > 0);
        // One holder, plus the upgrade itself.
        let running = kept
            .iter()
            .filter_map(Weak::upgrade)
            .find(|shared| shared.config == config && Arc::strong_count(shared) == 2);
        if let Some(shared) = running {
            return Ok(RateLimit { shared });
        }
        let hook = RateLimit::new(config)?;
        kept.push(Arc::downgrade(&hook.shared));
        Ok(hook)
    }
}

#[cfg(test)]
mod tests;
