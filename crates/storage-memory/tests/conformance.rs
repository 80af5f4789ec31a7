//! The memory store against the shared storage conformance suite.

use std::sync::Arc;

use storage_memory::{MemoryConfig, MemoryStore};
use tracker::PeerStore;
use tracker::config::ConfigDuration;
use tracker::conformance::StoreTestConfig;

fn make(cfg: StoreTestConfig) -> Arc<dyn PeerStore> {
    Arc::new(
        MemoryStore::new(MemoryConfig {
            gc_interval: ConfigDuration(cfg.gc_interval),
            peer_lifetime: ConfigDuration(cfg.peer_lifetime),
            shard_count: 16,
            prometheus_reporting_interval: ConfigDuration(cfg.reporting_interval),
            ..MemoryConfig::default()
        })
        .expect("a valid memory config"),
    )
}

tracker::peer_store_conformance!(make);
