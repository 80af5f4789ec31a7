//! The `storage.config` section of `redis`: chihaya's keys and defaults plus
//! karuta's, the URL forms `redis_broker` accepts (one Redis, or a Redis
//! Cluster's seed nodes), and the TLS setup of a `rediss://` client.
//!
//! [`RedisConfig::client`] is the check: it refuses what the store cannot run
//! with (naming the key) and builds the client, but never connects and changes
//! nothing outside itself, so `check-config` can run it. The one process-wide
//! step TLS needs is taken by [`RedisConfig::connecting_client`], which only
//! the store calls.

use std::time::Duration;

use redis::Client;
use redis::cluster::ClusterClient;
use serde::Deserialize;
use tracker::config::{ConfigDuration, validate_peer_lifetime};
use tracker::{ConfigError, DriverConfig};

/// The `storage.config` section of `redis` (chihaya's keys and defaults, plus
/// karuta's `key_prefix`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS, if
    /// compiled in), `redis+unix:///path` or `unix:///path`; or a Redis
    /// Cluster: `redis+cluster://[[user]:password@]host:port[,host:port...]`
    /// (its seed nodes; the others are found from them), `rediss+cluster://`
    /// for TLS. chihaya's `redis://password@host` (a password without a
    /// colon) is read as a password.
    pub redis_broker: String,
    pub redis_read_timeout: ConfigDuration,
    pub redis_write_timeout: ConfigDuration,
    pub redis_connect_timeout: ConfigDuration,
    pub gc_interval: ConfigDuration,
    pub peer_lifetime: ConfigDuration,
    pub prometheus_reporting_interval: ConfigDuration,
    /// karuta: the prefix of every key, so several trackers can share one
    /// Redis. No braces: they would change the keys' Redis Cluster hash tag.
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

/// What `redis_broker` names: one Redis, or a Redis Cluster.
// Made once per store and moved once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Broker {
    Single(Client),
    Cluster(ClusterClient),
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

/// The seed nodes of a `redis+cluster://` or `rediss+cluster://` URL, each
/// as the `redis://` or `rediss://` URL of one node (with the credentials,
/// read as [`broker_url`] reads them); `None` for any other scheme.
fn cluster_seeds(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Some(Err(format!(
            "a Redis Cluster has only database 0, not {path:?}"
        )));
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(|host| broker_url(&format!("{scheme}://{userinfo}{host}")))
        .collect();
    if hosts.split(',').any(str::is_empty) {
        return Some(Err(
            "a Redis Cluster URL lists its seed nodes as host:port,host:port".to_owned(),
        ));
    }
    Some(Ok(seeds))
}

impl DriverConfig for RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(|_| ())
    }
}

impl RedisConfig {
    fn is_tls(&self) -> bool {
        self.redis_broker.starts_with("rediss://")
            || self.redis_broker.starts_with("rediss+cluster://")
    }

    /// Checks every key and builds the client for `redis_broker` (with
    /// `redis_tls_ca_file`'s roots when set); never connects.
    pub(crate) fn client(&self) -> Result<Broker, ConfigError> {
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
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "key_prefix",
                "must not contain { or }: karuta puts a Redis Cluster hash tag after it",
            ));
        }
        let invalid = |e: redis::RedisError| {
            ConfigError::new("redis_broker", format!("invalid Redis URL: {e}"))
        };
        let certificates = self.tls_certificates()?;
        let broken_pem = |e: redis::RedisError| {
            let path = self.redis_tls_ca_file.as_deref().unwrap_or_default();
            ConfigError::new(
                "redis_tls_ca_file",
                format!("{path:?} is not a usable PEM CA file: {e}"),
            )
        };
        if let Some(seeds) = cluster_seeds(&self.redis_broker) {
            let seeds = seeds.map_err(|e| ConfigError::new("redis_broker", e))?;
            // The URLs first, so that an error names the key at fault.
            let client = ClusterClient::builder(seeds.clone())
                .build()
                .map_err(invalid)?;
            let Some(certificates) = certificates else {
                return Ok(Broker::Cluster(client));
            };
            return ClusterClient::builder(seeds)
                .certs(certificates)
                .build()
                .map(Broker::Cluster)
                .map_err(broken_pem);
        }
        let url = broker_url(&self.redis_broker);
        match certificates {
            None => Client::open(url).map_err(invalid),
            Some(certificates) => Client::build_with_tls(url, certificates).map_err(broken_pem),
        }
        .map(Broker::Single)
    }

    /// The roots of `redis_tls_ca_file`, read; `None` when it is not set.
    fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, ConfigError> {
        let Some(path) = &self.redis_tls_ca_file else {
            return Ok(None);
        };
        if !self.is_tls() {
            return Err(ConfigError::new(
                "redis_tls_ca_file",
                "is only used with a rediss:// or rediss+cluster:// redis_broker",
            ));
        }
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::new("redis_tls_ca_file", format!("cannot read {path:?}: {e}"))
        })?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// [`client`](Self::client) for a store that will connect with it.
    ///
    /// The redis crate builds its rustls config itself, at every connect, with
    /// `ClientConfig::builder()`, which takes the process-wide crypto
    /// provider; it has no way to be handed a config or a provider (redis-rs
    /// issue #463), so `builder_with_provider`, as karuta's other TLS clients
    /// use, is out of reach. A `rediss://` store therefore makes sure the
    /// process has one: ring, karuta's, unless one is installed already.
    pub(crate) fn connecting_client(&self) -> Result<Broker, ConfigError> {
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
    fn a_cluster_url_names_its_seed_nodes() {
        let seeds = |url: &str| cluster_seeds(url).expect("a cluster URL");
        assert_eq!(
            seeds("redis+cluster://10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]
        );
        // chihaya's password form, and a user with a password, on every seed.
        assert_eq!(
            seeds("redis+cluster://pwd@a:1,b:2/0").unwrap(),
            ["redis://:pwd@a:1", "redis://:pwd@b:2"]
        );
        assert_eq!(
            seeds("rediss+cluster://u:p@a:1").unwrap(),
            ["rediss://u:p@a:1"]
        );
        assert!(
            seeds("redis+cluster://a:1/2")
                .unwrap_err()
                .contains("database 0")
        );
        assert!(seeds("redis+cluster://a:1,,b:2").is_err());
        assert!(seeds("redis+cluster://").is_err());
        assert!(cluster_seeds("redis://a:1").is_none());
        for (url, key) in [
            ("redis+cluster://a:1,b:2", None),
            ("rediss+cluster://a:1", None),
            ("redis+cluster://a:1/3", Some("redis_broker")),
            ("redis+cluster://a:1,b:2/0", None),
            ("redis+cluster://a:1,", Some("redis_broker")),
        ] {
            let c = RedisConfig {
                redis_broker: url.to_owned(),
                ..RedisConfig::default()
            };
            assert_eq!(
                c.validate().err().map(|e| e.key),
                key.map(String::from),
                "{url}"
            );
        }
    }

    #[test]
    fn a_key_prefix_has_no_braces() {
        for prefix in ["{karuta}:", "a}b"] {
            let c = RedisConfig {
                key_prefix: prefix.to_owned(),
                ..RedisConfig::default()
            };
            assert_eq!(c.validate().unwrap_err().key, "key_prefix");
        }
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
