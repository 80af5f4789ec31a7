//! Identifiers and peers: the fixed-size values every request carries.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::ClientError;

/// A torrent's 20-byte info hash (BEP 3), or a BEP 52 v2 hash truncated to 20 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// A peer's self-chosen 20-byte id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 20]);

/// The six bytes of a peer id that name the client program (`-TR3000-` → `TR3000`),
/// as chihaya's client approval middleware matches them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub [u8; 6]);

/// A hex string that is not 40 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 40 hexadecimal characters, got {0:?}")]
pub struct ParseHexError(pub String);

/// Appends `bytes` as lower-case hex (as an info hash displays), without
/// formatting machinery: for hot paths that name things by their hex.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// The value of one hexadecimal digit (either case).
pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_hex20(s: &str) -> Result<[u8; 20], ParseHexError> {
    let bytes = s.as_bytes();
    if bytes.len() != 40 {
        return Err(ParseHexError(s.to_owned()));
    }
    let mut out = [0u8; 20];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
            _ => return Err(ParseHexError(s.to_owned())),
        }
    }
    Ok(out)
}

macro_rules! id20 {
    ($t:ident, $invalid:literal) => {
        impl $t {
            /// Takes exactly 20 bytes; anything else is the client's error.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClientError> {
                <[u8; 20]>::try_from(bytes)
                    .map($t)
                    .map_err(|_| ClientError::new($invalid))
            }

            pub fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($t))?;
                write_hex(f, &self.0)?;
                f.write_str(")")
            }
        }

        impl FromStr for $t {
            type Err = ParseHexError;
            /// Parses 40 hexadecimal characters (either case).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex20(s).map($t)
            }
        }
    };
}

id20!(InfoHash, "provided invalid infohash");
id20!(PeerId, "provided invalid peer_id");

impl PeerId {
    /// The client id: bytes 1..7 when the id is Azureus-style (`-XX0000-`),
    /// otherwise bytes 0..6 (chihaya's rule).
    pub fn client_id(&self) -> ClientId {
        let mut out = [0u8; 6];
        if self.0[0] == b'-' {
            out.copy_from_slice(&self.0[1..7]);
        } else {
            out.copy_from_slice(&self.0[0..6]);
        }
        ClientId(out)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// IPv4 and IPv6 swarms are kept fully apart: a peer only ever learns of peers
/// of its own family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    #[default]
    V4,
    V6,
}

impl AddressFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        }
    }

    /// chihaya's label value (`IPv4` / `IPv6`), used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressFamily::V4 => "IPv4",
            AddressFamily::V6 => "IPv6",
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer as a request describes it.
///
/// The address is canonical: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// becomes the IPv4 address, so a dual-stack socket cannot put one host into
/// both swarms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub id: PeerId,
    ip: IpAddr,
    pub port: u16,
}

/// The unspecified IPv4 address, port 0: a placeholder for buffers that are
/// filled before use.
impl Default for Peer {
    fn default() -> Self {
        Peer::new(
            PeerId::default(),
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            0,
        )
    }
}

impl Peer {
    pub fn new(id: PeerId, ip: IpAddr, port: u16) -> Self {
        Peer {
            id,
            ip: canonical_ip(ip),
            port,
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Replaces the address, keeping it canonical.
    pub fn set_ip(&mut self, ip: IpAddr) {
        self.ip = canonical_ip(ip);
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.ip)
    }
}

/// Collapses IPv4-mapped IPv6 addresses to IPv4; every other address is kept.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The `event` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Event {
    /// A regular announce (no event, or the empty string).
    #[default]
    None,
    Started,
    Stopped,
    Completed,
    /// BEP 21 `paused` (HTTP only; BEP 15 has no code for it): a regular
    /// announce for the swarm, kept apart so accounting can tell it.
    Paused,
}

impl Event {
    /// Parses the HTTP `event` parameter (any case); an unknown value is the
    /// client's error.
    pub fn parse(s: &[u8]) -> Result<Self, ClientError> {
        let mut lower = [0u8; 9];
        if s.len() > lower.len() {
            return Err(ClientError::new("unknown event"));
        }
        lower[..s.len()].copy_from_slice(s);
        lower.make_ascii_lowercase();
        match &lower[..s.len()] {
            b"" | b"empty" | b"none" => Ok(Event::None),
            b"paused" => Ok(Event::Paused),
            b"started" => Ok(Event::Started),
            b"stopped" => Ok(Event::Stopped),
            b"completed" => Ok(Event::Completed),
            _ => Err(ClientError::new("unknown event")),
        }
    }

    /// The BEP 15 event code (0 none, 1 completed, 2 started, 3 stopped).
    pub fn from_udp(code: u32) -> Result<Self, ClientError> {
        match code {
            0 => Ok(Event::None),
            1 => Ok(Event::Completed),
            2 => Ok(Event::Started),
            3 => Ok(Event::Stopped),
            _ => Err(ClientError::new("unknown event")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::None => "none",
            Event::Started => "started",
            Event::Stopped => "stopped",
            Event::Completed => "completed",
            Event::Paused => "paused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn info_hash_hex_round_trip() {
        let hex = "a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5";
        let ih: InfoHash = hex.parse().unwrap();
        assert_eq!(ih.to_string(), hex);
        let upper: InfoHash = hex.to_uppercase().parse().unwrap();
        assert_eq!(ih, upper);
        assert!("a1b2".parse::<InfoHash>().is_err());
        assert!(
            "g1b2c3d4e5a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5"
                .parse::<InfoHash>()
                .is_err()
        );
    }

    #[test]
    fn from_bytes_requires_exactly_20() {
        assert!(InfoHash::from_bytes(&[0; 19]).is_err());
        assert!(InfoHash::from_bytes(&[0; 21]).is_err());
        assert_eq!(InfoHash::from_bytes(&[7; 20]).unwrap(), InfoHash([7; 20]));
        assert_eq!(
            PeerId::from_bytes(b"short").unwrap_err().message(),
            "provided invalid peer_id"
        );
    }

    #[test]
    fn client_id_follows_chihaya() {
        assert_eq!(PeerId(*b"-TR3000-abcdefghijkl").client_id().0, *b"TR3000");
        assert_eq!(PeerId(*b"A2-1-36-0-abcdefghij").client_id().0, *b"A2-1-3");
    }

    #[test]
    fn ipv4_mapped_collapses() {
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        let p = Peer::new(PeerId::default(), mapped, 1);
        assert_eq!(p.ip(), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(p.family(), AddressFamily::V4);
        let v6 = Peer::new(PeerId::default(), IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        assert_eq!(v6.family(), AddressFamily::V6);
    }

    #[test]
    fn events() {
        assert_eq!(Event::parse(b"").unwrap(), Event::None);
        assert_eq!(Event::parse(b"started").unwrap(), Event::Started);
        assert_eq!(Event::parse(b"paused").unwrap(), Event::Paused);
        assert_eq!(Event::parse(b"Completed").unwrap(), Event::Completed);
        assert!(Event::parse(b"completedx").is_err());
        assert_eq!(
            Event::parse(b"bogus").unwrap_err().message(),
            "unknown event"
        );
        assert_eq!(Event::from_udp(3).unwrap(), Event::Stopped);
        assert!(Event::from_udp(4).is_err());
    }
}
