//! BEP 15 connection ids that any tracker sharing the key can check.
//!
//! An id is `BE32(unix seconds) || HMAC-SHA256(key, BE32(seconds) || ip)[..4]`
//! (chihaya's scheme): nothing is stored per client, an id is valid from any
//! port of the address it was issued to, and every instance with the same key
//! accepts the ids of the others. The tag is checked in constant time.

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a connection id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionIdError {
    /// Not issued with this key to this address, or from the future.
    Invalid,
    /// Issued here, but longer ago than the lifetime.
    Expired,
}

impl ConnectionIdError {
    /// The error text the client gets.
    pub fn message(self) -> &'static str {
        match self {
            ConnectionIdError::Invalid => "invalid connection id",
            ConnectionIdError::Expired => "expired connection id",
        }
    }
}

/// Issues and checks connection ids.
#[derive(Clone)]
pub struct ConnectionIdSigner {
    mac: Hmac<Sha256>,
    lifetime_secs: u64,
    max_skew_secs: u64,
}

impl ConnectionIdSigner {
    pub fn new(key: &[u8], lifetime: Duration, max_clock_skew: Duration) -> Self {
        ConnectionIdSigner {
            mac: Hmac::new_from_slice(key).expect("HMAC takes keys of any length"),
            lifetime_secs: lifetime.as_secs(),
            max_skew_secs: max_clock_skew.as_secs(),
        }
    }

    fn tag(&self, timestamp: u32, ip: IpAddr) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&timestamp.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac
    }

    /// A connection id for `ip` at `now` (unix seconds).
    pub fn issue(&self, ip: IpAddr, now: u64) -> u64 {
        let timestamp = now as u32;
        let tag = self.tag(timestamp, ip).finalize().into_bytes();
        u64::from(timestamp) << 32 | u64::from(u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]))
    }

    /// Checks an id presented by `ip` at `now` (unix seconds).
    pub fn verify(&self, id: u64, ip: IpAddr, now: u64) -> Result<(), ConnectionIdError> {
        let timestamp = (id >> 32) as u32;
        let tag = (id as u32).to_be_bytes();
        self.tag(timestamp, ip)
            .verify_truncated_left(&tag)
            .map_err(|_| ConnectionIdError::Invalid)?;
        let issued = u64::from(timestamp);
        if issued > now + self.max_skew_secs {
            return Err(ConnectionIdError::Invalid);
        }
        if now > issued + self.lifetime_secs {
            return Err(ConnectionIdError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn signer(key: &[u8]) -> ConnectionIdSigner {
        ConnectionIdSigner::new(key, Duration::from_secs(120), Duration::from_secs(10))
    }

    #[test]
    fn issued_ids_verify_for_their_address_only() {
        let s = signer(b"key");
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let id = s.issue(ip, 1_000_000);
        assert_eq!(s.verify(id, ip, 1_000_000), Ok(()));
        assert_eq!(s.verify(id, ip, 1_000_120), Ok(()));
        assert_eq!(s.verify(id, ip, 1_000_121), Err(ConnectionIdError::Expired));
        let other = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            s.verify(id, other, 1_000_000),
            Err(ConnectionIdError::Invalid)
        );
        assert_eq!(
            s.verify(id ^ 1, ip, 1_000_000),
            Err(ConnectionIdError::Invalid)
        );
    }

    #[test]
    fn shared_key_shared_ids() {
        let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let id = signer(b"shared").issue(ip, 50);
        assert_eq!(signer(b"shared").verify(id, ip, 60), Ok(()));
        assert_eq!(
            signer(b"other").verify(id, ip, 60),
            Err(ConnectionIdError::Invalid)
        );
    }

    #[test]
    fn clock_skew() {
        let s = signer(b"k");
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let id = s.issue(ip, 1_010);
        // Issued by an instance whose clock is 10 s ahead: accepted.
        assert_eq!(s.verify(id, ip, 1_000), Ok(()));
        assert_eq!(s.verify(id, ip, 999), Err(ConnectionIdError::Invalid));
    }
}
