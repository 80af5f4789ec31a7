//! Which address a request comes from, when reverse proxies are involved.
//!
//! - `real_ip_header` (chihaya's key) names one header a proxy sets to the
//!   client's address. With no `trusted_proxies`, it is believed from anyone,
//!   as chihaya does (and karuta warns at start that clients can then choose
//!   their address); with `trusted_proxies`, only from those.
//! - `X-Forwarded-For` is believed only from a trusted proxy, and read from the
//!   right: every hop a trusted proxy added is skipped, and the first address
//!   not trusted is the client (chihaya #607). A client can put anything at the
//!   left of the header; it is never reached while a trusted hop is to its right.

use std::net::IpAddr;

use bittorrent::{ClientError, canonical_ip};
use hyper::HeaderMap;
use hyper::header::HeaderName;
use tracker::ipnet::IpNet;

const BAD_ADDRESS: ClientError = ClientError::new("failed to parse peer IP address");

#[derive(Clone, Debug)]
pub(crate) struct ClientAddress {
    real_ip_header: Option<HeaderName>,
    trusted: Vec<IpNet>,
}

impl ClientAddress {
    pub(crate) fn new(real_ip_header: Option<HeaderName>, trusted: Vec<IpNet>) -> Self {
        ClientAddress {
            real_ip_header,
            trusted,
        }
    }

    /// Whether any client can choose its own address through a header.
    pub(crate) fn header_trusted_from_anyone(&self) -> bool {
        self.real_ip_header.is_some() && self.trusted.is_empty()
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The client's address, given the connection's peer address.
    pub(crate) fn resolve(
        &self,
        remote: IpAddr,
        headers: &HeaderMap,
    ) -> Result<IpAddr, ClientError> {
        let remote = canonical_ip(remote);
        let from_proxy = self.is_trusted(remote);
        if let Some(name) = &self.real_ip_header
            && (self.trusted.is_empty() || from_proxy)
            && let Some(value) = headers.get(name)
        {
            let text = value.to_str().map_err(|_| BAD_ADDRESS)?;
            return parse_ip(text).map(canonical_ip).ok_or(BAD_ADDRESS);
        }
        if from_proxy {
            let hops = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty());
            let mut client = remote;
            for hop in hops.collect::<Vec<_>>().into_iter().rev() {
                let Some(ip) = parse_ip(hop).map(canonical_ip) else {
                    // A trusted proxy passed on something that is no address:
                    // the last address it vouched for is all we know.
                    break;
                };
                client = ip;
                if !self.is_trusted(ip) {
                    break;
                }
            }
            return Ok(client);
        }
        Ok(remote)
    }
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`,
/// possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn no_proxies_configured() {
        let plain = ClientAddress::new(None, vec![]);
        let h = headers(&[("x-forwarded-for", "9.9.9.9"), ("x-real-ip", "8.8.8.8")]);
        assert_eq!(
            plain.resolve(ip("1.1.1.1"), &h),
            Ok(ip("1.1.1.1")),
            "headers ignored"
        );
        let chihaya = ClientAddress::new(Some(HeaderName::from_static("x-real-ip")), vec![]);
        assert!(chihaya.header_trusted_from_anyone());
        assert_eq!(
            chihaya.resolve(ip("1.1.1.1"), &h),
            Ok(ip("8.8.8.8")),
            "chihaya believes real_ip_header"
        );
        assert_eq!(
            chihaya.resolve(ip("1.1.1.1"), &headers(&[])),
            Ok(ip("1.1.1.1"))
        );
        let bad = headers(&[("x-real-ip", "not an ip")]);
        assert_eq!(chihaya.resolve(ip("1.1.1.1"), &bad), Err(BAD_ADDRESS));
    }

    #[test]
    fn trusted_proxies_only() {
        let a = ClientAddress::new(
            Some(HeaderName::from_static("x-real-ip")),
            nets(&["10.0.0.0/8", "::1"]),
        );
        assert!(!a.header_trusted_from_anyone());
        let h = headers(&[("x-real-ip", "8.8.8.8")]);
        assert_eq!(
            a.resolve(ip("10.1.1.1"), &h),
            Ok(ip("8.8.8.8")),
            "from a trusted proxy"
        );
        assert_eq!(
            a.resolve(ip("5.5.5.5"), &h),
            Ok(ip("5.5.5.5")),
            "not from anyone else"
        );

        let xff = ClientAddress::new(None, nets(&["10.0.0.0/8"]));
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 7.7.7.7"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        assert_eq!(
            xff.resolve(ip("10.1.1.1"), &chain),
            Ok(ip("7.7.7.7")),
            "first untrusted from the right"
        );
        assert_eq!(
            xff.resolve(ip("5.5.5.5"), &chain),
            Ok(ip("5.5.5.5")),
            "untrusted source: header ignored"
        );
        let all_trusted = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]);
        assert_eq!(
            xff.resolve(ip("10.1.1.1"), &all_trusted),
            Ok(ip("10.3.3.3"))
        );
        let ported = headers(&[("x-forwarded-for", "[2001:db8::7]:443")]);
        assert_eq!(xff.resolve(ip("10.1.1.1"), &ported), Ok(ip("2001:db8::7")));
        let junk = headers(&[("x-forwarded-for", "junk, 10.2.2.2")]);
        assert_eq!(xff.resolve(ip("10.1.1.1"), &junk), Ok(ip("10.2.2.2")));
        let mapped = ClientAddress::new(None, nets(&["127.0.0.1"]));
        assert_eq!(
            mapped.resolve(
                ip("::ffff:127.0.0.1"),
                &headers(&[("x-forwarded-for", "9.9.9.9")])
            ),
            Ok(ip("9.9.9.9")),
            "an IPv4-mapped proxy address is the IPv4 one"
        );
    }
}
