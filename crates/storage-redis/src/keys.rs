//! The name of every key the store touches, made in one place (the layout
//! they form is in the crate doc). The scripts take all their keys as `KEYS`
//! and never build a name themselves.
//!
//! Every key carries, after the prefix, a Redis Cluster hash tag, `{<b>}`, where
//! `<b>` is the swarm's bucket: the info hash's first ten bits, three hex
//! digits (`000` to `3ff`). A swarm's keys and its bucket's set of swarms and
//! totals share the tag, so they share a slot, and every script touches one
//! slot (as Redis Cluster requires). One Redis ignores the tags: the layout is
//! the same on both.
//!
//! Why 1024 buckets: totals are per bucket and the reporting task reads all
//! of them every `prometheus_reporting_interval` (one `MGET`; on a cluster
//! one a bucket, in a pipeline per primary); fewer buckets would spread the
//! swarms unevenly over the primaries (the 1024 tags fall in 1024 distinct
//! slots: with 3 to 16 primaries of even slot ranges, each holds within 3 %
//! of an even share of the buckets), more would make that read larger for
//! no gain.

use tracker::bittorrent::{AddressFamily, InfoHash, push_hex};

/// How many buckets the swarms of one `key_prefix` are spread over. Part of
/// the data layout: instances that disagree on it do not see each other's
/// swarms.
pub(crate) const BUCKETS: usize = 1024;

/// The bucket of an info hash: its first ten bits.
pub(crate) fn bucket(info_hash: &InfoHash) -> usize {
    (usize::from(info_hash.0[0]) << 2) | usize::from(info_hash.0[1] >> 6)
}

/// Redis Cluster's slot of a key whose hash tag is `tag`.
fn slot_of_tag(tag: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag) % 16384
}

/// The names under one `key_prefix`.
pub(crate) struct Keys {
    /// Per bucket, `<prefix>{<b>}`, every key of the bucket's start.
    tagged: Vec<String>,
    /// Per bucket, the Redis Cluster slot of its keys.
    slots: Vec<u16>,
    /// Per bucket, its set of swarms, made once rather than per call.
    swarms: Vec<String>,
    /// Every bucket's totals, in bucket order, then within a bucket in the
    /// order of [`TOTALS`].
    totals: Vec<String>,
}

/// A bucket's totals, in the order `write.lua` and `gc.lua` take them.
const TOTALS: [&str; 3] = ["swarms", "seeders", "leechers"];

/// The keys of one swarm (one info hash, one address family).
pub(crate) struct SwarmKeys {
    pub seeders: String,
    pub leechers: String,
    /// The torrent's snatches: both families share it.
    pub snatches: String,
    /// `<ih>:<f>`, the swarm's member in its bucket's set of swarms (the
    /// announce path takes it from [`Keys::swarm_into`]).
    #[cfg(test)]
    pub id: String,
}

/// Where [`Keys::swarm_into`] put each key of a swarm in its buffer.
pub(crate) struct SwarmRanges {
    pub seeders: std::ops::Range<usize>,
    pub leechers: std::ops::Range<usize>,
    pub snatches: std::ops::Range<usize>,
    pub id: std::ops::Range<usize>,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let tagged: Vec<String> = (0..BUCKETS)
            .map(|b| format!("{prefix}{{{b:03x}}}"))
            .collect();
        Keys {
            slots: (0..BUCKETS)
                .map(|b| slot_of_tag(format!("{b:03x}").as_bytes()))
                .collect(),
            swarms: tagged.iter().map(|t| format!("{t}swarms")).collect(),
            totals: tagged
                .iter()
                .flat_map(|t| TOTALS.map(|total| format!("{t}total:{total}")))
                .collect(),
            tagged,
        }
    }

    /// The Redis Cluster slot of a bucket's keys.
    pub fn slot(&self, bucket: usize) -> u16 {
        self.slots[bucket]
    }

    /// The set of a bucket's swarms that have peers, walked by garbage
    /// collection.
    pub fn swarms(&self, bucket: usize) -> &str {
        &self.swarms[bucket]
    }

    /// A bucket's exact totals (integers), in the order of [`TOTALS`].
    pub fn bucket_totals(&self, bucket: usize) -> &[String] {
        &self.totals[bucket * TOTALS.len()..][..TOTALS.len()]
    }

    pub fn swarm(&self, info_hash: &InfoHash, family: AddressFamily) -> SwarmKeys {
        let mut buf = Vec::new();
        let at = self.swarm_into(info_hash, family, &mut buf);
        let text = |r: std::ops::Range<usize>| {
            String::from_utf8(buf[r].to_vec())
                .expect("key names are ASCII but for the prefix, which is UTF-8")
        };
        SwarmKeys {
            seeders: text(at.seeders),
            leechers: text(at.leechers),
            snatches: text(at.snatches),
            #[cfg(test)]
            id: text(at.id),
        }
    }

    /// A swarm's keys written into `buf` (cleared first), back to back; the
    /// ranges say where each is. The announce path names a swarm this way:
    /// one buffer, no string per key.
    pub fn swarm_into(
        &self,
        info_hash: &InfoHash,
        family: AddressFamily,
        buf: &mut Vec<u8>,
    ) -> SwarmRanges {
        let digit = match family {
            AddressFamily::V4 => b'4',
            AddressFamily::V6 => b'6',
        };
        let tagged = self.tagged[bucket(info_hash)].as_bytes();
        buf.clear();
        // <tagged><ih>:<f>:S, then the same with L.
        buf.extend_from_slice(tagged);
        let id_start = buf.len();
        push_hex(buf, &info_hash.0);
        buf.extend_from_slice(&[b':', digit]);
        let id = id_start..buf.len();
        buf.extend_from_slice(b":S");
        let seeders = 0..buf.len();
        let start = buf.len();
        buf.extend_from_within(..seeders.end - 1);
        buf.push(b'L');
        let leechers = start..buf.len();
        // <tagged><ih>:n
        let start = buf.len();
        buf.extend_from_within(..id.start + 40);
        buf.extend_from_slice(b":n");
        let snatches = start..buf.len();
        SwarmRanges {
            seeders,
            leechers,
            snatches,
            id,
        }
    }

    /// The seeders' and leechers' keys of a swarm named by its id, as
    /// garbage collection reads it from its bucket's set.
    pub fn peers_of(&self, bucket: usize, id: &str) -> (String, String) {
        let tagged = &self.tagged[bucket];
        (format!("{tagged}{id}:S"), format!("{tagged}{id}:L"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let keys = Keys::new("karuta:");
        let mut ih = InfoHash([0; 20]);
        ih.0[0] = 0xab;
        ih.0[1] = 0xc0;
        ih.0[19] = 0x01;
        // 0xab, then the top two bits of 0xc0: 10 1010 1111.
        assert_eq!(bucket(&ih), 0x2af);
        let hex = format!("abc0{}01", "0".repeat(34));
        let s = keys.swarm(&ih, AddressFamily::V6);
        assert_eq!(s.id, format!("{hex}:6"));
        assert_eq!(s.seeders, format!("karuta:{{2af}}{hex}:6:S"));
        assert_eq!(s.leechers, format!("karuta:{{2af}}{hex}:6:L"));
        assert_eq!(s.snatches, format!("karuta:{{2af}}{hex}:n"));
        assert_eq!(keys.swarm(&ih, AddressFamily::V4).id, format!("{hex}:4"));
        assert_eq!(keys.peers_of(0x2af, &s.id), (s.seeders, s.leechers));
        assert_eq!(keys.swarms(0x2af), "karuta:{2af}swarms");
        assert_eq!(
            keys.bucket_totals(0x2af),
            [
                "karuta:{2af}total:swarms",
                "karuta:{2af}total:seeders",
                "karuta:{2af}total:leechers"
            ]
        );
        assert_eq!(keys.swarms(0), "karuta:{000}swarms");
        assert_eq!(keys.swarms(BUCKETS - 1), "karuta:{3ff}swarms");
        assert_eq!(keys.bucket_totals(1)[0], "karuta:{001}total:swarms");
    }

    #[test]
    fn a_swarm_and_its_bucket_share_one_slot_and_buckets_spread_over_slots() {
        use redis::cluster_routing::Slot;
        let keys = Keys::new("karuta:");
        let mut slots = std::collections::HashSet::new();
        for b in 0..BUCKETS {
            let ih = InfoHash([
                (b >> 2) as u8,
                ((b & 3) << 6) as u8 | 0x15,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ]);
            assert_eq!(bucket(&ih), b);
            let s = keys.swarm(&ih, AddressFamily::V4);
            let slot = Slot::for_key(keys.swarms(b));
            assert_eq!(Some(slot), Slot::new(keys.slot(b)));
            for key in [&s.seeders, &s.leechers, &s.snatches]
                .into_iter()
                .chain(keys.bucket_totals(b))
            {
                assert_eq!(Slot::for_key(key), slot, "{key}");
            }
            slots.insert(slot);
        }
        assert_eq!(slots.len(), BUCKETS);
    }

    #[test]
    fn every_info_hash_has_a_bucket() {
        assert_eq!(bucket(&InfoHash([0; 20])), 0);
        assert_eq!(bucket(&InfoHash([0xff; 20])), BUCKETS - 1);
    }
}
