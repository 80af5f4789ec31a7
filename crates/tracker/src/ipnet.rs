//! IP networks (`10.0.0.0/8`, `2001:db8::/32`, or a bare address): [`IpNet`]
//! for trusted proxy lists, and [`ipv4_range`] / [`ipv6_range`] for
//! subnet-aware peer selection (the memory store keeps a swarm's peers sorted
//! by address, so an announcer's network is the run of peers between its
//! first and last address). One mask rule serves both.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bittorrent::canonical_ip;

/// An address and a prefix length. IPv4-mapped IPv6 input is taken as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `None` if `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = canonical_ip(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (canonicalised) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = v4_mask(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = v6_mask(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The network bits of an IPv4 prefix length (longer than 32 counts as 32).
#[inline]
fn v4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

/// The network bits of an IPv6 prefix length (longer than 128 counts as 128).
#[inline]
fn v6_mask(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// The first and last address of `ip`'s network of `prefix` bits. On the
/// announce path: no allocation, a mask and two bit operations.
#[inline]
pub fn ipv4_range(ip: Ipv4Addr, prefix: u8) -> (Ipv4Addr, Ipv4Addr) {
    let (ip, mask) = (u32::from(ip), v4_mask(prefix));
    ((ip & mask).into(), (ip | !mask).into())
}

/// [`ipv4_range`] for IPv6. The address is taken as it is: an IPv4-mapped
/// address is a host in `::ffff:0:0/96` here, as it is in an IPv6 swarm.
#[inline]
pub fn ipv6_range(ip: Ipv6Addr, prefix: u8) -> (Ipv6Addr, Ipv6Addr) {
    let (ip, mask) = (u128::from(ip), v6_mask(prefix));
    ((ip & mask).into(), (ip | !mask).into())
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let invalid =
            || format!("{s:?} is not an IP address or network (e.g. \"10.0.0.0/8\", \"::1\")");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let addr = canonical_ip(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        IpNet::new(addr, prefix).ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains() {
        let n: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(
            n.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!n.contains(ip("::1")));
        let host: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert_eq!("::/0".parse::<IpNet>().unwrap().to_string(), "::/0");
    }

    #[test]
    fn ranges() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        for (ip, prefix, first, last) in [
            ("192.168.7.9", 24, "192.168.7.0", "192.168.7.255"),
            ("1.2.3.4", 0, "0.0.0.0", "255.255.255.255"),
            ("1.2.3.4", 40, "1.2.3.4", "1.2.3.4"),
        ] {
            let want = (v4(first), v4(last));
            assert_eq!(ipv4_range(v4(ip), prefix), want, "{ip}/{prefix}");
        }
        assert_eq!(
            ipv6_range(v6("2001:db8::7"), 64),
            (v6("2001:db8::"), v6("2001:db8::ffff:ffff:ffff:ffff"))
        );
        assert_eq!(
            ipv6_range(v6("::1"), 0),
            (v6("::"), Ipv6Addr::from(u128::MAX))
        );
        // The range and `contains` agree on the edges.
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        let (first, last) = ipv4_range(v4("10.1.2.3"), 16);
        assert!(net.contains(first.into()) && net.contains(last.into()));
        let after = Ipv4Addr::from(u32::from(last) + 1);
        assert!(!net.contains(after.into()));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "hello",
            "10.0.0.0/x",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
    }
}
