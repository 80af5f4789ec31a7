//! A running tracker: its store, its hook chain, and what happens on a reload
//! or a stop.
//!
//! The store is built once and lives for the whole process: a reload
//! (SIGUSR1) re-reads the file and rebuilds the hooks and the tracker logic
//! around the same store, so no swarm is lost (chihaya's behaviour). A reload
//! whose file is broken changes nothing: the error is logged and the running
//! configuration stays.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tracker::{NamedHook, PeerStore, Registry, TrackerLogic};

use crate::config::{self, ConfigFileError, ConfigSource, HookPhase, LoadedConfig};

/// The tracker's long-lived state.
pub struct Tracker {
    registry: Arc<Registry>,
    config: LoadedConfig,
    store: Arc<dyn PeerStore>,
    logic: Arc<TrackerLogic>,
    reloads: u64,
}

fn build_logic(
    registry: &Registry,
    config: &LoadedConfig,
    store: Arc<dyn PeerStore>,
) -> Result<TrackerLogic, ConfigFileError> {
    let build = |phase| -> Result<Vec<NamedHook>, ConfigFileError> {
        config
            .hooks(phase)
            .into_iter()
            .map(|(name, name_key, options)| {
                let hook = registry
                    .build_hook(&name, &name_key, &options)
                    .map_err(|e| ConfigFileError {
                        source_name: config.source.to_string(),
                        detail: e.to_string(),
                    })?;
                Ok(NamedHook { name, hook })
            })
            .collect()
    };
    let pre = build(HookPhase::Pre)?;
    let post = build(HookPhase::Post)?;
    Ok(TrackerLogic::new(config.logic_config(), store, pre, post))
}

impl Tracker {
    /// Builds the store and the hook chain from a checked configuration.
    pub fn start(registry: Arc<Registry>, config: LoadedConfig) -> Result<Self, ConfigFileError> {
        let t = &config.tracker;
        let store = registry
            .build_store(
                &t.storage.name,
                &format!("{}.storage.name", config.root),
                &config.storage_options(),
            )
            .map_err(|e| ConfigFileError {
                source_name: config.source.to_string(),
                detail: e.to_string(),
            })?;
        let logic = build_logic(&registry, &config, Arc::clone(&store))?;
        let tracker = Tracker {
            registry,
            config,
            store,
            logic: Arc::new(logic),
            reloads: 0,
        };
        tracker.log_configuration();
        Ok(tracker)
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
        // The frontends and the metrics server are built by the issues that
        // own them; until then say plainly that nothing listens.
        let http = t
            .http
            .as_ref()
            .map(|h| (h.addr.as_str(), h.https_addr.as_str()));
        let udp = t.udp.as_ref().map(|u| u.addr.as_str());
        if let Some((addr, https)) = http.filter(|(a, s)| !a.is_empty() || !s.is_empty()) {
            tracing::warn!(
                addr,
                https_addr = https,
                "http frontend configured, but this build has no HTTP frontend yet"
            );
        }
        if let Some(addr) = udp.filter(|a| !a.is_empty()) {
            tracing::warn!(
                addr,
                "udp frontend configured, but this build has no UDP frontend yet"
            );
        }
    }

    pub fn logic(&self) -> Arc<TrackerLogic> {
        Arc::clone(&self.logic)
    }

    pub fn store(&self) -> Arc<dyn PeerStore> {
        Arc::clone(&self.store)
    }

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
        let new = config::load(&self.config.source, &self.registry)?;
        if new.tracker.storage != self.config.tracker.storage {
            tracing::warn!(
                "storage configuration changed: it takes effect at the next restart (a reload keeps the peer store)"
            );
        }
        let logic = build_logic(&self.registry, &new, Arc::clone(&self.store))?;
        let old = std::mem::replace(&mut self.logic, Arc::new(logic));
        old.stop_hooks().await;
        self.config = new;
        self.reloads += 1;
        self.log_configuration();
        Ok(())
    }

    /// Stops the hooks, then the store.
    pub async fn shutdown(self) {
        self.logic.stop_hooks().await;
        if let Err(e) = self.store.stop().await {
            tracing::error!(error = %e, "stopping the store failed");
        }
    }
}

/// Runs the tracker until SIGINT or SIGTERM; SIGUSR1 reloads the configuration.
pub async fn run(registry: Arc<Registry>, source: ConfigSource) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while starting is then queued
    // instead of killing the process with the default action.
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let loaded = config::load(&source, &registry)?;
    let mut tracker = Tracker::start(registry, loaded)?;
    tracing::info!(pid = std::process::id(), "karuta started");

    loop {
        tokio::select! {
            _ = usr1.recv() => {
                match tracker.reload().await {
                    Ok(()) => tracing::info!(reload = tracker.reloads(), "configuration reloaded"),
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
    tracker.shutdown().await;
    tracing::info!("karuta stopped");
    Ok(())
}
