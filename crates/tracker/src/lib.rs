//! karuta's core: what happens to a request between a frontend and a store.
//!
//! - [`TrackerLogic`] runs the configured pre-hooks, the built-in response hook
//!   (counts and peers from the store), then, after the frontend has replied,
//!   the post-hooks and the built-in swarm interaction (the store write).
//! - [`Hook`] and [`PeerStore`] are the two extension points; [`Registry`]
//!   builds them by their chihaya names from their YAML options.
//! - [`RequestContext`] carries per-request flags and typed facts that hooks
//!   attach (a user id, say) from one hook to the next.
//!
//! Both traits return [`ReadyOrBoxed`] futures: an in-memory store or a hook that
//! needs no I/O answers with a ready value and allocates nothing, while the Redis
//! store or a hook that talks to a database boxes one future per call.

#![forbid(unsafe_code)]

pub mod config;
mod config_error;
mod context;
mod error;
pub mod frontend;
mod future;
mod hook;
pub mod ipnet;
mod limits;
mod logic;
mod registry;
pub mod site;
pub mod stats;
mod store;
pub mod telemetry;

#[cfg(feature = "bench")]
pub mod benchmarks;
#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config_error::ConfigError;
pub use context::{Extensions, ReplyGate, RequestContext};
pub use error::{StoreError, TrackerError};
pub use future::ReadyOrBoxed;
pub use hook::{Hook, HookFuture, StopReason};
pub use limits::{MAX_NUMWANT_LIMIT, RequestLimits};
pub use logic::{LogicConfig, NamedHook, Retiring, SharedLogic, TrackerLogic};
pub use registry::{BuildFuture, DriverConfig, Drivers, Options, Registry};
pub use store::{PeerStore, StoreFuture, StoreStats, SwarmChange};

/// Re-exported so hook and store crates name one version of the protocol types.
pub use bittorrent;
