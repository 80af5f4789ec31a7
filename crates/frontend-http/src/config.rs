//! The `http:` section: chihaya's keys with chihaya's code defaults, and
//! karuta's `trusted_proxies`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tracker::config::{ConfigDuration, parse_listen_addr};
use tracker::ipnet::IpNet;
use tracker::{ConfigError, RequestLimits};

use crate::router::Router;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// Plain HTTP listener; empty disables it. `:6969` is every interface.
    pub addr: String,
    /// HTTPS listener; empty disables it. Needs the two paths below.
    pub https_addr: String,
    /// PEM certificate chain and private key for `https_addr`.
    pub tls_cert_path: String,
    pub tls_key_path: String,
    /// A request must have arrived within this (slow clients are cut off).
    pub read_timeout: ConfigDuration,
    /// A reply must have been taken by the client within this.
    pub write_timeout: ConfigDuration,
    /// Persistent connections.
    pub enable_keepalive: bool,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: ConfigDuration,
    /// Measure each request's duration for metrics.
    pub enable_request_timing: bool,
    /// httprouter syntax: `/announce`, `/:passkey/announce`, `/t/*rest`.
    pub announce_routes: Vec<String>,
    pub scrape_routes: Vec<String>,
    /// Let `ip`, `ipv4` and `ipv6` parameters choose the announced address.
    pub allow_ip_spoofing: bool,
    /// Header a reverse proxy puts the client's address in (e.g. `x-real-ip`).
    pub real_ip_header: String,
    pub max_numwant: u32,
    pub default_numwant: u32,
    pub max_scrape_infohashes: u32,
    /// karuta: addresses or networks of reverse proxies whose `X-Forwarded-For`
    /// and `real_ip_header` are believed. Empty: `real_ip_header` is believed
    /// from anyone (chihaya's behaviour) and `X-Forwarded-For` from no one.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let limits = RequestLimits::default();
        HttpConfig {
            addr: String::new(),
            https_addr: String::new(),
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            read_timeout: ConfigDuration(Duration::from_secs(2)),
            write_timeout: ConfigDuration(Duration::from_secs(2)),
            enable_keepalive: false,
            idle_timeout: ConfigDuration(Duration::from_secs(30)),
            enable_request_timing: false,
            announce_routes: vec!["/announce".into()],
            scrape_routes: vec!["/scrape".into()],
            allow_ip_spoofing: false,
            real_ip_header: String::new(),
            max_numwant: limits.max_numwant,
            default_numwant: limits.default_numwant,
            max_scrape_infohashes: limits.max_scrape_infohashes,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Used in place of a zero timeout (chihaya falls back to its defaults too).
fn or_default(d: ConfigDuration, default: Duration) -> Duration {
    if d.0.is_zero() { default } else { d.0 }
}

impl HttpConfig {
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_numwant: self.max_numwant,
            default_numwant: self.default_numwant,
            max_scrape_infohashes: self.max_scrape_infohashes,
        }
    }

    pub fn read_timeout(&self) -> Duration {
        or_default(self.read_timeout, Duration::from_secs(2))
    }

    pub fn write_timeout(&self) -> Duration {
        or_default(self.write_timeout, Duration::from_secs(2))
    }

    pub fn idle_timeout(&self) -> Duration {
        or_default(self.idle_timeout, Duration::from_secs(30))
    }

    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen_addr(&self.addr).map_err(|m| ConfigError::new("addr", m))
    }

    pub fn https_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen_addr(&self.https_addr).map_err(|m| ConfigError::new("https_addr", m))
    }

    pub fn trusted_proxy_nets(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse()
                    .map_err(|m| ConfigError::new(format!("trusted_proxies[{i}]"), m))
            })
            .collect()
    }

    pub(crate) fn router(&self) -> Result<Router, ConfigError> {
        Router::new(&self.announce_routes, &self.scrape_routes)
    }

    /// Checks the section; keys are relative to it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.https_listen_addr()?;
        if !self.https_addr.is_empty() {
            for (k, v) in [
                ("tls_cert_path", &self.tls_cert_path),
                ("tls_key_path", &self.tls_key_path),
            ] {
                if v.is_empty() {
                    return Err(ConfigError::new(k, "required when https_addr is set"));
                }
            }
            // The files are read and checked here too: a configuration that
            // passes check-config starts.
            crate::tls_acceptor(self)?;
        }
        self.router()?;
        self.trusted_proxy_nets()?;
        if !self.real_ip_header.is_empty() {
            hyper::header::HeaderName::from_bytes(self.real_ip_header.as_bytes())
                .map_err(|_| ConfigError::new("real_ip_header", "not a valid header name"))?;
        }
        self.limits().validate()
    }
}
