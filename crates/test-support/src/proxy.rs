//! A TCP proxy on 127.0.0.1 for a database's faults: it passes bytes both
//! ways and, when told,
//!
//! - refuses (accepts and closes at once) new connections: a database that
//!   is away, back when the refusal is lifted;
//! - for the COMMITs a rule picks, forwards the COMMIT to the server, lets
//!   it commit, and cuts the connection before the reply gets back: the
//!   transaction is committed, the client never hears.
//!
//! A COMMIT is a client message that contains the bytes `COMMIT` (the
//! simple query `tokio-postgres` and `psql` send to end a transaction).
//! Threads, not tasks: usable from sync and async tests alike. It stops
//! accepting when dropped; connections end with their peers.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Which COMMITs (numbered from 1 across all connections) lose their reply.
pub type CutRule = dyn Fn(u64) -> bool + Send + Sync;

pub struct FaultyProxy {
    addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    refusing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

struct Shared {
    to: SocketAddr,
    rule: Box<CutRule>,
    commits: AtomicU64,
    cuts: Arc<AtomicU64>,
}

impl FaultyProxy {
    /// Proxies to `to`, faithfully.
    pub fn start(to: SocketAddr) -> Self {
        FaultyProxy::losing_commit_replies(to, |_| false)
    }

    /// Proxies to `to`; COMMIT number `n` loses its reply when `rule(n)`.
    pub fn losing_commit_replies(
        to: SocketAddr,
        rule: impl Fn(u64) -> bool + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let cuts = Arc::new(AtomicU64::new(0));
        let refusing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            to,
            rule: Box::new(rule),
            commits: AtomicU64::new(0),
            cuts: Arc::clone(&cuts),
        });
        let (stopped, refuse) = (Arc::clone(&stop), Arc::clone(&refusing));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok(_) if refuse.load(Ordering::SeqCst) => {}
                    Ok((client, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || relay(&shared, client));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultyProxy {
            addr,
            cuts,
            refusing,
            stop,
        }
    }

    /// Refuses new connections from now on (`true`) or accepts them again.
    /// Connections already open stay.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many COMMIT replies were lost so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(shared: &Shared, client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(shared.to) else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let cut = AtomicBool::new(false);
    let (Ok(mut client_r), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut client_w, mut server_w) = (client, server);
    let close = |a: &TcpStream, b: &TcpStream| {
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    };
    std::thread::scope(|scope| {
        let cut = &cut;
        scope.spawn(|| {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match client_r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let commit = buf[..n].windows(6).any(|w| w == b"COMMIT");
                let lose =
                    commit && (shared.rule)(shared.commits.fetch_add(1, Ordering::SeqCst) + 1);
                if lose {
                    // Set before the COMMIT leaves: its reply is never passed on.
                    cut.store(true, Ordering::SeqCst);
                }
                if server_w.write_all(&buf[..n]).is_err() {
                    break;
                }
                if lose {
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    // Let the server commit, then cut both sides.
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
            }
            close(&client_r, &server_w);
        });
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match server_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cut.load(Ordering::SeqCst) || client_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        close(&server_r, &client_w);
    });
}
