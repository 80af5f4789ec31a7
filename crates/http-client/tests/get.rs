//! The client against real sockets on 127.0.0.1 and ::1: servers that answer
//! with fixed bytes (so every framing and every broken reply is exact), one
//! that never answers, one that refuses, and an HTTPS server whose
//! self-signed certificate is trusted only through a CA file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_client::{Client, Error, SetupError, StatusCode, Url, header};
use test_support::canned::CannedServer;

/// A server on 127.0.0.1 that answers every connection with `reply`.
async fn canned(reply: &[u8]) -> CannedServer {
    CannedServer::start("127.0.0.1:0", reply, None).await
}

/// `path` on `server`.
fn url(server: &CannedServer, path: &str) -> Url {
    Url::parse(&format!("http://{}{path}", server.addr())).unwrap()
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get(reply: &'static [u8]) -> Result<http_client::Response, Error> {
    let server = canned(reply).await;
    client().get(&url(&server, "/")).await
}

#[tokio::test]
async fn sends_one_get_with_host_and_the_callers_headers() {
    let server = canned(b"HTTP/1.1 200 OK\r\nX-Test: yes\r\nContent-Length: 2\r\n\r\nhi").await;
    let client = Client::builder()
        .header(header::USER_AGENT, header::HeaderValue::from_static("t/1"))
        .header(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        )
        .build()
        .unwrap();
    let r = client.get(&url(&server, "/a/b?x=1&y=%00")).await.unwrap();
    assert_eq!((r.status, r.reason.as_str()), (StatusCode::OK, "OK"));
    assert_eq!(r.headers["x-test"], "yes");
    assert_eq!(&r.body[..], b"hi");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let head = requests[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /a/b?x=1&y=%00 http/1.1\r\n"),
        "{head}"
    );
    for want in [
        format!("host: {}\r\n", server.addr()),
        "user-agent: t/1\r\n".into(),
        "accept: application/json\r\n".into(),
        "connection: close\r\n".into(),
    ] {
        assert!(head.contains(&want), "no {want:?} in {head}");
    }
}

#[tokio::test]
async fn reads_every_framing() {
    // Content-Length: what follows the body is not part of it.
    let r = get(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}xx")
        .await
        .unwrap();
    assert_eq!(&r.body[..], b"{}");
    // Chunks, with an extension.
    let r = get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3;x=y\r\nab\"\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(&r.body[..], b"{\"ab\"");
    let r =
        get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n")
            .await
            .unwrap();
    assert_eq!(&r.body[..], b"hi!");
    // HTTP/1.0, the body delimited by the close.
    let r = get(b"HTTP/1.0 404 Not Found\r\n\r\nnope").await.unwrap();
    assert_eq!(
        (r.status, r.reason.as_str(), &r.body[..]),
        (StatusCode::NOT_FOUND, "Not Found", &b"nope"[..])
    );
}

#[tokio::test]
async fn a_status_other_than_200_is_an_error_on_request() {
    let e = get(b"HTTP/1.0 404 Not Found\r\n\r\nnope\r\n")
        .await
        .unwrap()
        .require_ok()
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Status {
            status: StatusCode::NOT_FOUND,
            ..
        }
    ));
    assert_eq!(e.to_string(), "HTTP 404 Not Found (body: \"nope\")");
    assert!(!e.is_transport());
    // The server's own reason phrase is kept.
    let e = get(b"HTTP/1.1 503 Come Back Later\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap()
        .require_ok()
        .unwrap_err();
    assert_eq!(e.to_string(), "HTTP 503 Come Back Later (body: \"\")");
    let r = get(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.require_ok().is_err(), "only 200 is success");
}

#[tokio::test]
async fn broken_replies_are_errors() {
    for reply in [
        &b"garbage"[..],
        b"SSH-2.0\r\n\r\n",
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nh",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
    ] {
        let e = get(reply).await.unwrap_err();
        assert!(
            matches!(e, Error::Reply { .. }),
            "{:?}: {e:?}",
            String::from_utf8_lossy(reply)
        );
        assert!(
            e.to_string().starts_with("bad HTTP reply from 127.0.0.1:"),
            "{e}"
        );
        assert!(!e.is_transport());
    }
}

#[tokio::test]
async fn bodies_are_bounded() {
    let client = Client::builder().max_body(4).build().unwrap();
    let declared = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
    let e = client.get(&url(&declared, "/")).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 4 }), "{e:?}");
    assert_eq!(e.to_string(), "the reply is larger than 4 bytes");
    let chunked = canned(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    )
    .await;
    let e = client.get(&url(&chunked, "/")).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 4 }), "{e:?}");
    let close = canned(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
    let e = client.get(&url(&close, "/")).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 4 }), "{e:?}");
    let fits = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhell").await;
    assert_eq!(
        &client.get(&url(&fits, "/")).await.unwrap().body[..],
        b"hell"
    );
}

#[tokio::test]
async fn the_deadline_covers_the_whole_exchange() {
    // Connected (the kernel accepts into the backlog), never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let client = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let e = client
        .get(&Url::parse(&format!("http://{addr}/")).unwrap())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("no whole reply from {addr} within 300ms")
    );
    assert!(e.is_transport());
}

#[tokio::test]
async fn a_refused_connection_names_the_address() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = client()
        .get(&Url::parse(&format!("http://{addr}/")).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to {addr}: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(e.is_transport());
}

#[tokio::test]
async fn ipv6_literal_hosts() {
    let server = CannedServer::start(
        "[::1]:0",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6",
        None,
    )
    .await;
    let url = Url::parse(&format!("http://[::1]:{}/x", server.addr().port())).unwrap();
    let r = client().get(&url).await.unwrap();
    assert_eq!(&r.body[..], b"v6");
    let head = server.requests()[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("host: [::1]:{}\r\n", server.addr().port())),
        "{head}"
    );
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("karuta-http-client-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TLS acceptor with a fresh self-signed certificate for `names`, whose PEM
/// is written to `ca_file`.
fn tls_acceptor(names: &[&str], ca_file: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let cert = test_support::tls::SelfSigned::new(names);
    std::fs::write(ca_file, &cert.cert_pem).unwrap();
    cert.acceptor()
}

#[tokio::test]
async fn https_trusts_an_extra_ca_file() {
    let dir = scratch("https");
    let ca_file = dir.join("ca.pem");
    let acceptor = tls_acceptor(&["localhost", "::1"], &ca_file);
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret";
    let v4 = CannedServer::start("127.0.0.1:0", reply, Some(acceptor.clone())).await;
    let v6 = CannedServer::start("[::1]:0", reply, Some(acceptor)).await;
    let by_name = Url::parse(&format!("https://localhost:{}/k", v4.addr().port())).unwrap();
    let by_ip = Url::parse(&format!("https://[::1]:{}/k", v6.addr().port())).unwrap();

    // The Mozilla roots alone do not trust it.
    let e = client().get(&by_name).await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("TLS handshake with localhost failed: "),
        "{text}"
    );
    assert!(text.contains("certificate"), "{text}");

    let trusting = Client::builder().ca_file(&ca_file).build().unwrap();
    for url in [&by_name, &by_ip] {
        let r = trusting.get(url).await.unwrap();
        assert_eq!(&r.body[..], b"secret", "{url}");
    }
    // The certificate names localhost and ::1, not 127.0.0.1.
    let wrong_name = Url::parse(&format!("https://127.0.0.1:{}/k", v4.addr().port())).unwrap();
    let e = trusting.get(&wrong_name).await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ca_files_that_cannot_be_used_are_setup_errors() {
    let dir = scratch("ca-files");
    let missing = dir.join("missing.pem");
    let e = Client::builder().ca_file(&missing).build().unwrap_err();
    assert!(matches!(e, SetupError::CaFileUnreadable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read {missing:?}: ")),
        "{e}"
    );
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = Client::builder().ca_file(&empty).build().unwrap_err();
    assert_eq!(e.to_string(), format!("no certificate in {empty:?}"));
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = Client::builder().ca_file(&junk).build().unwrap_err();
    assert!(matches!(e, SetupError::CaFileUnusable { .. }), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
