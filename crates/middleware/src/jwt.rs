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
//! the keys in use. Only `http://` URLs are supported for now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bittorrent::{AnnounceRequest, AnnounceResponse, ClientError, InfoHash};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
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
    /// Where the JWK set is fetched from (`http://` only).
    pub jwk_set_url: String,
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
                Ok(())
            }
        }
    }
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
        let set = fetch_jwk_set(&url)
            .await
            .map_err(|m| ConfigError::new("jwk_set_url", format!("fetching {url:?}: {m}")))?;
        let keys = Arc::new(ArcSwap::from_pointee(Keys::from_set(&set)));
        let interval = config.jwk_set_update_interval.unwrap_or_default().0;
        let refresher = tokio::spawn(refresh(url, interval, keys.clone()));
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

async fn refresh(url: String, interval: Duration, keys: Arc<ArcSwap<Keys>>) {
    loop {
        tokio::time::sleep(interval).await;
        match fetch_jwk_set(&url).await {
            Ok(set) => keys.store(Arc::new(Keys::from_set(&set))),
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "refreshing the JWK set failed; keeping the keys in use")
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

/// `http://host[:port]/path` → (host, port, path).
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    if url.starts_with("https://") {
        return Err("https JWK set URLs are not supported yet; use http://".into());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} is not an http:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{url:?} has an invalid port"))?;
            (h, port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

async fn fetch_jwk_set(url: &str) -> Result<JwkSet, String> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, http_get(url))
        .await
        .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))??;
    serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))
}

/// A minimal HTTP/1.1 GET: one request on a fresh connection, `Connection: close`.
async fn http_get(url: &str) -> Result<Vec<u8>, String> {
    let (host, port, path) = parse_url(url)?;
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = tokio::net::TcpStream::connect((connect_host, port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: karuta\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("reading: {e}"))?;
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
        let e = https.validate().unwrap_err();
        assert_eq!(e.key, "jwk_set_url");
        assert!(e.message.contains("https"), "{}", e.message);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://example.com").unwrap(),
            ("example.com".into(), 80, "/".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080/a/jwks.json?x=1").unwrap(),
            ("127.0.0.1".into(), 8080, "/a/jwks.json?x=1".into())
        );
        assert_eq!(
            parse_url("http://[::1]:81/k").unwrap(),
            ("[::1]".into(), 81, "/k".into())
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
