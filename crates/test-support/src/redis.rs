//! A throwaway `redis-server`: no persistence, its own temp dir, listening on
//! a free port of 127.0.0.1 (plain TCP, or TLS only) or on a Unix socket only.
//! It is killed when dropped and when the test process dies (see
//! [`crate::process`]), and can be killed and restarted on the same address,
//! for tests of what a client does while Redis is away. A Redis Cluster of
//! such servers is [`crate::redis_cluster`]'s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TempDir, free_tcp_port, process};

/// How long redis-server may take to answer after it is started.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Where the server listens.
enum Listen {
    Tcp(u16),
    /// TLS only; the certificate (for `localhost`, self-signed, so it is its
    /// own CA) is `cert.pem` in the server's dir.
    Tls(u16),
    Unix(PathBuf),
}

/// A running (or, after [`RedisServer::kill`], stopped) redis-server.
pub struct RedisServer {
    child: Option<Child>,
    listen: Listen,
    /// More `redis-server` arguments, after the ones of the listen form.
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Plain TCP on a free port of 127.0.0.1; `tag` names its temp dir.
    pub fn start(tag: &str) -> RedisServer {
        RedisServer::start_with(tag, free_tcp_port(), &[])
    }

    /// Plain TCP on `port` of 127.0.0.1, with more `redis-server` arguments
    /// (relative paths are in the server's own dir).
    pub fn start_with(tag: &str, port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::launch(tag, extra, |_| Listen::Tcp(port))
    }

    /// TLS only, on a free port of 127.0.0.1, with a fresh self-signed
    /// certificate for `localhost` (see [`RedisServer::ca_file`]).
    pub fn start_tls(tag: &str) -> RedisServer {
        RedisServer::launch(tag, &[], |dir| {
            crate::tls::SelfSigned::new(&["localhost"]).write(dir.path());
            Listen::Tls(free_tcp_port())
        })
    }

    /// A Unix socket only (see [`RedisServer::socket_path`]), no TCP port.
    pub fn start_unix(tag: &str) -> RedisServer {
        RedisServer::launch(tag, &[], |dir| Listen::Unix(dir.path().join("redis.sock")))
    }

    fn launch(tag: &str, extra: &[&str], listen: impl FnOnce(&TempDir) -> Listen) -> RedisServer {
        let dir = TempDir::new(tag);
        let mut server = RedisServer {
            child: None,
            listen: listen(&dir),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            dir,
        };
        server.restart();
        server
    }

    /// The TCP port (plain or TLS). Panics for a Unix-socket server.
    pub fn port(&self) -> u16 {
        match self.listen {
            Listen::Tcp(port) | Listen::Tls(port) => port,
            Listen::Unix(_) => panic!("this redis-server listens on a Unix socket only"),
        }
    }

    /// The URL a client is given: `redis://127.0.0.1:PORT/0`,
    /// `rediss://localhost:PORT/0` (the certificate's name), or
    /// `unix:///path/redis.sock`.
    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Tcp(port) => format!("redis://127.0.0.1:{port}/0"),
            Listen::Tls(port) => format!("rediss://localhost:{port}/0"),
            Listen::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// The PEM file a TLS client must trust. Panics for a server without TLS.
    pub fn ca_file(&self) -> PathBuf {
        match self.listen {
            Listen::Tls(_) => self.dir.path().join("cert.pem"),
            _ => panic!("this redis-server does not use TLS"),
        }
    }

    /// The Unix socket. Panics for a TCP server.
    pub fn socket_path(&self) -> PathBuf {
        match &self.listen {
            Listen::Unix(path) => path.clone(),
            _ => panic!("this redis-server listens on TCP"),
        }
    }

    /// Whether the server runs (it was not killed, or was restarted since).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same address (killing it first if it
    /// runs) and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "--appendonly", "no"]);
        match &self.listen {
            Listen::Tcp(port) => {
                command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
            }
            Listen::Tls(port) => {
                command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--bind", "127.0.0.1"])
                    .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
                    .args(["--tls-ca-cert-file", "cert.pem", "--tls-auth-clients", "no"]);
            }
            Listen::Unix(path) => {
                command.args(["--port", "0", "--unixsocket"]).arg(path);
            }
        }
        command.args(&self.extra);
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null());
        let mut child = process::spawn_tied(command, libc::SIGKILL)
            .unwrap_or_else(|e| panic!("redis-server (scripts/test installs it): {e}"));
        let every = Duration::from_millis(20);
        if let Err(why) =
            process::wait_until_ready(&mut child, START_LIMIT, every, || self.answers())
        {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(self.dir.path().join("redis.log"));
            panic!(
                "redis-server did not start: {why}; its log:\n{}",
                log.unwrap_or_default()
            );
        }
        self.child = Some(child);
    }

    /// Whether the server answers: PONG to a PING, or, for TLS (which would
    /// need a handshake first), a TCP connection accepted.
    fn answers(&self) -> bool {
        fn pong(mut s: impl Read + Write) -> bool {
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
        }
        let wait = Some(Duration::from_secs(1));
        match &self.listen {
            Listen::Tcp(port) => TcpStream::connect(("127.0.0.1", *port))
                .is_ok_and(|s| s.set_read_timeout(wait).is_ok() && pong(s)),
            Listen::Tls(port) => TcpStream::connect(("127.0.0.1", *port)).is_ok(),
            Listen::Unix(path) => {
                UnixStream::connect(path).is_ok_and(|s| s.set_read_timeout(wait).is_ok() && pong(s))
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
