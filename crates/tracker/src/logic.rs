//! The tracker logic: the order in which hooks and the store see a request.
//!
//! ```text
//! handle_announce:  pre-hooks → response hook (store: counts + peers, and the
//!                   write too when the store does both in one step)
//!     (the frontend replies)
//! after_announce:   post-hooks → swarm interaction (the store write, unless
//!                   already done or skipped)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use bittorrent::{AnnounceRequest, AnnounceResponse, ScrapeRequest, ScrapeResponse};

use crate::{Hook, PeerStore, RequestContext, StopReason, StoreError, SwarmChange, TrackerError};

/// chihaya's response settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogicConfig {
    /// `announce_interval`: how often clients should announce.
    pub announce_interval: Duration,
    /// `min_announce_interval`: how often they may.
    pub min_announce_interval: Duration,
}

impl Default for LogicConfig {
    fn default() -> Self {
        LogicConfig {
            announce_interval: Duration::from_secs(30 * 60),
            min_announce_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// A hook with the name it was configured under (for logs and metrics) and
/// its count of rejected requests.
#[derive(Clone)]
pub struct NamedHook {
    pub name: String,
    pub hook: Arc<dyn Hook>,
    /// Shared with whoever exports it; the binary keeps one per hook name so
    /// the count survives reloads.
    pub rejections: Arc<AtomicU64>,
}

impl NamedHook {
    /// A hook with a counter of its own.
    pub fn new(name: impl Into<String>, hook: Arc<dyn Hook>) -> Self {
        NamedHook {
            name: name.into(),
            hook,
            rejections: Arc::default(),
        }
    }
}

/// Runs requests through the hook chain and the store. Shared by all frontends.
pub struct TrackerLogic {
    config: LogicConfig,
    store: Arc<dyn PeerStore>,
    pre_hooks: Vec<NamedHook>,
    post_hooks: Vec<NamedHook>,
    /// Whether the store or any hook may wait (see [`Hook::may_wait`]).
    may_wait: bool,
    /// Notified when the logic is dropped, that is when the last request
    /// holding it lets go: what a [`Retiring`] logic waits for before its
    /// hooks are stopped. A `Notify` keeps the wake-up if nobody waits yet.
    released: Arc<Notify>,
}

impl Drop for TrackerLogic {
    fn drop(&mut self) {
        self.released.notify_one();
    }
}

impl TrackerLogic {
    pub fn new(
        config: LogicConfig,
        store: Arc<dyn PeerStore>,
        pre_hooks: Vec<NamedHook>,
        post_hooks: Vec<NamedHook>,
    ) -> Self {
        let may_wait = store.may_wait()
            || pre_hooks
                .iter()
                .chain(&post_hooks)
                .any(|h| h.hook.may_wait());
        TrackerLogic {
            config,
            store,
            pre_hooks,
            post_hooks,
            may_wait,
            released: Arc::default(),
        }
    }

    /// Whether requests may wait for I/O anywhere in the chain: frontends
    /// that serve many requests on one thread then give each its own task.
    pub fn may_wait(&self) -> bool {
        self.may_wait
    }

    /// The pre-hooks and post-hooks, in order.
    pub fn hooks(&self) -> impl Iterator<Item = &NamedHook> {
        self.pre_hooks.iter().chain(&self.post_hooks)
    }

    pub fn config(&self) -> &LogicConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn PeerStore> {
        &self.store
    }

    /// Runs the pre-hooks and fills `resp`. On `Err` the frontend sends the
    /// error's client message and must not call [`after_announce`](Self::after_announce).
    pub async fn handle_announce(
        &self,
        ctx: &mut RequestContext,
        req: &AnnounceRequest,
        resp: &mut AnnounceResponse,
    ) -> Result<(), TrackerError> {
        resp.compact = req.compact;
        resp.interval = self.config.announce_interval;
        resp.min_interval = self.config.min_announce_interval;

        for named in &self.pre_hooks {
            if let Err(e) = named.hook.handle_announce(ctx, req, resp).await {
                named.rejections.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(hook = %named.name, error = %e, "pre-hook rejected announce");
                return Err(e);
            }
        }

        if ctx.skip_response {
            return Ok(());
        }
        // Nobody can connect to port 0: answer such a peer, never hand it out.
        if req.peer.port == 0 {
            ctx.skip_swarm_interaction = true;
        }
        if ctx.skip_swarm_interaction {
            // Read only: the peers and counts the swarm has without this peer.
            let seeder = req.is_seeder();
            let peer = req.peer;
            let scrape = self.store.scrape(req.info_hash, peer.family()).await?;
            resp.complete = scrape.complete;
            resp.incomplete = scrape.incomplete;
            resp.snatches = scrape.snatches;
            match self
                .store
                .announce_peers(req.info_hash, seeder, req.num_want, peer, resp)
                .await
            {
                Ok(()) | Err(StoreError::ResourceDoesNotExist) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        self.store.announce(req, resp).await?;
        ctx.swarm_written = true;
        Ok(())
    }

    /// Whether [`after_announce`](Self::after_announce) has anything to do for
    /// this request: post-hooks, or a store write the response hook did not
    /// make. Frontends skip scheduling the post phase when it has none.
    pub fn has_post_work(&self, ctx: &RequestContext) -> bool {
        !self.post_hooks.is_empty() || !(ctx.skip_swarm_interaction || ctx.swarm_written)
    }

    /// Whether [`after_scrape`](Self::after_scrape) has anything to do.
    pub fn has_post_scrape_work(&self) -> bool {
        !self.post_hooks.is_empty()
    }

    /// Runs the post-hooks, then writes the announce to the store unless the
    /// store already did or a pre-hook asked it not to. Errors are logged:
    /// the client already has its reply.
    pub async fn after_announce(
        &self,
        ctx: &mut RequestContext,
        req: &AnnounceRequest,
        resp: &mut AnnounceResponse,
    ) {
        for named in &self.post_hooks {
            if let Err(e) = named.hook.handle_announce(ctx, req, resp).await {
                tracing::warn!(hook = %named.name, error = %e, "post-hook failed");
            }
        }
        if ctx.skip_swarm_interaction || ctx.swarm_written {
            return;
        }
        let result = self
            .store
            .apply(req.info_hash, req.peer, SwarmChange::of(req))
            .await;
        match result {
            Ok(()) | Err(StoreError::ResourceDoesNotExist) => ctx.swarm_written = true,
            Err(e) => tracing::warn!(error = %e, "swarm interaction failed"),
        }
    }

    /// Runs the pre-hooks and fills `resp` with one entry per info hash.
    pub async fn handle_scrape(
        &self,
        ctx: &mut RequestContext,
        req: &ScrapeRequest,
        resp: &mut ScrapeResponse,
    ) -> Result<(), TrackerError> {
        for named in &self.pre_hooks {
            if let Err(e) = named.hook.handle_scrape(ctx, req, resp).await {
                named.rejections.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(hook = %named.name, error = %e, "pre-hook rejected scrape");
                return Err(e);
            }
        }
        if !ctx.skip_response {
            self.store.scrape_many(req, resp).await?;
        }
        Ok(())
    }

    pub async fn after_scrape(
        &self,
        ctx: &mut RequestContext,
        req: &ScrapeRequest,
        resp: &mut ScrapeResponse,
    ) {
        for named in &self.post_hooks {
            if let Err(e) = named.hook.handle_scrape(ctx, req, resp).await {
                tracing::warn!(hook = %named.name, error = %e, "post-hook failed");
            }
        }
    }

    /// Stops every hook (pre then post), once each. The store is not stopped:
    /// it outlives configuration reloads and is stopped by its owner.
    pub async fn stop_hooks(&self, reason: StopReason) {
        stop_each(self.pre_hooks.iter().chain(&self.post_hooks), reason).await;
    }

    /// Takes this handle out of service, keeping only what is needed to stop
    /// the hooks once the other holders (requests in flight) let go.
    pub fn retire(self: Arc<Self>) -> Retiring {
        Retiring {
            hooks: self
                .pre_hooks
                .iter()
                .chain(&self.post_hooks)
                .cloned()
                .collect(),
            released: Arc::clone(&self.released),
            users: Arc::downgrade(&self),
        }
    }
}

async fn stop_each(hooks: impl Iterator<Item = &NamedHook>, reason: StopReason) {
    for named in hooks {
        named.hook.stop(reason).await;
        tracing::debug!(hook = %named.name, "hook stopped");
    }
}

/// A tracker logic a reload replaced, whose hooks are still to be stopped.
/// It holds the hooks but not the logic, so the logic is dropped, and
/// [`Retiring::released`] woken, as soon as its last user lets go.
pub struct Retiring {
    hooks: Vec<NamedHook>,
    released: Arc<Notify>,
    users: Weak<TrackerLogic>,
}

impl Retiring {
    /// Resolves once no one holds the logic any more (at once if no one does).
    pub async fn released(&self) {
        while self.users.strong_count() > 0 {
            self.released.notified().await;
        }
    }

    /// How many still hold the logic (requests in flight).
    pub fn users(&self) -> usize {
        self.users.strong_count()
    }

    /// Stops every hook (pre then post), once each: consuming `self` makes a
    /// second stop impossible.
    pub async fn stop_hooks(self, reason: StopReason) {
        stop_each(self.hooks.iter(), reason).await;
    }
}

/// The tracker logic frontends use, swappable at a reload without stopping
/// them: a frontend loads the current logic once per request (or per batch of
/// packets) and drops it when done, so the logic a reload replaces is retired
/// only when no request holds it any more ([`TrackerLogic::retire`]).
pub struct SharedLogic(ArcSwap<TrackerLogic>);

impl SharedLogic {
    pub fn new(logic: TrackerLogic) -> Self {
        SharedLogic(ArcSwap::from_pointee(logic))
    }

    /// The current logic.
    pub fn load(&self) -> Arc<TrackerLogic> {
        self.0.load_full()
    }

    /// The logic held, for the last owner to retire.
    pub fn into_inner(self) -> Arc<TrackerLogic> {
        self.0.into_inner()
    }

    /// Installs `logic` and returns the one it replaces.
    pub fn replace(&self, logic: TrackerLogic) -> Arc<TrackerLogic> {
        self.0.swap(Arc::new(logic))
    }
}
