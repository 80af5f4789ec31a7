//! Bencoded replies, written straight into one buffer.

use std::net::IpAddr;

use bittorrent::{AddressFamily, AnnounceResponse, BencodeWriter, Scrape};

/// An announce reply. Compact replies put IPv4 peers in `peers` (6 bytes each)
/// and IPv6 peers in `peers6` (18 bytes each); non-compact replies list every
/// peer as `{ip, port}` in `peers` (no `peer id`: karuta does not keep them,
/// which BEP 23's `no_peer_id` form allows). `external ip` is BEP 24's.
pub(crate) fn write_announce(
    buf: &mut Vec<u8>,
    resp: &AnnounceResponse,
    family: AddressFamily,
    external_ip: IpAddr,
) {
    let mut w = BencodeWriter::new(buf);
    w.begin_dict();
    w.key("complete").int(i64::from(resp.complete));
    w.key("downloaded").int(i64::from(resp.snatches));
    match external_ip {
        IpAddr::V4(ip) => w.key("external ip").bytes(&ip.octets()),
        IpAddr::V6(ip) => w.key("external ip").bytes(&ip.octets()),
    };
    w.key("incomplete").int(i64::from(resp.incomplete));
    w.key("interval").int(resp.interval.as_secs() as i64);
    w.key("min interval")
        .int(resp.min_interval.as_secs() as i64);
    if resp.compact {
        let v4 = &resp.ipv4_peers;
        w.key("peers").bytes_with(v4.len() * 6, |b| {
            for p in v4 {
                b.extend_from_slice(&p.ip().octets());
                b.extend_from_slice(&p.port().to_be_bytes());
            }
        });
        if family == AddressFamily::V6 || !resp.ipv6_peers.is_empty() {
            let v6 = &resp.ipv6_peers;
            w.key("peers6").bytes_with(v6.len() * 18, |b| {
                for p in v6 {
                    b.extend_from_slice(&p.ip().octets());
                    b.extend_from_slice(&p.port().to_be_bytes());
                }
            });
        }
    } else {
        w.key("peers").begin_list();
        let mut ip_text = String::new();
        for peer in resp.peers() {
            use std::fmt::Write;
            ip_text.clear();
            let _ = write!(ip_text, "{}", peer.ip());
            w.begin_dict()
                .key("ip")
                .str(&ip_text)
                .key("port")
                .int(i64::from(peer.port()))
                .end();
        }
        w.end();
    }
    if let Some(warning) = &resp.warning_message {
        w.key("warning message").str(warning);
    }
    w.end();
}

/// A scrape reply: `files`, keyed by raw info hash (sorted, as bencode
/// requires; a hash asked twice appears once), each with `complete`,
/// `downloaded` and `incomplete`.
pub(crate) fn write_scrape(buf: &mut Vec<u8>, files: &mut Vec<Scrape>) {
    files.sort_unstable_by_key(|f| f.info_hash);
    files.dedup_by_key(|f| f.info_hash);
    let mut w = BencodeWriter::new(buf);
    w.begin_dict().key("files").begin_dict();
    for f in files.iter() {
        // Raw 20-byte keys, sorted above (the writer checks the order in debug builds).
        w.key_bytes(&f.info_hash.0);
        w.begin_dict()
            .key("complete")
            .int(i64::from(f.complete))
            .key("downloaded")
            .int(i64::from(f.snatches))
            .key("incomplete")
            .int(i64::from(f.incomplete))
            .end();
    }
    w.end().end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use bittorrent::InfoHash;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::time::Duration;

    fn resp(compact: bool) -> AnnounceResponse {
        AnnounceResponse {
            compact,
            complete: 2,
            incomplete: 3,
            snatches: 4,
            interval: Duration::from_secs(1800),
            min_interval: Duration::from_secs(900),
            ipv4_peers: vec![SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 0x1ae1)],
            ..Default::default()
        }
    }

    #[test]
    fn compact_announce() {
        let mut buf = Vec::new();
        write_announce(
            &mut buf,
            &resp(true),
            AddressFamily::V4,
            "9.8.7.6".parse().unwrap(),
        );
        assert_eq!(
            buf,
            b"d8:completei2e10:downloadedi4e11:external ip4:\x09\x08\x07\x0610:incompletei3e8:intervali1800e12:min intervali900e5:peers6:\x01\x02\x03\x04\x1a\xe1e"
        );
    }

    #[test]
    fn ipv6_and_warning() {
        let mut r = resp(true);
        r.ipv4_peers.clear();
        r.ipv6_peers
            .push(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 80, 0, 0));
        r.warning_message = Some("slow down".into());
        let mut buf = Vec::new();
        write_announce(&mut buf, &r, AddressFamily::V6, "::1".parse().unwrap());
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("5:peers0:6:peers618:"), "{text}");
        assert!(text.ends_with("15:warning message9:slow downe"), "{text}");
    }

    #[test]
    fn non_compact_announce() {
        let mut buf = Vec::new();
        write_announce(
            &mut buf,
            &resp(false),
            AddressFamily::V4,
            "9.8.7.6".parse().unwrap(),
        );
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.contains("5:peersld2:ip7:1.2.3.44:porti6881eee"),
            "{text}"
        );
    }

    #[test]
    fn scrape_sorted_and_deduplicated() {
        let mut files = vec![
            Scrape {
                info_hash: InfoHash([2; 20]),
                complete: 1,
                incomplete: 2,
                snatches: 3,
            },
            Scrape {
                info_hash: InfoHash([1; 20]),
                complete: 0,
                incomplete: 0,
                snatches: 0,
            },
            Scrape {
                info_hash: InfoHash([2; 20]),
                complete: 1,
                incomplete: 2,
                snatches: 3,
            },
        ];
        let mut buf = Vec::new();
        write_scrape(&mut buf, &mut files);
        let mut want = b"d5:filesd20:".to_vec();
        want.extend_from_slice(&[1; 20]);
        want.extend_from_slice(b"d8:completei0e10:downloadedi0e10:incompletei0ee20:");
        want.extend_from_slice(&[2; 20]);
        want.extend_from_slice(b"d8:completei1e10:downloadedi3e10:incompletei2eeee");
        assert_eq!(buf, want);
    }
}
