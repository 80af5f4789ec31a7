//! One swarm of one address family, laid out compactly.
//!
//! A peer is its address and port plus a 16-bit timestamp: 8 bytes for IPv4,
//! 20 for IPv6, no peer id (a peer is identified by address and port, as
//! opentracker does, so a client that restarts with a new id replaces its old
//! entry instead of doubling it). All peers of a swarm live in one small
//! vector: seeders first, then leechers, each part sorted by address, so a
//! lookup is a binary search. The first peers (two IPv4, one IPv6) are stored
//! inline in the swarm itself, so most swarms, which have few peers, need no
//! allocation of their own and cost no extra cache miss to read.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use smallvec::SmallVec;
use tracker::bittorrent::AnnounceResponse;

/// A stored peer: a sortable address key and the tick it was last seen.
pub(crate) trait Entry: Copy {
    type Key: Ord + Copy;
    /// The inline storage of a swarm's first peers.
    type Inline: smallvec::Array<Item = Self>;
    fn new(key: Self::Key, tick: u16) -> Self;
    fn key(&self) -> Self::Key;
    fn tick(&self) -> u16;
    fn set_tick(&mut self, tick: u16);
    fn push_to(&self, resp: &mut AnnounceResponse);
    /// Shuffles the last `n` peers of this family in `resp`.
    fn shuffle_last(resp: &mut AnnounceResponse, n: usize, rng: &mut fastrand::Rng);
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct V4Entry {
    /// IPv4 address then port, big-endian: exactly the compact peer format.
    addr: [u8; 6],
    tick: u16,
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct V6Entry {
    addr: [u8; 18],
    tick: u16,
}

pub(crate) fn v4_key(ip: Ipv4Addr, port: u16) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..4].copy_from_slice(&ip.octets());
    k[4..].copy_from_slice(&port.to_be_bytes());
    k
}

pub(crate) fn v6_key(ip: Ipv6Addr, port: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(&ip.octets());
    k[16..].copy_from_slice(&port.to_be_bytes());
    k
}

impl Entry for V4Entry {
    type Key = [u8; 6];
    type Inline = [V4Entry; 2];
    fn new(addr: [u8; 6], tick: u16) -> Self {
        V4Entry { addr, tick }
    }
    fn key(&self) -> [u8; 6] {
        self.addr
    }
    fn tick(&self) -> u16 {
        self.tick
    }
    fn set_tick(&mut self, tick: u16) {
        self.tick = tick;
    }
    fn push_to(&self, resp: &mut AnnounceResponse) {
        let a = self.addr;
        let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        resp.ipv4_peers
            .push(SocketAddrV4::new(ip, u16::from_be_bytes([a[4], a[5]])));
    }
    fn shuffle_last(resp: &mut AnnounceResponse, n: usize, rng: &mut fastrand::Rng) {
        let len = resp.ipv4_peers.len();
        rng.shuffle(&mut resp.ipv4_peers[len - n..]);
    }
}

impl Entry for V6Entry {
    type Key = [u8; 18];
    type Inline = [V6Entry; 1];
    fn new(addr: [u8; 18], tick: u16) -> Self {
        V6Entry { addr, tick }
    }
    fn key(&self) -> [u8; 18] {
        self.addr
    }
    fn tick(&self) -> u16 {
        self.tick
    }
    fn set_tick(&mut self, tick: u16) {
        self.tick = tick;
    }
    fn push_to(&self, resp: &mut AnnounceResponse) {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&self.addr[..16]);
        let port = u16::from_be_bytes([self.addr[16], self.addr[17]]);
        resp.ipv6_peers
            .push(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0));
    }
    fn shuffle_last(resp: &mut AnnounceResponse, n: usize, rng: &mut fastrand::Rng) {
        let len = resp.ipv6_peers.len();
        rng.shuffle(&mut resp.ipv6_peers[len - n..]);
    }
}

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
    pub fn select(
        &self,
        me: E::Key,
        role: Role,
        want: usize,
        rng: &mut fastrand::Rng,
        resp: &mut AnnounceResponse,
    ) {
        let split = self.split();
        let (seeders, leechers) = self.peers.split_at(split);
        let skip_in = |part: &[E]| part.binary_search_by(|e| e.key().cmp(&me)).ok();
        let mut left = want;
        if role == Role::Leecher {
            left -= sample(seeders, skip_in(seeders), left, rng, resp);
        }
        sample(leechers, skip_in(leechers), left, rng, resp);
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

/// Appends up to `want` entries of `part` (without index `skip`) to `resp`,
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
    skip: Option<usize>,
    want: usize,
    rng: &mut fastrand::Rng,
    resp: &mut AnnounceResponse,
) -> usize {
    if want == 0 {
        return 0;
    }
    let n = part.len() - usize::from(skip.is_some());
    let at = |virtual_index: usize| match skip {
        Some(s) if virtual_index >= s => &part[virtual_index + 1],
        _ => &part[virtual_index],
    };
    let taken = if n <= want {
        for v in 0..n {
            at(v).push_to(resp);
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
            at(index).push_to(resp);
            lo += size;
        }
        want
    };
    E::shuffle_last(resp, taken, rng);
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> [u8; 6] {
        [10, 0, 0, n, 0x1a, 0xe1]
    }

    #[test]
    fn entries_are_compact() {
        assert_eq!(std::mem::size_of::<V4Entry>(), 8);
        assert_eq!(std::mem::size_of::<V6Entry>(), 20);
        // Two IPv4 peers inline cost nothing over a Vec's three words.
        assert_eq!(std::mem::size_of::<Swarm<V4Entry>>(), 32);
        assert_eq!(std::mem::size_of::<Swarm<V6Entry>>(), 40);
    }

    #[test]
    fn put_move_delete() {
        let mut s = Swarm::<V4Entry>::default();
        assert_eq!(
            s.put(key(3), Role::Leecher, 0),
            Delta {
                seeders: 0,
                leechers: 1
            }
        );
        assert_eq!(
            s.put(key(1), Role::Leecher, 0),
            Delta {
                seeders: 0,
                leechers: 1
            }
        );
        assert_eq!(
            s.put(key(2), Role::Seeder, 0),
            Delta {
                seeders: 1,
                leechers: 0
            }
        );
        assert_eq!(
            s.put(key(3), Role::Seeder, 0),
            Delta {
                seeders: 1,
                leechers: -1
            }
        );
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
                s.select(key(me), Role::Seeder, want, &mut rng, &mut resp);
                let mut got: Vec<_> = resp.ipv4_peers.iter().map(|a| a.ip().octets()[3]).collect();
                assert_eq!(got.len(), want.min(others), "want {want}");
                assert!(!got.contains(&me));
                got.sort();
                got.dedup();
                assert_eq!(got.len(), want.min(others), "no repeats");
            }
        }
    }
}
