//! The one connection the store and its background task talk through: to one
//! Redis, a `ConnectionManager` (one multiplexed connection, remade by itself
//! when it breaks); to a Redis Cluster, redis-rs's async cluster client (a
//! multiplexed connection per node; it follows `MOVED` and `ASK`, reloads
//! its slot map when the topology changes, as after a failover, and
//! reconnects). Both are made without connecting: the first command
//! connects.
//!
//! Both are [`redis::aio::ConnectionLike`], so everything above is written
//! once. What differs is routing, which the cluster client does per command:
//! `EVALSHA` goes to the primary of its first key's slot (every key of a
//! script run shares that slot, see `keys.rs`), `PING` goes to every
//! primary, and the `SCRIPT LOAD` that [`redis::Script`] sends after a
//! `NOSCRIPT` goes to every primary. A replica does not have the scripts
//! (Redis does not replicate `SCRIPT LOAD`): once promoted, it answers the
//! first `EVALSHA` with `NOSCRIPT`, and the script is loaded again and run,
//! in the same call (seen in `crates/karuta/tests/redis_cluster.rs`).
//!
//! A pipeline must stay within one slot there (the client refuses a
//! cross-slot one), and a command over several slots (`MGET`) is split by the
//! client into one request per slot, which costs: an `MGET` over the 1024
//! buckets' slots took 5.4 ms of karuta's CPU in a release build. So what
//! reads many buckets at once (the totals, a scrape) goes through
//! [`Connection::per_primary`] or [`Connection::mget_per_slot`]: one command
//! or pipeline on one Redis, one pipeline per primary on a cluster.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tracker::ConfigError;

use crate::config::Broker;

#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection, SlotMap),
}

/// Where a store's calls go: one connection shared by every thread, and a
/// connection of its own (to one Redis, or a cluster client of its own) for
/// each thread that runs a single-threaded runtime (a UDP worker). A multiplexed connection is
/// driven by a task on the runtime that made it; a worker calling through
/// the shared one would hand every command to another thread and be woken
/// from it for every reply. Its own connection keeps the command, the socket
/// and the reply on the worker's thread: no wake-up crosses threads.
pub(crate) struct Connections {
    shared: Connection,
    /// What a thread's own connection is made from: the broker's client (a
    /// cluster's keeps a connection per node of its own, with its own slot
    /// map) and the timeouts.
    own: (OwnClient, Duration, Duration),
    /// Tells this store's connections apart from another's (a reload makes
    /// a new store) in a thread's list.
    id: u64,
    /// A thread drops its connection of a store that is gone.
    alive: Arc<()>,
}

// Made once per store: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum OwnClient {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

thread_local! {
    /// This thread's own connections: (store, the store's liveness, connection).
    static OWN: RefCell<Vec<(u64, Weak<()>, Connection)>> = const { RefCell::new(Vec::new()) };
}

impl Connections {
    pub fn new(broker: Broker, connect: Duration, response: Duration) -> Result<Self, ConfigError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let own = match &broker {
            Broker::Single(client) => (OwnClient::Single(client.clone()), connect, response),
            Broker::Cluster(client) => (OwnClient::Cluster(client.clone()), connect, response),
        };
        Ok(Connections {
            shared: Connection::lazy(broker, connect, response)?,
            own,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
        })
    }

    /// The connection every thread shares (background work, the HTTP
    /// frontend's runtime).
    pub fn shared(&self) -> &Connection {
        &self.shared
    }

    /// The connection for a call from this thread: its own on a
    /// single-threaded runtime, made (lazily: the first command connects,
    /// and its task runs on this runtime) on the first call, else the
    /// shared one.
    pub fn here(&self) -> Connection {
        let (client, connect, response) = &self.own;
        let single_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !single_threaded {
            return self.shared.clone();
        }
        OWN.with(|own| {
            let mut own = own.borrow_mut();
            if let Some((_, _, conn)) = own.iter().find(|(id, _, _)| *id == self.id) {
                return conn.clone();
            }
            // Connections of stores that are gone close as they drop here.
            own.retain(|(_, alive, _)| alive.strong_count() > 0);
            let broker = match client.clone() {
                OwnClient::Single(c) => Broker::Single(c),
                OwnClient::Cluster(c) => Broker::Cluster(c),
            };
            match Connection::lazy(broker, *connect, *response) {
                Ok(conn) => {
                    own.push((self.id, Arc::downgrade(&self.alive), conn.clone()));
                    conn
                }
                // It was made once from the same client; should it fail now,
                // the shared one still serves.
                Err(_) => self.shared.clone(),
            }
        })
    }
}

/// Which primary serves which slots, as `CLUSTER SLOTS` last said: read on
/// first use, read again when a call grouped by it failed (the slots moved,
/// a primary was lost). A stale map costs a failed call, never a wrong
/// answer: a command sent to a node that no longer serves its slot is
/// refused (`MOVED`).
#[derive(Clone, Default)]
pub(crate) struct SlotMap(Arc<Mutex<Option<Arc<Vec<SlotRange>>>>>);

/// Slots `first..=last`, served by the primary `node` (its address).
struct SlotRange {
    first: u16,
    last: u16,
    node: String,
}

impl Connection {
    /// The connection to `broker`, not yet made. `response` bounds each
    /// reply; the store bounds each call as a whole as well.
    pub fn lazy(
        broker: Broker,
        connect: Duration,
        response: Duration,
    ) -> Result<Self, ConfigError> {
        match broker {
            Broker::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(Connection::Single)
                    .map_err(|e| ConfigError::new("redis_broker", format!("{e}")))
            }
            Broker::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(connect)
                    .set_response_timeout(response);
                Ok(Connection::Cluster(
                    client.get_pending_async_connection_with_config(config),
                    SlotMap::default(),
                ))
            }
        }
    }

    /// Runs `commands`, each with the one slot all its keys are in, and
    /// returns their replies in order: on one Redis as one pipeline, on a
    /// cluster as one pipeline per primary, all in flight together (on a
    /// failure, once more with a fresh slot map).
    pub async fn per_primary(&self, commands: Vec<(u16, Cmd)>) -> RedisResult<Vec<Value>> {
        match self {
            Connection::Single(conn) => {
                let mut pipe = redis::pipe();
                for (_, command) in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(&mut conn.clone()).await
            }
            Connection::Cluster(conn, map) => {
                let ranges = map.get(conn, false).await?;
                match per_primary(conn, &ranges, &commands).await {
                    Ok(replies) => Ok(replies),
                    Err(_) => {
                        let ranges = map.get(conn, true).await?;
                        per_primary(conn, &ranges, &commands).await
                    }
                }
            }
        }
    }

    /// `MGET` of each group of keys, each group within the one slot given
    /// with it; per group, its values in order. On one Redis this is one
    /// `MGET` of every key (one command, as the round trips per announce
    /// that `scripts/bench` counts want); on a cluster one `MGET` per group,
    /// in one pipeline per primary.
    pub async fn mget_per_slot(
        &self,
        groups: Vec<(u16, Vec<&str>)>,
    ) -> RedisResult<Vec<Vec<Value>>> {
        let sizes: Vec<usize> = groups.iter().map(|(_, keys)| keys.len()).collect();
        let replies = match self {
            Connection::Single(conn) => {
                let mut mget = redis::cmd("MGET");
                for (_, keys) in &groups {
                    mget.arg(keys);
                }
                let values: Vec<Value> = mget.query_async(&mut conn.clone()).await?;
                let mut values = values.into_iter();
                return Ok(sizes
                    .iter()
                    .map(|&n| values.by_ref().take(n).collect())
                    .collect());
            }
            Connection::Cluster(..) => {
                let commands = groups
                    .into_iter()
                    .map(|(slot, keys)| {
                        let mut mget = redis::cmd("MGET");
                        mget.arg(keys);
                        (slot, mget)
                    })
                    .collect();
                self.per_primary(commands).await?
            }
        };
        replies
            .into_iter()
            .map(|reply| match reply {
                Value::Array(values) => Ok(values),
                other => Err(redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "an MGET reply that is not an array",
                    format!("{other:?}"),
                ))),
            })
            .collect()
    }
}

impl SlotMap {
    /// The map, read with `CLUSTER SLOTS` when there is none yet or `fresh`.
    async fn get(&self, conn: &ClusterConnection, fresh: bool) -> RedisResult<Arc<Vec<SlotRange>>> {
        if !fresh && let Some(ranges) = self.0.lock().expect("slot map lock").clone() {
            return Ok(ranges);
        }
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn.clone())
            .await?;
        let ranges = Arc::new(SlotRange::parse(reply)?);
        *self.0.lock().expect("slot map lock") = Some(Arc::clone(&ranges));
        Ok(ranges)
    }
}

impl SlotRange {
    /// `CLUSTER SLOTS`: per range, its first and last slot, then its primary
    /// (address, port, id, ...), then its replicas.
    fn parse(reply: Value) -> RedisResult<Vec<SlotRange>> {
        let malformed =
            || redis::RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
        let Value::Array(entries) = reply else {
            return Err(malformed());
        };
        entries
            .into_iter()
            .map(|entry| {
                let (first, last, primary): (u16, u16, Vec<Value>) =
                    redis::from_redis_value(entry).map_err(|_| malformed())?;
                let (host, port): (String, u16) = match primary.as_slice() {
                    [host, port, ..] => (
                        redis::from_redis_value(host.clone()).map_err(|_| malformed())?,
                        redis::from_redis_value(port.clone()).map_err(|_| malformed())?,
                    ),
                    _ => return Err(malformed()),
                };
                Ok(SlotRange {
                    first,
                    last,
                    node: format!("{host}:{port}"),
                })
            })
            .collect()
    }
}

/// [`Connection::per_primary`] on a cluster, with `ranges` as the slot map.
async fn per_primary(
    conn: &ClusterConnection,
    ranges: &[SlotRange],
    commands: &[(u16, Cmd)],
) -> RedisResult<Vec<Value>> {
    // Per primary: a slot it serves (the pipeline's route) and the commands.
    let mut groups: Vec<(&str, u16, Vec<usize>)> = Vec::new();
    for (i, (slot, _)) in commands.iter().enumerate() {
        let node = ranges
            .iter()
            .find(|r| (r.first..=r.last).contains(slot))
            .map(|r| r.node.as_str())
            .ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no primary serves a slot",
                    slot.to_string(),
                ))
            })?;
        match groups.iter_mut().find(|(n, _, _)| *n == node) {
            Some((_, _, members)) => members.push(i),
            None => groups.push((node, *slot, vec![i])),
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for (_, slot, members) in groups {
        let mut pipe = redis::pipe();
        for &i in &members {
            pipe.add_command(commands[i].1.clone());
        }
        let mut conn = conn.clone();
        let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
        calls.spawn(async move {
            let replies = conn.route_pipeline(pipe, 0, members.len(), route).await;
            (members, replies)
        });
    }
    let mut out = vec![Value::Nil; commands.len()];
    while let Some(done) = calls.join_next().await {
        let (members, replies) = done.map_err(std::io::Error::other)?;
        for (i, reply) in members.into_iter().zip(replies?) {
            if let Value::ServerError(e) = reply {
                return Err(e.into());
            }
            out[i] = reply;
        }
    }
    Ok(out)
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c, _) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c, _) => c.get_db(),
        }
    }
}
