//! The HTTP frontend over real sockets on 127.0.0.1 and ::1: announce and
//! scrape replies, every error path, routes with parameters, proxies, HTTPS,
//! keep-alive and the timeouts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittorrent::{AnnounceRequest, AnnounceResponse, ClientError};
use frontend_http::{HttpConfig, HttpFrontend};
use storage_memory::{MemoryConfig, MemoryStore};
use tracker::config::ConfigDuration;
use tracker::{
    Hook, HookFuture, LogicConfig, NamedHook, ReadyOrBoxed, RequestContext, SharedLogic,
    TrackerLogic,
};

/// Tells the client what the hooks saw (`echo`), sets a warning (`warn`), and
/// refuses the info hash 0xee….
struct Echo;

impl Hook for Echo {
    fn handle_announce<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        let p = &req.params;
        if p.get("echo").is_some() {
            let msg = format!(
                "passkey={} rest={} query_passkey={} ip={}",
                p.route_param("passkey").unwrap_or("-"),
                p.route_param("rest").unwrap_or("-"),
                p.get_str("passkey").unwrap_or("-"),
                req.peer.ip()
            );
            return ReadyOrBoxed::ready(Err(ClientError::owned(msg).into()));
        }
        if p.get("warn").is_some() {
            resp.warning_message = Some("you have been warned".into());
        }
        if req.info_hash.0 == [0xee; 20] {
            return ReadyOrBoxed::ready(Err(ClientError::new("unapproved torrent").into()));
        }
        ReadyOrBoxed::ready(Ok(()))
    }
}

fn start(tweak: impl FnOnce(&mut HttpConfig)) -> HttpFrontend {
    let mut config = HttpConfig {
        addr: "127.0.0.1:0".into(),
        announce_routes: vec![
            "/announce".into(),
            "/:passkey/announce".into(),
            "/t/*rest".into(),
        ],
        scrape_routes: vec!["/scrape".into(), "/:passkey/scrape".into()],
        max_scrape_infohashes: 3,
        ..HttpConfig::default()
    };
    tweak(&mut config);
    let store = Arc::new(
        MemoryStore::new(MemoryConfig {
            shard_count: 8,
            ..MemoryConfig::default()
        })
        .expect("a valid memory config"),
    );
    let logic = TrackerLogic::new(
        LogicConfig::default(),
        store,
        vec![NamedHook::new("echo", Arc::new(Echo))],
        vec![],
    );
    HttpFrontend::start(
        &config,
        Arc::new(SharedLogic::new(logic)),
        Default::default(),
    )
    .unwrap()
    .unwrap()
}

/// A small bencode reader for the assertions.
#[derive(Clone, Debug, PartialEq)]
enum B {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<B>),
    Dict(BTreeMap<Vec<u8>, B>),
}

impl B {
    fn parse(data: &[u8]) -> B {
        let (v, rest) = B::read(data);
        assert!(rest.is_empty(), "trailing bytes after bencode");
        v
    }

    fn read(d: &[u8]) -> (B, &[u8]) {
        match d[0] {
            b'i' => {
                let end = d.iter().position(|&c| c == b'e').unwrap();
                (
                    B::Int(std::str::from_utf8(&d[1..end]).unwrap().parse().unwrap()),
                    &d[end + 1..],
                )
            }
            b'l' => {
                let mut rest = &d[1..];
                let mut items = Vec::new();
                while rest[0] != b'e' {
                    let (v, r) = B::read(rest);
                    items.push(v);
                    rest = r;
                }
                (B::List(items), &rest[1..])
            }
            b'd' => {
                let mut rest = &d[1..];
                let mut map = BTreeMap::new();
                let mut last: Option<Vec<u8>> = None;
                while rest[0] != b'e' {
                    let (B::Bytes(k), r) = B::read(rest) else {
                        panic!("dict key not a string")
                    };
                    assert!(last.as_ref().is_none_or(|l| *l < k), "dict keys not sorted");
                    let (v, r) = B::read(r);
                    last = Some(k.clone());
                    map.insert(k, v);
                    rest = r;
                }
                (B::Dict(map), &rest[1..])
            }
            _ => {
                let colon = d.iter().position(|&c| c == b':').unwrap();
                let len: usize = std::str::from_utf8(&d[..colon]).unwrap().parse().unwrap();
                (
                    B::Bytes(d[colon + 1..colon + 1 + len].to_vec()),
                    &d[colon + 1 + len..],
                )
            }
        }
    }

    fn get(&self, key: &str) -> &B {
        match self {
            B::Dict(m) => m
                .get(key.as_bytes())
                .unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            _ => panic!("not a dict: {self:?}"),
        }
    }

    fn has(&self, key: &str) -> bool {
        matches!(self, B::Dict(m) if m.contains_key(key.as_bytes()))
    }

    fn int(&self) -> i64 {
        match self {
            B::Int(i) => *i,
            _ => panic!("not an int: {self:?}"),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            B::Bytes(b) => b,
            _ => panic!("not bytes: {self:?}"),
        }
    }

    fn failure(&self) -> String {
        String::from_utf8(self.get("failure reason").bytes().to_vec()).unwrap()
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn bencode(&self) -> B {
        assert_eq!(self.status, 200, "{}", self.head);
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{}",
            self.head
        );
        B::parse(&self.body)
    }
}

/// Reads one HTTP/1.1 response (Content-Length framed) from `s`.
fn read_reply(s: &mut TcpStream) -> Option<Reply> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(byte[0]),
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(Reply { status, head, body })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// One GET on a fresh connection.
fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = connect(addr);
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: tracker\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_reply(&mut s).expect("a reply")
}

fn enc(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn announce_query(ih: u8, peer: u8, port: u16, extra: &str) -> String {
    format!(
        "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=10{extra}",
        enc(&[ih; 20]),
        enc(&[peer; 20])
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn compact_announces_over_ipv4() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    let first = get(
        addr,
        &format!("/announce?{}", announce_query(1, 1, 7001, "&event=started")),
        &[],
    )
    .bencode();
    assert_eq!(first.get("complete").int(), 0);
    assert_eq!(first.get("incomplete").int(), 1);
    assert_eq!(first.get("interval").int(), 1800);
    assert_eq!(first.get("min interval").int(), 900);
    assert_eq!(first.get("downloaded").int(), 0);
    assert_eq!(first.get("external ip").bytes(), &[127, 0, 0, 1], "BEP 24");
    assert_eq!(first.get("peers").bytes(), b"", "never the announcer");
    assert!(!first.has("peers6"));

    let second = get(
        addr,
        &format!(
            "/announce?{}",
            announce_query(1, 2, 7002, "&event=completed&left=0&compact=1")
        ),
        &[],
    )
    .bencode();
    assert_eq!(
        second.get("peers").bytes(),
        &[127, 0, 0, 1, 0x1b, 0x59],
        "6-byte compact peer 127.0.0.1:7001"
    );
    assert_eq!(
        (second.get("complete").int(), second.get("incomplete").int()),
        (1, 1)
    );
    assert_eq!(second.get("downloaded").int(), 1, "snatches");

    // Non-compact on request: a list of {ip, port}.
    let third = get(
        addr,
        &format!("/announce?{}", announce_query(1, 3, 7003, "&compact=0")),
        &[],
    )
    .bencode();
    let B::List(peers) = third.get("peers") else {
        panic!()
    };
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert_eq!(p.get("ip").bytes(), b"127.0.0.1");
        assert!([7001, 7002].contains(&p.get("port").int()));
    }
    // numwant caps the list.
    let one = get(
        addr,
        &format!("/announce?{}", announce_query(1, 4, 7004, "&numwant=1")),
        &[],
    )
    .bencode();
    assert_eq!(one.get("peers").bytes().len(), 6);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_announces_carry_peers6() {
    let t = start(|c| c.addr = "[::1]:0".into());
    let addr = t.local_addr().unwrap();
    get(
        addr,
        &format!("/announce?{}", announce_query(2, 1, 7001, "")),
        &[],
    )
    .bencode();
    let r = get(
        addr,
        &format!("/announce?{}", announce_query(2, 2, 7002, "")),
        &[],
    )
    .bencode();
    let peers6 = r.get("peers6").bytes();
    assert_eq!(peers6.len(), 18);
    assert_eq!(&peers6[..16], &std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(&peers6[16..], &7001u16.to_be_bytes());
    assert_eq!(r.get("peers").bytes(), b"");
    assert_eq!(r.get("external ip").bytes().len(), 16);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scrapes_report_complete_incomplete_downloaded() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    get(
        addr,
        &format!(
            "/announce?{}",
            announce_query(3, 1, 7001, "&left=0&event=completed")
        ),
        &[],
    )
    .bencode();
    get(
        addr,
        &format!("/announce?{}", announce_query(3, 2, 7002, "")),
        &[],
    )
    .bencode();
    let q = format!(
        "/scrape?info_hash={}&info_hash={}",
        enc(&[3; 20]),
        enc(&[4; 20])
    );
    let files = get(addr, &q, &[]).bencode();
    let B::Dict(files) = files.get("files") else {
        panic!()
    };
    let three = &files[&vec![3u8; 20]];
    assert_eq!(
        (
            three.get("complete").int(),
            three.get("incomplete").int(),
            three.get("downloaded").int()
        ),
        (1, 1, 1)
    );
    let four = &files[&vec![4u8; 20]];
    assert_eq!(four.get("complete").int() + four.get("incomplete").int(), 0);
    // Capped at max_scrape_infohashes (3).
    let many: String = (10..15u8)
        .map(|i| format!("info_hash={}&", enc(&[i; 20])))
        .collect();
    let capped = get(addr, &format!("/scrape?{many}"), &[]).bencode();
    let B::Dict(files) = capped.get("files") else {
        panic!()
    };
    assert_eq!(files.len(), 3);
    // With a passkey route too.
    assert!(
        get(
            addr,
            &format!("/key123/scrape?info_hash={}", enc(&[3; 20])),
            &[]
        )
        .bencode()
        .has("files")
    );
    assert_eq!(
        get(addr, "/scrape", &[]).bencode().failure(),
        "no info_hash parameter supplied"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_announces_get_a_failure_reason() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    let ih = enc(&[5; 20]);
    let base = announce_query(5, 1, 7001, "");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{base}&event=sideways"),
            "failed to provide valid client event",
        ),
        (
            base.replace(&format!("info_hash={ih}&"), ""),
            "no info_hash parameter supplied",
        ),
        (
            format!("{base}&info_hash={}", enc(&[6; 20])),
            "multiple info_hash parameters supplied",
        ),
        (format!("{base}&info_hash=%01"), "provided invalid infohash"),
        (
            base.replace(&format!("peer_id={}", enc(&[1; 20])), ""),
            "failed to parse parameter: peer_id",
        ),
        (
            base.replace(&format!("peer_id={}", enc(&[1; 20])), "peer_id=short"),
            "failed to provide valid peer_id",
        ),
        (
            base.replace("&left=10", ""),
            "failed to parse parameter: left",
        ),
        (
            base.replace("&downloaded=0", "&downloaded=-5"),
            "failed to parse parameter: downloaded",
        ),
        (
            base.replace("&uploaded=0", ""),
            "failed to parse parameter: uploaded",
        ),
        (
            format!("{base}&numwant=lots"),
            "failed to parse parameter: numwant",
        ),
        (
            base.replace("&port=7001", ""),
            "failed to parse parameter: port",
        ),
        (format!("{base}&x=%zz"), "invalid query escaping"),
        (announce_query(0xee, 1, 7001, ""), "unapproved torrent"),
    ];
    for (query, want) in cases {
        let r = get(addr, &format!("/announce?{query}"), &[]);
        assert_eq!(r.status, 200, "{query}");
        assert_eq!(r.bencode().failure(), want, "{query}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn route_parameters_and_warnings_reach_hooks_and_replies() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    let q = announce_query(7, 1, 7001, "&echo&passkey=fromquery");
    assert_eq!(
        get(
            addr,
            &format!("/d8e8fca2dc0f896fd7cb4cb0031ba249/announce?{q}"),
            &[]
        )
        .bencode()
        .failure(),
        "passkey=d8e8fca2dc0f896fd7cb4cb0031ba249 rest=- query_passkey=fromquery ip=127.0.0.1"
    );
    assert_eq!(
        get(addr, &format!("/t/a/b/announce?{q}"), &[])
            .bencode()
            .failure(),
        "passkey=- rest=/a/b/announce query_passkey=fromquery ip=127.0.0.1"
    );
    let warned = get(
        addr,
        &format!("/announce?{}", announce_query(7, 2, 7002, "&warn")),
        &[],
    )
    .bencode();
    assert_eq!(
        warned.get("warning message").bytes(),
        b"you have been warned"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_tracker_paths_methods_and_oversized_requests_get_4xx() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    assert_eq!(get(addr, "/", &[]).status, 404);
    assert_eq!(get(addr, "/favicon.ico", &[]).status, 404);
    assert_eq!(get(addr, "/announce/", &[]).status, 404);
    let mut s = connect(addr);
    s.write_all(b"POST /announce HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut s).unwrap();
    assert_eq!(r.status, 405);
    assert!(r.head.to_ascii_lowercase().contains("allow: get, head"));
    // A request line over the 8 KiB head limit.
    let long = format!(
        "/announce?{}&pad={}",
        announce_query(8, 1, 7001, ""),
        "x".repeat(9000)
    );
    let r = get(addr, &long, &[]);
    assert_eq!(r.status, 431, "oversized");
    // Too many headers.
    let headers: Vec<(String, String)> =
        (0..100).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = get(
        addr,
        &format!("/announce?{}", announce_query(8, 1, 7001, "")),
        &refs,
    );
    assert_eq!(r.status, 431, "too many headers");
    // Not HTTP at all: the connection is closed, the server keeps serving.
    let mut s = connect(addr);
    s.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    let _ = read_reply(&mut s);
    assert_eq!(get(addr, "/scrape", &[]).status, 200);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_are_believed_only_when_trusted() {
    let q = format!("/announce?{}", announce_query(9, 1, 7001, "&echo"));
    let ip_of = |addr, headers: &[(&str, &str)]| {
        let failure = get(addr, &q, headers).bencode().failure();
        failure.rsplit("ip=").next().unwrap().to_owned()
    };
    // Trusted proxy (127.0.0.1): X-Forwarded-For is read from the right.
    let trusted = start(|c| c.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()]);
    let a = trusted.local_addr().unwrap();
    assert_eq!(ip_of(a, &[("X-Forwarded-For", "9.9.9.9")]), "9.9.9.9");
    assert_eq!(
        ip_of(a, &[("X-Forwarded-For", "6.6.6.6, 9.9.9.9, 10.1.1.1")]),
        "9.9.9.9",
        "a client cannot push a forged hop past the proxy"
    );
    assert_eq!(ip_of(a, &[]), "127.0.0.1");
    // Untrusted source: the header is ignored.
    let untrusted = start(|c| c.trusted_proxies = vec!["10.0.0.0/8".into()]);
    assert_eq!(
        ip_of(
            untrusted.local_addr().unwrap(),
            &[("X-Forwarded-For", "9.9.9.9")]
        ),
        "127.0.0.1"
    );
    // real_ip_header: chihaya's behaviour without trusted proxies...
    let chihaya = start(|c| c.real_ip_header = "x-real-ip".into());
    let c = chihaya.local_addr().unwrap();
    assert_eq!(ip_of(c, &[("X-Real-IP", "8.8.8.8")]), "8.8.8.8");
    assert_eq!(
        ip_of(c, &[("X-Forwarded-For", "9.9.9.9")]),
        "127.0.0.1",
        "XFF needs trusted proxies"
    );
    assert_eq!(
        get(c, &q, &[("X-Real-IP", "nonsense")]).bencode().failure(),
        "failed to parse peer IP address"
    );
    // ...and only from trusted proxies when they are configured.
    let strict = start(|c| {
        c.real_ip_header = "x-real-ip".into();
        c.trusted_proxies = vec!["10.0.0.0/8".into()];
    });
    assert_eq!(
        ip_of(strict.local_addr().unwrap(), &[("X-Real-IP", "8.8.8.8")]),
        "127.0.0.1"
    );
    for t in [trusted, untrusted, chihaya, strict] {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn port_zero_is_answered_but_not_handed_out() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    get(
        addr,
        &format!("/announce?{}", announce_query(14, 1, 7001, "")),
        &[],
    )
    .bencode();
    let zero = get(
        addr,
        &format!("/announce?{}", announce_query(14, 2, 0, "")),
        &[],
    )
    .bencode();
    assert_eq!(zero.get("peers").bytes().len(), 6, "it gets peers");
    assert_eq!(zero.get("incomplete").int(), 1, "but is not counted");
    let other = get(
        addr,
        &format!("/announce?{}", announce_query(14, 3, 7003, "")),
        &[],
    )
    .bencode();
    assert_eq!(other.get("peers").bytes().len(), 6, "nor handed out");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_addresses_only_when_allowed() {
    let q = format!(
        "/announce?{}",
        announce_query(10, 1, 7001, "&echo&ip=10.1.2.3")
    );
    let strict = start(|_| {});
    assert!(
        get(strict.local_addr().unwrap(), &q, &[])
            .bencode()
            .failure()
            .ends_with("ip=127.0.0.1")
    );
    let spoofable = start(|c| c.allow_ip_spoofing = true);
    assert!(
        get(spoofable.local_addr().unwrap(), &q, &[])
            .bencode()
            .failure()
            .ends_with("ip=10.1.2.3")
    );
    strict.stop().await;
    spoofable.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_on_and_off() {
    let on = start(|c| c.enable_keepalive = true);
    let mut s = connect(on.local_addr().unwrap());
    for i in 0..3u8 {
        let req = format!(
            "GET /announce?{} HTTP/1.1\r\nHost: t\r\n\r\n",
            announce_query(11, i, 7000 + u16::from(i), "")
        );
        s.write_all(req.as_bytes()).unwrap();
        assert_eq!(
            read_reply(&mut s)
                .expect("a reply on the same connection")
                .status,
            200
        );
    }
    let off = start(|c| c.enable_keepalive = false);
    let mut s = connect(off.local_addr().unwrap());
    let req = format!(
        "GET /announce?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        announce_query(11, 9, 7009, "")
    );
    s.write_all(req.as_bytes()).unwrap();
    let r = read_reply(&mut s).unwrap();
    assert!(
        r.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        r.head
    );
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "the server closes the connection"
    );
    on.stop().await;
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off() {
    let t = start(|c| {
        c.read_timeout = ConfigDuration(Duration::from_millis(600));
        c.idle_timeout = ConfigDuration(Duration::from_millis(900));
        c.enable_keepalive = true;
    });
    let addr = t.local_addr().unwrap();
    // A request dribbling in slower than read_timeout: cut off before it is complete.
    let mut s = connect(addr);
    let req = format!(
        "GET /announce?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        announce_query(12, 1, 7001, "")
    );
    let started = Instant::now();
    let mut closed = false;
    for chunk in req.as_bytes().chunks(8) {
        if s.write_all(chunk).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !closed {
        let mut buf = [0u8; 64];
        closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
    }
    assert!(closed, "a dribbling request must not be served");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A client that connects and sends nothing is cut off after read_timeout.
    let mut silent = connect(addr);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A kept-alive connection survives a pause shorter than idle_timeout
    // (though longer than read_timeout) and is closed after a longer one.
    let mut s = connect(addr);
    let req = format!(
        "GET /announce?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        announce_query(12, 2, 7002, "")
    );
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(700));
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(
        read_reply(&mut s)
            .expect("still open after 700 ms idle")
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(1500));
    let _ = s.write_all(req.as_bytes());
    assert!(read_reply(&mut s).is_none(), "closed after 1.5 s idle");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_certificate_made_here() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let dir = std::env::temp_dir().join(format!("karuta-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let t = start(|c| {
        c.addr = String::new();
        c.https_addr = "127.0.0.1:0".into();
        c.tls_cert_path = cert_path.display().to_string();
        c.tls_key_path = key_path.display().to_string();
    });
    assert!(
        t.local_addr().is_none(),
        "an empty addr disables the plain listener"
    );
    let addr = t.https_local_addr().unwrap();

    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let req = format!(
            "GET /announce?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            announce_query(13, 1, 7001, "")
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("8:intervali1800e"), "{text}");
    }
    // Plain HTTP on the TLS port is refused, and the listener keeps serving.
    let mut s = connect(addr);
    s.write_all(b"GET /announce HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
    t.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tls_files_and_empty_addresses() {
    let logic = || {
        Arc::new(SharedLogic::new(TrackerLogic::new(
            LogicConfig::default(),
            Arc::new(MemoryStore::new(MemoryConfig::default()).expect("a valid memory config")),
            vec![],
            vec![],
        )))
    };
    let none = HttpFrontend::start(&HttpConfig::default(), logic(), Default::default()).unwrap();
    assert!(none.is_none(), "both addresses empty: disabled");
    let config = HttpConfig {
        https_addr: "127.0.0.1:0".into(),
        tls_cert_path: "/nonexistent/cert.pem".into(),
        tls_key_path: "/nonexistent/key.pem".into(),
        ..HttpConfig::default()
    };
    let err = HttpFrontend::start(&config, logic(), Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("tls_cert_path: cannot read \"/nonexistent/cert.pem\""),
        "{err}"
    );
}
