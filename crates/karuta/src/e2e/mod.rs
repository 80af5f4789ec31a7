//! `karuta e2e`: checks a running tracker end to end, the way chihaya's `e2e`
//! command does, over HTTP and/or UDP.
//!
//! For each protocol: a fresh random info hash; peer A announces `started`
//! (port 10000) and must get no peers back (karuta never returns the announcer
//! itself; chihaya's e2e expects exactly one peer, itself) with at least one
//! leecher counted; after `--delay`, peer B (port 10001) announces and must get
//! exactly A back, with two peers counted; a scrape must show two leechers;
//! both peers announce `stopped` and a last scrape must show an empty swarm.
//!
//! Exit codes: 0 when every check passed, 1 on the first failure (with a
//! one-line reason on stderr), 2 for usage errors (clap's). Nothing here
//! panics on a bad reply: refused connections, timeouts, HTTP errors and
//! malformed bencode are all failures with a reason.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bittorrent::{InfoHash, PeerId};
use clap::ArgGroup;
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use tracker::config::{format_duration, parse_duration};

/// `karuta e2e`'s flags.
#[derive(Clone, Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(true).args(["http", "udp"])))]
pub struct E2eArgs {
    /// HTTP announce URL, e.g. `http://127.0.0.1:6969/announce` (any announce
    /// path works, e.g. `/PASSKEY/announce`; the scrape URL is derived as BEP
    /// 48 says). Only plain http:// is supported.
    #[arg(long, value_name = "URL", value_parser = parse_http_url)]
    pub http: Option<HttpTarget>,
    /// UDP tracker URL, e.g. `udp://127.0.0.1:6969`; a path and query
    /// (`udp://host:6969/PASSKEY/announce`) are sent as BEP 41 URL data.
    #[arg(long, value_name = "URL", value_parser = parse_udp_url)]
    pub udp: Option<UdpTarget>,
    /// How long to wait between peer A's and peer B's announces (Go syntax).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub delay: Duration,
    /// How long to wait for each reply (Go syntax).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("the timeout must be greater than 0".into()),
        d => Ok(d),
    }
}

/// The port peer A announces.
const PORT_A: u16 = 10000;
/// The port peer B announces.
const PORT_B: u16 = 10001;
/// The largest HTTP reply read.
const MAX_REPLY: usize = 1 << 20;

// ---------------------------------------------------------------------------
// URLs

/// An `http://` announce URL, split for the client.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    url: String,
    /// `host[:port]` as given, for the Host header.
    authority: String,
    /// The host without IPv6 brackets, for resolving.
    host: String,
    port: u16,
    /// Path and query of the announce URL.
    announce: String,
    /// Path and query of the scrape URL (BEP 48).
    scrape: String,
}

/// A `udp://` tracker URL.
#[derive(Clone, Debug)]
pub struct UdpTarget {
    url: String,
    host: String,
    port: u16,
    /// Path and query, sent as BEP 41 URL data; empty: none.
    url_data: String,
}

/// `scheme://authority` and the rest (path and query, fragment dropped).
struct UrlParts<'a> {
    authority: &'a str,
    host: &'a str,
    port: Option<u16>,
    rest: &'a str,
}

fn split_url<'a>(url: &'a str, want: &str) -> Result<UrlParts<'a>, String> {
    let Some((scheme, after)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a URL (expected {want}://host:port/...; only http:// and udp:// are supported)"
        ));
    };
    let scheme_lower = scheme.to_ascii_lowercase();
    if scheme_lower != want {
        return Err(match scheme_lower.as_str() {
            "https" => {
                "https:// is not supported: karuta e2e speaks only http:// and udp://".into()
            }
            "http" | "udp" => {
                format!("expected a {want}:// URL here, got a {scheme_lower}:// one")
            }
            _ => format!("unsupported scheme {scheme}://: only http:// and udp:// are supported"),
        });
    }
    let after = after.split('#').next().unwrap_or_default();
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains('@') {
        return Err(format!("{url:?}: user info in URLs is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, tail)) = v6.split_once(']') else {
            return Err(format!("{url:?}: unclosed '[' in the host"));
        };
        match tail {
            "" => (host, None),
            _ => match tail.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("{url:?}: bad port after the IPv6 address")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => Some(n),
            _ => return Err(format!("{url:?}: bad port {p:?}")),
        },
    };
    Ok(UrlParts {
        authority,
        host,
        port,
        rest,
    })
}

/// BEP 48: the scrape URL is the announce URL with the `announce` that starts
/// its last path segment replaced by `scrape`.
fn scrape_target(announce: &str) -> Option<String> {
    let (path, query) = match announce.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (announce, None),
    };
    let slash = path.rfind('/')?;
    let last = path[slash + 1..].strip_prefix("announce")?;
    let mut s = format!("{}scrape{last}", &path[..=slash]);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Some(s)
}

/// Parses `--http`.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let parts = split_url(url, "http")?;
    let announce = match parts.rest {
        "" => "/".to_owned(),
        r if r.starts_with('?') => format!("/{r}"),
        r => r.to_owned(),
    };
    let scrape = scrape_target(&announce).ok_or_else(|| {
        format!(
            "{url:?}: cannot derive a scrape URL (BEP 48: the last path segment must start with \
             \"announce\", e.g. http://host:6969/announce)"
        )
    })?;
    Ok(HttpTarget {
        url: url.to_owned(),
        authority: parts.authority.to_owned(),
        host: parts.host.to_owned(),
        port: parts.port.unwrap_or(80),
        announce,
        scrape,
    })
}

/// Parses `--udp`.
pub fn parse_udp_url(url: &str) -> Result<UdpTarget, String> {
    let parts = split_url(url, "udp")?;
    let Some(port) = parts.port else {
        return Err(format!("{url:?} has no port (e.g. udp://host:6969)"));
    };
    let url_data = match parts.rest {
        "" | "/" => String::new(),
        r if r.starts_with('?') => format!("/{r}"),
        r => r.to_owned(),
    };
    Ok(UdpTarget {
        url: url.to_owned(),
        host: parts.host.to_owned(),
        port,
        url_data,
    })
}

// ---------------------------------------------------------------------------
// Randomness without another dependency: std's RandomState keys come from the
// OS's random source, and SipHash under them scrambles a counter and the clock.

/// Random bytes from the operating system, so runs never collide.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source");
    out
}

fn random_peer_id() -> PeerId {
    let mut id: [u8; 20] = random_bytes();
    id[..8].copy_from_slice(b"-KE0001-");
    PeerId(id)
}

// ---------------------------------------------------------------------------
// What a check sees, whichever the protocol.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Started,
    Stopped,
}

struct Peer {
    name: &'static str,
    id: PeerId,
    port: u16,
}

struct Announced {
    seeders: u64,
    leechers: u64,
    peers: Vec<SocketAddr>,
}

#[derive(Clone, Copy)]
struct Counts {
    seeders: u64,
    leechers: u64,
    snatches: u64,
}

/// Why a step failed.
enum Fail {
    /// No usable reply (connect, timeout, i/o): nothing was changed on the
    /// tracker by this step.
    Transport(String),
    /// The tracker replied, but not as it should have.
    Check(String),
}

impl Fail {
    fn reason(&self) -> &str {
        match self {
            Fail::Transport(r) | Fail::Check(r) => r,
        }
    }
}

trait Tracker {
    fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail>;
    /// `None`: the reply has no entry for `ih`.
    fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail>;
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary(seeders: u64, leechers: u64) -> String {
    format!(
        "{}, {}",
        plural(seeders, "seeder", "seeders"),
        plural(leechers, "leecher", "leechers")
    )
}

/// Prints `proto: what ... ` then `ok (detail)` or `FAILED`.
fn step<T>(
    proto: &str,
    what: &str,
    run: impl FnOnce() -> Result<(T, String), Fail>,
) -> Result<T, Fail> {
    print!("{proto}: {what} ... ");
    let _ = std::io::stdout().flush();
    match run() {
        Ok((value, detail)) => {
            println!("ok ({detail})");
            Ok(value)
        }
        Err(e) => {
            println!("FAILED");
            Err(e)
        }
    }
}

fn peers_text(peers: &[SocketAddr]) -> String {
    match peers {
        [] => "0 peers".into(),
        [p] => format!("1 peer: {p}"),
        ps => format!(
            "{} peers: {}",
            ps.len(),
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The scenario, shared by both protocols; returns how many steps passed.
fn scenario(proto: &str, t: &mut dyn Tracker, delay: Duration) -> Result<usize, Fail> {
    let ih = InfoHash(random_bytes());
    let a = Peer {
        name: "A",
        id: random_peer_id(),
        port: PORT_A,
    };
    let b = Peer {
        name: "B",
        id: random_peer_id(),
        port: PORT_B,
    };
    println!("{proto}: info hash {ih}");
    let mut live: Vec<&Peer> = Vec::new();
    let result = checks(proto, t, ih, &a, &b, delay, &mut live);
    if let Err(Fail::Check(_)) = &result {
        // The tracker answers: take our peers out of its swarm again.
        for p in live {
            let _ = t.announce(ih, p, Event::Stopped);
        }
    }
    result
}

fn checks<'p>(
    proto: &str,
    t: &mut dyn Tracker,
    ih: InfoHash,
    a: &'p Peer,
    b: &'p Peer,
    delay: Duration,
    live: &mut Vec<&'p Peer>,
) -> Result<usize, Fail> {
    let mut steps = 0;
    let what = format!("announce A (started, port {})", a.port);
    step(proto, &what, || {
        let r = t.announce(ih, a, Event::Started)?;
        live.push(a);
        if !r.peers.is_empty() {
            return Err(Fail::Check(format!(
                "A got {}, expected 0 (the first peer of a new swarm; karuta never returns the announcer itself)",
                peers_text(&r.peers)
            )));
        }
        if r.leechers < 1 {
            return Err(Fail::Check(format!(
                "A's announce counted {}, expected at least 1 leecher",
                summary(r.seeders, r.leechers)
            )));
        }
        Ok(((), format!("0 peers, {}", summary(r.seeders, r.leechers))))
    })?;
    steps += 1;

    if !delay.is_zero() {
        println!("{proto}: waiting {}", format_duration(delay));
        std::thread::sleep(delay);
    }

    let what = format!("announce B (started, port {})", b.port);
    step(proto, &what, || {
        let r = t.announce(ih, b, Event::Started)?;
        live.push(b);
        if r.peers.len() != 1 || r.peers[0].port() != a.port {
            return Err(Fail::Check(format!(
                "B got {}, expected 1 (port {})",
                peers_text(&r.peers),
                a.port
            )));
        }
        if r.seeders + r.leechers != 2 {
            return Err(Fail::Check(format!(
                "B's announce counted {}, expected 2 peers in all",
                summary(r.seeders, r.leechers)
            )));
        }
        Ok((
            (),
            format!(
                "{}, {}",
                peers_text(&r.peers),
                summary(r.seeders, r.leechers)
            ),
        ))
    })?;
    steps += 1;

    step(proto, "scrape", || {
        let Some(c) = t.scrape(ih)? else {
            return Err(Fail::Check(
                "the scrape reply has no entry for the info hash, expected 2 leechers".into(),
            ));
        };
        if c.leechers != 2 {
            return Err(Fail::Check(format!(
                "the scrape shows {}, expected 2 leechers",
                summary(c.seeders, c.leechers)
            )));
        }
        Ok((
            (),
            format!(
                "{}, {}",
                summary(c.seeders, c.leechers),
                plural(c.snatches, "snatch", "snatches")
            ),
        ))
    })?;
    steps += 1;

    for p in [a, b] {
        let what = format!("announce {} (stopped)", p.name);
        step(proto, &what, || {
            let r = t.announce(ih, p, Event::Stopped)?;
            live.retain(|l| l.port != p.port);
            Ok(((), summary(r.seeders, r.leechers)))
        })?;
        steps += 1;
    }

    step(proto, "scrape after stopped", || {
        let (c, note) = match t.scrape(ih)? {
            Some(c) => (c, ""),
            None => (
                Counts {
                    seeders: 0,
                    leechers: 0,
                    snatches: 0,
                },
                ", no entry",
            ),
        };
        if c.seeders != 0 || c.leechers != 0 {
            return Err(Fail::Check(format!(
                "after both peers stopped the scrape shows {}, expected 0 seeders and 0 leechers",
                summary(c.seeders, c.leechers)
            )));
        }
        Ok(((), format!("{}{note}", summary(c.seeders, c.leechers))))
    })?;
    steps += 1;
    Ok(steps)
}

// ---------------------------------------------------------------------------
// UDP (BEP 15) through frontend-udp's blocking client.

struct Udp {
    client: UdpTrackerClient,
    server: SocketAddr,
    url_data: String,
}

fn udp_fail(what: &str, server: SocketAddr, e: UdpClientError) -> Fail {
    match e {
        UdpClientError::Io(e) => Fail::Transport(format!("{what}: {server}: {e}")),
        UdpClientError::Timeout(d) => Fail::Transport(format!(
            "{what}: no reply from {server} within {}",
            format_duration(d)
        )),
        UdpClientError::Tracker(m) => Fail::Check(format!("{what}: tracker error: {m}")),
        UdpClientError::Malformed(m) => Fail::Check(format!("{what}: malformed reply: {m}")),
    }
}

impl Tracker for Udp {
    fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail> {
        let mut p = AnnounceParams::new(ih, peer.id, peer.port);
        p.left = 1;
        p.num_want = 50;
        p.event = match event {
            Event::Started => 2,
            Event::Stopped => 3,
        };
        if !self.url_data.is_empty() {
            p = p.with_url_data(self.url_data.as_bytes());
        }
        let what = format!("announce {}", peer.name);
        let r = self
            .client
            .announce(&p)
            .map_err(|e| udp_fail(&what, self.server, e))?;
        Ok(Announced {
            seeders: r.seeders.into(),
            leechers: r.leechers.into(),
            peers: r.peers,
        })
    }

    fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail> {
        let entries = self
            .client
            .scrape(&[ih])
            .map_err(|e| udp_fail("scrape", self.server, e))?;
        match entries.as_slice() {
            [e] => Ok(Some(Counts {
                seeders: e.seeders.into(),
                leechers: e.leechers.into(),
                snatches: e.completed.into(),
            })),
            es => Err(Fail::Check(format!(
                "scrape: {} entries for 1 info hash",
                es.len()
            ))),
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Fail> {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() {
                Err(Fail::Transport(format!("{host} has no address")))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(Fail::Transport(format!("cannot resolve {host}: {e}"))),
    }
}

fn run_udp(target: &UdpTarget, delay: Duration, timeout: Duration) -> Result<usize, Fail> {
    let server = resolve(&target.host, target.port)?[0];
    let client = UdpTrackerClient::new(server, timeout)
        .map_err(|e| Fail::Transport(format!("cannot open a UDP socket: {e}")))?;
    let mut udp = Udp {
        client,
        server,
        url_data: target.url_data.clone(),
    };
    let what = format!("connect to {server}");
    step("udp", &what, || {
        udp.client
            .connect()
            .map(|_| ((), "got a connection id".to_owned()))
            .map_err(|e| udp_fail("connect", server, e))
    })?;
    // Connection ids expire (after 2 min in chihaya): connect again after a
    // long delay, through a tracker that wraps `Udp`.
    struct Reconnecting<'a> {
        udp: &'a mut Udp,
        last: Instant,
    }
    impl Tracker for Reconnecting<'_> {
        fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail> {
            self.fresh()?;
            self.udp.announce(ih, peer, event)
        }
        fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail> {
            self.fresh()?;
            self.udp.scrape(ih)
        }
    }
    impl Reconnecting<'_> {
        fn fresh(&mut self) -> Result<(), Fail> {
            if self.last.elapsed() > Duration::from_secs(30) {
                let server = self.udp.server;
                self.udp
                    .client
                    .connect()
                    .map_err(|e| udp_fail("connect", server, e))?;
                self.last = Instant::now();
            }
            Ok(())
        }
    }
    let mut t = Reconnecting {
        udp: &mut udp,
        last: Instant::now(),
    };
    Ok(1 + scenario("udp", &mut t, delay)?)
}

// ---------------------------------------------------------------------------
// HTTP: one GET per connection over std's TcpStream.

struct Http<'a> {
    target: &'a HttpTarget,
    timeout: Duration,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn with_query(target: &str, query: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{query}")
}

/// Printable, one line, at most 120 characters of `bytes`.
fn snippet(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    text.trim().to_owned()
}

/// Where the header block ends (after `\r\n\r\n`).
fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

struct Head {
    status: u16,
    reason: String,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the HTTP header is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "not an HTTP/1.x reply: {:?}",
            snippet(status_line.as_bytes())
        ));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad HTTP status line {:?}", snippet(status_line.as_bytes())))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Head {
        status,
        reason,
        content_length,
        chunked,
    })
}

/// Decodes a chunked body; `Ok(None)` while it is incomplete.
fn dechunk(mut body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[..eol]).unwrap_or("?");
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if body.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The body once `buf` holds a whole reply, `Ok(None)` while it does not.
fn complete_body(buf: &[u8], eof: bool) -> Result<Option<(Head, Vec<u8>)>, String> {
    let Some(end) = header_end(buf) else {
        return if eof {
            Err(format!(
                "the connection closed before a whole HTTP header arrived ({} bytes: {:?})",
                buf.len(),
                snippet(buf)
            ))
        } else {
            Ok(None)
        };
    };
    let head = parse_head(&buf[..end])?;
    let body = &buf[end..];
    let whole = if head.chunked {
        dechunk(body)?
    } else if let Some(n) = head.content_length {
        (body.len() >= n).then(|| body[..n].to_vec())
    } else if eof {
        Some(body.to_vec())
    } else {
        None
    };
    match whole {
        Some(b) => Ok(Some((head, b))),
        None if eof => Err("the connection closed in the middle of the HTTP body".into()),
        None => Ok(None),
    }
}

impl Http<'_> {
    /// GETs `target` (path and query); returns the body of a 200 reply.
    fn get(&self, target: &str) -> Result<Vec<u8>, Fail> {
        let t = self.target;
        let deadline = Instant::now() + self.timeout;
        let timed_out = || {
            Fail::Transport(format!(
                "no whole reply from {}:{} within {}",
                t.host,
                t.port,
                format_duration(self.timeout)
            ))
        };
        let mut stream = None;
        let mut last_error = String::new();
        for addr in resolve(&t.host, t.port)? {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
            }
        }
        let Some(mut stream) = stream else {
            return Err(Fail::Transport(last_error));
        };
        let io = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                timed_out()
            } else {
                Fail::Transport(format!("{}:{}: {e}", t.host, t.port))
            }
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: karuta-e2e/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
            t.authority,
            env!("CARGO_PKG_VERSION")
        );
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream.set_write_timeout(Some(left)).map_err(io)?;
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head, body) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            stream.set_read_timeout(Some(left)).map_err(io)?;
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_REPLY {
                return Err(Fail::Check(format!(
                    "the reply is larger than {MAX_REPLY} bytes"
                )));
            }
            match complete_body(&buf, n == 0) {
                Ok(Some(whole)) => break whole,
                Ok(None) => {}
                Err(e) => return Err(Fail::Check(e)),
            }
        };
        if head.status != 200 {
            return Err(Fail::Check(format!(
                "HTTP {} {} (body: {:?})",
                head.status,
                head.reason,
                snippet(&body)
            )));
        }
        Ok(body)
    }

    /// GETs and decodes a bencoded dictionary; a `failure reason` fails.
    fn get_dict(&self, target: &str) -> Result<Vec<(Vec<u8>, Value)>, Fail> {
        let body = self.get(target)?;
        let value = decode(&body)
            .map_err(|e| Fail::Check(format!("malformed bencode ({e}): {:?}", snippet(&body))))?;
        let Value::Dict(dict) = value else {
            return Err(Fail::Check(format!(
                "the reply is not a bencoded dictionary: {:?}",
                snippet(&body)
            )));
        };
        if let Some(reason) = lookup(&dict, "failure reason") {
            let text = match reason {
                Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "(not a string)".into(),
            };
            return Err(Fail::Check(format!("tracker failure: {text}")));
        }
        Ok(dict)
    }
}

fn count(dict: &[(Vec<u8>, Value)], key: &str, context: &str) -> Result<u64, Fail> {
    match lookup(dict, key) {
        Some(Value::Int(n)) if *n >= 0 => Ok(*n as u64),
        Some(_) => Err(Fail::Check(format!(
            "{context}: {key:?} is not a non-negative integer"
        ))),
        None => Err(Fail::Check(format!("{context}: no {key:?} key"))),
    }
}

/// Compact (`peers`, `peers6` byte strings) or dictionary peer lists.
fn http_peers(dict: &[(Vec<u8>, Value)]) -> Result<Vec<SocketAddr>, Fail> {
    let mut peers = Vec::new();
    for (key, size) in [("peers", 6), ("peers6", 18)] {
        match lookup(dict, key) {
            None => {}
            Some(Value::Bytes(b)) => {
                if b.len() % size != 0 {
                    return Err(Fail::Check(format!(
                        "announce: {key:?} is {} bytes, not a multiple of {size}",
                        b.len()
                    )));
                }
                for c in b.chunks_exact(size) {
                    let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                    let ip = if size == 6 {
                        IpAddr::from(<[u8; 4]>::try_from(&c[..4]).unwrap_or_default())
                    } else {
                        IpAddr::from(<[u8; 16]>::try_from(&c[..16]).unwrap_or_default())
                    };
                    peers.push(SocketAddr::new(ip, port));
                }
            }
            Some(Value::List(list)) => {
                for entry in list {
                    let Value::Dict(d) = entry else {
                        return Err(Fail::Check(format!(
                            "announce: an entry of {key:?} is not a dictionary"
                        )));
                    };
                    let ip = match lookup(d, "ip") {
                        Some(Value::Bytes(b)) => std::str::from_utf8(b)
                            .ok()
                            .and_then(|s| s.parse::<IpAddr>().ok()),
                        _ => None,
                    };
                    let port = match lookup(d, "port") {
                        Some(Value::Int(p)) => u16::try_from(*p).ok(),
                        _ => None,
                    };
                    match (ip, port) {
                        (Some(ip), Some(port)) => peers.push(SocketAddr::new(ip, port)),
                        _ => {
                            return Err(Fail::Check(format!(
                                "announce: an entry of {key:?} has no valid ip and port"
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(Fail::Check(format!(
                    "announce: {key:?} is neither a string nor a list"
                )));
            }
        }
    }
    Ok(peers)
}

fn prefix(what: &str, f: Fail) -> Fail {
    match f {
        Fail::Transport(r) => Fail::Transport(format!("{what}: {r}")),
        Fail::Check(r) => Fail::Check(format!("{what}: {r}")),
    }
}

impl Tracker for Http<'_> {
    fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail> {
        let what = format!("announce {}", peer.name);
        let event = match event {
            Event::Started => "started",
            Event::Stopped => "stopped",
        };
        let query = format!(
            "info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left=1&event={event}&compact=1&numwant=50",
            percent_encode(&ih.0),
            percent_encode(&peer.id.0),
            peer.port
        );
        let dict = self
            .get_dict(&with_query(&self.target.announce, &query))
            .map_err(|f| prefix(&what, f))?;
        Ok(Announced {
            seeders: count(&dict, "complete", &what)?,
            leechers: count(&dict, "incomplete", &what)?,
            peers: http_peers(&dict).map_err(|f| prefix(&what, f))?,
        })
    }

    fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail> {
        let query = format!("info_hash={}", percent_encode(&ih.0));
        let dict = self
            .get_dict(&with_query(&self.target.scrape, &query))
            .map_err(|f| prefix("scrape", f))?;
        let Some(Value::Dict(files)) = lookup(&dict, "files") else {
            return Err(Fail::Check(
                "scrape: the reply has no \"files\" dictionary".into(),
            ));
        };
        let Some(entry) = files
            .iter()
            .find(|(k, _)| k[..] == ih.0[..])
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        let Value::Dict(entry) = entry else {
            return Err(Fail::Check(
                "scrape: the entry for the info hash is not a dictionary".into(),
            ));
        };
        Ok(Some(Counts {
            seeders: count(entry, "complete", "scrape")?,
            leechers: count(entry, "incomplete", "scrape")?,
            snatches: count(entry, "downloaded", "scrape").unwrap_or(0),
        }))
    }
}

fn run_http(target: &HttpTarget, delay: Duration, timeout: Duration) -> Result<usize, Fail> {
    let mut http = Http { target, timeout };
    scenario("http", &mut http, delay)
}

// ---------------------------------------------------------------------------
// A small bencode reader.

#[derive(Debug, PartialEq, Eq)]
enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(Vec<(Vec<u8>, Value)>),
}

fn lookup<'a>(dict: &'a [(Vec<u8>, Value)], key: &str) -> Option<&'a Value> {
    dict.iter()
        .find(|(k, _)| k.as_slice() == key.as_bytes())
        .map(|(_, v)| v)
}

#[derive(Debug, PartialEq, Eq)]
struct BencodeError {
    at: usize,
    what: &'static str,
}

impl fmt::Display for BencodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Decodes exactly one value filling `input`.
fn decode(input: &[u8]) -> Result<Value, BencodeError> {
    let mut pos = 0;
    let v = decode_at(input, &mut pos, 0)?;
    if pos != input.len() {
        return Err(BencodeError {
            at: pos,
            what: "trailing data",
        });
    }
    Ok(v)
}

fn decode_at(input: &[u8], pos: &mut usize, depth: usize) -> Result<Value, BencodeError> {
    let err = |at: usize, what: &'static str| BencodeError { at, what };
    if depth > 32 {
        return Err(err(*pos, "nested too deeply"));
    }
    match input.get(*pos) {
        None => Err(err(*pos, "unexpected end")),
        Some(b'i') => {
            let start = *pos + 1;
            let len = input[start..]
                .iter()
                .position(|&c| c == b'e')
                .ok_or(err(start, "unterminated integer"))?;
            let text = std::str::from_utf8(&input[start..start + len])
                .map_err(|_| err(start, "bad integer"))?;
            let valid = !text.is_empty()
                && text != "-"
                && text != "-0"
                && (text == "0" || !text.trim_start_matches('-').starts_with('0'));
            let n: i64 = match text.parse() {
                Ok(n) if valid => n,
                _ => return Err(err(start, "bad integer")),
            };
            *pos = start + len + 1;
            Ok(Value::Int(n))
        }
        Some(b'l') => {
            *pos += 1;
            let mut list = Vec::new();
            loop {
                match input.get(*pos) {
                    None => return Err(err(*pos, "unterminated list")),
                    Some(b'e') => {
                        *pos += 1;
                        return Ok(Value::List(list));
                    }
                    Some(_) => list.push(decode_at(input, pos, depth + 1)?),
                }
            }
        }
        Some(b'd') => {
            *pos += 1;
            let mut dict = Vec::new();
            loop {
                match input.get(*pos) {
                    None => return Err(err(*pos, "unterminated dictionary")),
                    Some(b'e') => {
                        *pos += 1;
                        return Ok(Value::Dict(dict));
                    }
                    Some(c) if c.is_ascii_digit() => {
                        let Value::Bytes(key) = decode_at(input, pos, depth + 1)? else {
                            return Err(err(*pos, "dictionary key is not a string"));
                        };
                        let value = decode_at(input, pos, depth + 1)?;
                        dict.push((key, value));
                    }
                    Some(_) => return Err(err(*pos, "dictionary key is not a string")),
                }
            }
        }
        Some(c) if c.is_ascii_digit() => {
            let start = *pos;
            let len_end = input[start..]
                .iter()
                .position(|&c| c == b':')
                .map(|i| start + i)
                .ok_or(err(start, "string without ':'"))?;
            let len_text = &input[start..len_end];
            if !len_text.iter().all(u8::is_ascii_digit) || len_text.len() > 9 {
                return Err(err(start, "bad string length"));
            }
            let len: usize = std::str::from_utf8(len_text)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(err(start, "bad string length"))?;
            let body = len_end + 1;
            if input.len() - body < len {
                return Err(err(start, "string runs past the end"));
            }
            *pos = body + len;
            Ok(Value::Bytes(input[body..body + len].to_vec()))
        }
        Some(_) => Err(err(*pos, "unexpected byte")),
    }
}

// ---------------------------------------------------------------------------

/// Runs `karuta e2e`: 0 when everything passed, 1 on the first failure.
pub fn run(args: &E2eArgs) -> ExitCode {
    let started = Instant::now();
    let mut passed = Vec::new();
    if let Some(target) = &args.http {
        println!(
            "http: checking {} (scrape {})",
            target.url,
            with_authority(target, &target.scrape)
        );
        match run_http(target, args.delay, args.timeout) {
            Ok(steps) => passed.push(format!("http ({steps} steps)")),
            Err(f) => return failed("http", &f),
        }
    }
    if let Some(target) = &args.udp {
        if target.url_data.is_empty() {
            println!("udp: checking {}", target.url);
        } else {
            println!(
                "udp: checking {} (URL data {:?})",
                target.url, target.url_data
            );
        }
        match run_udp(target, args.delay, args.timeout) {
            Ok(steps) => passed.push(format!("udp ({steps} steps)")),
            Err(f) => return failed("udp", &f),
        }
    }
    println!(
        "karuta e2e: all checks passed: {} in {:.2}s",
        passed.join(", "),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn with_authority(t: &HttpTarget, target: &str) -> String {
    format!("http://{}{target}", t.authority)
}

fn failed(proto: &str, f: &Fail) -> ExitCode {
    let _ = std::io::stdout().flush();
    eprintln!("karuta e2e: {proto}: {}", f.reason());
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let t = parse_http_url("http://127.0.0.1:6969/announce").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 6969));
        assert_eq!(
            (t.announce.as_str(), t.scrape.as_str()),
            ("/announce", "/scrape")
        );
        let t = parse_http_url("http://[::1]:80/abc/announce.php?passkey=x").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority, "[::1]:80");
        assert_eq!(t.scrape, "/abc/scrape.php?passkey=x");
        let t = parse_http_url("HTTP://tracker.example/x/announce").unwrap();
        assert_eq!((t.port, t.scrape.as_str()), (80, "/x/scrape"));
        assert!(
            parse_http_url("http://h:1/ann")
                .unwrap_err()
                .contains("BEP 48")
        );
        assert!(parse_http_url("http://h:1").unwrap_err().contains("scrape"));
        assert!(
            parse_http_url("https://h/announce")
                .unwrap_err()
                .contains("only http:// and udp://")
        );
        assert!(parse_http_url("udp://h:1").unwrap_err().contains("http://"));
        assert!(parse_http_url("http://h:0/announce").is_err());
        assert!(parse_http_url("http://:1/announce").is_err());
    }

    #[test]
    fn udp_urls() {
        let t = parse_udp_url("udp://127.0.0.1:6969").unwrap();
        assert_eq!((t.port, t.url_data.as_str()), (6969, ""));
        let t = parse_udp_url("udp://[::1]:6969/k/announce?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.url_data.as_str()),
            ("::1", "/k/announce?x=1")
        );
        assert!(parse_udp_url("udp://host").unwrap_err().contains("no port"));
        assert!(parse_udp_url("http://host:1").is_err());
    }

    #[test]
    fn bencode() {
        assert_eq!(
            decode(b"d1:ai-3e1:bl2:xyee").unwrap(),
            Value::Dict(vec![
                (b"a".to_vec(), Value::Int(-3)),
                (
                    b"b".to_vec(),
                    Value::List(vec![Value::Bytes(b"xy".to_vec())])
                ),
            ])
        );
        for bad in [
            &b""[..],
            b"i",
            b"ie",
            b"i-0e",
            b"i01e",
            b"5:ab",
            b"d1:a",
            b"di1ei2ee",
            b"le1",
            b"x",
            b"99999999999999999999:",
            b"i99999999999999999999e",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn http_bodies() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(complete_body(r, false).unwrap().unwrap().1, b"hi");
        assert!(complete_body(&r[..r.len() - 1], false).unwrap().is_none());
        let c =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n";
        assert_eq!(complete_body(c, false).unwrap().unwrap().1, b"hi!");
        let e = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        let (head, body) = complete_body(e, true).unwrap().unwrap();
        assert_eq!((head.status, body.as_slice()), (404, &b"nope"[..]));
        assert!(complete_body(b"garbage", true).is_err());
        assert!(complete_body(b"SSH-2.0\r\n\r\n", true).is_err());
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode(b"a-Z.~_ \x00\xff/"), "a-Z.~_%20%00%FF%2F");
    }

    #[test]
    fn random_values_differ() {
        let a: [u8; 20] = random_bytes();
        let b: [u8; 20] = random_bytes();
        assert_ne!(a, b);
        assert_eq!(&random_peer_id().0[..8], b"-KE0001-");
    }
}
