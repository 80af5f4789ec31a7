//! The BEP 15 UDP tracker protocol, with BEP 41 URL data: parsing requests
//! from a packet without copying, writing replies into a reused buffer.
//!
//! Layouts (big-endian):
//!
//! ```text
//! request header   connection_id u64 | action u32 | transaction_id u32           16 bytes
//! connect          header with connection_id = PROTOCOL_ID, action 0
//! announce         header | info_hash 20 | peer_id 20 | downloaded u64 | left u64
//!                  | uploaded u64 | event u32 | ip u32 | key u32 | num_want i32
//!                  | port u16 | BEP 41 options...                               98+ bytes
//! scrape           header | info_hash 20 × n                                     16 + 20n
//! connect reply    action 0 | transaction_id | connection_id u64                16 bytes
//! announce reply   action 1 | transaction_id | interval u32 | leechers u32
//!                  | seeders u32 | (ip, port) × n: 6 bytes IPv4, 18 bytes IPv6
//! scrape reply     action 2 | transaction_id | (seeders, completed, leechers) × n
//! error reply      action 3 | transaction_id | message
//! ```

use std::net::{IpAddr, Ipv4Addr};

use crate::{AddressFamily, AnnounceResponse, ClientError, InfoHash, PeerId, Scrape};

/// The magic connection id of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// opentracker's old IPv6 announce (16-byte ip field), superseded by action 1
/// over IPv6.
pub const ACTION_ANNOUNCE_V6_LEGACY: u32 = 4;

/// Length of the header every request starts with.
pub const HEADER_LEN: usize = 16;
/// Length of an announce request without BEP 41 options.
pub const ANNOUNCE_LEN: usize = 98;
/// Length of an announce reply before its peers.
pub const ANNOUNCE_REPLY_HEADER_LEN: usize = 20;
/// Length of an error reply before its message.
pub const ERROR_REPLY_HEADER_LEN: usize = 8;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn array20(b: &[u8], at: usize) -> [u8; 20] {
    b[at..at + 20].try_into().expect("20 bytes")
}

/// The 16 bytes every request starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub connection_id: u64,
    pub action: u32,
    pub transaction_id: u32,
}

impl RequestHeader {
    /// `None` for a packet shorter than 16 bytes (such packets are dropped).
    pub fn parse(packet: &[u8]) -> Option<Self> {
        (packet.len() >= HEADER_LEN).then(|| RequestHeader {
            connection_id: u64_at(packet, 0),
            action: u32_at(packet, 8),
            transaction_id: u32_at(packet, 12),
        })
    }
}

/// An announce request, borrowing its BEP 41 options from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce<'a> {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    /// BEP 15 event code (see [`crate::Event::from_udp`]).
    pub event: u32,
    /// The IPv4 address the client claims, or `None` for 0.
    pub ip: Option<Ipv4Addr>,
    pub key: u32,
    /// -1 (or any negative number) asks for the default.
    pub num_want: i32,
    pub port: u16,
    /// Everything after the fixed fields: BEP 41 options.
    pub options: &'a [u8],
}

impl<'a> Announce<'a> {
    pub fn parse(packet: &'a [u8]) -> Result<Self, ClientError> {
        if packet.len() < ANNOUNCE_LEN {
            return Err(ClientError::owned(format!(
                "truncated announce: {} bytes, expected at least {ANNOUNCE_LEN}",
                packet.len()
            )));
        }
        let ip = u32_at(packet, 84);
        Ok(Announce {
            info_hash: InfoHash(array20(packet, 16)),
            peer_id: PeerId(array20(packet, 36)),
            downloaded: u64_at(packet, 56),
            left: u64_at(packet, 64),
            uploaded: u64_at(packet, 72),
            event: u32_at(packet, 80),
            ip: (ip != 0).then(|| Ipv4Addr::from(ip)),
            key: u32_at(packet, 88),
            num_want: u32_at(packet, 92) as i32,
            port: u16_at(packet, 96),
            options: &packet[ANNOUNCE_LEN..],
        })
    }
}

/// Appends the BEP 41 URL data of `options` to `out`: the data of every
/// URL-data option, concatenated, up to the end-of-options marker or the end
/// of the packet. NOP options are skipped; any other option type is an error.
pub fn collect_url_data(options: &[u8], out: &mut Vec<u8>) -> Result<(), ClientError> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0x0 => return Ok(()),
            0x1 => i += 1,
            0x2 => {
                let Some(&len) = options.get(i + 1) else {
                    return Err(ClientError::new(
                        "truncated URL data option: missing length",
                    ));
                };
                let start = i + 2;
                let end = start + usize::from(len);
                let Some(data) = options.get(start..end) else {
                    return Err(ClientError::new(
                        "truncated URL data option: shorter than its length",
                    ));
                };
                out.extend_from_slice(data);
                i = end;
            }
            other => {
                return Err(ClientError::owned(format!("unknown option type {other}")));
            }
        }
    }
    Ok(())
}

/// The info hashes of a scrape request, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeHashes<'a>(&'a [u8]);

impl<'a> ScrapeHashes<'a> {
    /// Checks the packet holds at least one whole info hash; keeps the first
    /// `max` (a longer scrape is answered for those, as over HTTP and as
    /// chihaya does).
    pub fn parse(packet: &'a [u8], max: usize) -> Result<Self, ClientError> {
        let body = &packet[HEADER_LEN.min(packet.len())..];
        if body.is_empty() || !body.len().is_multiple_of(20) {
            return Err(ClientError::owned(format!(
                "malformed scrape: {} bytes after the header, expected a multiple of 20 (at least one info hash)",
                body.len()
            )));
        }
        Ok(ScrapeHashes(
            &body[..body.len().min(max.saturating_mul(20))],
        ))
    }

    pub fn len(&self) -> usize {
        self.0.len() / 20
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = InfoHash> + 'a {
        self.0
            .chunks_exact(20)
            .map(|c| InfoHash(c.try_into().expect("20 bytes")))
    }
}

fn header(out: &mut Vec<u8>, action: u32, transaction_id: u32) {
    out.extend_from_slice(&action.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
}

/// Writes a connect reply.
pub fn write_connect(out: &mut Vec<u8>, transaction_id: u32, connection_id: u64) {
    header(out, ACTION_CONNECT, transaction_id);
    out.extend_from_slice(&connection_id.to_be_bytes());
}

/// How many peers of a family fit in one datagram's announce reply.
pub fn max_peers_in_reply(family: AddressFamily) -> usize {
    const MAX_DATAGRAM: usize = 65_507;
    let per_peer = match family {
        AddressFamily::V4 => 6,
        AddressFamily::V6 => 18,
    };
    (MAX_DATAGRAM - ANNOUNCE_REPLY_HEADER_LEN) / per_peer
}

/// Writes an announce reply with the peers of `family` (the requester's).
pub fn write_announce(
    out: &mut Vec<u8>,
    transaction_id: u32,
    resp: &AnnounceResponse,
    family: AddressFamily,
) {
    header(out, ACTION_ANNOUNCE, transaction_id);
    let interval = u32::try_from(resp.interval.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&resp.incomplete.to_be_bytes());
    out.extend_from_slice(&resp.complete.to_be_bytes());
    let limit = max_peers_in_reply(family);
    match family {
        AddressFamily::V4 => {
            for p in resp.ipv4_peers.iter().take(limit) {
                out.extend_from_slice(&p.ip().octets());
                out.extend_from_slice(&p.port().to_be_bytes());
            }
        }
        AddressFamily::V6 => {
            for p in resp.ipv6_peers.iter().take(limit) {
                out.extend_from_slice(&p.ip().octets());
                out.extend_from_slice(&p.port().to_be_bytes());
            }
        }
    }
}

/// Writes a scrape reply: seeders, completed (snatches), leechers per hash.
pub fn write_scrape(out: &mut Vec<u8>, transaction_id: u32, files: &[Scrape]) {
    header(out, ACTION_SCRAPE, transaction_id);
    for f in files {
        out.extend_from_slice(&f.complete.to_be_bytes());
        out.extend_from_slice(&f.snatches.to_be_bytes());
        out.extend_from_slice(&f.incomplete.to_be_bytes());
    }
}

/// Writes an error reply. BEP 15 gives the message as the rest of the packet,
/// with no terminator.
pub fn write_error(out: &mut Vec<u8>, transaction_id: u32, message: &str) {
    header(out, ACTION_ERROR, transaction_id);
    out.extend_from_slice(message.as_bytes());
}

/// The announcing peer's address: the packet's source unless spoofing is
/// allowed and the request names an IPv4 address.
pub fn announce_ip(source: IpAddr, claimed: Option<Ipv4Addr>, allow_spoofing: bool) -> IpAddr {
    match claimed {
        Some(ip) if allow_spoofing => IpAddr::V4(ip),
        _ => source,
    }
}

/// A tracker's reply, as a client reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        /// 6-byte (IPv4) or 18-byte (IPv6) entries, as the socket's family says.
        peers: &'a [u8],
    },
    Scrape {
        transaction_id: u32,
        /// 12-byte entries: seeders, completed, leechers.
        entries: &'a [u8],
    },
    Error {
        transaction_id: u32,
        message: &'a [u8],
    },
}

impl<'a> Reply<'a> {
    /// The transaction id the reply answers.
    pub fn transaction_id(&self) -> u32 {
        match *self {
            Reply::Connect { transaction_id, .. }
            | Reply::Announce { transaction_id, .. }
            | Reply::Scrape { transaction_id, .. }
            | Reply::Error { transaction_id, .. } => transaction_id,
        }
    }

    /// Parses a reply; the error says what is malformed.
    pub fn parse(packet: &'a [u8]) -> Result<Self, &'static str> {
        if packet.len() < 8 {
            return Err("reply shorter than 8 bytes");
        }
        let transaction_id = u32_at(packet, 4);
        match u32_at(packet, 0) {
            ACTION_CONNECT if packet.len() >= 16 => Ok(Reply::Connect {
                transaction_id,
                connection_id: u64_at(packet, 8),
            }),
            ACTION_ANNOUNCE if packet.len() >= ANNOUNCE_REPLY_HEADER_LEN => Ok(Reply::Announce {
                transaction_id,
                interval: u32_at(packet, 8),
                leechers: u32_at(packet, 12),
                seeders: u32_at(packet, 16),
                peers: &packet[ANNOUNCE_REPLY_HEADER_LEN..],
            }),
            ACTION_SCRAPE if (packet.len() - 8).is_multiple_of(12) => Ok(Reply::Scrape {
                transaction_id,
                entries: &packet[8..],
            }),
            ACTION_ERROR => Ok(Reply::Error {
                transaction_id,
                message: &packet[8..],
            }),
            ACTION_CONNECT | ACTION_ANNOUNCE | ACTION_SCRAPE => {
                Err("reply too short for its action")
            }
            _ => Err("unknown action in reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::time::Duration;

    pub(crate) fn announce_packet(options: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        p.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&0xabcd_u32.to_be_bytes());
        p.extend_from_slice(&[1; 20]);
        p.extend_from_slice(&[2; 20]);
        p.extend_from_slice(&10u64.to_be_bytes());
        p.extend_from_slice(&20u64.to_be_bytes());
        p.extend_from_slice(&30u64.to_be_bytes());
        p.extend_from_slice(&2u32.to_be_bytes());
        p.extend_from_slice(&[10, 0, 0, 7]);
        p.extend_from_slice(&99u32.to_be_bytes());
        p.extend_from_slice(&(-1i32).to_be_bytes());
        p.extend_from_slice(&6881u16.to_be_bytes());
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn parses_header_and_announce() {
        let p = announce_packet(&[]);
        let h = RequestHeader::parse(&p).unwrap();
        assert_eq!(
            h,
            RequestHeader {
                connection_id: 0x1122_3344_5566_7788,
                action: 1,
                transaction_id: 0xabcd
            }
        );
        let a = Announce::parse(&p).unwrap();
        assert_eq!(a.info_hash, InfoHash([1; 20]));
        assert_eq!(a.peer_id, PeerId([2; 20]));
        assert_eq!((a.downloaded, a.left, a.uploaded), (10, 20, 30));
        assert_eq!(a.event, 2);
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!((a.key, a.num_want, a.port), (99, -1, 6881));
        assert!(a.options.is_empty());
        assert!(RequestHeader::parse(&p[..15]).is_none());
        let e = Announce::parse(&p[..97]).unwrap_err();
        assert_eq!(
            e.message(),
            "truncated announce: 97 bytes, expected at least 98"
        );
    }

    #[test]
    fn bep41_url_data_concatenates_across_options() {
        let opts = [
            0x2, 5, b'/', b'a', b'n', b'n', b'o', 0x1, 0x2, 9, b'u', b'n', b'c', b'e', b'?', b'a',
            b'=', b'b', b'c', 0x0, 0x2, 2, b'x', b'y',
        ];
        let p = announce_packet(&opts);
        let a = Announce::parse(&p).unwrap();
        let mut url = Vec::new();
        collect_url_data(a.options, &mut url).unwrap();
        // Data after the end-of-options marker is not URL data.
        assert_eq!(url, b"/announce?a=bc");
        let mut url = Vec::new();
        assert_eq!(
            collect_url_data(&[0x2, 10, b'a'], &mut url)
                .unwrap_err()
                .message(),
            "truncated URL data option: shorter than its length"
        );
        assert_eq!(
            collect_url_data(&[0x1, 0x2], &mut url)
                .unwrap_err()
                .message(),
            "truncated URL data option: missing length"
        );
        assert_eq!(
            collect_url_data(&[0x7], &mut url).unwrap_err().message(),
            "unknown option type 7"
        );
        // No end marker: the packet's end ends the options.
        let mut url = Vec::new();
        collect_url_data(&[0x1, 0x1, 0x2, 1, b'z'], &mut url).unwrap();
        assert_eq!(url, b"z");
    }

    #[test]
    fn scrape_hashes() {
        let mut p = vec![0u8; 16];
        p.extend_from_slice(&[3; 20]);
        p.extend_from_slice(&[4; 20]);
        let s = ScrapeHashes::parse(&p, 2).unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![InfoHash([3; 20]), InfoHash([4; 20])]
        );
        assert_eq!(
            ScrapeHashes::parse(&p, 1)
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            vec![InfoHash([3; 20])],
            "truncated to the first max"
        );
        assert!(ScrapeHashes::parse(&p[..16], 5).is_err());
        assert!(ScrapeHashes::parse(&p[..30], 5).is_err());
    }

    #[test]
    fn writes_replies() {
        let mut out = Vec::new();
        write_connect(&mut out, 7, 0x0102030405060708);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]);

        let resp = AnnounceResponse {
            complete: 3,
            incomplete: 4,
            interval: Duration::from_secs(1800),
            ipv4_peers: vec![SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 0x1ae1)],
            ipv6_peers: vec![SocketAddrV6::new(Ipv6Addr::LOCALHOST, 80, 0, 0)],
            ..Default::default()
        };
        out.clear();
        write_announce(&mut out, 9, &resp, AddressFamily::V4);
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 7, 8, 0, 0, 0, 4, 0, 0, 0, 3, 1, 2, 3, 4, 0x1a, 0xe1
            ]
        );
        out.clear();
        write_announce(&mut out, 9, &resp, AddressFamily::V6);
        assert_eq!(out.len(), 20 + 18);
        assert_eq!(&out[20..36], &Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&out[36..], &[0, 80]);

        out.clear();
        let files = [Scrape {
            info_hash: InfoHash([0; 20]),
            complete: 1,
            incomplete: 2,
            snatches: 3,
        }];
        write_scrape(&mut out, 5, &files);
        assert_eq!(
            out,
            [0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 2]
        );

        out.clear();
        write_error(&mut out, 5, "nope");
        assert_eq!(out, [0, 0, 0, 3, 0, 0, 0, 5, b'n', b'o', b'p', b'e']);
    }

    #[test]
    fn replies_parse_back() {
        let mut out = Vec::new();
        write_connect(&mut out, 1, 42);
        assert_eq!(
            Reply::parse(&out),
            Ok(Reply::Connect {
                transaction_id: 1,
                connection_id: 42
            })
        );
        out.clear();
        write_error(&mut out, 2, "bad");
        assert_eq!(
            Reply::parse(&out),
            Ok(Reply::Error {
                transaction_id: 2,
                message: b"bad"
            })
        );
        out.clear();
        write_scrape(&mut out, 3, &[Scrape::default()]);
        assert!(
            matches!(Reply::parse(&out), Ok(Reply::Scrape { transaction_id: 3, entries }) if entries.len() == 12)
        );
        assert!(Reply::parse(&out[..7]).is_err());
        assert!(Reply::parse(&[0, 0, 0, 9, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn reply_size_limits() {
        assert_eq!(max_peers_in_reply(AddressFamily::V4), 10_914);
        assert_eq!(max_peers_in_reply(AddressFamily::V6), 3_638);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(packet in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = RequestHeader::parse(&packet);
            if let Ok(a) = Announce::parse(&packet) {
                let mut url = Vec::new();
                let _ = collect_url_data(a.options, &mut url);
            }
            let mut url = Vec::new();
            let _ = collect_url_data(&packet, &mut url);
            let _ = ScrapeHashes::parse(&packet, 74);
            let _ = Reply::parse(&packet);
        }
    }

    #[test]
    fn spoofing() {
        let src = IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1));
        let claimed = Some(Ipv4Addr::new(2, 2, 2, 2));
        assert_eq!(announce_ip(src, claimed, false), src);
        assert_eq!(
            announce_ip(src, claimed, true),
            IpAddr::V4(Ipv4Addr::new(2, 2, 2, 2))
        );
        assert_eq!(announce_ip(src, None, true), src);
    }
}
