//! privtrak's options: privtrak's own keys and defaults (`shard_count`,
//! `batch_size`, `gc_interval`, `peer_lifetime`,
//! `prometheus_reporting_interval`), karuta's for the user id, the journal
//! and back-pressure, and the handler.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use tracker::config::ConfigDuration;
use tracker::{ConfigError, DriverConfig};

use crate::handlers::HandlerConfig;

/// A size in bytes: a number, or a number with a unit (`512MiB`, `1GiB`,
/// `100MB`, `64KiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Parses `1GiB`, `512 MiB`, `100MB`, `4096`, `1.5GiB`.
pub fn parse_byte_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {input:?} (expected bytes, or a number with a unit: KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {input:?}"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size {input:?} is too large"));
    }
    Ok(bytes as u64)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1GiB or 512MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `options:` of a `privtrak` pre-hook.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct PrivtrakConfig {
    /// The route or query parameter holding the passkey (over UDP also the
    /// first segment of the BEP 41 path).
    pub passkey: String,
    /// Accept passkeys that are not 32 hex digits, mapped to 16 bytes by a
    /// keyed hash (keyed by `passkey_hash_key`).
    pub hash_other_passkeys: bool,
    /// The key of that hash: keep it secret and never change it (it would
    /// change every such user's id). Required with `hash_other_passkeys`.
    pub passkey_hash_key: String,
    pub shard_count: usize,
    /// Deltas per batch handed to the handler (fewer when `flush_interval`
    /// passes first).
    pub batch_size: usize,
    pub gc_interval: ConfigDuration,
    /// A peer not seen for this long is expired; also the most time one gap
    /// between announces can earn.
    pub peer_lifetime: ConfigDuration,
    pub prometheus_reporting_interval: ConfigDuration,
    /// The longest a delta waits to be handed to the handler.
    pub flush_interval: ConfigDuration,
    /// The journal's directory (created if missing; its parent must exist).
    pub journal_path: PathBuf,
    /// How long announces gather before one fdatasync covers them all.
    pub journal_sync_interval: ConfigDuration,
    /// Size past which the journal starts a new file (old files are deleted
    /// once the handler has taken their deltas).
    pub journal_segment_bytes: ByteSize,
    /// Journal bytes the handler may leave unacknowledged before announces
    /// wait (back-pressure).
    pub journal_max_bytes: ByteSize,
    /// How long an announce waits for room in the journal before it is
    /// refused with `tracker busy, try again later`.
    pub max_wait: ConfigDuration,
    /// How long a graceful stop waits for the handler to take what is
    /// pending; what it has not taken stays in the journal for the next start.
    pub shutdown_timeout: ConfigDuration,
    /// How often baselines are written to a snapshot (handlers that do not
    /// keep them), so the journal can be trimmed.
    pub snapshot_interval: ConfigDuration,
    /// Freeleech for everyone: downloads are credited at 0 (raw bytes are
    /// still kept as reported).
    pub freeleech: bool,
    /// Most active peers of one user on one torrent; the next is refused
    /// with `too many peers for this torrent` until one stops or expires.
    /// 0: no limit.
    pub max_peers_per_user_torrent: usize,
    pub handler: HandlerConfig,
}

impl Default for PrivtrakConfig {
    fn default() -> Self {
        let secs = |s| ConfigDuration(Duration::from_secs(s));
        PrivtrakConfig {
            passkey: "passkey".into(),
            hash_other_passkeys: false,
            passkey_hash_key: String::new(),
            shard_count: 1024,
            batch_size: 1024,
            gc_interval: secs(3 * 60),
            peer_lifetime: secs(30 * 60),
            prometheus_reporting_interval: secs(1),
            flush_interval: secs(1),
            journal_path: PathBuf::from("/var/lib/karuta/privtrak.journal"),
            journal_sync_interval: ConfigDuration(Duration::from_millis(2)),
            journal_segment_bytes: ByteSize(crate::journal::SEGMENT_BYTES),
            journal_max_bytes: ByteSize(1 << 30),
            max_wait: secs(2),
            shutdown_timeout: secs(30),
            snapshot_interval: secs(5 * 60),
            freeleech: false,
            max_peers_per_user_torrent: 3,
            handler: HandlerConfig::default(),
        }
    }
}

/// Most shards (each is a lock and a map).
const MAX_SHARDS: usize = 1 << 16;
/// Most deltas in one batch: a database's bind-parameter limits and a sane
/// transaction size.
pub const MAX_BATCH: usize = 65_536;

impl DriverConfig for PrivtrakConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_options()?;
        self.handler.validate().map_err(|e| e.within("handler"))
    }
}

/// privtrak's options for a hook whose handler is given in code
/// ([`crate::register_with`]): the `handler:` section is not used, so not
/// checked.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct OwnHandlerConfig(pub PrivtrakConfig);

impl DriverConfig for OwnHandlerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.0.validate_options()
    }
}

impl PrivtrakConfig {
    /// Everything but the handler section.
    fn validate_options(&self) -> Result<(), ConfigError> {
        if self.passkey.is_empty() {
            return Err(ConfigError::new("passkey", "must name a parameter"));
        }
        if self.hash_other_passkeys && self.passkey_hash_key.is_empty() {
            return Err(ConfigError::new(
                "passkey_hash_key",
                "is required when hash_other_passkeys is true (a secret that never changes)",
            ));
        }
        if !(1..=MAX_SHARDS).contains(&self.shard_count) {
            return Err(ConfigError::new(
                "shard_count",
                format!("must be between 1 and {MAX_SHARDS}"),
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return Err(ConfigError::new(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        for (key, d) in [
            ("gc_interval", self.gc_interval),
            ("peer_lifetime", self.peer_lifetime),
            (
                "prometheus_reporting_interval",
                self.prometheus_reporting_interval,
            ),
            ("flush_interval", self.flush_interval),
            ("snapshot_interval", self.snapshot_interval),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be more than 0"));
            }
        }
        // Seconds of a gap are u32 in the records; a lifetime past 100 years
        // is a typo, not a setting.
        if self.peer_lifetime.0 > Duration::from_secs(100 * 365 * 24 * 3600) {
            return Err(ConfigError::new("peer_lifetime", "must be under 100 years"));
        }
        if self.journal_sync_interval.0 > Duration::from_secs(1) {
            return Err(ConfigError::new(
                "journal_sync_interval",
                "must be at most 1s (every announce waits for it)",
            ));
        }
        if self.journal_path.as_os_str().is_empty() {
            return Err(ConfigError::new("journal_path", "must name a directory"));
        }
        // What a start would find: the directory, or its parent to make it in.
        check_dir_or_parent(&self.journal_path)
            .map_err(|why| ConfigError::new("journal_path", why))?;
        if self.journal_segment_bytes.0 < 64 << 10 {
            return Err(ConfigError::new(
                "journal_segment_bytes",
                "must be at least 64KiB",
            ));
        }
        if self.journal_max_bytes.0 < 1 << 20 {
            return Err(ConfigError::new(
                "journal_max_bytes",
                "must be at least 1MiB",
            ));
        }
        Ok(())
    }
}

/// A directory that exists, or a path whose parent directory does.
pub(crate) fn check_dir_or_parent(path: &std::path::Path) -> Result<(), String> {
    if path.is_dir() {
        return Ok(());
    }
    if path.exists() {
        return Err(format!("{} exists and is not a directory", path.display()));
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) if !parent.is_dir() => Err(format!(
            "{} cannot be created: {} is not a directory",
            path.display(),
            parent.display()
        )),
        _ => Ok(()),
    }
}

impl PrivtrakConfig {
    /// The options that cannot change while the tracker runs, for a reload
    /// to compare.
    pub(crate) fn fixed(&self) -> (usize, &PathBuf, ByteSize, &HandlerConfig) {
        (
            self.shard_count,
            &self.journal_path,
            self.journal_segment_bytes,
            &self.handler,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracker::Options;

    fn parse(mut v: serde_json::Value) -> Result<PrivtrakConfig, ConfigError> {
        // A journal directory a start could make (its parent exists).
        if v.get("journal_path").is_none() {
            let dir = std::env::temp_dir().join("karuta-config-test-journal");
            v["journal_path"] = dir.display().to_string().into();
        }
        let c: PrivtrakConfig = Options::new(v, "p").deserialize()?;
        c.validate().map_err(|e| e.within("p"))?;
        Ok(c)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_byte_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert!(parse_byte_size("1 gigabyte").is_err());
        assert!(parse_byte_size("").is_err());
    }

    #[test]
    fn defaults_are_privtraks() {
        let c =
            parse(serde_json::json!({"handler": {"name": "jsonl", "options": {"path": "/tmp/x"}}}))
                .unwrap();
        assert_eq!(c.shard_count, 1024);
        assert_eq!(c.batch_size, 1024);
        assert_eq!(c.gc_interval.0, Duration::from_secs(180));
        assert_eq!(c.peer_lifetime.0, Duration::from_secs(1800));
        assert_eq!(c.prometheus_reporting_interval.0, Duration::from_secs(1));
        assert_eq!(c.journal_sync_interval.0, Duration::from_millis(2));
        assert_eq!(c.journal_max_bytes, ByteSize(1 << 30));
    }

    #[test]
    fn bad_values_name_their_key() {
        let jsonl = serde_json::json!({"name": "jsonl", "options": {"path": "/tmp/x"}});
        for (options, key) in [
            (serde_json::json!({"shard_count": 0}), "p.shard_count"),
            (serde_json::json!({"batch_size": 100000}), "p.batch_size"),
            (serde_json::json!({"gc_interval": "0"}), "p.gc_interval"),
            (
                serde_json::json!({"journal_max_bytes": "1 gigabyte"}),
                "p.journal_max_bytes",
            ),
            (
                serde_json::json!({"journal_max_bytes": 10}),
                "p.journal_max_bytes",
            ),
            (
                serde_json::json!({"hash_other_passkeys": true}),
                "p.passkey_hash_key",
            ),
            (
                serde_json::json!({"journal_sync_interval": "5s"}),
                "p.journal_sync_interval",
            ),
            (
                serde_json::json!({"handler": {"name": "nope"}}),
                "p.handler",
            ),
            (
                serde_json::json!({"handler": {"name": "postgres", "options": {
                    "url": "postgresql://u@127.0.0.1/db", "writers": 3}}}),
                "p.handler.options.writers",
            ),
        ] {
            let mut options = options;
            if options.get("handler").is_none() {
                options["handler"] = jsonl.clone();
            }
            let e = parse(options.clone()).unwrap_err();
            assert!(e.key.starts_with(key), "{options}: {e}");
        }
    }
}
