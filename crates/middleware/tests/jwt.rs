//! The `jwt` hook over real HTTP and UDP announces to a running tracker, with
//! its JWK set served by a tiny HTTP server: RS256 and ES256 tokens, every way
//! a token can be wrong, and a key rotation picked up by the refresher; and
//! the JWK set over HTTPS, trusted through `jwk_set_ca_file`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bittorrent::{InfoHash, PeerId};
use frontend_http::{HttpConfig, HttpFrontend};
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use frontend_udp::{UdpConfig, UdpFrontend};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use test_support::bencode::failure_reason;
use test_support::canned::CannedServer;
use test_support::logic::shared_memory_logic;
use test_support::{TempDir, http, percent_encode};
use tracker::{NamedHook, Options, Registry, SharedLogic};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "karuta-test";
const HASH: &str = "a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5";
const OTHER_HASH: &str = "e1d2c3b4a5e1b2c3b4a5e1d2c3b4e5e1d2c3b4a5";

/// A private key, the algorithm it signs with, and its `kid`.
#[derive(Clone)]
struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
}

impl Signer {
    fn rsa(kid: &str) -> Signer {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        Signer {
            key: EncodingKey::from_rsa_der(der.as_bytes()),
            alg: Algorithm::RS256,
            kid: kid.into(),
        }
    }

    fn ec(kid: &str) -> Signer {
        use p256::pkcs8::EncodePrivateKey;
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let der = key.to_pkcs8_der().unwrap();
        Signer {
            key: EncodingKey::from_ec_der(der.as_bytes()),
            alg: Algorithm::ES256,
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(infohash: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "someone-else"],
        "exp": now() + 600,
        "nbf": now() - 10,
        "infohash": infohash,
    })
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// A JWK set served over plain HTTP (or HTTPS); the set can be replaced while serving.
struct JwksServer {
    server: CannedServer,
    tls: bool,
}

impl JwksServer {
    async fn start(signers: &[&Signer]) -> JwksServer {
        JwksServer::start_with(signers, None).await
    }

    /// Over HTTPS with a fresh self-signed certificate for `localhost`,
    /// whose PEM is written to `ca_file`.
    async fn start_tls(signers: &[&Signer], ca_file: &std::path::Path) -> JwksServer {
        let cert = test_support::tls::SelfSigned::new(&["localhost"]);
        std::fs::write(ca_file, &cert.cert_pem).unwrap();
        let acceptor = cert.acceptor();
        JwksServer::start_with(signers, Some(acceptor)).await
    }

    async fn start_with(
        signers: &[&Signer],
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> JwksServer {
        let tls = acceptor.is_some();
        let server = CannedServer::start("127.0.0.1:0", b"", acceptor).await;
        let jwks = JwksServer { server, tls };
        jwks.serve(signers);
        jwks
    }

    fn serve(&self, signers: &[&Signer]) {
        let set = JwkSet {
            keys: signers.iter().map(|s| s.jwk()).collect(),
        };
        let body = serde_json::to_string(&set).unwrap();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.server.set_reply(reply.as_bytes());
    }

    fn url(&self) -> String {
        let addr = self.server.addr();
        if self.tls {
            format!("https://localhost:{}/.well-known/jwks.json", addr.port())
        } else {
            format!("http://{addr}/.well-known/jwks.json")
        }
    }
}

fn options(url: &str, interval: &str) -> Options {
    options_with_ca(url, interval, None)
}

fn options_with_ca(url: &str, interval: &str, ca_file: Option<&std::path::Path>) -> Options {
    let mut o = serde_json::json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwk_set_url": url,
        "jwk_set_update_interval": interval,
    });
    if let Some(ca_file) = ca_file {
        o["jwk_set_ca_file"] = ca_file.to_str().unwrap().into();
    }
    Options::new(o, "chihaya.prehooks[0].options")
}

fn registry() -> Registry {
    let mut r = Registry::new();
    middleware::register(&mut r);
    r
}

struct Tracker {
    logic: Arc<SharedLogic>,
    http: HttpFrontend,
    udp: UdpFrontend,
}

impl Tracker {
    async fn start(url: &str, interval: &str) -> Tracker {
        Tracker::start_with(&options(url, interval)).await
    }

    async fn start_with(options: &Options) -> Tracker {
        let hook = registry()
            .hooks()
            .build("jwt", "chihaya.prehooks[0].name", options)
            .await
            .unwrap();
        let logic = shared_memory_logic(vec![NamedHook::new("jwt", hook)], vec![]);
        let http = HttpFrontend::start(
            &HttpConfig {
                addr: "127.0.0.1:0".into(),
                ..HttpConfig::default()
            },
            logic.clone(),
            Default::default(),
        )
        .unwrap()
        .unwrap();
        let udp = UdpFrontend::start(
            &UdpConfig {
                addr: "127.0.0.1:0".into(),
                private_key: "jwt test".into(),
                workers: 1,
                ..UdpConfig::default()
            },
            logic.clone(),
            Default::default(),
        )
        .unwrap()
        .unwrap();
        Tracker { logic, http, udp }
    }

    /// An HTTP announce: `Ok` when served, else the failure reason.
    fn http(&self, hash: &str, jwt: Option<&str>) -> Result<(), String> {
        let addr = self.http.local_addr().unwrap();
        let hash: InfoHash = hash.parse().unwrap();
        let mut q = format!(
            "/announce?info_hash={}&peer_id={}&port=7001&uploaded=0&downloaded=0&left=1",
            percent_encode(&hash.0),
            percent_encode(b"-TR3000-000000000001")
        );
        if let Some(jwt) = jwt {
            q.push_str("&jwt=");
            q.push_str(jwt);
        }
        let reply = http::get(addr, &q).send().unwrap();
        assert!(reply.head.starts_with("HTTP/1."), "{}", reply.head);
        match failure_reason(&reply.body) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// A UDP announce with the token in BEP 41 URL data.
    fn udp(&self, hash: &str, jwt: Option<&str>) -> Result<(), String> {
        let mut c = UdpTrackerClient::new(self.udp.local_addr(), Duration::from_secs(3)).unwrap();
        let url = match jwt {
            Some(jwt) => format!("/announce?jwt={jwt}"),
            None => "/announce".to_owned(),
        };
        let params = AnnounceParams::new(
            hash.parse().unwrap(),
            PeerId(*b"-TR3000-000000000002"),
            7002,
        )
        .with_url_data(url.as_bytes());
        match c.announce(&params) {
            Ok(_) => Ok(()),
            Err(UdpClientError::Tracker(msg)) => Err(msg),
            Err(e) => panic!("{e}"),
        }
    }

    /// The same outcome over HTTP and UDP.
    fn both(&self, hash: &str, jwt: Option<&str>) -> Result<(), String> {
        let http = self.http(hash, jwt);
        assert_eq!(http, self.udp(hash, jwt), "HTTP and UDP disagree");
        http
    }

    async fn stop(self) {
        self.http.stop().await;
        self.udp.stop().await;
        self.logic
            .load()
            .stop_hooks(tracker::StopReason::Shutdown)
            .await;
    }
}

fn invalid() -> Result<(), String> {
    Err("invalid jwt".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_over_http_and_udp() {
    let (rsa, other_rsa) = tokio::task::spawn_blocking(|| (Signer::rsa("r1"), Signer::rsa("r1")))
        .await
        .unwrap();
    let ec = Signer::ec("e1");
    let jwks = JwksServer::start(&[&rsa, &ec]).await;
    let t = Tracker::start(&jwks.url(), "1h").await;

    let rs256 = rsa.sign(&claims(HASH));
    let es256 = ec.sign(&claims(HASH));
    let upper = rsa.sign(&claims(&HASH.to_ascii_uppercase()));
    let expired = rsa.sign(&serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 120, "infohash": HASH,
    }));
    let not_yet = ec.sign(&serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "nbf": now() + 600, "infohash": HASH,
    }));
    let mut wrong_aud = claims(HASH);
    wrong_aud["aud"] = "another-tracker".into();
    let wrong_aud = rsa.sign(&wrong_aud);
    let mut wrong_iss = claims(HASH);
    wrong_iss["iss"] = "https://evil.example".into();
    let wrong_iss = ec.sign(&wrong_iss);
    let mut no_exp = claims(HASH);
    no_exp.as_object_mut().unwrap().remove("exp");
    let no_exp = rsa.sign(&no_exp);
    let wrong_hash = rsa.sign(&claims(OTHER_HASH));
    let forged = other_rsa.sign(&claims(HASH));
    // An ES256 signature presented under the RSA key's kid.
    let mut confused = ec.clone();
    confused.kid = "r1".into();
    let confused = confused.sign(&claims(HASH));
    let unknown_kid = {
        let mut s = ec.clone();
        s.kid = "nobody".into();
        s.sign(&claims(HASH))
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"r1"}"#),
        b64(claims(HASH).to_string().as_bytes())
    );
    // A valid token whose signature is cut off.
    let unsigned = rs256.rsplit_once('.').unwrap().0.to_owned() + ".";

    tokio::task::block_in_place(|| {
        assert_eq!(t.both(HASH, Some(&rs256)), Ok(()));
        assert_eq!(t.both(HASH, Some(&es256)), Ok(()));
        assert_eq!(t.both(HASH, Some(&upper)), Ok(()), "either case");
        assert_eq!(
            t.both(HASH, None),
            Err("unapproved request: missing jwt".into())
        );
        assert_eq!(t.both(OTHER_HASH, Some(&rs256)), invalid(), "other torrent");
        for (what, token) in [
            ("expired", &expired),
            ("not yet valid", &not_yet),
            ("wrong audience", &wrong_aud),
            ("wrong issuer", &wrong_iss),
            ("no exp", &no_exp),
            ("wrong infohash claim", &wrong_hash),
            ("another key, same kid", &forged),
            ("algorithm confusion", &confused),
            ("unknown kid", &unknown_kid),
            ("alg none", &none),
            ("no signature", &unsigned),
            ("garbage", &"not-a-token".to_owned()),
        ] {
            assert_eq!(t.both(HASH, Some(token)), invalid(), "{what}");
        }
    });
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_is_picked_up() {
    let (old, new) = tokio::task::spawn_blocking(|| (Signer::rsa("2025"), Signer::rsa("2026")))
        .await
        .unwrap();
    let jwks = JwksServer::start(&[&old]).await;
    let t = Tracker::start(&jwks.url(), "200ms").await;
    let old_token = old.sign(&claims(HASH));
    let new_token = new.sign(&claims(HASH));
    tokio::task::block_in_place(|| {
        assert_eq!(t.both(HASH, Some(&old_token)), Ok(()));
        assert_eq!(t.both(HASH, Some(&new_token)), invalid());
        jwks.serve(&[&new]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.http(HASH, Some(&new_token)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(t.both(HASH, Some(&new_token)), Ok(()), "new key in use");
        assert_eq!(t.both(HASH, Some(&old_token)), invalid(), "old key retired");
    });
    // A failed refresh keeps the keys in use.
    drop(jwks);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| {
        assert_eq!(t.both(HASH, Some(&new_token)), Ok(()), "kept after failure");
    });
    t.stop().await;
}

#[tokio::test]
async fn build_errors_name_the_url() {
    // Nothing listens on a port just released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = registry();
    let e = r
        .hooks()
        .build(
            "jwt",
            "chihaya.prehooks[0].name",
            &options(&format!("http://{addr}/jwks.json"), "1m"),
        )
        .await
        .err()
        .expect("no JWK set, no hook");
    assert_eq!(e.key, "chihaya.prehooks[0].options.jwk_set_url");
    for (url, interval, key) in [
        ("ftp://issuer.example/jwks.json", "1m", "jwk_set_url"),
        (
            "http://127.0.0.1/jwks.json",
            "0s",
            "jwk_set_update_interval",
        ),
    ] {
        let e = r
            .hooks()
            .validate("jwt", "chihaya.prehooks[0].name", &options(url, interval))
            .unwrap_err();
        assert_eq!(e.key, format!("chihaya.prehooks[0].options.{key}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jwk_set_over_https() {
    let ec = Signer::ec("e1");
    let tmp = TempDir::new("jwt-https");
    let dir = tmp.path();
    let ca_file = dir.join("ca.pem");
    let jwks = JwksServer::start_tls(&[&ec], &ca_file).await;
    assert!(jwks.url().starts_with("https://localhost:"));

    // Without the private CA the server's certificate is not trusted.
    let e = registry()
        .hooks()
        .build(
            "jwt",
            "chihaya.prehooks[0].name",
            &options(&jwks.url(), "1h"),
        )
        .await
        .err()
        .expect("untrusted certificate, no hook");
    assert_eq!(e.key, "chihaya.prehooks[0].options.jwk_set_url");
    assert!(e.message.contains("certificate"), "{}", e.message);

    // An unreadable or empty CA file is an error naming the option.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for bad in [dir.join("missing.pem"), empty] {
        let e = registry()
            .hooks()
            .build(
                "jwt",
                "chihaya.prehooks[0].name",
                &options_with_ca(&jwks.url(), "1h", Some(&bad)),
            )
            .await
            .err()
            .expect("bad CA file, no hook");
        assert_eq!(e.key, "chihaya.prehooks[0].options.jwk_set_ca_file");
    }

    let t = Tracker::start_with(&options_with_ca(&jwks.url(), "1h", Some(&ca_file))).await;
    let token = ec.sign(&claims(HASH));
    let forged = Signer::ec("e1").sign(&claims(HASH));
    tokio::task::block_in_place(|| {
        assert_eq!(t.both(HASH, Some(&token)), Ok(()));
        assert_eq!(t.both(HASH, Some(&forged)), invalid());
    });
    t.stop().await;
}
