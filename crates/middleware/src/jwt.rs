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
//! the keys in use. The fetch goes through `http_client` (`http://` and
//! `https://`; https trusts the Mozilla root set plus the CA certificates of
//! the optional PEM file `jwk_set_ca_file`, for a private PKI), bounded by
//! `FETCH_TIMEOUT` and `MAX_RESPONSE`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bittorrent::{AnnounceRequest, AnnounceResponse, ClientError, InfoHash};
use http_client::{Client, SetupError, Url, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
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
        self.check().map(|_| ())
    }
}

impl Config {
    /// Checks every option and builds the fetcher: the one pass both
    /// `validate` and `Jwt::new` make, so the CA file is read once.
    fn check(&self) -> Result<Fetcher, ConfigError> {
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
                let url = Url::parse(&self.jwk_set_url)
                    .map_err(|e| ConfigError::new("jwk_set_url", e.to_string()))?;
                let mut client = Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .max_body(MAX_RESPONSE)
                    .header(
                        header::ACCEPT,
                        header::HeaderValue::from_static("application/json"),
                    )
                    .header(
                        header::USER_AGENT,
                        header::HeaderValue::from_static("karuta"),
                    );
                if let Some(path) = &self.jwk_set_ca_file {
                    client = client.ca_file(path);
                }
                let client = client.build().map_err(|e| match e {
                    SetupError::Tls(_) => ConfigError::new("jwk_set_url", e.to_string()),
                    _ => ConfigError::new("jwk_set_ca_file", e.to_string()),
                })?;
                Ok(Fetcher {
                    url,
                    client,
                    text: self.jwk_set_url.clone(),
                })
            }
        }
    }
}

/// How the JWK set is fetched.
struct Fetcher {
    url: Url,
    client: Client,
    /// The URL as configured, for messages.
    text: String,
}

impl Fetcher {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let response = self
            .client
            .get(&self.url)
            .await
            .and_then(http_client::Response::require_ok)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&response.body).map_err(|e| format!("not a JWK set: {e}"))
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
        let fetcher = config.check()?;
        let set = fetcher.fetch().await.map_err(|m| {
            ConfigError::new("jwk_set_url", format!("fetching {:?}: {m}", fetcher.text))
        })?;
        let keys = Arc::new(ArcSwap::from_pointee(Keys::from_set(&set)));
        let interval = config.jwk_set_update_interval.unwrap_or_default().0;
        let refresher = tokio::spawn(refresh(fetcher, interval, keys.clone()));
        Ok(Self::with_keys(&config, keys, Some(refresher)))
    }

    /// A hook on a JWK set given as JSON, never refreshed (no runtime, no
    /// network: for tests and fuzzing). `jwk_set_url` is not used.
    pub fn with_jwk_set(config: &Config, jwk_set: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(jwk_set).map_err(|e| format!("not a JWK set: {e}"))?;
        let keys = Arc::new(ArcSwap::from_pointee(Keys::from_set(&set)));
        Ok(Self::with_keys(config, keys, None))
    }

    fn with_keys(
        config: &Config,
        keys: Arc<ArcSwap<Keys>>,
        refresher: Option<JoinHandle<()>>,
    ) -> Self {
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
        Jwt {
            keys,
            validation,
            refresher: Mutex::new(refresher),
        }
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
                tracing::warn!(url = %fetcher.text, error = %e, "refreshing the JWK set failed; keeping the keys in use")
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

    fn stop(&self, _reason: tracker::StopReason) -> ReadyOrBoxed<'_, ()> {
        self.stop_refresher();
        ReadyOrBoxed::ready(())
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
}
