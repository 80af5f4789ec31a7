//! `redis_broker: unix:///path` against a real `redis-server` that listens on
//! a Unix socket only.

use std::net::{IpAddr, Ipv4Addr};

use storage_redis::{RedisConfig, RedisStore};
use test_support::redis::RedisServer;
use tracker::PeerStore;
use tracker::bittorrent::{AddressFamily, InfoHash, Peer, PeerId};

#[test]
fn unix_socket_broker_serves_the_store() {
    let redis = RedisServer::start_unix("redis-unix");
    let socket = redis.socket_path();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for url in [
            format!("unix://{}", socket.display()),
            format!("redis+unix://{}", socket.display()),
        ] {
            let store = RedisStore::new(RedisConfig {
                redis_broker: url.clone(),
                key_prefix: format!("unix-{}:", url.len()),
                ..RedisConfig::default()
            })
            .unwrap();
            store.ping().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let ih = InfoHash([9; 20]);
            let peer = Peer::new(PeerId([2; 20]), IpAddr::V4(Ipv4Addr::LOCALHOST), 7000);
            store.put_leecher(ih, peer).await.unwrap();
            let scrape = store.scrape(ih, AddressFamily::V4).await.unwrap();
            assert_eq!((scrape.complete, scrape.incomplete), (0, 1), "{url}");
        }
    });
}
