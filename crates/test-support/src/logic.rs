//! A tracker logic on a fresh memory store, for the tests of what stands in
//! front of the logic (the frontends, the middleware, the server's reload):
//! they name the hooks under test and nothing else.

use std::sync::Arc;
use std::time::Duration;

use storage_memory::{MemoryConfig, MemoryStore};
use tracker::config::ConfigDuration;
use tracker::{LogicConfig, NamedHook, SharedLogic, TrackerLogic};

/// The default logic with `pre_hooks` and `post_hooks` on a memory store of
/// few shards (tests use a few swarms) that recomputes its totals every
/// 50 ms (tests that read them wait little).
pub fn memory_logic(pre_hooks: Vec<NamedHook>, post_hooks: Vec<NamedHook>) -> TrackerLogic {
    let store = MemoryStore::new(MemoryConfig {
        shard_count: 8,
        prometheus_reporting_interval: ConfigDuration(Duration::from_millis(50)),
        ..MemoryConfig::default()
    })
    .expect("a valid memory config");
    TrackerLogic::new(
        LogicConfig::default(),
        Arc::new(store),
        pre_hooks,
        post_hooks,
    )
}

/// [`memory_logic`] as a frontend takes it.
pub fn shared_memory_logic(
    pre_hooks: Vec<NamedHook>,
    post_hooks: Vec<NamedHook>,
) -> Arc<SharedLogic> {
    Arc::new(SharedLogic::new(memory_logic(pre_hooks, post_hooks)))
}
