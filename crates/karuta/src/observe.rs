//! What the operations endpoints read: the store, the frontends' counters and
//! liveness, and the hooks' rejection counts. One per process; a reload
//! updates what is in it, and no counter in it ever goes backwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use frontend_http::HttpStats;
use frontend_udp::UdpMetrics;
use tracker::stats::Liveness;
use tracker::{NamedHook, PeerStore, SharedLogic};

/// A running frontend as `/health` sees it.
#[derive(Clone, Debug)]
pub struct FrontendState {
    /// `udp` or `http`.
    pub name: &'static str,
    pub addrs: Vec<SocketAddr>,
    /// Workers (UDP threads, HTTP accept loops) started.
    pub expected: usize,
    pub liveness: Arc<Liveness>,
}

pub struct Observed {
    pub store: Arc<dyn PeerStore>,
    pub udp: Arc<UdpMetrics>,
    pub http: Arc<HttpStats>,
    hooks: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    frontends: Mutex<Vec<FrontendState>>,
    /// The tracker logic in use, whose hooks report metrics and health.
    logic: Mutex<Option<Arc<SharedLogic>>>,
    pub started: SystemTime,
}

impl Observed {
    pub fn new(store: Arc<dyn PeerStore>) -> Self {
        Observed {
            store,
            udp: Arc::default(),
            http: Arc::default(),
            hooks: Mutex::default(),
            frontends: Mutex::default(),
            logic: Mutex::default(),
            started: SystemTime::now(),
        }
    }

    /// The rejection counter of hooks named `name` (shared by every hook of
    /// that name, kept across reloads).
    pub fn hook_counter(&self, name: &str) -> Arc<AtomicU64> {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(hooks.entry(name.to_owned()).or_default())
    }

    /// Every hook name seen so far with its rejection count.
    pub fn hook_counters(&self) -> Vec<(String, Arc<AtomicU64>)> {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// Replaces the record of running frontends.
    pub fn set_frontends(&self, frontends: Vec<FrontendState>) {
        *self.frontends.lock().unwrap_or_else(|p| p.into_inner()) = frontends;
    }

    /// Tells the operations endpoints which logic is in use.
    pub fn set_logic(&self, logic: Arc<SharedLogic>) {
        *self.logic.lock().unwrap_or_else(|p| p.into_inner()) = Some(logic);
    }

    /// The hooks of the logic in use now (none before the tracker started).
    pub fn hooks(&self) -> Vec<NamedHook> {
        let logic = self.logic.lock().unwrap_or_else(|p| p.into_inner()).clone();
        logic.map_or_else(Vec::new, |l| l.load().hooks().cloned().collect())
    }

    pub fn frontends(&self) -> Vec<FrontendState> {
        self.frontends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
