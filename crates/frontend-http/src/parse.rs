//! Announce and scrape requests from URL data, with chihaya's error strings.

use std::net::IpAddr;

use bittorrent::{
    AddressFamily, AnnounceRequest, ClientError, Event, Params, Peer, PeerId, ScrapeRequest,
};
use tracker::RequestLimits;

fn parse_uint(params: &Params, key: &str) -> Result<Option<u64>, ()> {
    match params.get(key) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.len() <= 20 && v.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(v)
                .map_err(drop)?
                .parse()
                .map(Some)
                .map_err(drop)
        }
        Some(_) => Err(()),
    }
}

fn required(params: &Params, key: &'static str, error: &'static str) -> Result<u64, ClientError> {
    match parse_uint(params, key) {
        Ok(Some(v)) => Ok(v),
        _ => Err(ClientError::new(error)),
    }
}

/// BEP 7's `key` when it is 1-8 hex digits (what clients send); anything
/// else is no key, not an error: chihaya ignores the parameter, so no client
/// that announced before may be refused now.
fn key(params: &Params) -> Option<u32> {
    let v = params.get("key")?;
    if v.is_empty() || v.len() > 8 || !v.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
}

/// What the announce parser needs besides the request.
pub(crate) struct AnnounceOptions {
    pub limits: RequestLimits,
    pub allow_ip_spoofing: bool,
}

/// The address an announce is made for: the `ip`, `ipv4` or `ipv6` parameter
/// when spoofing is allowed (in that order), else the client's address.
fn announced_ip(
    params: &Params,
    client: IpAddr,
    allow_spoofing: bool,
) -> Result<(IpAddr, bool), ClientError> {
    if allow_spoofing {
        for key in ["ip", "ipv4", "ipv6"] {
            if let Some(v) = params.get_str(key) {
                let ip = v
                    .parse()
                    .map_err(|_| ClientError::new("failed to parse peer IP address"))?;
                return Ok((ip, true));
            }
        }
    }
    Ok((client, false))
}

/// Builds an announce from `params` (which it takes over) and the client's address.
pub(crate) fn announce(
    params: Params,
    client: IpAddr,
    opts: &AnnounceOptions,
) -> Result<AnnounceRequest, ClientError> {
    let (event, event_provided) = match params.get("event") {
        Some(e) => (
            Event::parse(e)
                .map_err(|_| ClientError::new("failed to provide valid client event"))?,
            true,
        ),
        None => (Event::None, false),
    };
    // BEP 23: compact unless the client asks otherwise (`compact=0`).
    let compact = params.get("compact") != Some(b"0");
    let info_hash = match params.info_hashes() {
        [] => return Err(ClientError::new("no info_hash parameter supplied")),
        [one] => *one,
        _ => return Err(ClientError::new("multiple info_hash parameters supplied")),
    };
    let peer_id = params
        .get("peer_id")
        .ok_or(ClientError::new("failed to parse parameter: peer_id"))?;
    let peer_id = PeerId::from_bytes(peer_id)
        .map_err(|_| ClientError::new("failed to provide valid peer_id"))?;
    let left = required(&params, "left", "failed to parse parameter: left")?;
    let downloaded = required(
        &params,
        "downloaded",
        "failed to parse parameter: downloaded",
    )?;
    let uploaded = required(&params, "uploaded", "failed to parse parameter: uploaded")?;
    let num_want = parse_uint(&params, "numwant")
        .map_err(|_| ClientError::new("failed to parse parameter: numwant"))?;
    let port = required(&params, "port", "failed to parse parameter: port")?;
    let port =
        u16::try_from(port).map_err(|_| ClientError::new("failed to parse parameter: port"))?;
    let (ip, ip_provided) = announced_ip(&params, client, opts.allow_ip_spoofing)?;
    if ip.is_unspecified() {
        return Err(ClientError::new("invalid IP"));
    }
    Ok(AnnounceRequest {
        info_hash,
        peer: Peer::new(peer_id, ip, port),
        event,
        event_provided,
        num_want: opts
            .limits
            .num_want(num_want.map(|n| n.min(i64::MAX as u64) as i64)),
        num_want_provided: num_want.is_some(),
        ip_provided,
        compact,
        uploaded,
        downloaded,
        left,
        key: key(&params),
        params,
    })
}

/// Builds a scrape from `params`, keeping at most `max_scrape_infohashes`.
pub(crate) fn scrape(
    params: Params,
    client: IpAddr,
    limits: &RequestLimits,
) -> Result<ScrapeRequest, ClientError> {
    let hashes = params.info_hashes();
    if hashes.is_empty() {
        return Err(ClientError::new("no info_hash parameter supplied"));
    }
    let info_hashes = hashes[..limits.scrape_len(hashes.len())].to_vec();
    Ok(ScrapeRequest {
        address_family: AddressFamily::of(&client),
        client,
        info_hashes,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: &str = "%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14";

    fn opts(spoof: bool) -> AnnounceOptions {
        AnnounceOptions {
            limits: RequestLimits::default(),
            allow_ip_spoofing: spoof,
        }
    }

    fn parse(query: &str, spoof: bool) -> Result<AnnounceRequest, String> {
        let params =
            Params::parse(format!("/announce?{query}").as_bytes()).map_err(|e| e.to_string())?;
        announce(params, "192.0.2.1".parse().unwrap(), &opts(spoof)).map_err(|e| e.to_string())
    }

    fn base(extra: &str) -> String {
        format!(
            "info_hash={IH}&peer_id=-LT2080-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3{extra}"
        )
    }

    #[test]
    fn a_full_announce() {
        let r = parse(&base("&event=started&numwant=7&compact=1"), false).unwrap();
        assert_eq!(r.peer.port, 6881);
        assert_eq!((r.uploaded, r.downloaded, r.left), (1, 2, 3));
        assert_eq!((r.event, r.event_provided), (Event::Started, true));
        assert_eq!((r.num_want, r.num_want_provided), (7, true));
        assert!(r.compact);
        assert_eq!(r.peer.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
        let r = parse(&base(""), false).unwrap();
        assert!(r.compact, "compact unless asked otherwise");
        assert_eq!(
            (r.num_want, r.num_want_provided, r.event_provided),
            (50, false, false)
        );
        assert!(!parse(&base("&compact=0"), false).unwrap().compact);
        assert_eq!(
            parse(&base("&numwant=100000"), false).unwrap().num_want,
            100
        );
    }

    #[test]
    fn the_key_is_kept_when_it_is_one_to_eight_hex_digits() {
        let key = |extra: &str| parse(&base(extra), false).unwrap().key;
        assert_eq!(key(""), None);
        assert_eq!(key("&key=1"), Some(1));
        assert_eq!(key("&key=DeadBeef"), Some(0xdead_beef));
        assert_eq!(key("&key=0000abcd"), Some(0xabcd));
        for odd in ["", "123456789", "xyz", "-1", "12%2034", "%FF"] {
            assert_eq!(key(&format!("&key={odd}")), None, "key={odd}");
        }
    }

    #[test]
    fn chihayas_error_strings() {
        let cases = [
            (
                base("&event=sideways"),
                "failed to provide valid client event",
            ),
            (
                "peer_id=-LT2080-abcdefghijkl&port=1&uploaded=0&downloaded=0&left=0".to_owned(),
                "no info_hash parameter supplied",
            ),
            (
                format!("{}&info_hash={IH}", base("")),
                "multiple info_hash parameters supplied",
            ),
            (
                format!("info_hash={IH}&port=1&uploaded=0&downloaded=0&left=0"),
                "failed to parse parameter: peer_id",
            ),
            (
                format!("info_hash={IH}&peer_id=short&port=1&uploaded=0&downloaded=0&left=0"),
                "failed to provide valid peer_id",
            ),
            (
                base("").replace("&left=3", ""),
                "failed to parse parameter: left",
            ),
            (
                base("").replace("&left=3", "&left=-1"),
                "failed to parse parameter: left",
            ),
            (
                base("").replace("&downloaded=2", "&downloaded=x"),
                "failed to parse parameter: downloaded",
            ),
            (
                base("").replace("&uploaded=1", ""),
                "failed to parse parameter: uploaded",
            ),
            (base("&numwant=many"), "failed to parse parameter: numwant"),
            (
                base("").replace("&port=6881", ""),
                "failed to parse parameter: port",
            ),
            (
                base("").replace("&port=6881", "&port=70000"),
                "failed to parse parameter: port",
            ),
            (
                "info_hash=%01%02&peer_id=-LT2080-abcdefghijkl".to_string(),
                "provided invalid infohash",
            ),
        ];
        for (query, want) in cases {
            assert_eq!(parse(&query, false).unwrap_err(), want, "{query}");
        }
    }

    #[test]
    fn spoofing_only_when_allowed() {
        let q = base("&ip=10.9.8.7");
        assert_eq!(
            parse(&q, false).unwrap().peer.ip(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        let r = parse(&q, true).unwrap();
        assert_eq!(r.peer.ip(), "10.9.8.7".parse::<IpAddr>().unwrap());
        assert!(r.ip_provided);
        assert_eq!(
            parse(&base("&ipv6=2001:db8::9"), true).unwrap().peer.ip(),
            "2001:db8::9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse(&base("&ip=example.com"), true).unwrap_err(),
            "failed to parse peer IP address"
        );
        assert_eq!(parse(&base("&ip=0.0.0.0"), true).unwrap_err(), "invalid IP");
    }

    #[test]
    fn scrape_caps_and_requires_hashes() {
        let limits = RequestLimits {
            max_scrape_infohashes: 2,
            ..RequestLimits::default()
        };
        let q = format!("/scrape?info_hash={IH}&info_hash={IH}&info_hash={IH}");
        let s = scrape(
            Params::parse(q.as_bytes()).unwrap(),
            "::1".parse().unwrap(),
            &limits,
        )
        .unwrap();
        assert_eq!(s.info_hashes.len(), 2);
        assert_eq!(s.address_family, AddressFamily::V6);
        let none = scrape(
            Params::parse(b"/scrape").unwrap(),
            "::1".parse().unwrap(),
            &limits,
        )
        .unwrap_err();
        assert_eq!(none.message(), "no info_hash parameter supplied");
    }
}
