//! Free ports on 127.0.0.1 for servers that must be told their port up front
//! (redis-server, PostgreSQL, karuta's metrics address).

use std::net::{TcpListener, UdpSocket};

/// A TCP port nothing listens on: bound, then released. Another process may
/// take it before the caller does; on this machine that has not been seen.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A UDP port that was free a moment ago: bound, then released.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}
