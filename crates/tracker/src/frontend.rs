//! What every frontend does the same way, whatever its protocol: why it could
//! not start ([`StartError`]), how it opens its listening sockets
//! ([`bind_tcp`], [`bind_udp`]), how it counts ([`bump`], [`add`]), and what it
//! tells a client whose request failed ([`failure_text`]).
//!
//! One owner for each, so the HTTP and UDP frontends cannot drift apart (the
//! HTTP frontend once logged announce failures but not scrape failures).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

use crate::stats::TimedAction;
use crate::{ConfigError, TrackerError};

/// Why a frontend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be opened (address in use, not local,
    /// no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The operating system would not start a worker thread (a process or
    /// memory limit): not the address's fault, so not reported as one.
    #[error("cannot start worker thread {worker}: {source}")]
    Spawn {
        worker: usize,
        source: std::io::Error,
    },
}

/// Counts one event. Relaxed: counters are only ever added to and read as a
/// snapshot, so no ordering with other memory is needed.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter (bytes, say); see [`bump`].
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A socket of `ty` for `addr` that a restarted frontend can bind next to
/// (`SO_REUSEPORT`: a reload binds the new sockets before the old ones close,
/// and UDP workers share one address), non-blocking for tokio, and serving
/// IPv4 clients too when bound to `[::]`.
fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Pending connections the kernel queues for a TCP listener.
const LISTEN_BACKLOG: i32 = 1024;

/// A TCP listener on `addr` (see [`socket`]), with the address it got (the
/// port may have been 0).
pub fn bind_tcp(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    let bound = || {
        let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
        // A restart must not wait for the old connections' TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener = std::net::TcpListener::from(socket);
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound().map_err(|source| StartError::Bind { addr, source })
}

/// A UDP socket on `addr` (see [`socket`]) asking for `buffer_bytes` of
/// receive and send buffer, with the address it got.
pub fn bind_udp(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> Result<(std::net::UdpSocket, SocketAddr), StartError> {
    let bound = || {
        let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
        // Best effort: the kernel caps it (`net.core.rmem_max`), and a smaller
        // buffer only means drops under bursts.
        let _ = socket.set_recv_buffer_size(buffer_bytes);
        let _ = socket.set_send_buffer_size(buffer_bytes);
        socket.bind(&addr.into())?;
        let socket = std::net::UdpSocket::from(socket);
        let local = socket.local_addr()?;
        Ok((socket, local))
    };
    bound().map_err(|source| StartError::Bind { addr, source })
}

/// The text a client is sent for a failed request. A failure that is not the
/// client's (a store down, a bug) is logged first, as `"{frontend} {action}
/// failed"`: the client's text hides its detail, so the log is the only place
/// an operator sees it. Client errors are not logged (a client can cause any
/// number of them).
pub fn failure_text<'e>(e: &'e TrackerError, frontend: &str, action: TimedAction) -> &'e str {
    if !e.is_client_error() {
        tracing::warn!(error = %e, "{frontend} {} failed", action.as_str());
    }
    e.client_message()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_a_bind_error_naming_the_address() {
        let (_first, local) = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 16).unwrap();
        // SO_REUSEPORT lets a second UDP socket join; a TCP listener on a
        // port held without it does not.
        let (_second, joined) = bind_udp(local, 1 << 16).unwrap();
        assert_eq!(joined, local);
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = bind_tcp(addr).unwrap_err();
        assert!(
            matches!(e, StartError::Bind { addr: a, .. } if a == addr),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on {addr}: ")),
            "{e}"
        );
    }

    #[test]
    fn a_dual_stack_listener_accepts_ipv4() {
        let (listener, local) = bind_tcp("[::]:0".parse().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let v4 = SocketAddr::from(([127, 0, 0, 1], local.port()));
        let _client = std::net::TcpStream::connect(v4).unwrap();
        let (_, from) = listener.accept().unwrap();
        assert_eq!(bittorrent::canonical_ip(from.ip()), v4.ip());
    }
}
