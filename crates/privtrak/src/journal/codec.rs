//! The journal's record format: one delta per record, length-prefixed and
//! checksummed so a torn tail (a crash in the middle of a write) is found and
//! cut off instead of read as data.
//!
//! ```text
//! record  = len: u32 LE (of body) | crc32: u32 LE (of body) | body
//! body v1 = version: u8 (1) | event: u8
//!           | flags: u8 (1: has address, 2: IPv6, 4: site user, 8: baseline unknown) | 0: u8
//!           | seq: u64 | reported_at: u64 (unix ms)
//!           | user: [16] | info_hash: [20] | peer_id: [20] | ip: [16] | port: u16
//!           | uploaded: u64 | downloaded: u64 | left: u64
//!           | seed_seconds: u32 | leech_seconds: u32
//!           | total_uploaded: u64 | total_downloaded: u64
//!           | site_user: i64 (0 unless flags 4) | upload_factor: f32 | download_factor: f32
//! ```
//!
//! Integers are little-endian. A later version may append fields; a reader
//! takes the fields it knows from any body at least as long as version 1's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bittorrent::{InfoHash, PeerId};

use crate::UserId;
use crate::delta::{Delta, DeltaEvent, from_unix_ms};

const VERSION: u8 = 1;
const BODY_V1: usize = 4 + 8 + 8 + 16 + 20 + 20 + 16 + 2 + 8 + 8 + 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4;
/// Bytes of a version-1 record, header included.
pub const RECORD_LEN: usize = 8 + BODY_V1;
/// No body is larger: anything longer is corruption, not a record.
const MAX_BODY: usize = 4096;

const HAS_ADDR: u8 = 1;
const IPV6: u8 = 2;
const HAS_SITE_USER: u8 = 4;
const BASELINE_UNKNOWN: u8 = 8;

/// Appends the record of `d` to `out`.
pub fn encode(d: &Delta, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(BODY_V1 as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the checksum, filled below
    let (flags, ip, port) = match d.addr {
        None => (0, [0; 16], 0),
        Some(a) => match a.ip() {
            IpAddr::V4(ip) => (HAS_ADDR, ip.to_ipv6_mapped().octets(), a.port()),
            IpAddr::V6(ip) => (HAS_ADDR | IPV6, ip.octets(), a.port()),
        },
    };
    let flags = flags
        | if d.site_user.is_some() {
            HAS_SITE_USER
        } else {
            0
        }
        | if d.baseline_unknown {
            BASELINE_UNKNOWN
        } else {
            0
        };
    out.extend_from_slice(&[VERSION, d.event.code(), flags, 0]);
    out.extend_from_slice(&d.seq.to_le_bytes());
    out.extend_from_slice(&d.reported_at_ms().to_le_bytes());
    out.extend_from_slice(&d.user.0);
    out.extend_from_slice(&d.info_hash.0);
    out.extend_from_slice(&d.peer_id.0);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&port.to_le_bytes());
    for n in [d.uploaded, d.downloaded, d.left] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&d.seed_seconds.to_le_bytes());
    out.extend_from_slice(&d.leech_seconds.to_le_bytes());
    out.extend_from_slice(&d.total_uploaded.to_le_bytes());
    out.extend_from_slice(&d.total_downloaded.to_le_bytes());
    out.extend_from_slice(&d.site_user.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&d.upload_factor.to_le_bytes());
    out.extend_from_slice(&d.download_factor.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The input ends inside the record: a write that did not finish.
    Truncated,
    /// The bytes are there but wrong (checksum, length, version, a field).
    Corrupt(&'static str),
}

/// Reads one record from the start of `input`: the delta and the record's
/// length in bytes.
pub fn decode(input: &[u8]) -> Result<(Delta, usize), Malformed> {
    let Some(header) = input.get(..8) else {
        return Err(Malformed::Truncated);
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if !(BODY_V1..=MAX_BODY).contains(&len) {
        return Err(Malformed::Corrupt("record length"));
    }
    let Some(body) = input.get(8..8 + len) else {
        return Err(Malformed::Truncated);
    };
    if crc32fast::hash(body) != crc {
        return Err(Malformed::Corrupt("checksum"));
    }
    let mut r = Fields(body);
    let [version, event, flags, _] = r.take::<4>();
    if version < VERSION {
        return Err(Malformed::Corrupt("version"));
    }
    let event = DeltaEvent::from_code(event).ok_or(Malformed::Corrupt("event"))?;
    let seq = r.u64();
    let reported_at = from_unix_ms(r.u64());
    let user = UserId(r.take());
    let info_hash = InfoHash(r.take());
    let peer_id = PeerId(r.take());
    let ip: [u8; 16] = r.take();
    let port = u16::from_le_bytes(r.take());
    let addr = (flags & HAS_ADDR != 0).then(|| {
        let v6 = Ipv6Addr::from(ip);
        let ip = if flags & IPV6 != 0 {
            IpAddr::V6(v6)
        } else {
            IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
        };
        SocketAddr::new(ip, port)
    });
    let delta = Delta {
        seq,
        user,
        info_hash,
        peer_id,
        addr,
        event,
        uploaded: r.u64(),
        downloaded: r.u64(),
        left: r.u64(),
        seed_seconds: r.u32(),
        leech_seconds: r.u32(),
        reported_at,
        total_uploaded: r.u64(),
        total_downloaded: r.u64(),
        site_user: {
            let id = i64::from_le_bytes(r.take());
            (flags & HAS_SITE_USER != 0).then_some(id)
        },
        upload_factor: f32::from_le_bytes(r.take()),
        download_factor: f32::from_le_bytes(r.take()),
        baseline_unknown: flags & BASELINE_UNKNOWN != 0,
    };
    Ok((delta, 8 + len))
}

/// Reads fixed-size fields from a body already checked to be long enough.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at gave N bytes")
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) fn sample(seq: u64) -> Delta {
        Delta {
            seq,
            user: UserId([7; 16]),
            info_hash: InfoHash([8; 20]),
            peer_id: PeerId([9; 20]),
            addr: Some("10.1.2.3:6881".parse().unwrap()),
            event: DeltaEvent::Completed,
            uploaded: 1 << 40,
            downloaded: 12345,
            left: 0,
            seed_seconds: 60,
            leech_seconds: 1,
            reported_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            total_uploaded: u64::MAX,
            total_downloaded: 99,
            site_user: Some(-5),
            upload_factor: 2.0,
            download_factor: 0.0,
            baseline_unknown: true,
        }
    }

    #[test]
    fn round_trip_and_fixed_length() {
        for addr in [
            None,
            Some("10.1.2.3:6881".parse().unwrap()),
            Some("[2001:db8::1]:51413".parse().unwrap()),
        ] {
            let d = Delta { addr, ..sample(42) };
            let unnamed = Delta {
                site_user: None,
                baseline_unknown: false,
                ..d.clone()
            };
            let mut buf = Vec::new();
            encode(&unnamed, &mut buf);
            assert_eq!(decode(&buf), Ok((unnamed, RECORD_LEN)));
            let mut buf = Vec::new();
            encode(&d, &mut buf);
            assert_eq!(buf.len(), RECORD_LEN);
            assert_eq!(decode(&buf), Ok((d, RECORD_LEN)));
        }
    }

    #[test]
    fn torn_and_corrupt_records_are_told_apart() {
        let mut buf = Vec::new();
        encode(&sample(1), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]),
                Err(Malformed::Truncated),
                "cut at {cut}"
            );
        }
        let mut flipped = buf.clone();
        flipped[40] ^= 1;
        assert_eq!(decode(&flipped), Err(Malformed::Corrupt("checksum")));
        let mut long = buf.clone();
        long[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert_eq!(decode(&long), Err(Malformed::Corrupt("record length")));
        // Zeros (a preallocated or hole-punched tail) are not a record.
        assert_eq!(
            decode(&[0; RECORD_LEN]),
            Err(Malformed::Corrupt("record length"))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&input);
        }
    }
}
