//! The `storage.config` section of `memory`: chihaya's keys and code defaults,
//! karuta's same-subnet preference, and the one check that both `check-config`
//! and [`MemoryStore::new`](crate::MemoryStore::new) apply.

use std::time::Duration;

use serde::Deserialize;
use tracker::config::{ConfigDuration, validate_peer_lifetime};
use tracker::{ConfigError, DriverConfig};

/// The `storage.config` section of `memory` (chihaya's keys and code defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemoryConfig {
    /// How often stale peers are removed.
    pub gc_interval: ConfigDuration,
    /// How long a peer stays without announcing.
    pub peer_lifetime: ConfigDuration,
    /// Number of shards (locks); more means less contention.
    pub shard_count: usize,
    /// How often the swarm and peer totals are recomputed for metrics.
    pub prometheus_reporting_interval: ConfigDuration,
    /// karuta: hand out peers of the announcer's own network first (chihaya
    /// issue #267; Facebook's rack-local deployments), then the rest.
    pub prefer_same_subnet: bool,
    /// karuta: the network an IPv4 announcer's peers are preferred from.
    pub subnet_ipv4_prefix: u8,
    /// karuta: the same for IPv6.
    pub subnet_ipv6_prefix: u8,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            gc_interval: ConfigDuration(Duration::from_secs(3 * 60)),
            peer_lifetime: ConfigDuration(Duration::from_secs(30 * 60)),
            shard_count: 1024,
            prometheus_reporting_interval: ConfigDuration(Duration::from_secs(1)),
            prefer_same_subnet: false,
            subnet_ipv4_prefix: 24,
            subnet_ipv6_prefix: 64,
        }
    }
}

impl DriverConfig for MemoryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let zero = |key: &str| ConfigError::new(key, "must be greater than zero");
        if self.shard_count == 0 {
            return Err(zero("shard_count"));
        }
        if self.shard_count > 1 << 20 {
            return Err(ConfigError::new("shard_count", "must be at most 1048576"));
        }
        validate_peer_lifetime(self.peer_lifetime, self.gc_interval)?;
        if self.prometheus_reporting_interval.0.is_zero() {
            return Err(zero("prometheus_reporting_interval"));
        }
        if self.subnet_ipv4_prefix > 32 {
            return Err(ConfigError::new("subnet_ipv4_prefix", "must be at most 32"));
        }
        if self.subnet_ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "subnet_ipv6_prefix",
                "must be at most 128",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_keys() {
        let mut c = MemoryConfig {
            shard_count: 0,
            ..MemoryConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "shard_count");
        c.shard_count = 4;
        c.gc_interval = ConfigDuration(Duration::ZERO);
        assert_eq!(c.validate().unwrap_err().key, "gc_interval");
    }
}
