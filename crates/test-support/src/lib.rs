//! Test support: the one copy of what karuta's tests share.
//!
//! - [`http`]: a raw HTTP/1.1 GET over std's `TcpStream`, for tests that must
//!   see the bytes on the wire (status, head, body), and a reader for one
//!   response on a kept-alive connection.
//! - [`canned`]: an async HTTP(S) server that answers with canned bytes and
//!   keeps the request heads, for the tests of outgoing clients.
//! - [`bencode`]: strict reading of tracker replies on top of
//!   `bittorrent::bencode::decode`, with accessors that panic with the whole
//!   value, so a failing assertion shows the reply.
//! - [`redis`]: a throwaway `redis-server` (TCP, TLS only, Unix socket only),
//!   killed and restarted on the same address for outage tests.
//! - [`redis_cluster`]: a throwaway Redis Cluster of such servers (primaries,
//!   optionally with a replica each), a node killed for failover tests.
//! - [`postgres`]: a throwaway PostgreSQL cluster on a free port of 127.0.0.1,
//!   with `psql`, fast and immediate stops and restarts on the same port.
//! - [`proxy`]: a TCP proxy that refuses connections (a database away) or
//!   loses the replies of chosen COMMITs (committed, the client never told).
//! - [`tls`]: self-signed certificates and acceptors for TLS servers.
//! - [`logic`]: a tracker logic with the hooks under test on a fresh memory
//!   store, for the tests of the frontends and the middleware.
//! - [`TempDir`], [`free_tcp_port`], [`free_udp_port`], and
//!   [`percent_encode`] (the protocol crate's, re-exported so that a test
//!   encodes info hashes the way clients do).
//!
//! Servers and temp dirs are cleaned up when dropped, and also when the test
//! process dies without dropping them (a panic in another thread, a timeout
//! kill): see [`process`] and [`TempDir`].

pub mod bencode;
pub mod canned;
pub mod http;
pub mod logic;
mod port;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
mod tempdir;
pub mod tls;

pub use bittorrent::percent_encode;
pub use port::{free_tcp_port, free_udp_port};
pub use tempdir::TempDir;
