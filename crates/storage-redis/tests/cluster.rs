//! The storage conformance suite, and two instances collecting garbage at
//! once, against a real Redis Cluster of three primaries on 127.0.0.1,
//! started once for this test binary (each test process: nextest runs every
//! test in its own) and killed when the binary exits.

mod cases;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use storage_redis::{RedisConfig, RedisStore};
use test_support::redis_cluster::RedisCluster;
use tracker::PeerStore;
use tracker::bittorrent::{AddressFamily, InfoHash, Peer, PeerId};
use tracker::config::ConfigDuration;
use tracker::conformance::StoreTestConfig;

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start("redis-cluster-store", 3))
}

fn make(cfg: StoreTestConfig) -> Arc<dyn PeerStore> {
    cases::store(cluster().broker(), cfg)
}

tracker::peer_store_conformance!(make);

#[test]
fn two_instances_collecting_at_once_keep_exact_totals() {
    cases::two_instances_collecting_at_once_keep_exact_totals(cluster().broker());
}

/// Swarms on every primary: each announce's keys, its bucket's set and
/// totals are on the primary of the bucket's slot, every primary holds some,
/// and the totals summed over the buckets are exact.
#[test]
fn swarms_spread_over_every_primary_and_totals_sum_exactly() {
    let cluster = cluster();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = RedisStore::new(RedisConfig {
                redis_broker: cluster.broker(),
                prometheus_reporting_interval: ConfigDuration(Duration::from_millis(50)),
                key_prefix: "spread:".to_owned(),
                ..RedisConfig::default()
            })
            .unwrap();
            // 64 torrents whose first bytes step through the buckets.
            for t in 0..64u8 {
                let ih = InfoHash([t * 4; 20]);
                for n in 0..3u8 {
                    let peer = Peer::new(
                        PeerId([n; 20]),
                        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, t, n)),
                        6881,
                    );
                    if n == 0 {
                        store.put_seeder(ih, peer).await.unwrap();
                    } else {
                        store.put_leecher(ih, peer).await.unwrap();
                    }
                }
                let scrape = store.scrape(ih, AddressFamily::V4).await.unwrap();
                assert_eq!((scrape.complete, scrape.incomplete), (1, 2));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while store.stats().seeders != 64 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let s = store.stats();
            assert_eq!((s.swarms, s.seeders, s.leechers), (64, 64, 128), "{s:?}");
        });
    // Every primary holds keys of this prefix: DBSIZE counts each node's own.
    for primary in cluster.primaries() {
        let keys: u64 = cluster.cli(primary, &["DBSIZE"]).parse().unwrap();
        assert!(keys > 0, "primary {primary} holds no key");
    }
}
