//! A throwaway HTTP(S) server on tokio for the tests of outgoing clients (the
//! HTTP client crate, the JWT hook's JWK set fetch): it answers every
//! connection with the same bytes, exactly as given (so a test can send any
//! framing, or a broken reply), closes, and keeps the request heads it read.
//!
//! The reply can be replaced while serving; each connection gets the reply of
//! the moment it was accepted. The server stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A server that answers with canned bytes; see the module documentation.
pub struct CannedServer {
    addr: SocketAddr,
    reply: Arc<Mutex<Arc<[u8]>>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CannedServer {
    /// Listens on `bind` (`127.0.0.1:0`, `[::1]:0`), over TLS with `tls`.
    pub async fn start(bind: &str, reply: &[u8], tls: Option<TlsAcceptor>) -> CannedServer {
        let listener = TcpListener::bind(bind).await.expect("a test listener");
        let addr = listener.local_addr().expect("a bound listener");
        let reply = Arc::new(Mutex::new(Arc::<[u8]>::from(reply)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (current, seen) = (Arc::clone(&reply), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let reply = Arc::clone(&current.lock().unwrap());
                let seen = Arc::clone(&seen);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => answer(s, &reply, &seen).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(s).await {
                                answer(s, &reply, &seen).await;
                            }
                        }
                    }
                });
            }
        });
        CannedServer {
            addr,
            reply,
            requests,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bytes later connections get.
    pub fn set_reply(&self, reply: &[u8]) {
        *self.reply.lock().unwrap() = Arc::from(reply);
    }

    /// The request heads read so far (up to and including the blank line).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a request head from `s`, keeps it, writes `reply` and closes; a
/// client that goes away first gets nothing.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    reply: &[u8],
    seen: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    let _ = s.write_all(reply).await;
    let _ = s.shutdown().await;
}
