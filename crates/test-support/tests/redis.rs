//! The throwaway redis-server in its three forms: each answers at its URL's
//! address, and a killed one comes back on the same address.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use test_support::redis::RedisServer;

fn ping(mut s: impl Read + Write) -> bool {
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

#[test]
fn a_killed_server_comes_back_on_the_same_port() {
    let mut redis = RedisServer::start("redis-restart");
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
    assert!(ping(TcpStream::connect(("127.0.0.1", port)).unwrap()));
    redis.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.restart();
    assert_eq!(redis.port(), port);
    assert!(ping(TcpStream::connect(("127.0.0.1", port)).unwrap()));
}

#[test]
fn tls_and_unix_socket_servers_listen_where_their_urls_say() {
    let tls = RedisServer::start_tls("redis-tls-only");
    assert_eq!(tls.url(), format!("rediss://localhost:{}/0", tls.port()));
    let pem = std::fs::read_to_string(tls.ca_file()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    let mut unix = RedisServer::start_unix("redis-unix-only");
    let socket = unix.socket_path();
    assert_eq!(unix.url(), format!("unix://{}", socket.display()));
    assert!(ping(UnixStream::connect(&socket).unwrap()));
    unix.kill();
    unix.restart();
    assert!(ping(UnixStream::connect(&socket).unwrap()));
}
