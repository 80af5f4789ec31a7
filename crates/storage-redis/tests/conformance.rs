//! The storage conformance suite against a real `redis-server`, started once
//! for this test binary on a free port (killed when the binary exits).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use storage_redis::{RedisConfig, RedisStore};
use tracker::PeerStore;
use tracker::config::ConfigDuration;
use tracker::conformance::StoreTestConfig;

/// Starts redis-server from a thread that lives as long as the process, so
/// the parent-death signal (sent when the spawning thread ends) kills it
/// exactly when this test binary exits.
fn redis_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir =
                std::env::temp_dir().join(format!("karuta-redis-conf-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd
                .spawn()
                .expect("redis-server (install it: scripts/test does)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let mut buf = [0u8; 7];
                    if s.write_all(b"PING\r\n").is_ok()
                        && s.read_exact(&mut buf).is_ok()
                        && &buf == b"+PONG\r\n"
                    {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            tx.send(port).unwrap();
            // Keeps this thread (and so the server) alive until the binary exits.
            let _ = child.wait();
        });
        rx.recv().unwrap()
    })
}

fn make(cfg: StoreTestConfig) -> Arc<dyn PeerStore> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let config = RedisConfig {
        redis_broker: format!("redis://127.0.0.1:{}/0", redis_port()),
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

tracker::peer_store_conformance!(make);
