//! The HTTP side: announces and scrapes as GETs, most of them over kept-alive
//! connections from a pool, a share (`--http-close-share`, a quarter by
//! default) each on a connection of its own with `Connection: close`, as many
//! BitTorrent clients do, so that karuta's accept and close path, and its
//! memory after connection churn, are exercised too. Replies are read with
//! `bittorrent::bencode::decode`.
//!
//! The driver speaks the little HTTP/1.1 it needs itself rather than through
//! the workspace's `http_client` (hyper): hyper's per-request machinery (a
//! request and its header map, the connection's dispatcher, a `shutdown(2)`
//! before a close) would cost the one-core driver more than the exchange
//! itself. Every request is built in a buffer reused from one request to the
//! next and sent at once, from the schedule, with one `send(2)`.
//!
//! - **A connection of its own** ([`send`], [`receive`]): a non-blocking
//!   `connect(2)` (on 127.0.0.1 the handshake is done by the time it
//!   returns), the request, then the reply read to the end of the stream:
//!   karuta closes first, so the `TIME_WAIT` stays on its side as with any
//!   client, and the driver's `close(2)` (no `shutdown(2)` before it) ends
//!   the exchange. Each costs the driver some 45-50 µs of kernel time, which
//!   is why most requests do without.
//! - **Kept alive** ([`Pool`]): a request takes the connection that went idle
//!   last, or opens one when none is idle, so the pool holds what the
//!   requests in flight need, at most [`POOL_MAX`] connections; a request
//!   beyond that waits for one (its latency, counted from its due time,
//!   includes the wait) and is counted as having waited. The reply is read
//!   by its `Content-Length`; a chunked one, or one without a length, is an
//!   error on a kept-alive connection unless karuta says `Connection: close`,
//!   in which case it is read to the end of the stream and the connection is
//!   not reused. A connection idle for [`POOL_IDLE`] is closed by the driver,
//!   well before karuta's `idle_timeout` would; one that karuta closed anyway
//!   (the end of the stream, or a reset, before any byte of the reply, on a
//!   connection that was idle when the request went out) is no error of
//!   karuta's: the request is sent once more on a fresh connection, and
//!   counted as retried ([`Connections`]).
//!
//! A reply is answered only when it is a 200 whose body is a bencoded
//! dictionary without a `failure reason`, with an `interval` and compact
//! `peers` (announce) or a `files` dictionary (scrape); anything else is an
//! error named by what was wrong.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bittorrent::InfoHash;
use bittorrent::bencode::{Value, decode};
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::population::Announce;
use crate::report::group;
use crate::stats::Outcome;

/// The largest reply body read.
pub const MAX_REPLY: usize = 64 * 1024;
/// The largest status line and headers read.
const MAX_HEAD: usize = 8 * 1024;
/// The most kept-alive connections open at once.
pub const POOL_MAX: usize = 256;
/// How long a kept-alive connection may stay idle in the pool before the
/// driver closes it: a third of karuta's `idle_timeout` in scripts/soak
/// (30 s), so that karuta seldom closes one under the driver's feet.
pub const POOL_IDLE: Duration = Duration::from_secs(10);

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

/// Fills `out` with a whole GET request for the target `target` appends:
/// with `Connection: close` unless `keep_alive`.
pub fn request(out: &mut Vec<u8>, host: &str, keep_alive: bool, target: impl FnOnce(&mut Vec<u8>)) {
    out.clear();
    out.extend_from_slice(b"GET ");
    target(out);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    if keep_alive {
        out.extend_from_slice(b"\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    }
}

/// `EINPROGRESS` on Linux: what a non-blocking `connect(2)` returns when the
/// handshake is under way (std's `ErrorKind::InProgress` is not stable yet).
const EINPROGRESS: i32 = 115;

/// Opens a non-blocking connection to `server` and sends what of `request`
/// the socket takes at once (usually all of it); returns the connection and
/// how much it took.
fn connect(server: SocketAddr, request: &[u8]) -> io::Result<(std::net::TcpStream, usize)> {
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
    Ok((stream, written))
}

/// A request on its way on a connection of its own: the connection, and how
/// much of the request the first `send(2)` took.
pub struct Sent {
    stream: std::net::TcpStream,
    pub written: usize,
}

/// Opens a connection to `server` and sends what of `request` the socket
/// takes at once, without waiting (usually all of it).
pub fn send(server: SocketAddr, request: &[u8]) -> io::Result<Sent> {
    let (stream, written) = connect(server, request)?;
    Ok(Sent { stream, written })
}

/// Sends the rest of `request` (`written` of it went already).
async fn write_rest(stream: &TcpStream, request: &[u8], mut written: usize) -> io::Result<()> {
    while written < request.len() {
        stream.writable().await?;
        match stream.try_write(&request[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes room in `reply` for the next read, growing it up to `limit`.
fn make_room(reply: &mut Vec<u8>, limit: usize) {
    if reply.capacity() - reply.len() < 512 {
        reply.reserve(reply.capacity().clamp(1024, limit));
    }
}

/// Sends what is left of `request` (`sent.written` of it went already),
/// then reads the whole reply, to the end of the stream, into `reply`.
pub async fn receive(sent: Sent, request: &[u8], reply: &mut Vec<u8>) -> io::Result<()> {
    let stream = TcpStream::from_std(sent.stream)?;
    write_rest(&stream, request, sent.written).await?;
    reply.clear();
    let limit = MAX_HEAD + MAX_REPLY;
    loop {
        make_room(reply, limit);
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

/// What the driver's kept-alive connections (and the HTTP requests sent
/// without them) came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connections {
    /// Requests sent on kept-alive connections.
    pub kept_alive: u64,
    /// Of them, sent on a connection taken from the pool.
    pub reused: u64,
    /// Kept-alive connections opened.
    pub opened: u64,
    /// The most kept-alive connections open at once.
    pub most_open: usize,
    /// Requests that waited for a connection, [`POOL_MAX`] of them busy.
    pub waited: u64,
    /// Requests sent once more on a fresh connection, karuta having closed
    /// the idle one they first went on: not errors.
    pub retried: u64,
    /// Idle connections the driver closed after [`POOL_IDLE`].
    pub expired: u64,
    /// Requests sent on a connection of their own (`Connection: close`).
    pub own: u64,
}

impl Connections {
    /// One line for the summary.
    pub fn describe(&self) -> String {
        format!(
            "{} requests kept alive ({} on a connection from the pool; {} connections opened, at most {} open at once, {} closed after {} idle; {} requests waited for one of the {POOL_MAX}), {} on a connection of their own; {} retried on a fresh connection after karuta had closed an idle one",
            group(self.kept_alive),
            group(self.reused),
            group(self.opened),
            group(self.most_open as u64),
            group(self.expired),
            tracker::config::format_duration(POOL_IDLE),
            group(self.waited),
            group(self.own),
            group(self.retried),
        )
    }
}

/// A kept-alive connection, counted among the pool's open ones while it
/// lives.
struct Conn {
    stream: TcpStream,
    open: Rc<Cell<usize>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
    }
}

/// One of the pool's [`POOL_MAX`] connections, busy: handed back when
/// dropped.
struct Slot(Rc<Semaphore>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// A request on its way on a kept-alive connection.
pub struct Exchange {
    conn: Conn,
    /// How much of the request went already.
    written: usize,
    /// Whether the connection came from the pool (was idle when the request
    /// went out).
    reused: bool,
    _slot: Slot,
}

/// The driver's kept-alive connections to one server: the idle ones, the
/// one that went idle last at the back, and a permit per connection busy
/// with a request. A connection is opened only when none is idle, so the
/// connections open are never more than the busy ones were at once, and
/// never more than the permits.
pub struct Pool {
    server: SocketAddr,
    idle: RefCell<VecDeque<(Conn, Instant)>>,
    slots: Rc<Semaphore>,
    open: Rc<Cell<usize>>,
    counts: Cell<Connections>,
}

/// Whether `e` says the other side had closed or reset the connection.
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// How a kept-alive exchange failed.
enum Failure {
    /// The connection was closed or reset before any byte of the reply.
    Closed(io::Error),
    Other(io::Error),
}

impl Failure {
    fn of(e: io::Error) -> Failure {
        if closed(&e) {
            Failure::Closed(e)
        } else {
            Failure::Other(e)
        }
    }

    fn into_error(self) -> io::Error {
        match self {
            Failure::Closed(e) | Failure::Other(e) => e,
        }
    }
}

impl Pool {
    /// A pool of at most `max` connections to `server`.
    pub fn new(server: SocketAddr, max: usize) -> Pool {
        Pool {
            server,
            idle: RefCell::new(VecDeque::with_capacity(max)),
            slots: Rc::new(Semaphore::new(max.max(1))),
            open: Rc::new(Cell::new(0)),
            counts: Cell::new(Connections::default()),
        }
    }

    fn count(&self, f: impl FnOnce(&mut Connections)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    /// What the pool did so far, and the requests [`Pool::count_own`]
    /// counted.
    pub fn counts(&self) -> Connections {
        self.counts.get()
    }

    /// Counts a request sent on a connection of its own.
    pub fn count_own(&self) {
        self.count(|c| c.own += 1);
    }

    /// Kept-alive connections open now, idle or busy.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.get()
    }

    /// Sends `request` on a kept-alive connection if one is free (idle, or
    /// not opened yet), without waiting; `None` when all are busy.
    pub fn try_start(&self, request: &[u8]) -> Option<io::Result<Exchange>> {
        let permit = self.slots.try_acquire().ok()?;
        permit.forget();
        Some(self.start_with(Slot(Rc::clone(&self.slots)), request))
    }

    /// Sends `request` on a kept-alive connection, waiting for one to be free
    /// (counted) if all are busy.
    pub async fn start(&self, request: &[u8]) -> io::Result<Exchange> {
        if let Some(started) = self.try_start(request) {
            return started;
        }
        self.count(|c| c.waited += 1);
        let permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| io::Error::other("the connection pool is closed"))?;
        permit.forget();
        self.start_with(Slot(Rc::clone(&self.slots)), request)
    }

    fn start_with(&self, slot: Slot, request: &[u8]) -> io::Result<Exchange> {
        self.count(|c| c.kept_alive += 1);
        let idle = self.idle.borrow_mut().pop_back();
        if let Some((conn, _)) = idle {
            let written = match conn.stream.try_write(request) {
                Ok(n) => Some(n),
                // The rest goes once it is writable.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
                // karuta closed it while it was idle: a fresh one instead.
                Err(e) if closed(&e) => None,
                Err(e) => return Err(e),
            };
            if let Some(written) = written {
                self.count(|c| c.reused += 1);
                return Ok(Exchange {
                    conn,
                    written,
                    reused: true,
                    _slot: slot,
                });
            }
            self.count(|c| c.retried += 1);
        }
        let conn = self.connect(request)?;
        Ok(Exchange {
            conn: conn.0,
            written: conn.1,
            reused: false,
            _slot: slot,
        })
    }

    /// A new connection, with what of `request` its first `send(2)` took.
    fn connect(&self, request: &[u8]) -> io::Result<(Conn, usize)> {
        let (stream, written) = connect(self.server, request)?;
        let stream = TcpStream::from_std(stream)?;
        self.open.set(self.open.get() + 1);
        let open = self.open.get();
        self.count(|c| {
            c.opened += 1;
            c.most_open = c.most_open.max(open);
        });
        let conn = Conn {
            stream,
            open: Rc::clone(&self.open),
        };
        Ok((conn, written))
    }

    /// Sends the rest of `ex`'s request (all of `request`), reads the reply
    /// by its `Content-Length` into `reply`, and puts the connection back in
    /// the pool unless karuta said `Connection: close`. A connection that
    /// was idle and that karuta had closed (the end of the stream or a reset
    /// before any byte of the reply) gets the request once more on a fresh
    /// connection, counted as retried.
    pub async fn finish(
        &self,
        ex: Exchange,
        request: &[u8],
        reply: &mut Vec<u8>,
    ) -> io::Result<()> {
        let Exchange {
            mut conn,
            written,
            reused,
            _slot,
        } = ex;
        let mut result = exchange(&conn.stream, request, written, reply).await;
        if reused && matches!(result, Err(Failure::Closed(_))) {
            self.count(|c| c.retried += 1);
            let (fresh, written) = self.connect(request)?;
            conn = fresh;
            result = exchange(&conn.stream, request, written, reply).await;
        }
        // `_slot` is handed back at the end, after the connection went back
        // to the pool: a request waiting for a slot finds it idle.
        match result {
            Ok(true) => {
                forget_read_readiness(&conn.stream);
                self.idle.borrow_mut().push_back((conn, Instant::now()));
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(Failure::Closed(e)) => Err(io::Error::new(
                e.kind(),
                format!("the connection closed before any byte of the reply ({e})"),
            )),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Closes the connections idle for `idle` or longer at `now`.
    pub fn prune(&self, now: Instant, idle: Duration) {
        let mut pool = self.idle.borrow_mut();
        while pool
            .front()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= idle)
        {
            pool.pop_front();
            self.count(|c| c.expired += 1);
        }
    }
}

/// Drops the read readiness Tokio still holds for `stream` after a reply
/// read whole: it is cleared only by a read that would block, and without
/// this the next request's first read would be such a `recv(2)`, one more
/// system call per request. Safe here: no reactor turn came between the last
/// read and this, and data or an end of stream arriving later is a new
/// event (Tokio keeps a closed state anyway, and clears only the readiness
/// of the event it saw).
fn forget_read_readiness(stream: &TcpStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Sends the rest of `request` (`written` of it went already), then reads
/// one reply into `reply`, framed by its `Content-Length` (to the end of the
/// stream if karuta says `Connection: close` and gives no length); `true`
/// when the connection may carry another request.
async fn exchange(
    stream: &TcpStream,
    request: &[u8],
    written: usize,
    reply: &mut Vec<u8>,
) -> Result<bool, Failure> {
    write_rest(stream, request, written)
        .await
        .map_err(Failure::of)?;
    reply.clear();
    let other = |why: String| Failure::Other(io::Error::other(why));
    let limit = MAX_HEAD + MAX_REPLY;
    let mut head: Option<Head> = None;
    loop {
        make_room(reply, limit);
        stream.readable().await.map_err(Failure::Other)?;
        let before = reply.len();
        match stream.try_read_buf(reply) {
            Ok(0) if before == 0 => {
                return Err(Failure::Closed(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return match &head {
                    Some(h) if h.close && h.framed().is_none() => Ok(false),
                    _ => Err(other(format!(
                        "the connection closed after {before} bytes of the reply"
                    ))),
                };
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if before == 0 => return Err(Failure::of(e)),
            Err(e) => return Err(Failure::Other(e)),
        }
        if head.is_none() {
            // The blank line may straddle two reads.
            let from = before.saturating_sub(3);
            match find(&reply[from..], b"\r\n\r\n") {
                Some(i) => {
                    let h = parse_head(reply, from + i).map_err(other)?;
                    if !h.close {
                        if h.chunked {
                            return Err(other("a chunked reply on a kept-alive connection".into()));
                        }
                        if h.length.is_none() {
                            return Err(other(
                                "a reply without Content-Length on a kept-alive connection".into(),
                            ));
                        }
                    }
                    if h.framed().is_some_and(|n| n > MAX_REPLY) {
                        return Err(other(format!("a body over {MAX_REPLY} bytes")));
                    }
                    head = Some(h);
                }
                None if reply.len() > MAX_HEAD => {
                    return Err(other(format!(
                        "no end of the headers in {} bytes",
                        reply.len()
                    )));
                }
                None => continue,
            }
        }
        let Some(h) = &head else { continue };
        match h.framed() {
            Some(n) if reply.len() == h.len + n => return Ok(!h.close),
            Some(n) if reply.len() > h.len + n => {
                return Err(other(format!(
                    "{} bytes after the reply's Content-Length {n}",
                    reply.len() - h.len - n
                )));
            }
            Some(_) => {}
            None if reply.len() > limit => {
                return Err(other(format!("the reply is over {limit} bytes")));
            }
            None => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a reply's status line and headers say.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// The status line and the headers, the blank line after them included.
    len: usize,
    /// `Content-Length`.
    length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    chunked: bool,
    /// The connection ends after this reply: `Connection: close`, or an
    /// HTTP/1.0 reply without `Connection: keep-alive`.
    close: bool,
}

impl Head {
    /// The body's length, when the headers give it (a chunked body's does not
    /// count: chunking overrides `Content-Length`).
    fn framed(&self) -> Option<usize> {
        if self.chunked { None } else { self.length }
    }
}

/// The head of `reply`, whose blank line after the headers starts at `end`.
fn parse_head(reply: &[u8], end: usize) -> Result<Head, String> {
    let head = std::str::from_utf8(&reply[..end]).map_err(|_| "headers not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, status) = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => (v, code.parse::<u16>().ok()),
        _ => ("", None),
    };
    let status = status.ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    let (mut close, mut keep_alive) = (false, false);
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
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    Ok(Head {
        status,
        len: end + 4,
        length,
        chunked,
        close: close || (version == "HTTP/1.0" && !keep_alive),
    })
}

/// A whole HTTP/1.1 reply (read to the end of the stream, or by its
/// `Content-Length`): its status and its body (by `Content-Length`,
/// de-chunked, or what follows the headers).
pub fn parse(reply: &[u8]) -> Result<(u16, Cow<'_, [u8]>), String> {
    let end = find(reply, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "no end of the headers in {} bytes: {:?}",
            reply.len(),
            snippet(reply)
        )
    })?;
    let head = parse_head(reply, end)?;
    let body = &reply[head.len..];
    let body = match (head.chunked, head.length) {
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
    Ok((head.status, body))
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
        request(&mut out, "127.0.0.1:3201", false, |o| {
            scrape_target(o, &[InfoHash([b'a'; 20])])
        });
        assert_eq!(
            out,
            b"GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: 127.0.0.1:3201\r\nConnection: close\r\n\r\n"
        );
        request(&mut out, "127.0.0.1:3201", true, |o| {
            scrape_target(o, &[InfoHash([b'a'; 20])])
        });
        assert_eq!(
            out,
            b"GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: 127.0.0.1:3201\r\n\r\n"
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

    /// What the test server does with a request.
    #[derive(Clone)]
    enum Serve {
        /// Writes these pieces, 20 ms apart, and waits for the next request.
        Reply(Vec<&'static [u8]>),
        /// Writes these pieces, 20 ms apart, then closes the connection.
        ReplyAndClose(Vec<&'static [u8]>),
        /// Closes the connection without a reply.
        Close,
    }

    /// A server on 127.0.0.1 that answers the `r`-th request of its `c`-th
    /// connection (both 0-based) as `script(c, r)` says, each connection on
    /// a thread of its own.
    struct TestServer {
        addr: SocketAddr,
        /// Connections accepted.
        accepted: Arc<AtomicUsize>,
        /// Every request read, with its connection.
        requests: Arc<Mutex<Vec<(usize, String)>>>,
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    fn server(script: impl Fn(usize, usize) -> Serve + Send + Sync + 'static) -> TestServer {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (a, r) = (Arc::clone(&accepted), Arc::clone(&requests));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                conn.set_nodelay(true).unwrap();
                let c = a.fetch_add(1, Ordering::SeqCst);
                let (script, requests) = (Arc::clone(&script), Arc::clone(&r));
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    for i in 0.. {
                        let end = loop {
                            if let Some(end) = find(&got, b"\r\n\r\n") {
                                break end + 4;
                            }
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        };
                        let req = String::from_utf8(got.drain(..end).collect()).unwrap();
                        requests.lock().unwrap().push((c, req));
                        let (pieces, close) = match script(c, i) {
                            Serve::Reply(p) => (p, false),
                            Serve::ReplyAndClose(p) => (p, true),
                            Serve::Close => return,
                        };
                        for (j, piece) in pieces.iter().enumerate() {
                            if j > 0 {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                            }
                            if conn.write_all(piece).is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            accepted,
            requests,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\ndate: Wed, 02 Dec 2026 13:00:00 GMT\r\n\r\nd5:filesdee";

    fn get(addr: SocketAddr, keep_alive: bool) -> Vec<u8> {
        let mut req = Vec::new();
        request(&mut req, &addr.to_string(), keep_alive, |o| {
            scrape_target(o, &[InfoHash([7; 20])])
        });
        req
    }

    /// One exchange on a new connection to a server that answers its first
    /// request with `pieces` and then keeps the connection open: whether the
    /// connection may be reused, or the error, and the reply read.
    fn framed(pieces: Vec<&'static [u8]>, then_close: bool) -> (Result<bool, String>, Vec<u8>) {
        let server = server(move |_, _| {
            if then_close {
                Serve::ReplyAndClose(pieces.clone())
            } else {
                Serve::Reply(pieces.clone())
            }
        });
        let req = get(server.addr, true);
        let mut reply = Vec::new();
        let result = runtime().block_on(async {
            let stream = TcpStream::connect(server.addr).await.unwrap();
            let read = exchange(&stream, &req, 0, &mut reply);
            // A reply read by its length ends without the connection's end.
            match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
                Ok(Ok(reusable)) => Ok(reusable),
                Ok(Err(Failure::Closed(e))) => Err(format!("closed: {e}")),
                Ok(Err(Failure::Other(e))) => Err(e.to_string()),
                Err(_) => Err("hung".into()),
            }
        });
        (result, reply)
    }

    #[test]
    fn kept_alive_replies_are_read_by_their_content_length() {
        // Whole, in one piece, the connection left open.
        let (result, reply) = framed(vec![OK], false);
        assert_eq!(result, Ok(true));
        assert_eq!(reply, OK);
        assert_eq!(answered(outcome(Kind::Scrape, &reply)), Ok(()));
        // In three pieces, the blank line split between two of them.
        let (head, body) = OK.split_at(OK.len() - 13);
        let (result, reply) = framed(vec![head, &body[..2], &body[2..]], false);
        assert_eq!(result, Ok(true));
        assert_eq!(reply, OK);
        // `Connection: close` with a length: read by it, not reused.
        let close =
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 11\r\n\r\nd5:filesdee";
        assert_eq!(framed(vec![close], false).0, Ok(false));
        // `Connection: close` without a length, or chunked: to the end.
        let to_end = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nd5:filesdee";
        let (result, reply) = framed(vec![to_end], true);
        assert_eq!(result, Ok(false));
        assert_eq!(parse(&reply).unwrap().1.as_ref(), b"d5:filesdee");
        let chunked_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nd5:\r\n8\r\nfilesdee\r\n0\r\n\r\n";
        let (result, reply) = framed(vec![chunked_close], true);
        assert_eq!(result, Ok(false));
        assert_eq!(parse(&reply).unwrap().1.as_ref(), b"d5:filesdee");
        // HTTP/1.0 without keep-alive ends the connection too.
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nd5:filesdee";
        assert_eq!(framed(vec![old], false).0, Ok(false));
    }

    #[test]
    fn kept_alive_replies_without_a_length_are_errors() {
        for (pieces, then_close, want) in [
            (
                vec![&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..]],
                false,
                "a chunked reply on a kept-alive connection",
            ),
            (
                vec![&b"HTTP/1.1 200 OK\r\n\r\nd5:filesdee"[..]],
                true,
                "without Content-Length on a kept-alive connection",
            ),
            (
                vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nd5:filesdee"[..]],
                false,
                "9 bytes after the reply's Content-Length 2",
            ),
            (
                vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nd5:filesdee"[..]],
                true,
                "the connection closed after 50 bytes of the reply",
            ),
            (
                vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 70000\r\n\r\n"[..]],
                false,
                "a body over 65536 bytes",
            ),
            (
                vec![&b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n"[..]],
                false,
                "malformed header",
            ),
        ] {
            let e = framed(pieces, then_close).0.unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        // The end of the stream before any byte: closed, for a retry.
        let e = framed(vec![], true).0.unwrap_err();
        assert!(e.starts_with("closed:"), "{e}");
    }

    /// Requests `n` scrapes from `pool` one after the other; the results.
    async fn one_by_one(pool: &Pool, addr: SocketAddr, n: usize) -> Vec<io::Result<()>> {
        let req = get(addr, true);
        let mut reply = Vec::new();
        let mut results = Vec::new();
        for _ in 0..n {
            let result = match pool.try_start(&req).unwrap() {
                Ok(ex) => pool.finish(ex, &req, &mut reply).await,
                Err(e) => Err(e),
            };
            if result.is_ok() {
                assert_eq!(answered(outcome(Kind::Scrape, &reply)), Ok(()));
            }
            results.push(result);
            // Time for a close of the server's to arrive.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        results
    }

    #[test]
    fn the_pool_reuses_idle_connections() {
        let server = server(|_, _| Serve::Reply(vec![OK]));
        let pool = Pool::new(server.addr, 4);
        let results = runtime().block_on(one_by_one(&pool, server.addr, 5));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        let c = pool.counts();
        assert_eq!(
            (c.kept_alive, c.reused, c.opened, c.most_open),
            (5, 4, 1, 1)
        );
        assert_eq!((c.retried, c.waited, c.expired), (0, 0, 0));
        assert_eq!(pool.open(), 1);
        let requests = server.requests.lock().unwrap();
        assert_eq!(requests.len(), 5);
        assert!(
            requests
                .iter()
                .all(|(c, r)| *c == 0 && !r.contains("Connection: close"))
        );
        drop(requests);
        // Idle long enough, it is closed.
        pool.prune(Instant::now(), POOL_IDLE);
        assert_eq!(pool.open(), 1);
        pool.prune(Instant::now() + POOL_IDLE, POOL_IDLE);
        assert_eq!((pool.open(), pool.counts().expired), (0, 1));
    }

    /// One request on a kept-alive connection of `pool`, waiting for one if
    /// need be.
    async fn kept_alive(pool: &Pool, req: &[u8], reply: &mut Vec<u8>) -> io::Result<()> {
        let ex = pool.start(req).await?;
        pool.finish(ex, req, reply).await
    }

    #[test]
    fn requests_beyond_the_pool_wait_for_a_connection() {
        let server = server(|_, _| Serve::Reply(vec![OK]));
        let pool = Pool::new(server.addr, 2);
        let req = get(server.addr, true);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let results = runtime().block_on(async {
            tokio::join!(
                kept_alive(&pool, &req, &mut a),
                kept_alive(&pool, &req, &mut b),
                kept_alive(&pool, &req, &mut c),
            )
        });
        assert!(
            results.0.is_ok() && results.1.is_ok() && results.2.is_ok(),
            "{results:?}"
        );
        for reply in [&a, &b, &c] {
            assert_eq!(reply.as_slice(), OK);
        }
        let counts = pool.counts();
        assert_eq!(
            (counts.kept_alive, counts.opened, counts.most_open),
            (3, 2, 2)
        );
        assert_eq!((counts.waited, counts.reused), (1, 1));
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.open(), 2);
    }

    #[test]
    fn a_connection_closed_while_idle_is_retried_once() {
        // Connection 0 answers once and closes (an idle_timeout, say);
        // connection 1 takes a request and closes without a reply (a stop);
        // connection 2 answers, then closes without replying again;
        // connection 3 answers.
        let server = server(|c, r| match (c, r) {
            (0, 0) => Serve::ReplyAndClose(vec![OK]),
            (2, 0) | (3, _) => Serve::Reply(vec![OK]),
            _ => Serve::Close,
        });
        let pool = Pool::new(server.addr, 4);
        let rt = runtime();
        let results = rt.block_on(one_by_one(&pool, server.addr, 3));
        // 1: connection 0. 2: connection 0 is closed, retried on connection
        // 1, which closes too: an error, not retried again. 3: connection 2.
        assert!(results[0].is_ok(), "{results:?}");
        let e = results[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("closed before any byte of the reply"), "{e}");
        assert!(results[2].is_ok(), "{results:?}");
        let c = pool.counts();
        assert_eq!((c.kept_alive, c.reused, c.opened, c.retried), (3, 1, 3, 1));
        // Connection 2 is idle; karuta closes it when the next request is
        // on its way: retried on connection 3.
        let results = rt.block_on(one_by_one(&pool, server.addr, 2));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let c = pool.counts();
        assert_eq!((c.kept_alive, c.reused, c.opened, c.retried), (5, 3, 4, 2));
        assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
        assert_eq!(pool.open(), 1);
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
        request(&mut req, &addr.to_string(), false, |o| {
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
