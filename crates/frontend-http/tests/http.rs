//! The HTTP frontend over real sockets on 127.0.0.1 and ::1: announce and
//! scrape replies, every error path, routes with parameters, proxies, HTTPS,
//! keep-alive and the timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bittorrent::ClientError;
use bittorrent::bencode::Value;
use frontend_http::{HttpConfig, HttpFrontend};
use test_support::bencode::{self, Fields};
use test_support::http::{self, Response};
use test_support::logic::shared_memory_logic;
use test_support::{TempDir, percent_encode};
use tracker::config::ConfigDuration;
use tracker::testing::FnHook;
use tracker::{HookFuture, NamedHook, ReadyOrBoxed};

/// Tells the client what the hooks saw (`echo`), sets a warning (`warn`), and
/// refuses the info hash 0xee….
fn echo() -> FnHook {
    FnHook::new().on_announce(|_, req, resp| {
        let p = &req.params;
        if p.get("echo").is_some() {
            let msg = format!(
                "passkey={} rest={} query_passkey={} ip={}",
                p.route_param("passkey").unwrap_or("-"),
                p.route_param("rest").unwrap_or("-"),
                p.get_str("passkey").unwrap_or("-"),
                req.peer.ip()
            );
            return Err(ClientError::owned(msg).into());
        }
        if p.get("warn").is_some() {
            resp.warning_message = Some("you have been warned".into());
        }
        if req.info_hash.0 == [0xee; 20] {
            return Err(ClientError::new("unapproved torrent").into());
        }
        Ok(())
    })
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
    let logic = shared_memory_logic(vec![NamedHook::new("echo", Arc::new(echo()))], vec![]);
    HttpFrontend::start(&config, logic, Default::default())
        .unwrap()
        .unwrap()
}

/// One GET on a fresh connection.
fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    http::get(addr, target)
        .headers(headers)
        .timeout(Duration::from_secs(5))
        .send()
        .expect("a reply")
}

/// Reads one reply on a connection the test drives itself.
fn read_reply(s: &mut TcpStream) -> Option<Response> {
    http::read_response(s, Duration::from_secs(5)).ok()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A tracker reply: status 200, `text/plain`, strictly bencoded.
trait Bencoded {
    fn bencode(self) -> Value<'static>;
}

impl Bencoded for Response {
    fn bencode(self) -> Value<'static> {
        assert_eq!(self.status, 200, "{}", self.head);
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{}",
            self.head
        );
        bencode::strict_static(self.body).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn announce_query(ih: u8, peer: u8, port: u16, extra: &str) -> String {
    format!(
        "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=10{extra}",
        percent_encode(&[ih; 20]),
        percent_encode(&[peer; 20])
    )
}

/// The bencoded reply to one announce of [`announce_query`] on a fresh
/// connection.
fn announce(addr: SocketAddr, ih: u8, peer: u8, port: u16, extra: &str) -> Value<'static> {
    let target = format!("/announce?{}", announce_query(ih, peer, port, extra));
    get(addr, &target, &[]).bencode()
}

#[tokio::test(flavor = "multi_thread")]
async fn compact_announces_over_ipv4() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    let first = announce(addr, 1, 1, 7001, "&event=started");
    assert_eq!(first.at("complete").int(), 0);
    assert_eq!(first.at("incomplete").int(), 1);
    assert_eq!(first.at("interval").int(), 1800);
    assert_eq!(first.at("min interval").int(), 900);
    assert_eq!(first.at("downloaded").int(), 0);
    assert_eq!(first.at("external ip").bytes(), &[127, 0, 0, 1], "BEP 24");
    assert_eq!(first.at("peers").bytes(), b"", "never the announcer");
    assert!(!first.has("peers6"));

    let second = announce(addr, 1, 2, 7002, "&event=completed&left=0&compact=1");
    assert_eq!(
        second.at("peers").bytes(),
        &[127, 0, 0, 1, 0x1b, 0x59],
        "6-byte compact peer 127.0.0.1:7001"
    );
    assert_eq!(
        (second.at("complete").int(), second.at("incomplete").int()),
        (1, 1)
    );
    assert_eq!(second.at("downloaded").int(), 1, "snatches");

    // Non-compact on request: a list of {ip, port}.
    let third = announce(addr, 1, 3, 7003, "&compact=0");
    let peers = third.at("peers").list();
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert_eq!(p.at("ip").bytes(), b"127.0.0.1");
        assert!([7001, 7002].contains(&p.at("port").int()));
    }
    // numwant caps the list.
    let one = announce(addr, 1, 4, 7004, "&numwant=1");
    assert_eq!(one.at("peers").bytes().len(), 6);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_announces_carry_peers6() {
    let t = start(|c| c.addr = "[::1]:0".into());
    let addr = t.local_addr().unwrap();
    announce(addr, 2, 1, 7001, "");
    let r = announce(addr, 2, 2, 7002, "");
    let peers6 = r.at("peers6").bytes();
    assert_eq!(peers6.len(), 18);
    assert_eq!(&peers6[..16], &std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(&peers6[16..], &7001u16.to_be_bytes());
    assert_eq!(r.at("peers").bytes(), b"");
    assert_eq!(r.at("external ip").bytes().len(), 16);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scrapes_report_complete_incomplete_downloaded() {
    let t = start(|_| {});
    let addr = t.local_addr().unwrap();
    announce(addr, 3, 1, 7001, "&left=0&event=completed");
    announce(addr, 3, 2, 7002, "");
    let q = format!(
        "/scrape?info_hash={}&info_hash={}",
        percent_encode(&[3; 20]),
        percent_encode(&[4; 20])
    );
    let files = get(addr, &q, &[]).bencode();
    let files = files.at("files");
    let three = files.entry(&[3u8; 20]);
    assert_eq!(
        (
            three.at("complete").int(),
            three.at("incomplete").int(),
            three.at("downloaded").int()
        ),
        (1, 1, 1)
    );
    let four = files.entry(&[4u8; 20]);
    assert_eq!(four.at("complete").int() + four.at("incomplete").int(), 0);
    // Capped at max_scrape_infohashes (3).
    let many: String = (10..15u8)
        .map(|i| format!("info_hash={}&", percent_encode(&[i; 20])))
        .collect();
    let capped = get(addr, &format!("/scrape?{many}"), &[]).bencode();
    let files = capped.at("files").dict();
    assert_eq!(files.len(), 3);
    // With a passkey route too.
    assert!(
        get(
            addr,
            &format!("/key123/scrape?info_hash={}", percent_encode(&[3; 20])),
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
    let ih = percent_encode(&[5; 20]);
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
            format!("{base}&info_hash={}", percent_encode(&[6; 20])),
            "multiple info_hash parameters supplied",
        ),
        (format!("{base}&info_hash=%01"), "provided invalid infohash"),
        (
            base.replace(&format!("peer_id={}", percent_encode(&[1; 20])), ""),
            "failed to parse parameter: peer_id",
        ),
        (
            base.replace(
                &format!("peer_id={}", percent_encode(&[1; 20])),
                "peer_id=short",
            ),
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
    let warned = announce(addr, 7, 2, 7002, "&warn");
    assert_eq!(
        warned.at("warning message").bytes(),
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
    announce(addr, 14, 1, 7001, "");
    let zero = announce(addr, 14, 2, 0, "");
    assert_eq!(zero.at("peers").bytes().len(), 6, "it gets peers");
    assert_eq!(zero.at("incomplete").int(), 1, "but is not counted");
    let other = announce(addr, 14, 3, 7003, "");
    assert_eq!(other.at("peers").bytes().len(), 6, "nor handed out");
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

    let dir = TempDir::new("https-cert");
    let cert = test_support::tls::SelfSigned::new(&["localhost", "127.0.0.1"]);
    let (cert_path, key_path) = cert.write(dir.path());
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
        roots.add(cert.cert_der()).unwrap();
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
        // A head over the limit gets its 431 and failure reason through TLS.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let req = format!(
            "GET /announce?{}&pad={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            announce_query(13, 1, 7001, ""),
            "x".repeat(20_000)
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nd14:failure reason57:request head too large: at most 8192 bytes and 64 headerse"),
            "{text}"
        );
    }
    // Plain HTTP on the TLS port is refused, and the listener keeps serving.
    let mut s = connect(addr);
    s.write_all(b"GET /announce HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tls_files_and_empty_addresses() {
    let logic = || shared_memory_logic(vec![], vec![]);
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

const SLOW_POST_HOOK: Duration = Duration::from_secs(2);

/// Sleeps `SLOW_POST_HOOK`, then counts one in `done`.
fn finish(done: &Arc<AtomicUsize>) -> HookFuture<'static> {
    let done = Arc::clone(done);
    ReadyOrBoxed::boxed(async move {
        tokio::time::sleep(SLOW_POST_HOOK).await;
        done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

/// A post-hook that takes `SLOW_POST_HOOK` over every announce and scrape,
/// then counts it in `done`.
fn slow_post_hook(done: &Arc<AtomicUsize>) -> FnHook {
    let (announces, scrapes) = (Arc::clone(done), Arc::clone(done));
    FnHook::new()
        .on_announce_future(move |_, _, _| finish(&announces))
        .on_scrape_future(move |_, _, _| finish(&scrapes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_http_post_hook_delays_neither_announce_nor_scrape_replies() {
    let done = Arc::new(AtomicUsize::new(0));
    let logic = shared_memory_logic(
        vec![],
        vec![NamedHook::new("slow", Arc::new(slow_post_hook(&done)))],
    );
    // Timeouts longer than the hook, so a delayed reply arrives late rather
    // than not at all.
    let config = HttpConfig {
        addr: "127.0.0.1:0".into(),
        read_timeout: ConfigDuration(4 * SLOW_POST_HOOK),
        write_timeout: ConfigDuration(4 * SLOW_POST_HOOK),
        ..HttpConfig::default()
    };
    let t = HttpFrontend::start(&config, logic, Default::default())
        .unwrap()
        .unwrap();
    let addr = t.local_addr().unwrap();
    let targets = [
        format!("/announce?{}", announce_query(5, 1, 7001, "")),
        format!("/scrape?info_hash={}", percent_encode(&[5; 20])),
    ];
    for target in &targets {
        let started = Instant::now();
        let reply = tokio::task::block_in_place(|| get(addr, target, &[]));
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{target}");
        assert!(
            took < SLOW_POST_HOOK / 2,
            "{target}: the reply waited {took:?} for the post-hook"
        );
    }
    // The post-hooks still run, after the replies.
    let deadline = Instant::now() + 3 * SLOW_POST_HOOK;
    while done.load(Ordering::SeqCst) < targets.len() {
        assert!(Instant::now() < deadline, "the post-hooks never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.stop().await;
}
