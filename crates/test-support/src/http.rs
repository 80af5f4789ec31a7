//! A raw HTTP/1.1 GET over std's `TcpStream`, for tests that must see what is
//! on the wire: the status, the head as the server wrote it, and the body
//! framed as the server framed it (Content-Length, chunked, or up to the end
//! of the connection), all within a bounded time.
//!
//! [`get`] makes one request on a fresh connection with `Connection: close`,
//! and reads to the end of the connection: bytes after the framed body are an
//! error, so a server that frames its replies wrongly fails the test rather
//! than the next request. A test that drives a kept-alive connection itself
//! writes its requests and reads each reply with [`read_response`].
//!
//! Deliberately not a client: no redirects, no pooling, no TLS, no decoding
//! of content; karuta's own outgoing client lives with the code that uses it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a whole exchange may take unless a test says otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(10);

/// Heads longer than this are refused: no server of ours writes one, and a
/// runaway server must not fill the test's memory.
const MAX_HEAD: usize = 64 * 1024;

/// A reply as read from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The status line and the header lines as sent, joined by CRLF, without
    /// the blank line that ends them.
    pub head: String,
    /// The body without its framing (chunks joined).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (in any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why no whole reply was read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no whole reply within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the connection closed after {} bytes: {:?}", .0.len(), String::from_utf8_lossy(.0))]
    Closed(Vec<u8>),
    #[error("{what}: {head:?}")]
    Malformed { what: String, head: String },
}

/// A GET of `target` (path and query, sent as given) from `addr`; configure
/// it, then [`Get::send`] it.
pub fn get(addr: SocketAddr, target: &str) -> Get<'_> {
    Get {
        addr,
        target,
        headers: Vec::new(),
        limit: DEFAULT_LIMIT,
    }
}

/// A GET being put together: extra headers and a time limit.
#[must_use = "a GET does nothing until it is sent"]
pub struct Get<'a> {
    addr: SocketAddr,
    target: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    limit: Duration,
}

impl<'a> Get<'a> {
    /// Adds a request header after `Host` and `User-Agent`.
    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds request headers, in order.
    pub fn headers(mut self, headers: &[(&'a str, &'a str)]) -> Self {
        self.headers.extend_from_slice(headers);
        self
    }

    /// Bounds the whole exchange (connect, send, read); [`DEFAULT_LIMIT`]
    /// otherwise.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Connects, sends the request, and reads the reply and the end of the
    /// connection.
    pub fn send(self) -> Result<Response, HttpError> {
        let deadline = Instant::now() + self.limit;
        let stream = TcpStream::connect_timeout(&self.addr, self.limit).map_err(|source| {
            HttpError::Connect {
                addr: self.addr,
                source,
            }
        })?;
        stream.set_write_timeout(Some(self.limit))?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: karuta-test\r\n",
            self.target, self.addr
        );
        for (name, value) in &self.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        (&stream)
            .write_all(request.as_bytes())
            .map_err(|e| timeout_or(e, self.limit))?;
        let mut wire = Wire::new(&stream, deadline, self.limit);
        let response = wire.response()?;
        match wire.rest() {
            Ok(rest) if !rest.is_empty() => Err(malformed(
                format!(
                    "{} bytes after the body: {:?}",
                    rest.len(),
                    String::from_utf8_lossy(&rest)
                ),
                &response.head,
            )),
            // A server that closes with our request unread resets the
            // connection: the reply was whole all the same.
            Ok(_) => Ok(response),
            Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(response),
            Err(e) => Err(e),
        }
    }
}

/// Reads one reply from a connection the test drives itself (kept alive, or
/// after a request it wrote by hand), within `limit`; the stream's read
/// timeout is restored afterwards.
pub fn read_response(stream: &mut TcpStream, limit: Duration) -> Result<Response, HttpError> {
    let before = stream.read_timeout()?;
    let result = Wire::new(stream, Instant::now() + limit, limit).response();
    stream.set_read_timeout(before)?;
    result
}

/// A stream read against a deadline, keeping what it read for error messages.
struct Wire<'s> {
    stream: &'s TcpStream,
    deadline: Instant,
    limit: Duration,
    got: Vec<u8>,
}

impl<'s> Wire<'s> {
    fn new(stream: &'s TcpStream, deadline: Instant, limit: Duration) -> Wire<'s> {
        Wire {
            stream,
            deadline,
            limit,
            got: Vec::new(),
        }
    }

    /// Up to `buf.len()` bytes; 0 at the end of the connection.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout(self.limit));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        let n = stream.read(buf).map_err(|e| timeout_or(e, self.limit))?;
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Exactly `n` bytes.
    fn exact(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            match self.read(&mut out[filled..])? {
                0 => return Err(HttpError::Closed(self.got.clone())),
                k => filled += k,
            }
        }
        Ok(out)
    }

    /// Bytes up to and including `end`, one read at a time so that nothing
    /// of a following reply is consumed.
    fn until(&mut self, end: &[u8], max: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while !out.ends_with(end) {
            if out.len() >= max {
                return Err(malformed(
                    format!("no {:?} within {max} bytes", end.escape_ascii().to_string()),
                    &String::from_utf8_lossy(&out),
                ));
            }
            match self.read(&mut byte)? {
                0 => return Err(HttpError::Closed(self.got.clone())),
                _ => out.push(byte[0]),
            }
        }
        Ok(out)
    }

    /// Everything up to the end of the connection.
    fn rest(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn response(&mut self) -> Result<Response, HttpError> {
        let raw = self.until(b"\r\n\r\n", MAX_HEAD)?;
        let head = String::from_utf8(raw[..raw.len() - 4].to_vec()).map_err(|e| {
            malformed(
                "a head that is not UTF-8",
                &String::from_utf8_lossy(e.as_bytes()),
            )
        })?;
        let status_line = head.split("\r\n").next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed("no HTTP/1.x status line", &head))?;
        if head.split("\r\n").skip(1).any(|l| !l.contains(':')) {
            return Err(malformed("a header line without ':'", &head));
        }
        let mut response = Response {
            status,
            head,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = response.header("content-length").map(str::parse::<usize>);
        response.body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            self.chunks(&response.head)?
        } else {
            match length {
                Some(Ok(n)) => self.exact(n)?,
                Some(Err(_)) => {
                    return Err(malformed("an unreadable Content-Length", &response.head));
                }
                None => self.rest()?,
            }
        };
        Ok(response)
    }

    /// A chunked body, its trailer read and dropped.
    fn chunks(&mut self, head: &str) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.until(b"\r\n", 1024)?;
            let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| malformed(format!("chunk size {line:?}"), head))?;
            if size == 0 {
                while self.until(b"\r\n", MAX_HEAD)?.len() > 2 {}
                return Ok(body);
            }
            body.extend_from_slice(&self.exact(size)?);
            if self.exact(2)? != b"\r\n" {
                return Err(malformed(
                    format!("no CRLF after a {size}-byte chunk"),
                    head,
                ));
            }
        }
    }
}

fn malformed(what: impl Into<String>, head: &str) -> HttpError {
    HttpError::Malformed {
        what: what.into(),
        head: head.to_owned(),
    }
}

fn timeout_or(e: io::Error, limit: Duration) -> HttpError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout(limit),
        _ => HttpError::Io(e),
    }
}
