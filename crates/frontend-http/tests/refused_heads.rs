//! Requests that hyper refuses before the tracker sees them (issue 15, item
//! 5): a head over 8 KiB or with more than 64 headers gets a 431, malformed
//! HTTP a 400, each with a bencoded `failure reason` like every tracker
//! error, and the connection is closed so that the client reads it, however
//! much of its request the server never looked at: no reset, even for a
//! 1 MB head from 50 clients at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use frontend_http::{HttpConfig, HttpFrontend};
use test_support::http::{self, Response};
use test_support::logic::shared_memory_logic;
use test_support::{bencode, percent_encode};

const TOO_LARGE: &str = "request head too large: at most 8192 bytes and 64 headers";
const LIMIT: Duration = Duration::from_secs(20);

fn start() -> HttpFrontend {
    let config = HttpConfig {
        addr: "127.0.0.1:0".into(),
        enable_keepalive: true,
        ..HttpConfig::default()
    };
    HttpFrontend::start(
        &config,
        shared_memory_logic(vec![], vec![]),
        Default::default(),
    )
    .unwrap()
    .unwrap()
}

/// A GET of an announce whose head is exactly `len` bytes long, padded in the
/// query (a parameter the tracker ignores) and kept alive.
fn head_of(len: usize) -> Vec<u8> {
    let query = format!(
        "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=10&pad=",
        percent_encode(&[0x31; 20]),
        percent_encode(&[0x32; 20])
    );
    let (start, end) = (
        format!("GET /announce?{query}"),
        " HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let pad = len
        .checked_sub(start.len() + end.len())
        .expect("a head long enough for the announce");
    format!("{start}{}{end}", "x".repeat(pad)).into_bytes()
}

/// Writes `request` whole, then reads the reply and the end of the
/// connection. A reset at any point (while writing what the server did not
/// read, or before the reply is read) is an error.
fn refusal(addr: SocketAddr, request: &[u8]) -> Result<Response, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(LIMIT)).unwrap();
    // In pieces, as a client writes what its socket takes: a server that
    // closes early resets the connection while the client is still writing.
    for (i, piece) in request.chunks(64 * 1024).enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.write_all(piece)
            .map_err(|e| format!("writing {} bytes: {e}", request.len()))?;
    }
    let reply = http::read_response(&mut s, LIMIT).map_err(|e| format!("the reply: {e}"))?;
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(reply),
        Ok(_) => Err(format!("{} bytes after the reply", rest.len())),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            Err("the connection was reset after the reply".into())
        }
        Err(e) => Err(format!("after the reply: {e}")),
    }
}

/// A reply `status` with a bencoded `failure reason` of `reason`, that closes
/// the connection.
fn assert_refused(r: &Response, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.head);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{}",
        r.head
    );
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    let body = bencode::strict(&r.body).unwrap_or_else(|e| panic!("{}: {e}", r.head));
    assert_eq!(
        bencode::failure_reason(&r.body).as_deref(),
        Some(reason),
        "{}",
        bencode::render(&body)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn heads_over_8_kib_get_a_bencoded_431() {
    let t = start();
    let addr = t.local_addr().unwrap();
    // At the limit the announce is answered...
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&head_of(8192)).unwrap();
    let ok = http::read_response(&mut s, LIMIT).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.head);
    assert!(bencode::failure_reason(&ok.body).is_none(), "{}", ok.text());
    // ... one byte over it is not, on a fresh connection and on a kept-alive
    // one after a good request.
    for len in [8193, 8300, 12_000] {
        let r = refusal(addr, &head_of(len)).unwrap_or_else(|e| panic!("{len}: {e}"));
        assert_refused(&r, 431, TOO_LARGE);
    }
    s.write_all(&head_of(9000)).unwrap();
    let r = http::read_response(&mut s, LIMIT).unwrap();
    assert_refused(&r, 431, TOO_LARGE);
    // More than 64 headers, in a short head.
    let mut many = b"GET /announce HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..64 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let r = refusal(addr, &many).unwrap();
    assert_refused(&r, 431, TOO_LARGE);
    drop(s);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_clients_sending_1_mb_heads_all_read_their_431() {
    let t = start();
    let addr = t.local_addr().unwrap();
    let head = head_of(1_000_000);
    let failed: Vec<String> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..50)
            .map(|_| scope.spawn(|| refusal(addr, &head)))
            .collect();
        clients
            .into_iter()
            .filter_map(|c| match c.join().unwrap() {
                Ok(r)
                    if r.status == 431
                        && bencode::failure_reason(&r.body).as_deref() == Some(TOO_LARGE) =>
                {
                    None
                }
                Ok(r) => Some(format!("{}: {:?}", r.head, r.text())),
                Err(e) => Some(e),
            })
            .collect()
    });
    assert!(
        failed.is_empty(),
        "{} of 50 clients: {failed:#?}",
        failed.len()
    );
    // The server is none the worse.
    assert_eq!(http::get(addr, "/scrape").send().unwrap().status, 200);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http_gets_a_bencoded_400() {
    let t = start();
    let addr = t.local_addr().unwrap();
    for garbage in [
        &b"\x16\x03\x01garbage\r\n\r\n"[..],
        b"GET /announce HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        let r = refusal(addr, garbage).unwrap_or_else(|e| panic!("{garbage:?}: {e}"));
        assert_refused(&r, 400, "malformed HTTP request");
    }
    t.stop().await;
}
