//! The Redis peer store, registered as chihaya's `redis` storage: several
//! karuta instances behind a load balancer share one Redis, or one Redis
//! Cluster.
//!
//! # Data layout
//!
//! Every key starts with `key_prefix` (default `karuta:`), so several
//! trackers can share one Redis database. `<ih>` is the info hash in lower-case
//! hex, `<f>` the address family (`4` or `6`), `<b>` the swarm's bucket: the
//! info hash's first ten bits as three hex digits (`000` to `3ff`), in braces
//! so that it is the key's Redis Cluster hash tag.
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `<prefix>{<b>}<ih>:<f>:S` | sorted set | seeders: member = compact address (4 or 16 bytes of IP, then the port, big-endian), score = last seen, unix milliseconds |
//! | `<prefix>{<b>}<ih>:<f>:L` | sorted set | leechers, the same way |
//! | `<prefix>{<b>}<ih>:n` | string (integer) | the torrent's snatches, both families together; expires `peer_lifetime + gc_interval` after the torrent's last write |
//! | `<prefix>{<b>}swarms` | set | the bucket's swarms that have peers, as `<ih>:<f>`, walked by garbage collection |
//! | `<prefix>{<b>}total:swarms`, `...:seeders`, `...:leechers` | strings (integers) | the bucket's exact totals |
//!
//! Every write is a Lua script, so a bucket's totals change in the same
//! atomic step as its peers (exact under any concurrency, across instances),
//! and the store's totals are the sums over the 1024 buckets. An empty sorted
//! set does not exist in Redis, so a swarm exists exactly while it has a peer.
//!
//! # Redis Cluster
//!
//! `redis+cluster://host:port,host:port` (see [`RedisConfig::redis_broker`])
//! names a cluster's seed nodes. The layout is the same as on one Redis: a
//! swarm's keys and its bucket's keys share the bucket's hash tag, so every
//! script run touches one slot, as a cluster requires, and the 1024 buckets
//! spread the swarms over the primaries (`keys.rs` says why 1024). The client
//! routes each command to its slot's primary and follows `MOVED`, `ASK` and
//! failovers (`connection.rs`).
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
//! random order) and truncates. A scrape is one pipeline (on a cluster, one
//! per bucket the scrape touches, in flight together).
//!
//! # Background work
//!
//! One tokio task reads every bucket's totals every
//! `prometheus_reporting_interval` (one `MGET`; so [`PeerStore::stats`] is a
//! cached read) and collects garbage every `gc_interval`: for each bucket
//! that has swarms it walks the bucket's set with `SSCAN` and, per batch,
//! runs a script that removes peers older than `peer_lifetime`
//! (`ZREMRANGEBYSCORE`) and forgets emptied swarms, adjusting the bucket's
//! totals by what it actually removed, so two instances collecting at once
//! do no harm.
//!
//! # TLS
//!
//! `rediss://` (and `rediss+cluster://`) connects over TLS (rustls, ring)
//! and checks the server's certificate against the system's roots, or
//! against the PEM file `redis_tls_ca_file` (karuta's key) for a private CA.
//! Checking a config touches no process-wide state; building a TLS store
//! installs ring as rustls's process provider if none is (see `config.rs`
//! for why).
//!
//! # Failures
//!
//! Every call is bounded by the configured timeouts; a Redis failure is
//! [`StoreError::Unavailable`](tracker::StoreError::Unavailable). The
//! connection reconnects by itself when Redis comes back, or, on a cluster,
//! when a replica has taken over a lost primary.
//!
//! # Files
//!
//! `config.rs` (the options, `redis_broker`'s URL forms, TLS),
//! `connection.rs` (one Redis or a cluster), `keys.rs` (every key name and
//! the buckets), `store.rs` (the store and the write script's arguments),
//! `gc.rs` (the background task), `write.lua` and `gc.lua` (the scripts).

#![forbid(unsafe_code)]

mod config;
mod connection;
mod gc;
mod keys;
mod store;

use std::sync::Arc;

use tracker::{ConfigError, PeerStore, Registry};

pub use config::RedisConfig;
pub use store::RedisStore;

/// The name chihaya registers this store under.
pub const NAME: &str = "redis";

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
