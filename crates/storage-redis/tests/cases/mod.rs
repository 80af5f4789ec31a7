//! What the single-Redis and the Redis Cluster tests both run: a store for
//! the conformance suite, and two instances collecting garbage at once.
//! Included by each with `mod cases;`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use storage_redis::{RedisConfig, RedisStore};
use tracker::PeerStore;
use tracker::bittorrent::{AddressFamily, InfoHash, Peer, PeerId};
use tracker::config::ConfigDuration;
use tracker::conformance::StoreTestConfig;

/// A store on `broker` with the suite's timings, under a key prefix of its
/// own.
pub fn store(broker: String, cfg: StoreTestConfig) -> Arc<dyn PeerStore> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let config = RedisConfig {
        redis_broker: broker,
        redis_read_timeout: ConfigDuration(Duration::from_secs(5)),
        redis_write_timeout: ConfigDuration(Duration::from_secs(5)),
        redis_connect_timeout: ConfigDuration(Duration::from_secs(5)),
        gc_interval: ConfigDuration(cfg.gc_interval),
        peer_lifetime: ConfigDuration(cfg.peer_lifetime),
        prometheus_reporting_interval: ConfigDuration(cfg.reporting_interval),
        key_prefix: format!("test{}-{n}:", std::process::id()),
        redis_tls_ca_file: None,
    };
    Arc::new(RedisStore::new(config).expect("store")) as Arc<dyn PeerStore>
}

/// Two instances (one key prefix) on `broker` collecting garbage at the same
/// moment remove each stale peer once: the totals end exact, fresh peers
/// stay. The stale peers are on 30 torrents whose info hashes spread over
/// the buckets (so, on a cluster, over every primary).
pub fn two_instances_collecting_at_once_keep_exact_totals(broker: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let prefix = format!("gc2-{}:", std::process::id());
        let instance = || {
            RedisStore::new(RedisConfig {
                redis_broker: broker.clone(),
                // Only the explicit collections below run.
                gc_interval: ConfigDuration(Duration::from_secs(3600)),
                peer_lifetime: ConfigDuration(Duration::from_secs(1)),
                prometheus_reporting_interval: ConfigDuration(Duration::from_millis(50)),
                key_prefix: prefix.clone(),
                ..RedisConfig::default()
            })
            .unwrap()
        };
        let (a, b) = (instance(), instance());
        let peer = |n: u16| {
            Peer::new(
                PeerId([n as u8; 20]),
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
                6881,
            )
        };
        // 300 stale peers over 30 torrents, half seeders, written through A.
        let torrent = |t: u16| InfoHash([(t * 37 % 256) as u8; 20]);
        for n in 0..300u16 {
            let ih = torrent(n % 30);
            if n % 2 == 0 {
                a.put_seeder(ih, peer(n)).await.unwrap();
            } else {
                a.put_leecher(ih, peer(n)).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Fresh peers (through B) on one torrent that also has stale ones.
        let kept = torrent(0);
        for n in 1000..1005u16 {
            b.put_leecher(kept, peer(n)).await.unwrap();
        }
        let (ra, rb) = tokio::join!(a.collect_garbage(), b.collect_garbage());
        ra.unwrap();
        rb.unwrap();
        // The totals each instance reports, once its reporting task has read
        // them since (every 50 ms; a loaded machine may take longer).
        let exact = |s: tracker::StoreStats| (s.swarms, s.seeders, s.leechers) == (1, 0, 5);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ![&a, &b].iter().all(|s| exact(s.stats())) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for store in [&a, &b] {
            let s = store.stats();
            assert!(exact(s), "{s:?}");
        }
        let scrape = b.scrape(kept, AddressFamily::V4).await.unwrap();
        assert_eq!((scrape.complete, scrape.incomplete), (0, 5));
        let gone = a.scrape(torrent(1), AddressFamily::V4).await.unwrap();
        assert_eq!((gone.complete, gone.incomplete), (0, 0));
    });
}
