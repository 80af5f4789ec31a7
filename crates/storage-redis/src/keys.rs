//! The name of every key the store touches, made in one place (the layout
//! they form is in the crate doc). The scripts take all their keys as `KEYS`
//! and never build a name themselves.

use tracker::bittorrent::{AddressFamily, InfoHash};

/// The names under one `key_prefix`.
pub(crate) struct Keys {
    prefix: String,
    /// `<prefix>swarms` and `<prefix>stats`, made once rather than per call.
    swarms: String,
    stats: String,
}

/// The keys of one swarm (one info hash, one address family).
pub(crate) struct SwarmKeys {
    pub seeders: String,
    pub leechers: String,
    /// The torrent's snatches: both families share it.
    pub snatches: String,
    /// `<ih>:<f>`, the swarm's member in `<prefix>swarms`.
    pub id: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            swarms: format!("{prefix}swarms"),
            stats: format!("{prefix}stats"),
        }
    }

    /// The set of swarms that have peers, walked by garbage collection.
    pub fn swarms(&self) -> &str {
        &self.swarms
    }

    /// The hash of exact totals (`swarms`, `seeders`, `leechers`).
    pub fn stats(&self) -> &str {
        &self.stats
    }

    pub fn swarm(&self, info_hash: &InfoHash, family: AddressFamily) -> SwarmKeys {
        let digit = match family {
            AddressFamily::V4 => '4',
            AddressFamily::V6 => '6',
        };
        // An info hash displays as lower-case hex.
        let id = format!("{info_hash}:{digit}");
        let (seeders, leechers) = self.peers_of(&id);
        SwarmKeys {
            seeders,
            leechers,
            snatches: format!("{}{info_hash}:n", self.prefix),
            id,
        }
    }

    /// The seeders' and leechers' keys of a swarm named by its id, as
    /// garbage collection reads it from `swarms`.
    pub fn peers_of(&self, id: &str) -> (String, String) {
        (
            format!("{}{id}:S", self.prefix),
            format!("{}{id}:L", self.prefix),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let keys = Keys::new("karuta:");
        assert_eq!(keys.swarms(), "karuta:swarms");
        assert_eq!(keys.stats(), "karuta:stats");
        let mut ih = InfoHash([0; 20]);
        ih.0[0] = 0xab;
        ih.0[19] = 0x01;
        let hex = format!("ab{}01", "0".repeat(36));
        let s = keys.swarm(&ih, AddressFamily::V6);
        assert_eq!(s.id, format!("{hex}:6"));
        assert_eq!(s.seeders, format!("karuta:{hex}:6:S"));
        assert_eq!(s.leechers, format!("karuta:{hex}:6:L"));
        assert_eq!(s.snatches, format!("karuta:{hex}:n"));
        assert_eq!(keys.swarm(&ih, AddressFamily::V4).id, format!("{hex}:4"));
        assert_eq!(keys.peers_of(&s.id), (s.seeders, s.leechers));
    }
}
