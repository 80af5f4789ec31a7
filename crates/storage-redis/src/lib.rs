//! The Redis peer store, registered as chihaya's `redis` storage: several
//! karuta instances behind a load balancer share one Redis.
//!
//! # Data layout
//!
//! Every key starts with `key_prefix` (default `karuta:`), so several
//! trackers can share one Redis database. `<ih>` is the info hash in lower-case
//! hex, `<f>` the address family (`4` or `6`).
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `<prefix><ih>:<f>:S` | sorted set | seeders: member = compact address (4 or 16 bytes of IP, then the port, big-endian), score = last seen, unix milliseconds |
//! | `<prefix><ih>:<f>:L` | sorted set | leechers, the same way |
//! | `<prefix><ih>:n` | string (integer) | the torrent's snatches, both families together; expires `peer_lifetime + gc_interval` after the torrent's last write |
//! | `<prefix>swarms` | set | the swarms that have peers, as `<ih>:<f>`, walked by garbage collection |
//! | `<prefix>stats` | hash | `swarms`, `seeders`, `leechers`: exact totals |
//!
//! Every write is a Lua script, so the totals in `stats` change in the same
//! atomic step as the peers (exact under any concurrency, across instances).
//! An empty sorted set does not exist in Redis, so a swarm exists exactly
//! while it has a peer.
//!
//! # Round trips
//!
//! An announce is one `EVALSHA` (the script is loaded once; on `NOSCRIPT`, as
//! after a Redis restart, the client sends it again): it applies the change,
//! reads the counts and the snatches, and draws random peers with
//! `ZRANDMEMBER` (seeders first for a leecher, leechers only for a seeder),
//! one more than wanted so the announcer can be dropped; when that would be
//! more than a third of the set, the whole set is returned instead, as
//! `ZRANDMEMBER` is biased there. The client removes
//! the announcer, shuffles (Redis returns a random subset but not always in a
//! random order) and truncates. A scrape is one pipeline.
//!
//! # Background work
//!
//! One tokio task reads `stats` every `prometheus_reporting_interval` (so
//! [`PeerStore::stats`] is a cached read) and collects garbage every
//! `gc_interval`: it walks `swarms` with `SSCAN` and, per batch, runs a script
//! that removes peers older than `peer_lifetime` (`ZREMRANGEBYSCORE`) and
//! forgets emptied swarms, adjusting the totals by what it actually removed,
//! so two instances collecting at once do no harm.
//!
//! # TLS
//!
//! `rediss://` connects over TLS (rustls, ring) and checks the server's
//! certificate against the system's roots, or against the PEM file
//! `redis_tls_ca_file` (karuta's key) for a private CA.
//!
//! # Failures
//!
//! Every call is bounded by the configured timeouts; a Redis failure is
//! [`StoreError::Unavailable`]. The connection is a `ConnectionManager`,
//! which reconnects by itself when Redis comes back.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
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

/// The name chihaya registers this store under.
pub const NAME: &str = "redis";

/// The `storage.config` section of `redis` (chihaya's keys and defaults, plus
/// karuta's `key_prefix`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS, if
    /// compiled in), `redis+unix:///path` or `unix:///path`. chihaya's
    /// `redis://password@host` (a password without a colon) is read as a
    /// password.
    pub redis_broker: String,
    pub redis_read_timeout: ConfigDuration,
    pub redis_write_timeout: ConfigDuration,
    pub redis_connect_timeout: ConfigDuration,
    pub gc_interval: ConfigDuration,
    pub peer_lifetime: ConfigDuration,
    pub prometheus_reporting_interval: ConfigDuration,
    /// karuta: the prefix of every key, so several trackers can share one Redis.
    pub key_prefix: String,
    /// karuta: a PEM file of CA certificates that a `rediss://` server's
    /// certificate is checked against, instead of the system's roots.
    pub redis_tls_ca_file: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let secs = |s| ConfigDuration(Duration::from_secs(s));
        RedisConfig {
            redis_broker: "redis://127.0.0.1:6379/0".to_owned(),
            redis_read_timeout: secs(15),
            redis_write_timeout: secs(15),
            redis_connect_timeout: secs(15),
            gc_interval: secs(3 * 60),
            peer_lifetime: secs(30 * 60),
            prometheus_reporting_interval: secs(1),
            key_prefix: "karuta:".to_owned(),
            redis_tls_ca_file: None,
        }
    }
}

/// chihaya documents `redis://password@host`; in a URL that is a user name.
/// A user name without a password becomes the password.
fn broker_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !matches!(scheme, "redis" | "rediss") {
        return url.to_owned();
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.contains(':') && !userinfo.is_empty() => {
            format!("{scheme}://:{rest}")
        }
        _ => url.to_owned(),
    }
}

impl DriverConfig for RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(|_| ())
    }
}

impl RedisConfig {
    /// Checks every key and builds the client for `redis_broker` (with
    /// `redis_tls_ca_file`'s roots when set); never connects.
    fn client(&self) -> Result<Client, ConfigError> {
        let zero = |key: &str| ConfigError::new(key, "must be greater than zero");
        for (key, d) in [
            ("redis_read_timeout", &self.redis_read_timeout),
            ("redis_write_timeout", &self.redis_write_timeout),
            ("redis_connect_timeout", &self.redis_connect_timeout),
            ("gc_interval", &self.gc_interval),
            ("peer_lifetime", &self.peer_lifetime),
            (
                "prometheus_reporting_interval",
                &self.prometheus_reporting_interval,
            ),
        ] {
            if d.0.is_zero() {
                return Err(zero(key));
            }
        }
        if self.peer_lifetime.0 + self.gc_interval.0 > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new(
                "peer_lifetime",
                "peer_lifetime plus gc_interval must be under a year",
            ));
        }
        let url = broker_url(&self.redis_broker);
        let invalid = |e: redis::RedisError| {
            ConfigError::new("redis_broker", format!("invalid Redis URL: {e}"))
        };
        if self.redis_broker.starts_with("rediss://") {
            // The redis client builds its TLS config from the process-wide
            // provider; karuta's is ring (an error means one is installed).
            let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        }
        let Some(path) = &self.redis_tls_ca_file else {
            return Client::open(url).map_err(invalid);
        };
        if !self.redis_broker.starts_with("rediss://") {
            return Err(ConfigError::new(
                "redis_tls_ca_file",
                "is only used with a rediss:// redis_broker",
            ));
        }
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::new("redis_tls_ca_file", format!("cannot read {path:?}: {e}"))
        })?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        Client::build_with_tls(url, certificates).map_err(|e| {
            ConfigError::new(
                "redis_tls_ca_file",
                format!("{path:?} is not a usable PEM CA file: {e}"),
            )
        })
    }
}

/// Registers `redis` in a registry. Building connects; an unreachable Redis
/// is a build error naming `redis_broker`.
pub fn register(registry: &mut Registry) {
    registry.register_store_async(NAME, |config: RedisConfig| async move {
        let store = RedisStore::new(config)?;
        if let Err(e) = store.ping().await {
            store.shutdown();
            return Err(ConfigError::new(
                "redis_broker",
                format!("cannot reach Redis: {e}"),
            ));
        }
        Ok(Arc::new(store) as Arc<dyn PeerStore>)
    });
}

const WRITE_SCRIPT: &str = r#"
local S, L, N, SW, ST = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m, op, now, want, id = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local existed = redis.call('EXISTS', S, L) > 0
local ok = 1
local ds, dl = 0, 0
if op == 'remove' then
  ds = -redis.call('ZREM', S, m)
  if ds == 0 then dl = -redis.call('ZREM', L, m) end
  if ds + dl == 0 then ok = 0 end
elseif op == 'del_s' then
  ds = -redis.call('ZREM', S, m)
  if ds == 0 then ok = 0 end
elseif op == 'del_l' then
  dl = -redis.call('ZREM', L, m)
  if dl == 0 then ok = 0 end
elseif op == 'seeder' or op == 'graduate' then
  ds = redis.call('ZADD', S, now, m)
  if ds == 1 then
    dl = -redis.call('ZREM', L, m)
    if op == 'graduate' then redis.call('INCR', N) end
  end
  redis.call('PEXPIRE', N, ARGV[6])
elseif op == 'leecher' then
  dl = redis.call('ZADD', L, now, m)
  if dl == 1 then ds = -redis.call('ZREM', S, m) end
  redis.call('PEXPIRE', N, ARGV[6])
end
local exists = existed
if ds ~= 0 or dl ~= 0 then
  exists = redis.call('EXISTS', S, L) > 0
  if exists and not existed then
    redis.call('SADD', SW, id)
    redis.call('HINCRBY', ST, 'swarms', 1)
  elseif existed and not exists then
    redis.call('SREM', SW, id)
    redis.call('HINCRBY', ST, 'swarms', -1)
  end
  if ds ~= 0 then redis.call('HINCRBY', ST, 'seeders', ds) end
  if dl ~= 0 then redis.call('HINCRBY', ST, 'leechers', dl) end
end
if want < 0 then return {ok} end
if op == 'none' and not exists then return {0} end
local nS = redis.call('ZCARD', S)
local nL = redis.call('ZCARD', L)
local sn = tonumber(redis.call('GET', N) or 0)
-- ZRANDMEMBER's sample is not uniform when it asks for a large share of
-- the set (it removes keys picked by a bucket-biased draw); then the whole
-- set goes back and the client draws.
local function sample(key, n, card)
  if n <= 0 or card == 0 then return {} end
  if card <= n * 3 then return redis.call('ZRANGE', key, 0, -1) end
  return redis.call('ZRANDMEMBER', key, n)
end
local seeds, leeches = {}, {}
if want > 0 then
  local have = 0
  if ARGV[7] == 'l' then
    seeds = sample(S, want + 1, nS)
    for _, p in ipairs(seeds) do if p ~= m then have = have + 1 end end
  end
  if have < want then leeches = sample(L, want - have + 1, nL) end
end
return {ok, nS, nL, sn, seeds, leeches}
"#;

const GC_SCRIPT: &str = r#"
local prefix, cutoff = ARGV[1], '(' .. ARGV[2]
local ds, dl, dsw = 0, 0, 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local S, L = prefix .. id .. ':S', prefix .. id .. ':L'
  ds = ds + redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
  dl = dl + redis.call('ZREMRANGEBYSCORE', L, '-inf', cutoff)
  if redis.call('EXISTS', S, L) == 0 then
    dsw = dsw + redis.call('SREM', KEYS[1], id)
  end
end
if ds ~= 0 then redis.call('HINCRBY', KEYS[2], 'seeders', -ds) end
if dl ~= 0 then redis.call('HINCRBY', KEYS[2], 'leechers', -dl) end
if dsw ~= 0 then redis.call('HINCRBY', KEYS[2], 'swarms', -dsw) end
return ds + dl
"#;

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    /// `<prefix>swarms` and `<prefix>stats`, made once.
    swarms_key: String,
    stats_key: String,
    read_timeout: Duration,
    write_timeout: Duration,
    peer_lifetime: Duration,
    gc_interval: Duration,
    reporting_interval: Duration,
    snatch_ttl_ms: u64,
    write: Script,
    gc: Script,
    stats: [AtomicU64; 3],
    gc_durations: Histogram,
}

/// The Redis peer store.
pub struct RedisStore {
    inner: Arc<Inner>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// The compact form a peer is stored as.
fn member(peer: &Peer) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    match peer.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&peer.port.to_be_bytes());
    out
}

fn push_member(bytes: &[u8], resp: &mut AnnounceResponse) {
    match bytes.len() {
        6 => {
            let ip: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
            let port = u16::from_be_bytes([bytes[4], bytes[5]]);
            resp.ipv4_peers
                .push(SocketAddrV4::new(Ipv4Addr::from(ip), port));
        }
        18 => {
            let ip: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([bytes[16], bytes[17]]);
            resp.ipv6_peers
                .push(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0));
        }
        _ => {}
    }
}

fn family_digit(f: AddressFamily) -> char {
    match f {
        AddressFamily::V4 => '4',
        AddressFamily::V6 => '6',
    }
}

fn hex(ih: &InfoHash) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(40);
    for b in ih.0 {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The script's reply: ok, seeders, leechers, snatches, seeder sample,
/// leecher sample.
type WriteReply = (i64, i64, i64, i64, Vec<Vec<u8>>, Vec<Vec<u8>>);

impl Inner {
    async fn bounded<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no reply within {limit:?}"
            ))),
        }
    }

    fn swarm_keys(&self, ih: &InfoHash, f: AddressFamily) -> (String, String, String, String) {
        let h = hex(ih);
        let id = format!("{h}:{}", family_digit(f));
        (
            format!("{}{id}:S", self.prefix),
            format!("{}{id}:L", self.prefix),
            format!("{}{h}:n", self.prefix),
            id,
        )
    }

    /// Runs the write script. `want` < 0: write only; `select_role`: 's'/'l'.
    async fn run(
        &self,
        ih: &InfoHash,
        peer: &Peer,
        op: &str,
        want: i64,
        leecher: bool,
    ) -> Result<redis::Value, StoreError> {
        let (s, l, n, id) = self.swarm_keys(ih, peer.family());
        let mut inv = self.write.prepare_invoke();
        inv.key(s)
            .key(l)
            .key(n)
            .key(&self.swarms_key)
            .key(&self.stats_key)
            .arg(member(peer))
            .arg(op)
            .arg(now_ms())
            .arg(want)
            .arg(id)
            .arg(self.snatch_ttl_ms)
            .arg(if leecher { "l" } else { "s" });
        let mut conn = self.conn.clone();
        let limit = self.read_timeout.max(self.write_timeout);
        self.bounded(limit, inv.invoke_async::<redis::Value>(&mut conn))
            .await
    }

    async fn write_only(&self, ih: &InfoHash, peer: &Peer, op: &str) -> Result<(), StoreError> {
        let v = self.run(ih, peer, op, -1, false).await?;
        let (ok,): (i64,) =
            redis::from_redis_value(v).map_err(|e| StoreError::Other(e.to_string()))?;
        if ok == 1 {
            Ok(())
        } else {
            Err(StoreError::ResourceDoesNotExist)
        }
    }

    /// Runs the script with a read; `None` when the op was a pure read of a
    /// swarm that does not exist.
    async fn read(
        &self,
        ih: &InfoHash,
        peer: &Peer,
        op: &str,
        want: u32,
        leecher: bool,
        resp: &mut AnnounceResponse,
    ) -> Result<bool, StoreError> {
        let v = self.run(ih, peer, op, i64::from(want), leecher).await?;
        if let redis::Value::Array(items) = &v
            && items.len() == 1
        {
            return Ok(false);
        }
        let (_, seeders, leechers, snatches, seeds, leeches): WriteReply =
            redis::from_redis_value(v).map_err(|e| StoreError::Other(e.to_string()))?;
        resp.complete = seeders.clamp(0, u32::MAX.into()) as u32;
        resp.incomplete = leechers.clamp(0, u32::MAX.into()) as u32;
        resp.snatches = snatches.clamp(0, u32::MAX.into()) as u32;
        let me = member(peer);
        let mut rng = fastrand::Rng::new();
        let mut pick = |mut list: Vec<Vec<u8>>, room: usize| -> Vec<Vec<u8>> {
            list.retain(|m| *m != me);
            rng.shuffle(&mut list);
            list.truncate(room);
            list
        };
        let want = want as usize;
        let seeds = pick(seeds, want);
        let leeches = pick(leeches, want - seeds.len());
        let mut all: Vec<Vec<u8>> = seeds.into_iter().chain(leeches).collect();
        // Seeders first in what is chosen, but a random order in the reply.
        rng.shuffle(&mut all);
        for m in &all {
            push_member(m, resp);
        }
        Ok(true)
    }

    async fn scrape_many(
        &self,
        family: AddressFamily,
        hashes: &[InfoHash],
    ) -> Result<Vec<Scrape>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for ih in hashes {
            let (s, l, n, _) = self.swarm_keys(ih, family);
            pipe.zcard(s).zcard(l).get(n);
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<i64>> = self
            .bounded(self.read_timeout, pipe.query_async(&mut conn))
            .await?;
        let c = |v: Option<i64>| v.unwrap_or(0).clamp(0, u32::MAX.into()) as u32;
        Ok(hashes
            .iter()
            .zip(values.chunks(3))
            .map(|(ih, v)| Scrape {
                info_hash: *ih,
                complete: c(v[0]),
                incomplete: c(v[1]),
                snatches: c(v[2]),
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .bounded(
                self.read_timeout,
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn refresh_stats(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let v: Vec<Option<i64>> = self
            .bounded(
                self.read_timeout,
                redis::cmd("HMGET")
                    .arg(&self.stats_key)
                    .arg("swarms")
                    .arg("seeders")
                    .arg("leechers")
                    .query_async(&mut conn),
            )
            .await?;
        for (slot, v) in self.stats.iter().zip(v) {
            slot.store(v.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn collect(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let (swarms, stats) = (&self.swarms_key, &self.stats_key);
        let cutoff = now_ms().saturating_sub(self.peer_lifetime.as_millis() as u64);
        let mut cursor: u64 = 0;
        loop {
            let mut conn = self.conn.clone();
            let (next, ids): (u64, Vec<String>) = self
                .bounded(
                    self.read_timeout,
                    redis::cmd("SSCAN")
                        .arg(swarms)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(200)
                        .query_async(&mut conn),
                )
                .await?;
            if !ids.is_empty() {
                let mut inv = self.gc.prepare_invoke();
                inv.key(swarms).key(stats).arg(&self.prefix).arg(cutoff);
                for id in &ids {
                    inv.arg(id);
                }
                let _: i64 = self
                    .bounded(self.write_timeout, inv.invoke_async(&mut conn))
                    .await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.gc_durations.record(started.elapsed());
        Ok(())
    }
}

async fn background(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some((gc_every, report_every)) = inner
        .upgrade()
        .map(|i| (i.gc_interval, i.reporting_interval))
    else {
        return;
    };
    let mut gc = tokio::time::interval(gc_every);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gc.tick().await;
    let mut report = tokio::time::interval(report_every);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = gc.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.collect().await {
                    tracing::warn!(error = %e, "redis garbage collection failed");
                }
            }
            _ = report.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.refresh_stats().await {
                    tracing::debug!(error = %e, "reading redis totals failed");
                }
            }
        }
    }
}

impl RedisStore {
    /// Builds the store without connecting (the connection is made on first
    /// use and remade whenever it breaks). Must run inside a tokio runtime:
    /// it starts the background task.
    pub fn new(config: RedisConfig) -> Result<Self, ConfigError> {
        let client = config.client()?;
        let read_timeout = config.redis_read_timeout.0;
        let write_timeout = config.redis_write_timeout.0;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis_connect_timeout.0))
            .set_response_timeout(Some(read_timeout.max(write_timeout)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| ConfigError::new("redis_broker", format!("{e}")))?;
        let inner = Arc::new(Inner {
            conn,
            swarms_key: format!("{}swarms", config.key_prefix),
            stats_key: format!("{}stats", config.key_prefix),
            prefix: config.key_prefix.clone(),
            read_timeout,
            write_timeout,
            peer_lifetime: config.peer_lifetime.0,
            gc_interval: config.gc_interval.0,
            reporting_interval: config.prometheus_reporting_interval.0,
            snatch_ttl_ms: (config.peer_lifetime.0 + config.gc_interval.0).as_millis() as u64,
            write: Script::new(WRITE_SCRIPT),
            gc: Script::new(GC_SCRIPT),
            stats: Default::default(),
            gc_durations: Histogram::default(),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(background(Arc::downgrade(&inner), stop_rx));
        Ok(RedisStore { inner, stop })
    }

    /// PING, bounded by the read timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    /// Runs one garbage collection now.
    pub async fn collect_garbage(&self) -> Result<(), StoreError> {
        self.inner.collect().await
    }

    fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn op_of(change: SwarmChange) -> &'static str {
    match change {
        SwarmChange::Remove => "remove",
        SwarmChange::Graduate => "graduate",
        SwarmChange::PutSeeder => "seeder",
        SwarmChange::PutLeecher => "leecher",
    }
}

impl PeerStore for RedisStore {
    fn announce<'a>(
        &'a self,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()> {
        ReadyOrBoxed::boxed(async move {
            let change = SwarmChange::of(req);
            self.inner
                .read(
                    &req.info_hash,
                    &req.peer,
                    op_of(change),
                    req.num_want,
                    !change.leaves_seeder(),
                    resp,
                )
                .await
                .map(|_| ())
        })
    }

    fn apply(&self, info_hash: InfoHash, peer: Peer, change: SwarmChange) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(async move {
            self.inner
                .write_only(&info_hash, &peer, op_of(change))
                .await
        })
    }

    fn put_seeder(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(async move { self.inner.write_only(&info_hash, &peer, "seeder").await })
    }

    fn delete_seeder(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(async move { self.inner.write_only(&info_hash, &peer, "del_s").await })
    }

    fn put_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(
            async move { self.inner.write_only(&info_hash, &peer, "leecher").await },
        )
    }

    fn delete_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(async move { self.inner.write_only(&info_hash, &peer, "del_l").await })
    }

    fn graduate_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(
            async move { self.inner.write_only(&info_hash, &peer, "graduate").await },
        )
    }

    fn announce_peers<'a>(
        &'a self,
        info_hash: InfoHash,
        seeder: bool,
        num_want: u32,
        peer: Peer,
        out: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()> {
        ReadyOrBoxed::boxed(async move {
            // A pure read: counts are left as they were.
            let mut scratch = AnnounceResponse::default();
            let found = self
                .inner
                .read(&info_hash, &peer, "none", num_want, !seeder, &mut scratch)
                .await?;
            if !found {
                return Err(StoreError::ResourceDoesNotExist);
            }
            out.ipv4_peers.extend_from_slice(&scratch.ipv4_peers);
            out.ipv6_peers.extend_from_slice(&scratch.ipv6_peers);
            Ok(())
        })
    }

    fn scrape(&self, info_hash: InfoHash, family: AddressFamily) -> StoreFuture<'_, Scrape> {
        ReadyOrBoxed::boxed(async move {
            let mut v = self.inner.scrape_many(family, &[info_hash]).await?;
            Ok(v.pop().unwrap_or(Scrape {
                info_hash,
                ..Scrape::default()
            }))
        })
    }

    fn scrape_many<'a>(
        &'a self,
        req: &'a ScrapeRequest,
        resp: &'a mut ScrapeResponse,
    ) -> StoreFuture<'a, ()> {
        ReadyOrBoxed::boxed(async move {
            let files = self
                .inner
                .scrape_many(req.address_family, &req.info_hashes)
                .await?;
            resp.files.extend(files);
            Ok(())
        })
    }

    fn stats(&self) -> StoreStats {
        let s = &self.inner.stats;
        StoreStats {
            swarms: s[0].load(Ordering::Relaxed),
            seeders: s[1].load(Ordering::Relaxed),
            leechers: s[2].load(Ordering::Relaxed),
        }
    }

    fn gc_durations(&self) -> Option<HistogramSnapshot> {
        Some(self.inner.gc_durations.snapshot())
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(self.inner.ping())
    }

    fn stop(&self) -> StoreFuture<'_, ()> {
        self.shutdown();
        ReadyOrBoxed::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chihaya_password_form_is_a_password() {
        assert_eq!(broker_url("redis://pwd@host/0"), "redis://:pwd@host/0");
        assert_eq!(broker_url("redis://u:p@host"), "redis://u:p@host");
        assert_eq!(broker_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(broker_url("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
    }

    #[test]
    fn defaults_and_urls_validate() {
        RedisConfig::default().validate().unwrap();
        for url in [
            "redis+unix:///tmp/r.sock",
            "unix:///tmp/r.sock",
            "redis://pwd@h:1/2",
        ] {
            let c = RedisConfig {
                redis_broker: url.to_owned(),
                ..RedisConfig::default()
            };
            c.validate().unwrap();
        }
        let bad = RedisConfig {
            redis_broker: "http://x".to_owned(),
            ..RedisConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "redis_broker");
    }
}
