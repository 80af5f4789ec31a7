//! The `storage.config` section of `redis`: chihaya's keys and defaults plus
//! karuta's, the URL forms `redis_broker` accepts, and the TLS setup of a
//! `rediss://` client.
//!
//! [`RedisConfig::client`] is the check: it refuses what the store cannot run
//! with (naming the key) and builds the client, but never connects and changes
//! nothing outside itself, so `check-config` can run it. The one process-wide
//! step TLS needs is taken by [`RedisConfig::connecting_client`], which only
//! the store calls.

use std::time::Duration;

use redis::Client;
use serde::Deserialize;
use tracker::config::{ConfigDuration, validate_peer_lifetime};
use tracker::{ConfigError, DriverConfig};

/// The `storage.config` section of `redis` (chihaya's keys and defaults, plus
/// karuta's `key_prefix`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS, if
    /// compiled in), `redis+unix:///path` or `unix:///path`. chihaya's
    /// `redis://password@host` (a password without a colon) is read as a
    /// password.
    pub redis_broker: String,
    pub redis_read_timeout: ConfigDuration,
    pub redis_write_timeout: ConfigDuration,
    pub redis_connect_timeout: ConfigDuration,
    pub gc_interval: ConfigDuration,
    pub peer_lifetime: ConfigDuration,
    pub prometheus_reporting_interval: ConfigDuration,
    /// karuta: the prefix of every key, so several trackers can share one Redis.
    pub key_prefix: String,
    /// karuta: a PEM file of CA certificates that a `rediss://` server's
    /// certificate is checked against, instead of the system's roots.
    pub redis_tls_ca_file: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let secs = |s| ConfigDuration(Duration::from_secs(s));
        RedisConfig {
            redis_broker: "redis://127.0.0.1:6379/0".to_owned(),
            redis_read_timeout: secs(15),
            redis_write_timeout: secs(15),
            redis_connect_timeout: secs(15),
            gc_interval: secs(3 * 60),
            peer_lifetime: secs(30 * 60),
            prometheus_reporting_interval: secs(1),
            key_prefix: "karuta:".to_owned(),
            redis_tls_ca_file: None,
        }
    }
}

/// chihaya documents `redis://password@host`; in a URL that is a user name.
/// A user name without a password becomes the password.
fn broker_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !matches!(scheme, "redis" | "rediss") {
        return url.to_owned();
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.contains(':') && !userinfo.is_empty() => {
            format!("{scheme}://:{rest}")
        }
        _ => url.to_owned(),
    }
}

impl DriverConfig for RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(|_| ())
    }
}

impl RedisConfig {
    fn is_tls(&self) -> bool {
        self.redis_broker.starts_with("rediss://")
    }

    /// Checks every key and builds the client for `redis_broker` (with
    /// `redis_tls_ca_file`'s roots when set); never connects.
    pub(crate) fn client(&self) -> Result<Client, ConfigError> {
        for (key, d) in [
            ("redis_read_timeout", &self.redis_read_timeout),
            ("redis_write_timeout", &self.redis_write_timeout),
            ("redis_connect_timeout", &self.redis_connect_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        validate_peer_lifetime(self.peer_lifetime, self.gc_interval)?;
        if self.prometheus_reporting_interval.0.is_zero() {
            return Err(ConfigError::new(
                "prometheus_reporting_interval",
                "must be greater than zero",
            ));
        }
        let url = broker_url(&self.redis_broker);
        let invalid = |e: redis::RedisError| {
            ConfigError::new("redis_broker", format!("invalid Redis URL: {e}"))
        };
        let Some(path) = &self.redis_tls_ca_file else {
            return Client::open(url).map_err(invalid);
        };
        if !self.is_tls() {
            return Err(ConfigError::new(
                "redis_tls_ca_file",
                "is only used with a rediss:// redis_broker",
            ));
        }
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::new("redis_tls_ca_file", format!("cannot read {path:?}: {e}"))
        })?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        Client::build_with_tls(url, certificates).map_err(|e| {
            ConfigError::new(
                "redis_tls_ca_file",
                format!("{path:?} is not a usable PEM CA file: {e}"),
            )
        })
    }

    /// [`client`](Self::client) for a store that will connect with it.
    ///
    /// The redis crate builds its rustls config itself, at every connect, with
    /// `ClientConfig::builder()`, which takes the process-wide crypto
    /// provider; it has no way to be handed a config or a provider (redis-rs
    /// issue #463), so `builder_with_provider`, as karuta's other TLS clients
    /// use, is out of reach. A `rediss://` store therefore makes sure the
    /// process has one: ring, karuta's, unless one is installed already.
    pub(crate) fn connecting_client(&self) -> Result<Client, ConfigError> {
        let client = self.client()?;
        if self.is_tls() {
            // An error means a provider is installed, which is all we need.
            let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chihaya_password_form_is_a_password() {
        assert_eq!(broker_url("redis://pwd@host/0"), "redis://:pwd@host/0");
        assert_eq!(broker_url("redis://u:p@host"), "redis://u:p@host");
        assert_eq!(broker_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(broker_url("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
    }

    #[test]
    fn defaults_and_urls_validate() {
        RedisConfig::default().validate().unwrap();
        for url in [
            "redis+unix:///tmp/r.sock",
            "unix:///tmp/r.sock",
            "redis://pwd@h:1/2",
        ] {
            let c = RedisConfig {
                redis_broker: url.to_owned(),
                ..RedisConfig::default()
            };
            c.validate().unwrap();
        }
        let bad = RedisConfig {
            redis_broker: "http://x".to_owned(),
            ..RedisConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "redis_broker");
    }

    #[test]
    fn checking_a_tls_config_installs_no_crypto_provider() {
        let tls = RedisConfig {
            redis_broker: "rediss://redis.example:6380/0".to_owned(),
            ..RedisConfig::default()
        };
        tls.validate().unwrap();
        assert!(
            tokio_rustls::rustls::crypto::CryptoProvider::get_default().is_none(),
            "validate changed the process's TLS provider"
        );
    }
}
