//! `redis_broker: unix:///path` against a real `redis-server` that listens on
//! a Unix socket only.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use storage_redis::{RedisConfig, RedisStore};
use tracker::PeerStore;
use tracker::bittorrent::{AddressFamily, InfoHash, Peer, PeerId};

#[test]
fn unix_socket_broker_serves_the_store() {
    let dir = std::env::temp_dir().join(format!("karuta-redis-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
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
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
