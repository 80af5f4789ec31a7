//! The `udp:` section: chihaya's keys with chihaya's code defaults, and two
//! of karuta's own (`workers`, `connection_id_lifetime`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tracker::config::{ConfigDuration, parse_listen_addr};
use tracker::{ConfigError, RequestLimits};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct UdpConfig {
    /// Listen address; empty disables the frontend. `:6969` is every
    /// interface, IPv4 and IPv6.
    pub addr: String,
    /// How far in the future a connection id's timestamp may be (clocks of
    /// instances sharing a key differ a little).
    pub max_clock_skew: ConfigDuration,
    /// HMAC key for connection ids; instances that share it accept each
    /// other's ids. Empty: a random key for this process.
    pub private_key: String,
    /// Measure each request's duration for metrics.
    pub enable_request_timing: bool,
    /// Let the announce's IP field choose the announced address.
    pub allow_ip_spoofing: bool,
    pub max_numwant: u32,
    pub default_numwant: u32,
    pub max_scrape_infohashes: u32,
    /// karuta: worker threads, each with its own socket on the same address
    /// (SO_REUSEPORT). 0 means one per core.
    pub workers: usize,
    /// karuta: how long a connection id is accepted. BEP 15 says 2 minutes;
    /// some clients (uTorrent) keep using ids for longer (chihaya #417).
    pub connection_id_lifetime: ConfigDuration,
}

impl Default for UdpConfig {
    fn default() -> Self {
        let limits = RequestLimits::default();
        UdpConfig {
            addr: String::new(),
            max_clock_skew: ConfigDuration(Duration::from_secs(10)),
            private_key: String::new(),
            enable_request_timing: false,
            allow_ip_spoofing: false,
            max_numwant: limits.max_numwant,
            default_numwant: limits.default_numwant,
            max_scrape_infohashes: limits.max_scrape_infohashes,
            workers: 0,
            connection_id_lifetime: ConfigDuration(Duration::from_secs(120)),
        }
    }
}

/// Most worker threads; more would only add contention.
pub const MAX_WORKERS: usize = 256;

impl UdpConfig {
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_numwant: self.max_numwant,
            default_numwant: self.default_numwant,
            max_scrape_infohashes: self.max_scrape_infohashes,
        }
    }

    /// The listen address, `None` when disabled.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen_addr(&self.addr).map_err(|m| ConfigError::new("addr", m))
    }

    /// Worker threads to run.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Checks the section; keys are relative to it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.limits().validate()?;
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::new(
                "workers",
                format!("at most {MAX_WORKERS}"),
            ));
        }
        if self.connection_id_lifetime.0 < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "connection_id_lifetime",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}
