//! The Redis [`PeerStore`]: every write and announce is one run of the write
//! script (`write.lua`), a scrape one pipeline (one per primary on a Redis
//! Cluster). This file owns the script's arguments ([`WriteOp`], [`Reply`])
//! and how its replies become responses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Cmd, Script};
use tracker::bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, InfoHash, Peer, Scrape, ScrapeRequest,
    ScrapeResponse,
};
use tracker::stats::{Histogram, HistogramSnapshot, StoreTotals};
use tracker::{
    ConfigError, PeerStore, ReadyOrBoxed, StoreError, StoreFuture, StoreStats, SwarmChange,
};

use crate::config::RedisConfig;
use crate::connection::Connections;
use crate::gc;
use crate::keys::{Keys, bucket};

/// What the write script does to the announcer's entry: its `op` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteOp {
    /// Out of the swarm, whatever its role; fails if it was in neither.
    Remove,
    /// A seeder; a snatch unless it already was one.
    Graduate,
    PutSeeder,
    PutLeecher,
    /// Out of the seeders; fails if it was not one.
    DeleteSeeder,
    /// Out of the leechers; fails if it was not one.
    DeleteLeecher,
    /// Nothing: a pure read.
    Read,
}

impl From<SwarmChange> for WriteOp {
    fn from(change: SwarmChange) -> Self {
        match change {
            SwarmChange::Remove => WriteOp::Remove,
            SwarmChange::Graduate => WriteOp::Graduate,
            SwarmChange::PutSeeder => WriteOp::PutSeeder,
            SwarmChange::PutLeecher => WriteOp::PutLeecher,
        }
    }
}

impl WriteOp {
    /// The one place the names `write.lua` matches on are spelled.
    fn script_arg(self) -> &'static str {
        match self {
            WriteOp::Remove => "remove",
            WriteOp::Graduate => "graduate",
            WriteOp::PutSeeder => "seeder",
            WriteOp::PutLeecher => "leecher",
            WriteOp::DeleteSeeder => "del_s",
            WriteOp::DeleteLeecher => "del_l",
            WriteOp::Read => "none",
        }
    }
}

/// What the write script answers after the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// Only whether the write found what it needed (`{ok}`).
    WriteOnly,
    /// The swarm's counts and snatches, and up to `want` peers for an
    /// announcer of this role: a leecher gets seeders first, a seeder only
    /// leechers.
    Peers { want: u32, leecher: bool },
}

impl Reply {
    /// The script's `want` and `reply` arguments.
    fn script_args(self) -> (u32, &'static str) {
        match self {
            Reply::WriteOnly => (0, "write"),
            Reply::Peers { want, leecher } => (want, if leecher { "l" } else { "s" }),
        }
    }
}

/// The script's `Reply::Peers` answer: ok, seeders, leechers, snatches,
/// seeder sample, leecher sample (each sample its members back to back).
type PeersReply = (i64, i64, i64, i64, Vec<u8>, Vec<u8>);

/// The write script's text, for `EVAL` when Redis lacks it.
const WRITE_LUA: &str = include_str!("write.lua");

/// What the store and its background task share.
pub(crate) struct Inner {
    pub conns: Connections,
    pub keys: Keys,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub peer_lifetime: Duration,
    pub gc_interval: Duration,
    pub reporting_interval: Duration,
    /// How long a torrent's snatch count outlives its last write.
    snatch_ttl_ms: u64,
    write: Script,
    pub gc: Script,
    pub totals: StoreTotals,
    pub gc_durations: Histogram,
}

/// The Redis peer store.
pub struct RedisStore {
    inner: Arc<Inner>,
    stop: tokio::sync::watch::Sender<bool>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// The compact form a peer is stored as (6 bytes, or 18 for IPv6), written
/// into `buf`.
fn member_into<'b>(peer: &Peer, buf: &'b mut [u8; 18]) -> &'b [u8] {
    let len = match peer.ip() {
        IpAddr::V4(ip) => {
            buf[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            buf[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    buf[len..len + 2].copy_from_slice(&peer.port.to_be_bytes());
    &buf[..len + 2]
}

/// Up to `room` members of `list` (members of `size` bytes back to back)
/// other than `me`, drawn at random, appended to `into`.
fn pick<'a>(
    rng: &mut fastrand::Rng,
    list: &'a [u8],
    size: usize,
    me: &[u8],
    room: usize,
    into: &mut Vec<&'a [u8]>,
) {
    let from = into.len();
    into.extend(list.chunks_exact(size).filter(|m| *m != me));
    rng.shuffle(&mut into[from..]);
    into.truncate(from + room.min(into.len() - from));
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

impl Inner {
    /// Runs a Redis call within `limit`; a failure or no reply in time is
    /// [`StoreError::Unavailable`].
    pub async fn bounded<T>(
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

    /// The write script's call: `EVALSHA` (or, when Redis does not have
    /// the script, `EVAL` with its text), its keys and arguments written
    /// straight into the command's one buffer.
    fn write_cmd(&self, ih: &InfoHash, peer: &Peer, op: WriteOp, reply: Reply, eval: bool) -> Cmd {
        let mut names = Vec::with_capacity(160);
        let at = self.keys.swarm_into(ih, peer.family(), &mut names);
        let b = bucket(ih);
        let totals = self.keys.bucket_totals(b);
        let (want, reply) = reply.script_args();
        let mut cmd = Cmd::with_capacity(17, 512);
        if eval {
            cmd.arg("EVAL").arg(WRITE_LUA);
        } else {
            cmd.arg("EVALSHA").arg(self.write.get_hash());
        }
        let mut member = [0u8; 18];
        let member = member_into(peer, &mut member);
        cmd.arg(7)
            .arg(&names[at.seeders])
            .arg(&names[at.leechers])
            .arg(&names[at.snatches])
            .arg(self.keys.swarms(b))
            .arg(&totals[0])
            .arg(&totals[1])
            .arg(&totals[2])
            .arg(member)
            .arg(op.script_arg())
            .arg(now_ms())
            .arg(want)
            .arg(&names[at.id])
            .arg(self.snatch_ttl_ms)
            .arg(reply);
        cmd
    }

    /// Runs the write script: one round trip, or two when Redis did not
    /// have the script (a restart, a promoted replica), whose `EVAL` leaves
    /// it cached for the next calls.
    async fn run(
        &self,
        ih: &InfoHash,
        peer: &Peer,
        op: WriteOp,
        reply: Reply,
    ) -> Result<redis::Value, StoreError> {
        let mut conn = self.conns.here();
        let limit = self.read_timeout.max(self.write_timeout);
        let call = async {
            match self
                .write_cmd(ih, peer, op, reply, false)
                .query_async::<redis::Value>(&mut conn)
                .await
            {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.write_cmd(ih, peer, op, reply, true)
                        .query_async::<redis::Value>(&mut conn)
                        .await
                }
                r => r,
            }
        };
        self.bounded(limit, call).await
    }

    async fn write_only(&self, ih: &InfoHash, peer: &Peer, op: WriteOp) -> Result<(), StoreError> {
        let v = self.run(ih, peer, op, Reply::WriteOnly).await?;
        let (ok,): (i64,) =
            redis::from_redis_value(v).map_err(|e| StoreError::Other(e.to_string()))?;
        if ok == 1 {
            Ok(())
        } else {
            Err(StoreError::ResourceDoesNotExist)
        }
    }

    /// Runs the script with a read into `resp`; `false` when the op was a
    /// pure read of a swarm that does not exist.
    async fn read(
        &self,
        ih: &InfoHash,
        peer: &Peer,
        op: WriteOp,
        want: u32,
        leecher: bool,
        resp: &mut AnnounceResponse,
    ) -> Result<bool, StoreError> {
        let v = self
            .run(ih, peer, op, Reply::Peers { want, leecher })
            .await?;
        if let redis::Value::Array(items) = &v
            && items.len() == 1
        {
            return Ok(false);
        }
        let (_, seeders, leechers, snatches, seeds, leeches): PeersReply =
            redis::from_redis_value(v).map_err(|e| StoreError::Other(e.to_string()))?;
        resp.complete = seeders.clamp(0, u32::MAX.into()) as u32;
        resp.incomplete = leechers.clamp(0, u32::MAX.into()) as u32;
        resp.snatches = snatches.clamp(0, u32::MAX.into()) as u32;
        // Members come back concatenated, each of the swarm's family's size.
        let mut me = [0u8; 18];
        let me = member_into(peer, &mut me);
        let size = me.len();
        let mut rng = fastrand::Rng::new();
        let want = want as usize;
        let mut all: Vec<&[u8]> = Vec::with_capacity(want.min(64));
        pick(&mut rng, &seeds, size, me, want, &mut all);
        let room = want - all.len();
        pick(&mut rng, &leeches, size, me, room, &mut all);
        // Seeders first in what is chosen, but a random order in the reply.
        rng.shuffle(&mut all);
        for m in all {
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
        let mut commands = Vec::with_capacity(hashes.len() * 3);
        for ih in hashes {
            let keys = self.keys.swarm(ih, family);
            let slot = self.keys.slot(bucket(ih));
            let zcard = |key| {
                let mut c = redis::cmd("ZCARD");
                c.arg(key);
                (slot, c)
            };
            commands.push(zcard(keys.seeders));
            commands.push(zcard(keys.leechers));
            let mut get = redis::cmd("GET");
            get.arg(keys.snatches);
            commands.push((slot, get));
        }
        let replies = self
            .bounded(self.read_timeout, self.conns.here().per_primary(commands))
            .await?;
        let values: Vec<Option<i64>> = redis::from_redis_value(redis::Value::Array(replies))
            .map_err(|e| StoreError::Other(e.to_string()))?;
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
        let mut conn = self.conns.here();
        let _: String = self
            .bounded(
                self.read_timeout,
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await?;
        Ok(())
    }
}

impl RedisStore {
    /// Builds the store without connecting (the connection is made on first
    /// use and remade whenever it breaks). Must run inside a tokio runtime:
    /// it starts the background task.
    pub fn new(config: RedisConfig) -> Result<Self, ConfigError> {
        let broker = config.connecting_client()?;
        let read_timeout = config.redis_read_timeout.0;
        let write_timeout = config.redis_write_timeout.0;
        let conns = Connections::new(
            broker,
            config.redis_connect_timeout.0,
            read_timeout.max(write_timeout),
        )?;
        let inner = Arc::new(Inner {
            conns,
            keys: Keys::new(&config.key_prefix),
            read_timeout,
            write_timeout,
            peer_lifetime: config.peer_lifetime.0,
            gc_interval: config.gc_interval.0,
            reporting_interval: config.prometheus_reporting_interval.0,
            snatch_ttl_ms: (config.peer_lifetime.0 + config.gc_interval.0).as_millis() as u64,
            write: Script::new(WRITE_LUA),
            gc: Script::new(include_str!("gc.lua")),
            totals: StoreTotals::default(),
            gc_durations: Histogram::default(),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(gc::background(Arc::downgrade(&inner), stop_rx));
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

    /// chihaya's single writes: the script without a read.
    fn write_only(&self, info_hash: InfoHash, peer: Peer, op: WriteOp) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(async move { self.inner.write_only(&info_hash, &peer, op).await })
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.shutdown();
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
                    change.into(),
                    req.num_want,
                    !change.leaves_seeder(),
                    resp,
                )
                .await
                .map(|_| ())
        })
    }

    fn apply(&self, info_hash: InfoHash, peer: Peer, change: SwarmChange) -> StoreFuture<'_, ()> {
        self.write_only(info_hash, peer, change.into())
    }

    fn put_seeder(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        self.write_only(info_hash, peer, WriteOp::PutSeeder)
    }

    fn delete_seeder(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        self.write_only(info_hash, peer, WriteOp::DeleteSeeder)
    }

    fn put_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        self.write_only(info_hash, peer, WriteOp::PutLeecher)
    }

    fn delete_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        self.write_only(info_hash, peer, WriteOp::DeleteLeecher)
    }

    fn graduate_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()> {
        self.write_only(info_hash, peer, WriteOp::Graduate)
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
                .read(
                    &info_hash,
                    &peer,
                    WriteOp::Read,
                    num_want,
                    !seeder,
                    &mut scratch,
                )
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
        self.inner.totals.read()
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
    fn every_op_and_reply_is_one_write_lua_matches() {
        let script = include_str!("write.lua");
        let ops = [
            WriteOp::Remove,
            WriteOp::Graduate,
            WriteOp::PutSeeder,
            WriteOp::PutLeecher,
            WriteOp::DeleteSeeder,
            WriteOp::DeleteLeecher,
            WriteOp::Read,
        ];
        for op in ops {
            let arg = op.script_arg();
            assert!(script.contains(&format!("op == '{arg}'")), "{op:?}: {arg}");
        }
        let (want, write) = Reply::WriteOnly.script_args();
        assert_eq!(want, 0);
        assert!(script.contains(&format!("reply == '{write}'")));
        let leecher = Reply::Peers {
            want: 5,
            leecher: true,
        };
        let (want, l) = leecher.script_args();
        assert_eq!(want, 5);
        assert!(script.contains(&format!("reply == '{l}'")));
        // A seeder's reply is the script's remaining case.
        let (_, s) = Reply::Peers {
            want: 5,
            leecher: false,
        }
        .script_args();
        assert!(![write, l].contains(&s));
    }
}
