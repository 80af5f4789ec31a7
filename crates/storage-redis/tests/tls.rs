//! `rediss://` against a real `redis-server` listening with TLS only: the
//! store works when the server's certificate is in `redis_tls_ca_file`, and
//! refuses a server it cannot verify.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use storage_redis::{RedisConfig, RedisStore};
use test_support::redis::RedisServer;
use tracker::bittorrent::{AddressFamily, InfoHash, Peer, PeerId};
use tracker::config::ConfigDuration;
use tracker::{DriverConfig, PeerStore, StoreError};

/// A store's configuration for `redis`, trusting `ca_file` (or the system's
/// roots without one).
fn config(redis: &RedisServer, ca_file: Option<PathBuf>) -> RedisConfig {
    let secs = |s| ConfigDuration(Duration::from_secs(s));
    RedisConfig {
        redis_broker: redis.url(),
        redis_read_timeout: secs(3),
        redis_write_timeout: secs(3),
        redis_connect_timeout: secs(3),
        key_prefix: format!("tls{}:", std::process::id()),
        redis_tls_ca_file: ca_file.map(|p| p.display().to_string()),
        ..RedisConfig::default()
    }
}

#[test]
fn rediss_with_the_servers_ca_works_and_an_unknown_ca_is_refused() {
    let redis = RedisServer::start_tls("redis-tls");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let trusted = config(&redis, Some(redis.ca_file()));
        trusted.validate().unwrap();
        let store = RedisStore::new(trusted).unwrap();
        store.ping().await.expect("PING over TLS");
        let ih = InfoHash([7; 20]);
        let peer = Peer::new(PeerId([1; 20]), IpAddr::V4(Ipv4Addr::LOCALHOST), 6881);
        store.put_seeder(ih, peer).await.unwrap();
        let scrape = store.scrape(ih, AddressFamily::V4).await.unwrap();
        assert_eq!((scrape.complete, scrape.incomplete), (1, 0));

        // The system's roots do not know this self-signed certificate.
        let untrusted = RedisStore::new(config(&redis, None)).unwrap();
        let err = untrusted.ping().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("ertificate")),
            "{err:?}"
        );
    });
}

#[test]
fn tls_ca_file_errors_name_the_key() {
    let missing = RedisConfig {
        redis_broker: "rediss://localhost:6380/0".to_owned(),
        redis_tls_ca_file: Some("/nonexistent/ca.pem".to_owned()),
        ..RedisConfig::default()
    };
    let err = missing.validate().unwrap_err();
    assert_eq!(err.key, "redis_tls_ca_file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let plain = RedisConfig {
        redis_broker: "redis://localhost:6379/0".to_owned(),
        redis_tls_ca_file: Some("/etc/hostname".to_owned()),
        ..RedisConfig::default()
    };
    assert_eq!(plain.validate().unwrap_err().key, "redis_tls_ca_file");

    // Without a CA file, rediss:// uses the system's roots and validates.
    let system = RedisConfig {
        redis_broker: "rediss://redis.example:6380/0".to_owned(),
        ..RedisConfig::default()
    };
    system.validate().unwrap();
}
