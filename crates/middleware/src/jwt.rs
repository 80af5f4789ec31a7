//! `jwt`: admits an announce only when its `jwt` query parameter (over UDP,
//! BEP 41 URL data) is a token signed by a key of the configured JWK set, for
//! the configured issuer and audience, still valid, and naming the announced
//! torrent in its `infohash` claim. Scrapes are not checked (as in chihaya).
//!
//! Safer than chihaya's: the algorithm is taken from the key, never from the
//! token (an RSA key verifies RS256 only, a P-256 key ES256 only; `none` and
//! HMAC are never accepted), and the key is chosen by the token's `kid`.
//!
//! The JWK set is fetched when the hook is built (a failure is a configuration
//! error) and refreshed every `jwk_set_update_interval`; a failed refresh keeps
//! the keys in use. `http://` and `https://` URLs are supported; https trusts
//! the Mozilla root set (`webpki-roots`) plus the CA certificates of the
//! optional PEM file `jwk_set_ca_file` (for a private PKI).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bittorrent::{AnnounceRequest, AnnounceResponse, ClientError, InfoHash};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tracker::config::ConfigDuration;
use tracker::{ConfigError, DriverConfig, HookFuture, ReadyOrBoxed, RequestContext};

pub const NAME: &str = "jwt";

const MISSING: ClientError = ClientError::new("unapproved request: missing jwt");
const INVALID: ClientError = ClientError::new("invalid jwt");

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// How long one fetch of the JWK set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWK set response accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// chihaya's options.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// The required `iss` claim.
    pub issuer: String,
    /// A value the `aud` claim must contain.
    pub audience: String,
    /// Where the JWK set is fetched from (`http://` or `https://`).
    pub jwk_set_url: String,
    /// karuta's: a PEM file of extra CA certificates trusted for an
    /// `https://` JWK set URL, besides the Mozilla root set.
    pub jwk_set_ca_file: Option<String>,
    /// How often the JWK set is fetched again.
    pub jwk_set_update_interval: Option<ConfigDuration>,
}

impl DriverConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("jwk_set_url", &self.jwk_set_url),
        ] {
            if value.is_empty() {
                return Err(ConfigError::new(key, "is required"));
            }
        }
        match self.jwk_set_update_interval {
            None => Err(ConfigError::new("jwk_set_update_interval", "is required")),
            Some(ConfigDuration(d)) if d.is_zero() => Err(ConfigError::new(
                "jwk_set_update_interval",
                "must be greater than 0",
            )),
            Some(_) => {
                parse_url(&self.jwk_set_url).map_err(|m| ConfigError::new("jwk_set_url", m))?;
                if let Some(path) = &self.jwk_set_ca_file {
                    read_ca_file(path)?;
                }
                Ok(())
            }
        }
    }
}

/// The CA certificates of a PEM file; none is an error.
fn read_ca_file(path: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| ConfigError::new("jwk_set_ca_file", format!("cannot read {path:?}: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "jwk_set_ca_file",
            format!("no certificate in {path:?}"),
        ));
    }
    Ok(certs)
}

/// A TLS client trusting the Mozilla roots and the certificates of `ca_file`.
fn tls_connector(ca_file: Option<&str>) -> Result<TlsConnector, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                ConfigError::new(
                    "jwk_set_ca_file",
                    format!("unusable certificate in {path:?}: {e}"),
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("jwk_set_url", format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// How the JWK set is fetched: its URL, and a TLS client for `https://`.
#[derive(Clone)]
struct Fetcher {
    url: String,
    tls: Option<TlsConnector>,
}

/// The usable keys of a JWK set by `kid`, each with the one algorithm it verifies.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
}

impl Keys {
    fn from_set(set: &JwkSet) -> Keys {
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            let (alg, implied) = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    (Algorithm::ES256, KeyAlgorithm::ES256)
                }
                _ => continue,
            };
            // A key that declares another algorithm is not used at all.
            if jwk.common.key_algorithm.is_some_and(|a| a != implied) {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    by_kid.insert(kid.clone(), (key, alg));
                }
                Err(e) => tracing::warn!(kid = %kid, error = %e, "unusable key in JWK set"),
            }
        }
        Keys { by_kid }
    }
}

#[derive(Deserialize)]
struct Claims {
    infohash: String,
}

fn hex(hash: &InfoHash) -> String {
    hash.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hook.
pub struct Jwt {
    keys: Arc<ArcSwap<Keys>>,
    validation: HashMap<Algorithm, Validation>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("kids", &self.keys.load().by_kid.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Jwt {
    /// Fetches the JWK set and starts refreshing it. Must run inside a Tokio runtime.
    pub async fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let url = config.jwk_set_url.clone();
        let tls = match parse_url(&url) {
            Ok(u) if u.tls => Some(tls_connector(config.jwk_set_ca_file.as_deref())?),
            _ => None,
        };
        let fetcher = Fetcher { url, tls };
        let set = fetcher.fetch().await.map_err(|m| {
            ConfigError::new("jwk_set_url", format!("fetching {:?}: {m}", fetcher.url))
        })?;
        let keys = Arc::new(ArcSwap::from_pointee(Keys::from_set(&set)));
        let interval = config.jwk_set_update_interval.unwrap_or_default().0;
        let refresher = tokio::spawn(refresh(fetcher, interval, keys.clone()));
        let validation = [Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.leeway = LEEWAY_SECS;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_issuer(&[&config.issuer]);
                v.set_audience(&[&config.audience]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, v)
            })
            .collect();
        Ok(Jwt {
            keys,
            validation,
            refresher: Mutex::new(Some(refresher)),
        })
    }

    /// Whether `token` is valid for an announce of `info_hash`.
    pub fn verify(&self, token: &str, info_hash: &InfoHash) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return false;
        };
        let Some(kid) = header.kid else {
            return false;
        };
        let keys = self.keys.load();
        let Some((key, alg)) = keys.by_kid.get(&kid) else {
            return false;
        };
        if header.alg != *alg {
            return false;
        }
        let Some(validation) = self.validation.get(alg) else {
            return false;
        };
        match jsonwebtoken::decode::<Claims>(token, key, validation) {
            Ok(data) => data.claims.infohash.eq_ignore_ascii_case(&hex(info_hash)),
            Err(_) => false,
        }
    }

    fn stop_refresher(&self) {
        if let Some(task) = self
            .refresher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for Jwt {
    fn drop(&mut self) {
        self.stop_refresher();
    }
}

async fn refresh(fetcher: Fetcher, interval: Duration, keys: Arc<ArcSwap<Keys>>) {
    loop {
        tokio::time::sleep(interval).await;
        match fetcher.fetch().await {
            Ok(set) => keys.store(Arc::new(Keys::from_set(&set))),
            Err(e) => {
                tracing::warn!(url = %fetcher.url, error = %e, "refreshing the JWK set failed; keeping the keys in use")
            }
        }
    }
}

impl tracker::Hook for Jwt {
    fn handle_announce<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        ReadyOrBoxed::ready(match req.params.get_str("jwt") {
            None => Err(MISSING.into()),
            Some(token) if self.verify(token, &req.info_hash) => Ok(()),
            Some(_) => Err(INVALID.into()),
        })
    }

    fn stop(&self) -> ReadyOrBoxed<'_, ()> {
        self.stop_refresher();
        ReadyOrBoxed::ready(())
    }
}

/// A parsed JWK set URL.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    /// `https://`.
    tls: bool,
    /// As written; an IPv6 address keeps its brackets.
    host: String,
    port: u16,
    path: String,
}

/// `http[s]://host[:port]/path`.
fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{url:?} has an invalid port"))?;
            (h, port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(Url {
        tls,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

impl Fetcher {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.get())
            .await
            .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))??;
        serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))
    }

    /// A minimal HTTP/1.1 GET: one request on a fresh connection, `Connection: close`.
    async fn get(&self) -> Result<Vec<u8>, String> {
        let url = parse_url(&self.url)?;
        let connect_host = url.host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((connect_host, url.port))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let default_port = if url.tls { 443 } else { 80 };
        let host_header = if url.port == default_port {
            url.host.clone()
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: karuta\r\n\r\n",
            url.path
        );
        if !url.tls {
            return exchange(stream, &request).await;
        }
        let Some(tls) = &self.tls else {
            return Err("no TLS client configured".into());
        };
        let name = rustls_pki_types::ServerName::try_from(connect_host.to_owned())
            .map_err(|e| format!("invalid TLS server name {connect_host:?}: {e}"))?;
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        exchange(stream, &request).await
    }
}

/// Sends `request` and parses the response read to the end of the stream.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending: {e}"))?;
    stream.flush().await.map_err(|e| format!("sending: {e}"))?;
    let mut response = Vec::new();
    match (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)
        .await
    {
        Ok(_) => {}
        // A TLS server that closes without close_notify: the response's own
        // framing (Content-Length or chunks) still tells a cut-short body.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("reading: {e}")),
    }
    if response.len() > MAX_RESPONSE {
        return Err(format!("response larger than {MAX_RESPONSE} bytes"));
    }
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = std::str::from_utf8(&response[..end]).map_err(|_| "malformed HTTP response")?;
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("HTTP status {status:?}"));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        }
    }
    if chunked {
        return dechunk(body);
    }
    match length {
        Some(n) if n > body.len() => Err("response body cut short".into()),
        Some(n) => Ok(body[..n].to_vec()),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("malformed chunked body")?;
        let size_line = std::str::from_utf8(&data[..eol]).map_err(|_| "malformed chunked body")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "malformed chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunked body cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            issuer: "iss".into(),
            audience: "aud".into(),
            jwk_set_url: "http://127.0.0.1:1/jwks.json".into(),
            jwk_set_ca_file: None,
            jwk_set_update_interval: Some(ConfigDuration(Duration::from_secs(60))),
        }
    }

    #[test]
    fn options_are_required() {
        assert!(config().validate().is_ok());
        for (key, c) in [
            (
                "issuer",
                Config {
                    issuer: String::new(),
                    ..config()
                },
            ),
            (
                "audience",
                Config {
                    audience: String::new(),
                    ..config()
                },
            ),
            (
                "jwk_set_url",
                Config {
                    jwk_set_url: String::new(),
                    ..config()
                },
            ),
            (
                "jwk_set_update_interval",
                Config {
                    jwk_set_update_interval: None,
                    ..config()
                },
            ),
            (
                "jwk_set_update_interval",
                Config {
                    jwk_set_update_interval: Some(ConfigDuration(Duration::ZERO)),
                    ..config()
                },
            ),
        ] {
            assert_eq!(c.validate().unwrap_err().key, key);
        }
        let https = Config {
            jwk_set_url: "https://example.com/jwks".into(),
            ..config()
        };
        assert!(https.validate().is_ok());
        let e = Config {
            jwk_set_url: "ftp://example.com/jwks".into(),
            ..config()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "jwk_set_url");
        let e = Config {
            jwk_set_ca_file: Some("/nonexistent/ca.pem".into()),
            ..https
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "jwk_set_ca_file");
    }

    #[test]
    fn urls() {
        let url = |tls, host: &str, port, path: &str| Url {
            tls,
            host: host.into(),
            port,
            path: path.into(),
        };
        assert_eq!(
            parse_url("http://example.com").unwrap(),
            url(false, "example.com", 80, "/")
        );
        assert_eq!(
            parse_url("https://example.com/jwks").unwrap(),
            url(true, "example.com", 443, "/jwks")
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080/a/jwks.json?x=1").unwrap(),
            url(false, "127.0.0.1", 8080, "/a/jwks.json?x=1")
        );
        assert_eq!(
            parse_url("https://[::1]:81/k").unwrap(),
            url(true, "[::1]", 81, "/k")
        );
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}xx").unwrap(),
            b"{}"
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3;x=y\r\nab\"\r\n0\r\n\r\n"
            )
            .unwrap(),
            b"{\"ab\""
        );
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
