//! A running tracker: its store, its hook chain, and what happens on a reload
//! or a stop.
//!
//! The store is built once and lives for the whole process: a reload
//! (SIGUSR1) re-reads the file and rebuilds the hooks and the tracker logic
//! around the same store, so no swarm is lost (chihaya's behaviour). A reload
//! whose file is broken changes nothing: the error is logged and the running
//! configuration stays.
//!
//! The new hooks are built before the old ones stop, so a failed build leaves
//! the tracker as it was; hooks must therefore tolerate a short overlap with
//! their predecessors. The old logic is retired only when no request holds it
//! any more (or after [`RETIRE_TIMEOUT`]), so a request in flight during a
//! reload never meets a stopped hook.

use std::sync::Arc;
use std::time::Duration;

use frontend_http::HttpFrontend;
use frontend_udp::UdpFrontend;
use tokio::signal::unix::{SignalKind, signal};
use tracker::{ConfigError, NamedHook, PeerStore, Registry, SharedLogic, StopReason, TrackerLogic};

use crate::config::{self, ConfigFileError, ConfigSource, HookPhase, LoadedConfig};
use crate::observe::{FrontendState, Observed};
use crate::ops::OpsServer;

/// How long a retired tracker logic may stay in use by requests in flight
/// before its hooks are stopped anyway.
pub const RETIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracker's long-lived state.
pub struct Tracker {
    registry: Arc<Registry>,
    config: LoadedConfig,
    store: Arc<dyn PeerStore>,
    logic: Arc<SharedLogic>,
    udp: Option<UdpFrontend>,
    http: Option<HttpFrontend>,
    observed: Arc<Observed>,
    reloads: u64,
}

/// Starts the HTTP frontend of `config`, if it has one.
fn start_http(
    config: &LoadedConfig,
    logic: &Arc<SharedLogic>,
    observed: &Observed,
) -> Result<Option<HttpFrontend>, ConfigFileError> {
    let Some(http) = &config.tracker.http else {
        return Ok(None);
    };
    let section = format!("{}.http", config.root);
    HttpFrontend::start(http, Arc::clone(logic), Arc::clone(&observed.http)).map_err(|e| {
        let e = match e {
            frontend_http::StartError::Config(e) => e.within(&section),
            frontend_http::StartError::Bind { addr, source } => ConfigError::new(
                format!(
                    "{section}.{}",
                    if Some(addr) == http.https_listen_addr().ok().flatten() {
                        "https_addr"
                    } else {
                        "addr"
                    }
                ),
                format!("cannot listen on {addr}: {source}"),
            ),
            spawn @ frontend_http::StartError::Spawn { .. } => {
                ConfigError::new(section.as_str(), spawn.to_string())
            }
        };
        ConfigFileError::with_key(&config.source, e)
    })
}

/// Starts the UDP frontend of `config`, if it has one.
fn start_udp(
    config: &LoadedConfig,
    logic: &Arc<SharedLogic>,
    observed: &Observed,
) -> Result<Option<UdpFrontend>, ConfigFileError> {
    let Some(udp) = &config.tracker.udp else {
        return Ok(None);
    };
    let section = format!("{}.udp", config.root);
    UdpFrontend::start(udp, Arc::clone(logic), Arc::clone(&observed.udp)).map_err(|e| {
        let e = match e {
            frontend_udp::StartError::Config(e) => e.within(&section),
            bind @ frontend_udp::StartError::Bind { .. } => {
                ConfigError::new(format!("{section}.addr"), bind.to_string())
            }
            spawn @ frontend_udp::StartError::Spawn { .. } => {
                ConfigError::new(format!("{section}.workers"), spawn.to_string())
            }
        };
        ConfigFileError::with_key(&config.source, e)
    })
}

/// Builds the hook chain; if one hook fails, those already built are
/// stopped, for `on_failure` (a start that fails ends the process; a reload
/// that fails keeps the tracker running).
async fn build_logic(
    registry: &Registry,
    config: &LoadedConfig,
    store: Arc<dyn PeerStore>,
    observed: &Observed,
    on_failure: StopReason,
) -> Result<TrackerLogic, ConfigFileError> {
    let mut built: [Vec<NamedHook>; 2] = [Vec::new(), Vec::new()];
    for (slot, phase) in [HookPhase::Pre, HookPhase::Post].into_iter().enumerate() {
        for (name, name_key, options) in config.hooks(phase) {
            match registry.hooks().build(&name, &name_key, &options).await {
                Ok(hook) => {
                    let rejections = observed.hook_counter(&name);
                    built[slot].push(NamedHook {
                        name,
                        hook,
                        rejections,
                    })
                }
                Err(e) => {
                    for named in built.iter().flatten() {
                        named.hook.stop(on_failure).await;
                    }
                    return Err(ConfigFileError::with_key(&config.source, e));
                }
            }
        }
    }
    let [pre, post] = built;
    Ok(TrackerLogic::new(config.logic_config(), store, pre, post))
}

/// Waits until `logic` has no other users (requests in flight), at most
/// `timeout`, then stops its hooks for `reason`. The wait is woken by the last
/// user's drop, not polled. Returns how many users were left when the hooks
/// were stopped.
async fn retire(logic: Arc<TrackerLogic>, timeout: Duration, reason: StopReason) -> usize {
    let retiring = logic.retire();
    // No timer when no one is left: a stop then needs no runtime's clock
    // (the allocation test stops the tracker by polling it once).
    let users = if retiring.users() == 0 {
        0
    } else {
        match tokio::time::timeout(timeout, retiring.released()).await {
            Ok(()) => 0,
            Err(_) => retiring.users(),
        }
    };
    if users > 0 {
        tracing::warn!(
            users,
            "requests still hold the previous configuration; stopping its hooks anyway"
        );
    }
    retiring.stop_hooks(reason).await;
    users
}

impl Tracker {
    /// Builds the store and the hook chain from a checked configuration.
    pub async fn start(
        registry: Arc<Registry>,
        config: LoadedConfig,
    ) -> Result<Self, ConfigFileError> {
        let t = &config.tracker;
        let name_key = format!("{}.storage.name", config.root);
        let store = registry
            .stores()
            .build(&t.storage.name, &name_key, &config.storage_options())
            .await
            .map_err(|e| ConfigFileError::with_key(&config.source, e))?;
        let observed = Arc::new(Observed::new(Arc::clone(&store)));
        let logic = match build_logic(
            &registry,
            &config,
            Arc::clone(&store),
            &observed,
            StopReason::Shutdown,
        )
        .await
        {
            Ok(logic) => Arc::new(SharedLogic::new(logic)),
            Err(e) => {
                let _ = store.stop().await;
                return Err(e);
            }
        };
        let frontends = start_udp(&config, &logic, &observed).and_then(|udp| {
            match start_http(&config, &logic, &observed) {
                Ok(http) => Ok((udp, http)),
                Err(e) => {
                    drop(udp);
                    Err(e)
                }
            }
        });
        let (udp, http) = match frontends {
            Ok(f) => f,
            Err(e) => {
                logic.load().stop_hooks(StopReason::Shutdown).await;
                let _ = store.stop().await;
                return Err(e);
            }
        };
        observed.set_logic(Arc::clone(&logic));
        let tracker = Tracker {
            registry,
            config,
            store,
            logic,
            udp,
            http,
            observed,
            reloads: 0,
        };
        tracker.record_frontends();
        tracker.log_configuration();
        Ok(tracker)
    }

    /// Tells the operations endpoints which frontends run.
    fn record_frontends(&self) {
        let mut states = Vec::new();
        if let Some(udp) = &self.udp {
            states.push(FrontendState {
                name: "udp",
                addrs: vec![udp.local_addr()],
                expected: udp.workers().0,
                liveness: udp.liveness(),
            });
        }
        if let Some(http) = &self.http {
            states.push(FrontendState {
                name: "http",
                addrs: http
                    .local_addr()
                    .into_iter()
                    .chain(http.https_local_addr())
                    .collect(),
                expected: http.listeners().0,
                liveness: http.liveness(),
            });
        }
        self.observed.set_frontends(states);
    }

    /// What the operations endpoints read (the store, counters, liveness).
    pub fn observed(&self) -> Arc<Observed> {
        Arc::clone(&self.observed)
    }

    fn log_configuration(&self) {
        let t = &self.config.tracker;
        let hook_names = |list: &Option<Vec<config::HookConfig>>| -> Vec<String> {
            list.iter().flatten().map(|h| h.name.clone()).collect()
        };
        tracing::info!(
            config = %self.config.source,
            storage = %t.storage.name,
            prehooks = ?hook_names(&t.prehooks),
            posthooks = ?hook_names(&t.posthooks),
            announce_interval = %tracker::config::format_duration(t.announce_interval.0),
            "tracker configured"
        );
    }

    /// The current tracker logic. Frontends take a clone per request (or per
    /// batch) and drop it when done; a reload waits for those clones.
    pub fn logic(&self) -> Arc<TrackerLogic> {
        self.logic.load()
    }

    /// The running HTTP frontend, if any.
    pub fn http(&self) -> Option<&HttpFrontend> {
        self.http.as_ref()
    }

    /// The running UDP frontend, if any.
    pub fn udp(&self) -> Option<&UdpFrontend> {
        self.udp.as_ref()
    }

    pub fn store(&self) -> Arc<dyn PeerStore> {
        Arc::clone(&self.store)
    }

    /// The configuration in effect (the storage section is the one the store
    /// was built with, even if the file has changed since).
    pub fn config(&self) -> &LoadedConfig {
        &self.config
    }

    /// Completed reloads since start.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Re-reads the configuration and rebuilds the hooks around the same
    /// store. On error nothing changes.
    pub async fn reload(&mut self) -> Result<(), ConfigFileError> {
        let mut new = config::load_to_serve(&self.config.source, &self.registry)?;
        if new.tracker.storage != self.config.tracker.storage {
            tracing::warn!(
                "storage configuration changed: it takes effect at the next restart (a reload keeps the peer store)"
            );
            new.tracker.storage = self.config.tracker.storage.clone();
        }
        let logic = build_logic(
            &self.registry,
            &new,
            Arc::clone(&self.store),
            &self.observed,
            StopReason::Reload,
        )
        .await?;
        let old = self.logic.replace(logic);
        // A frontend whose section changed is replaced: the new one binds
        // first (SO_REUSEPORT lets both hold the port for a moment), so a
        // failure leaves the old one serving.
        if new.tracker.udp != self.config.tracker.udp {
            match start_udp(&new, &self.logic, &self.observed) {
                Ok(udp) => {
                    if let Some(previous) = std::mem::replace(&mut self.udp, udp) {
                        previous.stop().await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "udp frontend not restarted; the previous one keeps serving");
                    new.tracker.udp = self.config.tracker.udp.clone();
                }
            }
        }
        if new.tracker.http != self.config.tracker.http {
            match start_http(&new, &self.logic, &self.observed) {
                Ok(http) => {
                    if let Some(previous) = std::mem::replace(&mut self.http, http) {
                        previous.stop().await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "http frontend not restarted; the previous one keeps serving");
                    new.tracker.http = self.config.tracker.http.clone();
                }
            }
        }
        self.config = new;
        self.record_frontends();
        self.reloads += 1;
        self.log_configuration();
        retire(old, RETIRE_TIMEOUT, StopReason::Reload).await;
        Ok(())
    }

    /// Stops the frontends (each finishes the batch in hand), then the hooks
    /// (once requests in flight are done), then the store.
    pub async fn shutdown(self) {
        if let Some(udp) = self.udp {
            udp.stop().await;
        }
        if let Some(http) = self.http {
            http.stop().await;
        }
        // With the frontends gone, the tracker is the slot's last owner.
        match Arc::try_unwrap(self.logic) {
            Ok(shared) => {
                retire(shared.into_inner(), RETIRE_TIMEOUT, StopReason::Shutdown).await;
            }
            Err(shared) => shared.load().stop_hooks(StopReason::Shutdown).await,
        }
        if let Err(e) = self.store.stop().await {
            tracing::error!(error = %e, "stopping the store failed");
        }
    }
}

/// Runs the tracker until SIGINT or SIGTERM; SIGUSR1 reloads the configuration.
/// A second SIGINT or SIGTERM during the stop ends the process at once.
pub async fn run(registry: Arc<Registry>, source: ConfigSource) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while starting is then queued
    // instead of killing the process with the default action.
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let loaded = config::load_to_serve(&source, &registry)?;
    let metrics_addr = tracker::config::parse_listen_addr(&loaded.tracker.metrics_addr)
        .map_err(|e| anyhow::anyhow!("{source}: {}.metrics_addr: {e}", loaded.root))?;
    let mut tracker = Tracker::start(registry, loaded).await?;
    let ops = match metrics_addr {
        Some(addr) => match OpsServer::start(addr, tracker.observed()).await {
            Ok(ops) => Some(ops),
            Err(e) => {
                tracker.shutdown().await;
                anyhow::bail!("{source}: metrics_addr: cannot listen on {addr}: {e}");
            }
        },
        None => None,
    };
    tracing::info!(pid = std::process::id(), "karuta started");

    loop {
        tokio::select! {
            _ = usr1.recv() => {
                let before = tracker.config().tracker.metrics_addr.clone();
                match tracker.reload().await {
                    Ok(()) => {
                        if tracker.config().tracker.metrics_addr != before {
                            tracing::warn!("metrics_addr changed: it takes effect at the next restart");
                        }
                        tracing::info!(reload = tracker.reloads(), "configuration reloaded")
                    }
                    Err(e) => tracing::error!(error = %e, "configuration reload failed; the running configuration stays"),
                }
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received, stopping");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received, stopping");
                break;
            }
        }
    }
    tokio::select! {
        () = tracker.shutdown() => {}
        _ = term.recv() => anyhow::bail!("second stop signal: exiting without a clean stop"),
        _ = int.recv() => anyhow::bail!("second stop signal: exiting without a clean stop"),
    }
    if let Some(ops) = ops {
        ops.stop().await;
    }
    tracing::info!("karuta stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use test_support::logic::memory_logic;
    use tokio::time::Instant;
    use tracker::testing::FnHook;

    use super::*;

    /// A hook that counts its stops in `stops`.
    fn counting_stops(stops: &Arc<AtomicUsize>) -> Arc<FnHook> {
        let stops = Arc::clone(stops);
        Arc::new(FnHook::new().on_stop(move |_| {
            stops.fetch_add(1, Ordering::SeqCst);
        }))
    }

    fn logic(pre: &Arc<AtomicUsize>, post: &Arc<AtomicUsize>) -> Arc<TrackerLogic> {
        Arc::new(memory_logic(
            vec![NamedHook::new("pre", counting_stops(pre))],
            vec![NamedHook::new("post", counting_stops(post))],
        ))
    }

    fn stops(hooks: [&Arc<AtomicUsize>; 2]) -> [usize; 2] {
        hooks.map(|h| h.load(Ordering::SeqCst))
    }

    // The clock is paused and only moves when every task waits on a timer, so
    // a retire that polled would finish a poll interval after the drop, and
    // one that is woken finishes at the drop's instant.
    #[tokio::test(start_paused = true)]
    async fn retire_ends_when_the_last_user_drops() {
        let (pre, post) = (Arc::default(), Arc::default());
        let logic = logic(&pre, &post);
        let request = Arc::clone(&logic);
        let retired = tokio::spawn(async move {
            let users = retire(logic, RETIRE_TIMEOUT, StopReason::Reload).await;
            (users, Instant::now())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Let the retire task run whatever its wake-up at this instant does,
        // so the drop below falls between two of a poller's checks.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(stops([&pre, &post]), [0, 0], "stopped while in use");
        let dropped = Instant::now();
        drop(request);
        let (users, finished) = retired.await.unwrap();
        assert_eq!(users, 0);
        assert_eq!(finished, dropped, "retire waited past the last drop");
        assert_eq!(stops([&pre, &post]), [1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn retire_without_users_ends_at_once() {
        let (pre, post) = (Arc::default(), Arc::default());
        let started = Instant::now();
        assert_eq!(
            retire(logic(&pre, &post), RETIRE_TIMEOUT, StopReason::Shutdown).await,
            0
        );
        assert_eq!(Instant::now(), started);
        assert_eq!(stops([&pre, &post]), [1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn retire_gives_up_after_the_timeout() {
        let (pre, post) = (Arc::default(), Arc::default());
        let logic = logic(&pre, &post);
        let requests = [Arc::clone(&logic), Arc::clone(&logic)];
        let started = Instant::now();
        assert_eq!(
            retire(logic, RETIRE_TIMEOUT, StopReason::Reload).await,
            2,
            "users left"
        );
        assert_eq!(Instant::now() - started, RETIRE_TIMEOUT);
        assert_eq!(stops([&pre, &post]), [1, 1]);
        // The last user letting go later does not stop the hooks again.
        drop(requests);
        tokio::task::yield_now().await;
        assert_eq!(stops([&pre, &post]), [1, 1]);
    }
}
