//! privtrak: a private tracker's accounting, as a pre-hook.
//!
//! chihaya-privtrak-middleware's promise — per-user, per-torrent upload and
//! download deltas from announces, batched to a handler that writes them to
//! a database, stale records purged — kept without its flaws, and made
//! durable:
//!
//! ```text
//! announce ─► user id (passkey) ─► per-peer baseline → delta ─► journal ─► reply
//!                                                                  │ (group fsync)
//!                                          drain: batches in journal order, retried until accepted
//!                                                                  ▼
//!                                                        DeltaHandler (jsonl, PostgreSQL, yours)
//! ```
//!
//! - [`user`]: who an announce belongs to ([`UserIdentifier`]; the passkey of
//!   the route, query or BEP 41 URL data).
//! - [`delta`]: the rules that turn reported counters into credit.
//! - `records`: one baseline per (user, info hash, peer id), compact.
//! - [`journal`]: an announce is answered only once its delta is on disk, so
//!   a crash loses nothing; the handler gets batches whose ids are journal
//!   positions, so a retry or a replay after a crash applies nothing twice.
//! - [`handler`]: the [`DeltaHandler`] trait; [`handlers`]: `jsonl` and an
//!   in-memory one for tests.
//! - [`Privtrak`]: the state, restored at start (from the handler when it
//!   keeps baselines, else from a snapshot) plus the journal after it.
//!
//! A handler of one's own plugs in through [`Privtrak::open`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use privtrak::{Batch, DeltaHandler, HandlerFuture, JournalId, Privtrak, PrivtrakConfig};
//!
//! /// Sends every batch to an event pipeline (printed here).
//! struct Printer;
//!
//! impl DeltaHandler for Printer {
//!     fn applied_through<'a>(&'a self, _journal: JournalId) -> HandlerFuture<'a, u64> {
//!         // A real handler returns what it has durably applied.
//!         Box::pin(async { Ok(0) })
//!     }
//!     fn handle<'a>(&'a self, batch: &'a Batch) -> HandlerFuture<'a, ()> {
//!         Box::pin(async move {
//!             for d in &batch.deltas {
//!                 println!("{} {} +{} up +{} down", d.user, d.info_hash, d.uploaded, d.downloaded);
//!             }
//!             Ok(())
//!         })
//!     }
//! }
//!
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PrivtrakConfig {
//!     journal_path: "/var/lib/karuta/privtrak.journal".into(),
//!     ..PrivtrakConfig::default()
//! };
//! let privtrak = Privtrak::open(&config, Arc::new(Printer)).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod config;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod delta;
mod drain;
pub mod handler;
pub mod handlers;
mod hook;
pub mod journal;
mod metrics;
mod privtrak;
mod records;
mod torrents;
mod upkeep;
pub mod user;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub use config::{ByteSize, PrivtrakConfig};
pub use delta::{Baseline, Delta, DeltaEvent, credit_against};
pub use handler::{Batch, BatchId, DeltaHandler, HandlerError, HandlerFuture};
pub use hook::PrivtrakHook;
pub use journal::JournalId;
pub use metrics::Metrics;
pub use privtrak::{Account, BUSY, NotRecorded, OpenError, Privtrak, Recorded, TOO_MANY_PEERS};
pub use records::PeerRecord;
pub use user::{PasskeyIdentifier, SiteUser, UserId, UserIdentifier};

use tracker::{ConfigError, Hook, Registry};

fn open_error(e: OpenError) -> ConfigError {
    match e {
        OpenError::Handler(why) => ConfigError::new("handler", why),
        other => ConfigError::new(
            "journal_path",
            other
                .to_string()
                .trim_start_matches("journal_path: ")
                .to_owned(),
        ),
    }
}

/// The identifier a configuration asks for.
pub fn identifier(config: &PrivtrakConfig) -> PasskeyIdentifier {
    PasskeyIdentifier::new(
        &config.passkey,
        config
            .hash_other_passkeys
            .then_some(config.passkey_hash_key.as_bytes()),
    )
}

/// Registers the `privtrak` pre-hook with the built-in handlers (the
/// `handler:` section picks one). Its state (records, journal, handler) is
/// made at the first build and kept by the factory across reloads: a reload
/// builds a new hook on the same state, applying the options that can change
/// live; the state stops with the last hook that uses it.
pub fn register(registry: &mut Registry) {
    register_driver(
        registry,
        "privtrak",
        |config: PrivtrakConfig| config,
        |config: &PrivtrakConfig| {
            let handler = config.handler.clone();
            let lifetime = config.peer_lifetime.0;
            Box::pin(async move {
                handler
                    .build(lifetime)
                    .await
                    .map_err(|e| e.within("handler"))
            })
        },
    );
}

/// Registers a privtrak pre-hook under `name` whose deltas go to a handler
/// of one's own, made by `handler` at start (the `handler:` section of its
/// options is not used). See the crate example for a handler.
pub fn register_with(
    registry: &mut Registry,
    name: &str,
    handler: impl Fn() -> Arc<dyn DeltaHandler> + Send + Sync + 'static,
) {
    register_driver(
        registry,
        name,
        |config: config::OwnHandlerConfig| config.0,
        move |_: &PrivtrakConfig| {
            let handler = handler();
            Box::pin(async move { Ok(handler) })
        },
    );
}

type HandlerBuild = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Arc<dyn DeltaHandler>, ConfigError>> + Send>,
>;

/// `C` is the options as the registry reads and checks them; `options`
/// turns them into privtrak's.
fn register_driver<C: tracker::DriverConfig>(
    registry: &mut Registry,
    name: &str,
    options: fn(C) -> PrivtrakConfig,
    make_handler: impl Fn(&PrivtrakConfig) -> HandlerBuild + Send + Sync + 'static,
) {
    type Slot = Option<(Arc<Privtrak>, Arc<AtomicUsize>)>;
    let state: Arc<tokio::sync::Mutex<Slot>> = Arc::default();
    let make_handler = Arc::new(make_handler);
    registry.register_hook_async(name, move |config: C| {
        let config = options(config);
        let state = Arc::clone(&state);
        let make_handler = Arc::clone(&make_handler);
        async move {
            let mut slot = state.lock().await;
            let (privtrak, live) = match &*slot {
                Some((p, live)) if !p.is_closed() => {
                    p.reconfigure(&config);
                    (Arc::clone(p), Arc::clone(live))
                }
                _ => {
                    let handler = make_handler(&config).await?;
                    let p = Privtrak::open(&config, handler).await.map_err(open_error)?;
                    let live = Arc::new(AtomicUsize::new(0));
                    *slot = Some((Arc::clone(&p), Arc::clone(&live)));
                    (p, live)
                }
            };
            let hook = PrivtrakHook::new(privtrak, Box::new(identifier(&config)), live);
            Ok(Arc::new(hook) as Arc<dyn Hook>)
        }
    });
}
