//! `rediss://` against a real `redis-server` listening with TLS only: the
//! store works when the server's certificate is in `redis_tls_ca_file`, and
//! refuses a server it cannot verify.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use storage_redis::{RedisConfig, RedisStore};
use tracker::bittorrent::{AddressFamily, InfoHash, Peer, PeerId};
use tracker::config::ConfigDuration;
use tracker::{DriverConfig, PeerStore, StoreError};

/// A TLS-only redis-server with a fresh self-signed certificate for
/// `localhost`, killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = std::env::temp_dir().join(format!("karuta-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
            .args(["--tls-ca-cert-file", "cert.pem", "--tls-auth-clients", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { child, port, dir }
    }

    fn config(&self, ca_file: Option<PathBuf>) -> RedisConfig {
        let secs = |s| ConfigDuration(Duration::from_secs(s));
        RedisConfig {
            redis_broker: format!("rediss://localhost:{}/0", self.port),
            redis_read_timeout: secs(3),
            redis_write_timeout: secs(3),
            redis_connect_timeout: secs(3),
            key_prefix: format!("tls{}:", std::process::id()),
            redis_tls_ca_file: ca_file.map(|p| p.display().to_string()),
            ..RedisConfig::default()
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn rediss_with_the_servers_ca_works_and_an_unknown_ca_is_refused() {
    let redis = TlsRedis::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let trusted = redis.config(Some(redis.dir.join("cert.pem")));
        trusted.validate().unwrap();
        let store = RedisStore::new(trusted).unwrap();
        store.ping().await.expect("PING over TLS");
        let ih = InfoHash([7; 20]);
        let peer = Peer::new(PeerId([1; 20]), IpAddr::V4(Ipv4Addr::LOCALHOST), 6881);
        store.put_seeder(ih, peer).await.unwrap();
        let scrape = store.scrape(ih, AddressFamily::V4).await.unwrap();
        assert_eq!((scrape.complete, scrape.incomplete), (1, 0));

        // The system's roots do not know this self-signed certificate.
        let untrusted = RedisStore::new(redis.config(None)).unwrap();
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
