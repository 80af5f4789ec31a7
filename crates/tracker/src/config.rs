//! Pieces of configuration shared by every component: chihaya's duration syntax,
//! and the checks of keys several drivers share.
//!
//! chihaya is written in Go and its YAML durations use Go's syntax: a sequence
//! of decimal numbers with units, `300ms`, `1.5h`, `2h45m`. Hooks and stores
//! deserialize their durations through [`ConfigDuration`] so every key accepts
//! the same spellings.
//!
//! Every store has chihaya's `peer_lifetime` and `gc_interval`;
//! [`validate_peer_lifetime`] checks them the same way for all of them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::ConfigError;

/// A duration in Go's syntax (`30m`, `1h30m`, `250ms`, `1.5s`, `0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl From<ConfigDuration> for Duration {
    fn from(d: ConfigDuration) -> Duration {
        d.0
    }
}

/// Parses Go's duration syntax exactly as Go's `time.ParseDuration` does,
/// with integer arithmetic, up to Go's maximum (2562047h47m16.854775807s).
/// Negative durations are refused: no karuta setting has a meaning for them.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {input:?} (expected a number with a unit: ns, us, ms, s, m or h; e.g. \"30m\" or \"1h30m\")"
        )
    };
    let too_large = || format!("duration {input:?} is too large");
    const MAX_NANOS: u128 = i64::MAX as u128;

    let mut s = input.trim();
    let negative = s.starts_with('-');
    if let Some(rest) = s.strip_prefix('-').or_else(|| s.strip_prefix('+')) {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = digits(s);
        let (int_part, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = digits(rest);
            (frac_part, s) = rest.split_at(frac_len);
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let nanos_per_unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        s = &s[unit_len..];
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_large())?
        };
        let mut value = int.checked_mul(nanos_per_unit).ok_or_else(too_large)?;
        if !frac_part.is_empty() {
            // Digits beyond 24 cannot change a nanosecond count of a value
            // below Go's maximum, and keep the product inside u128.
            let kept = &frac_part[..frac_part.len().min(24)];
            let frac: u128 = kept.parse().map_err(|_| invalid())?;
            value += frac * nanos_per_unit / 10u128.pow(kept.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(too_large)?;
        if total > MAX_NANOS {
            return Err(too_large());
        }
    }
    if negative && total > 0 {
        return Err(format!("negative duration {input:?} is not allowed"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration the way Go prints it (`30m0s`, `1h0m0s`, `250ms`), for logs
/// and the printed default configuration.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = d.subsec_millis();
    let sec = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{frac:03}s")
    };
    match (h, m) {
        (0, 0) => sec,
        (0, m) => format!("{m}m{sec}"),
        (h, m) => format!("{h}h{m}m{sec}"),
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30m\" or \"5s\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }

            // Go's YAML decoder reads a bare integer as nanoseconds, which is
            // never what an operator meant; only 0 is unambiguous.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigDuration, E> {
                if v == 0 {
                    Ok(ConfigDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "a bare number ({v}) is not a duration: add a unit, e.g. \"{v}s\""
                    )))
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigDuration, E> {
                if v < 0 {
                    Err(E::custom(format!("negative duration {v}")))
                } else {
                    self.visit_u64(v as u64)
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A store's `peer_lifetime` and `gc_interval`: both set, and a peer's longest
/// stay (its lifetime, plus up to one interval until it is collected) under a
/// year. Longer is a mistake in the configuration, and the memory store's
/// 16-bit clock ticks the coarser the longer the stay. Errors name the key.
pub fn validate_peer_lifetime(
    peer_lifetime: ConfigDuration,
    gc_interval: ConfigDuration,
) -> Result<(), ConfigError> {
    for (key, d) in [
        ("gc_interval", gc_interval),
        ("peer_lifetime", peer_lifetime),
    ] {
        if d.0.is_zero() {
            return Err(ConfigError::new(key, "must be greater than zero"));
        }
    }
    if peer_lifetime.0 + gc_interval.0 > Duration::from_secs(365 * 24 * 3600) {
        return Err(ConfigError::new(
            "peer_lifetime",
            "peer_lifetime plus gc_interval must be under a year",
        ));
    }
    Ok(())
}

/// Parses a listen address the way Go does: `host:port`, `[v6]:port`, or
/// `:port` for every interface (IPv4 and IPv6). Empty means "disabled".
pub fn parse_listen_addr(addr: &str) -> Result<Option<SocketAddr>, String> {
    if addr.is_empty() {
        return Ok(None);
    }
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in {addr:?}"))?;
        return Ok(Some(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port,
        )));
    }
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    if let Some(port) = addr.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in {addr:?}"))?;
        return Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
    }
    Err(format!(
        "{addr:?} is not an address like \"0.0.0.0:6969\", \"[::]:6969\" or \":6969\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("3ns").unwrap(), Duration::from_nanos(3));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("+0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("-0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("+2m").unwrap(), Duration::from_secs(120));
        // Go's maximum, to the nanosecond, and one past it.
        assert_eq!(
            parse_duration("2562047h47m16.854775807s").unwrap(),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert!(parse_duration("2562047h47m16.854775808s").is_err());
        assert_eq!(
            parse_duration("1.000000000000000000000000000001s").unwrap(),
            Duration::from_secs(1)
        );
        for bad in [
            "",
            "+",
            "-",
            "5",
            "m",
            "5x",
            "-5s",
            "1h-5m",
            "5 s",
            "1..5s",
            ".s",
            "s",
            "1e3s",
            "9999999999999h",
            "1e400s",
            "5\0s",
            "18446744073.709551616s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m0s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for d in [1800, 3600, 5, 3725] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn deserializes_from_values() {
        let d: ConfigDuration = serde_json::from_value(serde_json::json!("3m")).unwrap();
        assert_eq!(d.0, Duration::from_secs(180));
        let zero: ConfigDuration = serde_json::from_value(serde_json::json!(0)).unwrap();
        assert_eq!(zero.0, Duration::ZERO);
        let err = serde_json::from_value::<ConfigDuration>(serde_json::json!(60)).unwrap_err();
        assert!(err.to_string().contains("add a unit"), "{err}");
    }

    #[test]
    fn peer_lifetime_checks_name_the_key() {
        let d = |s| ConfigDuration(Duration::from_secs(s));
        validate_peer_lifetime(d(1800), d(180)).unwrap();
        let key = |lifetime, gc| validate_peer_lifetime(lifetime, gc).unwrap_err().key;
        assert_eq!(key(d(1800), d(0)), "gc_interval");
        assert_eq!(key(d(0), d(180)), "peer_lifetime");
        let err = validate_peer_lifetime(d(365 * 24 * 3600), d(1)).unwrap_err();
        assert_eq!(err.key, "peer_lifetime");
        assert!(err.to_string().contains("under a year"), "{err}");
        validate_peer_lifetime(d(365 * 24 * 3600 - 1), d(1)).unwrap();
    }

    #[test]
    fn listen_addrs() {
        assert_eq!(parse_listen_addr("").unwrap(), None);
        for (text, addr) in [
            ("0.0.0.0:6969", "0.0.0.0:6969"),
            ("[::1]:80", "[::1]:80"),
            (":6969", "[::]:6969"),
            ("localhost:1", "127.0.0.1:1"),
        ] {
            let want = Some(addr.parse().unwrap());
            assert_eq!(parse_listen_addr(text).unwrap(), want, "{text}");
        }
        assert!(parse_listen_addr("nonsense").is_err());
        assert!(parse_listen_addr(":99999").is_err());
    }
}
