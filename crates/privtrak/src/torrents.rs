//! Info hashes as 32-bit ids, so a peer record holds 4 bytes instead of 20.
//!
//! A private tracker's peers share torrents (a torrent has a handful to
//! thousands of peers), so storing each info hash once and counting its users
//! saves 16 bytes per record, which is most of the distance to privtrak's
//! memory budget. The table is sharded by info hash; an id carries its shard,
//! so turning an id back into an info hash (for an expiry or a snapshot) takes
//! that shard's lock only.

use std::sync::{Mutex, PoisonError};

use bittorrent::InfoHash;
use hashbrown::HashMap;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
const LOCAL_BITS: u32 = 32 - SHARD_BITS;

/// A torrent's id in a [`Torrents`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TorrentId(pub u32);

#[derive(Default)]
struct Shard {
    ids: HashMap<InfoHash, u32>,
    /// Indexed by the local part of an id: the hash and how many records use it.
    slots: Vec<(InfoHash, u32)>,
    free: Vec<u32>,
}

pub(crate) struct Torrents {
    shards: Box<[Mutex<Shard>]>,
}

fn shard_of(ih: &InfoHash) -> usize {
    // Info hashes are SHA-1 (or truncated SHA-256) output: any bits are uniform.
    usize::from(ih.0[19]) % SHARDS
}

impl Torrents {
    pub fn new() -> Self {
        Torrents {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The id of a torrent already in the table.
    pub fn get(&self, ih: &InfoHash) -> Option<TorrentId> {
        let s = shard_of(ih);
        let local = *self.shard(s).ids.get(ih)?;
        Some(TorrentId((s as u32) << LOCAL_BITS | local))
    }

    /// The id of `ih`, adding it if new, with one more user counted.
    pub fn acquire(&self, ih: &InfoHash) -> TorrentId {
        let s = shard_of(ih);
        let mut shard = self.shard(s);
        let local = match shard.ids.get(ih) {
            Some(&local) => {
                shard.slots[local as usize].1 += 1;
                local
            }
            None => {
                let local = match shard.free.pop() {
                    Some(local) => {
                        shard.slots[local as usize] = (*ih, 1);
                        local
                    }
                    None => {
                        let local = shard.slots.len() as u32;
                        assert!(local < 1 << LOCAL_BITS, "more than 2^32 torrents");
                        shard.slots.push((*ih, 1));
                        local
                    }
                };
                shard.ids.insert(*ih, local);
                local
            }
        };
        TorrentId((s as u32) << LOCAL_BITS | local)
    }

    /// One user fewer; the torrent leaves the table with its last user.
    pub fn release(&self, id: TorrentId) {
        let (s, local) = split(id);
        let mut shard = self.shard(s);
        let slot = &mut shard.slots[local];
        slot.1 -= 1;
        if slot.1 == 0 {
            let ih = slot.0;
            shard.ids.remove(&ih);
            shard.free.push(local as u32);
        }
    }

    pub fn info_hash(&self, id: TorrentId) -> InfoHash {
        let (s, local) = split(id);
        self.shard(s).slots[local].0
    }

    /// Torrents with at least one record.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.shard(s).ids.len()).sum()
    }

    /// Heap bytes held (capacity, not length), for the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        (0..SHARDS)
            .map(|s| {
                let shard = self.shard(s);
                shard.ids.allocation_size()
                    + shard.slots.capacity() * std::mem::size_of::<(InfoHash, u32)>()
                    + shard.free.capacity() * 4
            })
            .sum()
    }
}

fn split(id: TorrentId) -> (usize, usize) {
    (
        (id.0 >> LOCAL_BITS) as usize,
        (id.0 & ((1 << LOCAL_BITS) - 1)) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_counted_and_reused() {
        let t = Torrents::new();
        let a = InfoHash([1; 20]);
        let b = InfoHash([2; 20]);
        let ia = t.acquire(&a);
        assert_eq!(t.acquire(&a), ia);
        let ib = t.acquire(&b);
        assert_ne!(ia, ib);
        assert_eq!(t.info_hash(ia), a);
        assert_eq!(t.info_hash(ib), b);
        assert_eq!(t.len(), 2);
        t.release(ia);
        assert_eq!(t.get(&a), Some(ia), "one user left");
        t.release(ia);
        assert_eq!(t.get(&a), None);
        assert_eq!(t.len(), 1);
        // A hash of the same shard takes the freed slot.
        let mut c = [3; 20];
        c[19] = 1;
        let ic = t.acquire(&InfoHash(c));
        assert_eq!(ic, ia);
        assert_eq!(t.info_hash(ic), InfoHash(c));
    }
}
