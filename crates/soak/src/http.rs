//! The HTTP side: announces and scrapes as GETs, each on a connection of its
//! own (`Connection: close`, as many BitTorrent clients do), their replies
//! read with `bittorrent::bencode::decode`.
//!
//! The driver speaks the little HTTP/1.1 it needs itself rather than through
//! the workspace's `http_client` (hyper): a quarter of the soak's requests
//! each cost the one-core driver a connection, kernel work that is already
//! more than half of its CPU, and hyper's per-request machinery (a request
//! and its header map, the connection's dispatcher, a `shutdown(2)` before
//! the close) came on top. [`send`] does the sending part at once, from the
//! schedule: a non-blocking `connect(2)` (on
//! 127.0.0.1 the handshake is done by the time it returns) and one `send(2)`
//! of the whole request, built in a buffer reused from one request to the
//! next. [`receive`] then reads the reply to the end of the stream: karuta
//! closes first, so the `TIME_WAIT` stays on its side as with any client,
//! and the driver's `close(2)` (no `shutdown(2)` before it) ends the
//! exchange.
//!
//! A reply is answered only when it is a 200 whose body is a bencoded
//! dictionary without a `failure reason`, with an `interval` and compact
//! `peers` (announce) or a `files` dictionary (scrape); anything else is an
//! error named by what was wrong.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::SocketAddr;

use bittorrent::InfoHash;
use bittorrent::bencode::{Value, decode};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpStream;

use crate::population::Announce;
use crate::stats::Outcome;

/// The largest reply body read.
pub const MAX_REPLY: usize = 64 * 1024;
/// The largest status line and headers read.
const MAX_HEAD: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Announce,
    Scrape,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Announce => "announce",
            Kind::Scrape => "scrape",
        }
    }
}

/// Appends `bytes` percent-encoded as `bittorrent::percent_encode` does:
/// unreserved characters as they are, the rest `%XX`.
fn push_percent_encoded(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the path and query of an announce.
pub fn announce_target(out: &mut Vec<u8>, a: &Announce) {
    out.extend_from_slice(b"/announce?info_hash=");
    push_percent_encoded(out, &a.info_hash.0);
    out.extend_from_slice(b"&peer_id=");
    push_percent_encoded(out, &a.peer_id.0);
    for (name, value) in [
        (&b"&port="[..], u64::from(a.port)),
        (b"&uploaded=", a.uploaded),
        (b"&downloaded=", a.downloaded),
        (b"&left=", a.left),
    ] {
        out.extend_from_slice(name);
        push_number(out, value);
    }
    out.extend_from_slice(b"&compact=1");
    out.extend_from_slice(a.event.http_query().as_bytes());
}

/// Appends the path and query of a scrape of `hashes`.
pub fn scrape_target(out: &mut Vec<u8>, hashes: &[InfoHash]) {
    out.extend_from_slice(b"/scrape?");
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(b"info_hash=");
        push_percent_encoded(out, &h.0);
    }
}

/// Fills `out` with a whole GET request for the target `target` appends.
pub fn request(out: &mut Vec<u8>, host: &str, target: impl FnOnce(&mut Vec<u8>)) {
    out.clear();
    out.extend_from_slice(b"GET ");
    target(out);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
}

/// `EINPROGRESS` on Linux: what a non-blocking `connect(2)` returns when the
/// handshake is under way (std's `ErrorKind::InProgress` is not stable yet).
const EINPROGRESS: i32 = 115;

/// A request on its way: the connection, and how much of the request the
/// first `send(2)` took.
pub struct Sent {
    stream: std::net::TcpStream,
    pub written: usize,
}

/// Opens a connection to `server` and sends what of `request` the socket
/// takes at once, without waiting (usually all of it).
pub fn send(server: SocketAddr, request: &[u8]) -> io::Result<Sent> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM.nonblocking(),
        None,
    )?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let mut stream = std::net::TcpStream::from(socket);
    // std's write is a send(2) with MSG_NOSIGNAL.
    let written = match stream.write(request) {
        Ok(n) => n,
        // Not connected yet: the rest is sent once it is writable.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok(Sent { stream, written })
}

/// Sends what is left of `request` (`sent.written` of it went already),
/// then reads the whole reply, to the end of the stream, into `reply`.
pub async fn receive(sent: Sent, request: &[u8], reply: &mut Vec<u8>) -> io::Result<()> {
    let stream = TcpStream::from_std(sent.stream)?;
    let mut written = sent.written;
    while written < request.len() {
        stream.writable().await?;
        match stream.try_write(&request[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    reply.clear();
    let limit = MAX_HEAD + MAX_REPLY;
    loop {
        if reply.capacity() - reply.len() < 512 {
            reply.reserve(reply.capacity().clamp(1024, limit));
        }
        stream.readable().await?;
        match stream.try_read_buf(reply) {
            Ok(0) => return Ok(()),
            Ok(_) if reply.len() > limit => {
                return Err(io::Error::other(format!("the reply is over {limit} bytes")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A whole HTTP/1.1 reply read to the end of the stream: its status and its
/// body (by `Content-Length`, de-chunked, or what follows the headers).
pub fn parse(reply: &[u8]) -> Result<(u16, Cow<'_, [u8]>), String> {
    let end = find(reply, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "no end of the headers in {} bytes: {:?}",
            reply.len(),
            snippet(reply)
        )
    })?;
    let head = std::str::from_utf8(&reply[..end]).map_err(|_| "headers not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("a malformed header: {line:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = &reply[end + 4..];
    let body = match (chunked, length) {
        (true, _) => Cow::Owned(dechunk(body)?),
        (false, Some(n)) if body.len() == n => Cow::Borrowed(body),
        (false, Some(n)) => {
            return Err(format!(
                "a body of {} bytes, Content-Length {n}",
                body.len()
            ));
        }
        (false, None) => Cow::Borrowed(body),
    };
    if body.len() > MAX_REPLY {
        return Err(format!("a body over {MAX_REPLY} bytes"));
    }
    Ok((status, body))
}

/// A chunked body's content.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let cut = || "a chunked body cut short".to_string();
    let mut out = Vec::new();
    loop {
        let eol = find(body, b"\r\n").ok_or_else(cut)?;
        let size = std::str::from_utf8(&body[..eol]).unwrap_or_default();
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {size:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 || &body[size..size + 2] != b"\r\n" {
            return Err(cut());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// A body's start for a message: at most 120 printable characters.
fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    text.trim().to_owned()
}

/// What a whole reply to a `kind` request means.
pub fn outcome(kind: Kind, reply: &[u8]) -> Outcome {
    match parse(reply) {
        Ok((status, body)) => check(kind, status, &body),
        Err(why) => Outcome::Error(format!("HTTP {}: malformed reply: {why}", kind.name())),
    }
}

/// What a reply of `status` and `body` to a `kind` request means.
pub fn check(kind: Kind, status: u16, body: &[u8]) -> Outcome {
    let error = |why: String| Outcome::Error(format!("HTTP {}: {why}", kind.name()));
    if status != 200 {
        return error(format!("status {status} (body: {:?})", snippet(body)));
    }
    let value = match decode(body) {
        Ok(v) => v,
        Err(e) => return error(format!("malformed bencode: {e}")),
    };
    if value.as_dict().is_none() {
        return error("the reply is not a bencoded dictionary".into());
    }
    if let Some(reason) = value.get("failure reason") {
        let text = reason
            .as_bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        return error(format!("failure reason: {text}"));
    }
    let well_formed = match kind {
        Kind::Announce => {
            value.get("interval").and_then(Value::as_int).is_some()
                && value
                    .get("peers")
                    .and_then(Value::as_bytes)
                    .is_some_and(|p| p.len() % 6 == 0)
        }
        Kind::Scrape => value.get("files").and_then(Value::as_dict).is_some(),
    };
    if well_formed {
        Outcome::Answered
    } else {
        error(match kind {
            Kind::Announce => "no interval or no compact peers in the reply".into(),
            Kind::Scrape => "no files dictionary in the reply".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::Event;
    use bittorrent::PeerId;

    fn answered(o: Outcome) -> Result<(), String> {
        match o {
            Outcome::Answered => Ok(()),
            Outcome::Error(e) => Err(e),
        }
    }

    #[test]
    fn only_whole_replies_count_as_answered() {
        let ok = b"d8:completei1e10:incompletei0e8:intervali1800e5:peers6:\x7f\0\0\x01\x1a\xe1e";
        assert_eq!(answered(check(Kind::Announce, 200, ok)), Ok(()));
        let files =
            b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei0e10:downloadedi0e10:incompletei0eeee";
        assert_eq!(answered(check(Kind::Scrape, 200, files)), Ok(()));
        let cases: [(Kind, u16, &[u8], &str); 5] = [
            (
                Kind::Announce,
                200,
                b"d14:failure reason17:unapproved cliente",
                "HTTP announce: failure reason: unapproved client",
            ),
            (Kind::Announce, 503, b"", "HTTP announce: status 503"),
            (Kind::Announce, 200, b"d8:intervali1e", "malformed bencode"),
            (
                Kind::Announce,
                200,
                b"d8:intervali1e5:peers5:abcdee",
                "no interval or no compact peers",
            ),
            (Kind::Scrape, 200, b"le", "not a bencoded dictionary"),
        ];
        for (kind, status, body, want) in cases {
            let e = answered(check(kind, status, body)).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn targets_carry_every_field() {
        let a = Announce {
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId(*b"-KS0100-abcdefghijkl"),
            port: 7,
            socket: 0,
            event: Event::Completed,
            left: 0,
            downloaded: 5,
            uploaded: 6,
        };
        let mut t = Vec::new();
        announce_target(&mut t, &a);
        let t = String::from_utf8(t).unwrap();
        assert!(t.starts_with("/announce?info_hash=%AB%AB"), "{t}");
        assert!(t.contains("&peer_id=-KS0100-abcdefghijkl&port=7&uploaded=6&downloaded=5&left=0&compact=1&event=completed"), "{t}");
        let mut s = Vec::new();
        scrape_target(&mut s, &[InfoHash([1; 20]), InfoHash([2; 20])]);
        let s = String::from_utf8(s).unwrap();
        assert_eq!(s.matches("info_hash=").count(), 2);
        assert!(s.starts_with("/scrape?info_hash=%01"));
    }

    #[test]
    fn encoding_matches_the_workspace_codec() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100 {
            let bytes: Vec<u8> = (0..20).map(|_| rng.u8(..)).collect();
            let mut out = Vec::new();
            push_percent_encoded(&mut out, &bytes);
            assert_eq!(out, bittorrent::percent_encode(&bytes).into_bytes());
        }
        for n in [0, 7, 10, 1 << 30, u64::MAX] {
            let mut out = Vec::new();
            push_number(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn a_request_is_a_whole_get() {
        let mut out = b"left over".to_vec();
        request(&mut out, "127.0.0.1:3201", |o| {
            scrape_target(o, &[InfoHash([b'a'; 20])])
        });
        assert_eq!(
            out,
            b"GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: 127.0.0.1:3201\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn replies_are_parsed_by_length_or_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 5\r\n\r\nd1:ae";
        assert_eq!(parse(plain).unwrap(), (200, Cow::Borrowed(&b"d1:ae"[..])));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nd1:\r\n2;x=y\r\nae\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap().1.as_ref(), b"d1:ae");
        let to_the_end = b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy";
        assert_eq!(
            parse(to_the_end).unwrap(),
            (503, Cow::Borrowed(&b"busy"[..]))
        );
        for (bad, want) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"[..],
                "no end of the headers",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nd1:ae",
                "Content-Length 9",
            ),
            (b"SSH-2.0 hello\r\n\r\n", "not an HTTP/1.x status line"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nd1:",
                "cut short",
            ),
            (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", "malformed header"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let e = answered(outcome(Kind::Scrape, b"HTTP/1.1 200 OK\r\n")).unwrap_err();
        assert!(e.starts_with("HTTP scrape: malformed reply"), "{e}");
    }

    #[test]
    fn an_exchange_over_loopback() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            let body = b"d5:filesdee";
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(body).unwrap();
            got
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut req = Vec::new();
        request(&mut req, &addr.to_string(), |o| {
            scrape_target(o, &[InfoHash([7; 20])])
        });
        let mut reply = Vec::new();
        rt.block_on(async {
            let sent = send(addr, &req).unwrap();
            receive(sent, &req, &mut reply).await.unwrap();
        });
        assert_eq!(server.join().unwrap(), req);
        assert_eq!(answered(outcome(Kind::Scrape, &reply)), Ok(()));
    }
}
