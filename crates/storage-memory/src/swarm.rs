//! One swarm of one address family, laid out compactly.
//!
//! All peers of a swarm (entries, see [`crate::entry`]) live in one small
//! vector: seeders first, then leechers, each part sorted by address, so a
//! lookup is a binary search. The first peers (two IPv4, one IPv6) are stored
//! inline in the swarm itself, so most swarms, which have few peers, need no
//! allocation of their own and cost no extra cache miss to read.

use smallvec::SmallVec;
use tracker::bittorrent::AnnounceResponse;

use crate::entry::{Entry, FamilyKey};

/// Where a peer stands in a swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Seeder,
    Leecher,
}

/// The peers of one (info hash, address family), and its snatch count.
pub(crate) struct Swarm<E: Entry> {
    /// `[0, seeders)` are seeders, `[seeders, len)` leechers, each sorted by key.
    peers: SmallVec<E::Inline>,
    seeders: u32,
    pub(crate) snatches: u32,
}

impl<E: Entry> Default for Swarm<E> {
    fn default() -> Self {
        Swarm {
            peers: SmallVec::new(),
            seeders: 0,
            snatches: 0,
        }
    }
}

/// Counts that changed through one operation, for the shard's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub seeders: i64,
    pub leechers: i64,
}

impl<E: Entry> Swarm<E> {
    pub fn seeders(&self) -> u32 {
        self.seeders
    }

    pub fn leechers(&self) -> u32 {
        self.peers.len() as u32 - self.seeders
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn split(&self) -> usize {
        self.seeders as usize
    }

    /// Finds a peer: its role and index in `peers`.
    pub fn find(&self, key: E::Key) -> Option<(Role, usize)> {
        let split = self.split();
        if let Ok(i) = self.peers[..split].binary_search_by(|e| e.key().cmp(&key)) {
            return Some((Role::Seeder, i));
        }
        self.peers[split..]
            .binary_search_by(|e| e.key().cmp(&key))
            .ok()
            .map(|i| (Role::Leecher, split + i))
    }

    fn remove_at(&mut self, role: Role, index: usize) {
        self.peers.remove(index);
        if role == Role::Seeder {
            self.seeders -= 1;
        }
    }

    fn insert(&mut self, role: Role, entry: E) {
        let split = self.split();
        let (base, part) = match role {
            Role::Seeder => (0, &self.peers[..split]),
            Role::Leecher => (split, &self.peers[split..]),
        };
        let at = base + part.partition_point(|e| e.key() < entry.key());
        self.peers.insert(at, entry);
        if role == Role::Seeder {
            self.seeders += 1;
        }
    }

    /// Puts the peer in `role`, moving it if it held the other one.
    pub fn put(&mut self, key: E::Key, role: Role, tick: u16) -> Delta {
        let found = self.find(key);
        self.put_found(found, key, role, tick)
    }

    /// [`put`](Self::put) for a peer already looked up.
    fn put_found(
        &mut self,
        found: Option<(Role, usize)>,
        key: E::Key,
        role: Role,
        tick: u16,
    ) -> Delta {
        match found {
            Some((r, i)) if r == role => {
                self.peers[i].set_tick(tick);
                Delta::default()
            }
            Some((r, i)) => {
                self.remove_at(r, i);
                self.insert(role, E::new(key, tick));
                match role {
                    Role::Seeder => Delta {
                        seeders: 1,
                        leechers: -1,
                    },
                    Role::Leecher => Delta {
                        seeders: -1,
                        leechers: 1,
                    },
                }
            }
            None => {
                self.insert(role, E::new(key, tick));
                match role {
                    Role::Seeder => Delta {
                        seeders: 1,
                        leechers: 0,
                    },
                    Role::Leecher => Delta {
                        seeders: 0,
                        leechers: 1,
                    },
                }
            }
        }
    }

    /// Removes the peer if it holds `role` (or any role, with `None`).
    pub fn delete(&mut self, key: E::Key, role: Option<Role>) -> Option<Delta> {
        let (r, i) = self.find(key)?;
        if role.is_some_and(|want| want != r) {
            return None;
        }
        self.remove_at(r, i);
        Some(match r {
            Role::Seeder => Delta {
                seeders: -1,
                leechers: 0,
            },
            Role::Leecher => Delta {
                seeders: 0,
                leechers: -1,
            },
        })
    }

    /// Makes the peer a seeder; counts a snatch unless it already was one.
    pub fn graduate(&mut self, key: E::Key, tick: u16) -> Delta {
        let found = self.find(key);
        if !matches!(found, Some((Role::Seeder, _))) {
            self.snatches = self.snatches.saturating_add(1);
        }
        self.put_found(found, key, Role::Seeder, tick)
    }

    /// Appends up to `want` peers for an announcer of role `role` to `resp`,
    /// never the announcer itself: a seeder gets leechers, a leecher seeders
    /// then leechers. Within each part the choice is random and spread over
    /// the whole part.
    ///
    /// With `subnet` (a prefix length), peers in the announcer's network come
    /// first (its seeders, then its leechers, for a leecher), then the rest of
    /// the swarm, each group chosen at random.
    pub fn select(
        &self,
        me: E::Key,
        role: Role,
        want: usize,
        subnet: Option<u8>,
        rng: &mut fastrand::Rng,
        resp: &mut AnnounceResponse,
    ) {
        let split = self.split();
        let (seeders, leechers) = self.peers.split_at(split);
        let both = [seeders, leechers];
        let parts = if role == Role::Leecher {
            &both[..]
        } else {
            &both[1..]
        };
        let myself = |part: &[E]| match part.binary_search_by(|e| e.key().cmp(&me)) {
            Ok(i) => i..i + 1,
            Err(_) => 0..0,
        };
        let mut left = want;
        match subnet {
            None => {
                for part in parts {
                    left -= sample(part, myself(part), left, rng, resp);
                }
            }
            Some(prefix) => {
                let (lo, hi) = me.subnet_bounds(prefix);
                let near = |part: &[E]| {
                    part.partition_point(|e| e.key() < lo)..part.partition_point(|e| e.key() <= hi)
                };
                for part in parts {
                    let near = &part[near(part)];
                    left -= sample(near, myself(near), left, rng, resp);
                }
                for part in parts {
                    left -= sample(part, near(part), left, rng, resp);
                }
            }
        }
    }

    /// Removes peers last seen before `now - lifetime` (in ticks, wrapping).
    pub fn expire(&mut self, now: u16, lifetime: u16) -> Delta {
        let split = self.split();
        let (before_s, before_l) = (self.seeders, self.leechers());
        let mut index = 0;
        let mut seeders = 0;
        self.peers.retain(|e| {
            let keep = now.wrapping_sub(e.tick()) <= lifetime;
            if keep && index < split {
                seeders += 1;
            }
            index += 1;
            keep
        });
        self.seeders = seeders;
        if self.peers.capacity() > 4 * self.peers.len().max(4) {
            self.peers.shrink_to_fit();
        }
        Delta {
            seeders: i64::from(self.seeders) - i64::from(before_s),
            leechers: i64::from(self.leechers()) - i64::from(before_l),
        }
    }
}

/// Appends up to `want` entries of `part` (without the entries in `gap`) to `resp`,
/// in random order, and returns how many.
///
/// Stratified sampling over a randomly rotated part: the `n` candidates are
/// cut into `want` strata of (nearly) equal size, the whole cut is rotated by a
/// random offset, and one random entry is drawn from each stratum. Every
/// candidate is picked with probability exactly `want / n`, none twice, and
/// nothing is allocated. The picks are then shuffled, so the first peers a
/// client tries are not always the lowest addresses.
fn sample<E: Entry>(
    part: &[E],
    gap: std::ops::Range<usize>,
    want: usize,
    rng: &mut fastrand::Rng,
    resp: &mut AnnounceResponse,
) -> usize {
    if want == 0 {
        return 0;
    }
    let n = part.len() - gap.len();
    let at = |virtual_index: usize| {
        if virtual_index >= gap.start {
            &part[virtual_index + gap.len()]
        } else {
            &part[virtual_index]
        }
    };
    let taken = if n <= want {
        for v in 0..n {
            at(v).key().push_to(resp);
        }
        n
    } else {
        // Strata of q or q + 1 candidates (the first r are the larger),
        // walked without a division per pick.
        let (q, r) = (n / want, n % want);
        let rotation = rng.usize(..n);
        let mut lo = 0;
        for i in 0..want {
            let size = q + usize::from(i < r);
            let mut index = lo + rng.usize(..size) + rotation;
            if index >= n {
                index -= n;
            }
            at(index).key().push_to(resp);
            lo += size;
        }
        want
    };
    E::Key::shuffle_last(resp, taken, rng);
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{V4Entry, V6Entry};

    fn key(n: u8) -> [u8; 6] {
        [10, 0, 0, n, 0x1a, 0xe1]
    }

    #[test]
    fn swarms_are_compact() {
        // Two IPv4 peers inline cost nothing over a Vec's three words.
        assert_eq!(std::mem::size_of::<Swarm<V4Entry>>(), 32);
        assert_eq!(std::mem::size_of::<Swarm<V6Entry>>(), 40);
    }

    #[test]
    fn put_move_delete() {
        let mut s = Swarm::<V4Entry>::default();
        for (n, role, seeders, leechers) in [
            (3, Role::Leecher, 0, 1),
            (1, Role::Leecher, 0, 1),
            (2, Role::Seeder, 1, 0),
            // Leecher 3 becomes a seeder.
            (3, Role::Seeder, 1, -1),
        ] {
            let delta = s.put(key(n), role, 0);
            assert_eq!(delta, Delta { seeders, leechers }, "{n} as {role:?}");
        }
        assert_eq!((s.seeders(), s.leechers()), (2, 1));
        assert_eq!(s.find(key(1)), Some((Role::Leecher, 2)));
        assert_eq!(s.find(key(3)), Some((Role::Seeder, 1)));
        assert_eq!(s.delete(key(1), Some(Role::Seeder)), None);
        assert!(s.delete(key(1), Some(Role::Leecher)).is_some());
        assert!(s.delete(key(2), None).is_some());
        assert_eq!((s.seeders(), s.leechers()), (1, 0));
    }

    #[test]
    fn graduate_counts_snatch_once() {
        let mut s = Swarm::<V4Entry>::default();
        s.put(key(1), Role::Leecher, 0);
        s.graduate(key(1), 0);
        s.graduate(key(1), 0);
        s.graduate(key(2), 0);
        assert_eq!(s.snatches, 2);
        assert_eq!(s.seeders(), 2);
    }

    #[test]
    fn expire_wraps() {
        let mut s = Swarm::<V4Entry>::default();
        s.put(key(1), Role::Seeder, 65530);
        s.put(key(2), Role::Leecher, 3);
        s.put(key(3), Role::Leecher, 65535);
        // now = 5 (wrapped): key 1 is 11 ticks old, key 3 is 6, key 2 is 2.
        let d = s.expire(5, 8);
        assert_eq!(
            d,
            Delta {
                seeders: -1,
                leechers: 0
            }
        );
        assert_eq!((s.seeders(), s.leechers()), (0, 2));
    }

    #[test]
    fn sample_skips_and_never_repeats() {
        let mut s = Swarm::<V4Entry>::default();
        for n in 0..50 {
            s.put(key(n), Role::Leecher, 0);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for (me, others) in [(200u8, 50usize), (7, 49)] {
            for want in [0, 1, 10, 48, 49, 60] {
                let mut resp = AnnounceResponse::default();
                s.select(key(me), Role::Seeder, want, None, &mut rng, &mut resp);
                let mut got: Vec<_> = resp.ipv4_peers.iter().map(|a| a.ip().octets()[3]).collect();
                assert_eq!(got.len(), want.min(others), "want {want}");
                assert!(!got.contains(&me));
                got.sort();
                got.dedup();
                assert_eq!(got.len(), want.min(others), "no repeats");
            }
        }
    }

    fn addr(a: u8, b: u8) -> [u8; 6] {
        [10, a, b, 1, 0x1a, 0xe1]
    }

    #[test]
    fn same_subnet_first_then_the_rest() {
        let mut s = Swarm::<V4Entry>::default();
        // 10 leechers in each of 10.1..4.x /16s, 5 seeders in 10.2.x and 10.3.x.
        for net in 1..=4u8 {
            for host in 0..10u8 {
                s.put(addr(net, host), Role::Leecher, 0);
            }
        }
        for host in 100..105u8 {
            s.put(addr(2, host), Role::Seeder, 0);
            s.put(addr(3, host), Role::Seeder, 0);
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let me = addr(2, 200);
        let net_of = |resp: &AnnounceResponse| -> Vec<u8> {
            resp.ipv4_peers.iter().map(|p| p.ip().octets()[1]).collect()
        };

        // A leecher wanting 12: its network's 5 seeders and 10 leechers come
        // first, so all 12 are from 10.2.0.0/16.
        let mut resp = AnnounceResponse::default();
        s.select(me, Role::Leecher, 12, Some(16), &mut rng, &mut resp);
        assert_eq!(net_of(&resp), vec![2; 12]);
        // Wanting 20: the 15 of its network first, then 5 from elsewhere.
        let mut resp = AnnounceResponse::default();
        s.select(me, Role::Leecher, 20, Some(16), &mut rng, &mut resp);
        let nets = net_of(&resp);
        assert_eq!(nets.len(), 20);
        assert!(nets[..15].iter().all(|&n| n == 2), "{nets:?}");
        assert!(nets[15..].iter().all(|&n| n != 2), "{nets:?}");
        // The seeders of the network come before its leechers.
        let hosts: Vec<u8> = resp.ipv4_peers[..5]
            .iter()
            .map(|p| p.ip().octets()[2])
            .collect();
        assert!(hosts.iter().all(|&h| h >= 100), "{hosts:?}");
        // A seeder gets only leechers, its network's first.
        let mut resp = AnnounceResponse::default();
        s.select(
            addr(3, 100),
            Role::Seeder,
            10,
            Some(16),
            &mut rng,
            &mut resp,
        );
        assert_eq!(net_of(&resp), vec![3; 10]);
        // Never the announcer itself, also inside its network.
        let mut resp = AnnounceResponse::default();
        s.select(addr(1, 5), Role::Seeder, 40, Some(16), &mut rng, &mut resp);
        assert_eq!(resp.ipv4_peers.len(), 39);
        assert!(
            !resp
                .ipv4_peers
                .iter()
                .any(|p| p.ip().octets()[1..3] == [1, 5])
        );
    }
}
