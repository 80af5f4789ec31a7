//! The storage conformance suite against a real `redis-server`, started once
//! for this test binary on a free port (killed when the binary exits).

mod cases;

use std::sync::{Arc, OnceLock};

use test_support::redis::RedisServer;
use tracker::PeerStore;
use tracker::conformance::StoreTestConfig;

/// The binary's one server: a static is never dropped, so it is killed when
/// the binary exits (test-support ties it to the process).
fn redis_url() -> String {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER
        .get_or_init(|| RedisServer::start("redis-conformance"))
        .url()
}

fn make(cfg: StoreTestConfig) -> Arc<dyn PeerStore> {
    cases::store(redis_url(), cfg)
}

tracker::peer_store_conformance!(make);

#[test]
fn two_instances_collecting_at_once_keep_exact_totals() {
    cases::two_instances_collecting_at_once_keep_exact_totals(redis_url());
}
