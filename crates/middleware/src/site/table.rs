//! The in-memory table an approval hook looks requests up in: sharded maps
//! behind one swappable pointer. A lookup takes one shard's read lock; a
//! change (a notification) takes one shard's write lock; a full reload
//! builds a new table aside and swaps it in whole, so readers never see a
//! half-loaded (or empty) set.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};

use arc_swap::ArcSwap;
use bittorrent::InfoHash;

/// A fixed-size key that picks its own shard.
pub trait Key: Copy + Eq + Hash + Send + Sync + 'static {
    fn shard(&self) -> u8;
}

impl Key for [u8; 16] {
    fn shard(&self) -> u8 {
        self[0] ^ self[15]
    }
}

impl Key for InfoHash {
    fn shard(&self) -> u8 {
        self.0[0] ^ self.0[19]
    }
}

const SHARDS: usize = 256;

/// One change to a table.
#[derive(Clone, Debug, PartialEq)]
pub enum Change<K, V> {
    Upsert(K, V),
    Delete(K),
    /// The whole table changed (a TRUNCATE): read it again.
    Reload,
}

/// The maps themselves.
pub struct Table<K, V> {
    shards: Box<[RwLock<HashMap<K, V>>]>,
}

impl<K: Key, V: Copy + Send + Sync + 'static> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl<K: Key, V: Copy + Send + Sync + 'static> Table<K, V> {
    fn shard(&self, key: &K) -> &RwLock<HashMap<K, V>> {
        &self.shards[usize::from(key.shard())]
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let shard = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(key).copied()
    }

    pub fn insert(&self, key: K, value: V) {
        let mut shard = self
            .shard(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        shard.insert(key, value);
    }

    pub fn remove(&self, key: &K) {
        let mut shard = self
            .shard(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        shard.remove(key);
    }

    /// Entries and the bytes their maps hold: hashbrown's buckets (a power
    /// of two, of which 7/8 are usable) of one key and value each, plus a
    /// control byte per bucket and a group's worth of padding.
    pub fn stats(&self) -> (usize, usize) {
        let slot = std::mem::size_of::<(K, V)>();
        self.shards.iter().fold((0, 0), |(n, bytes), s| {
            let s = s.read().unwrap_or_else(PoisonError::into_inner);
            let buckets = match s.capacity() {
                0 => 0,
                c if c < 8 => (c + 1).next_power_of_two(),
                c => (c * 8 / 7).next_power_of_two(),
            };
            let held = if buckets == 0 {
                0
            } else {
                buckets * (slot + 1) + 16
            };
            (n + s.len(), bytes + held)
        })
    }
}

/// A table that changes live.
pub struct LiveTable<K, V> {
    current: ArcSwap<Table<K, V>>,
}

impl<K: Key, V: Copy + Send + Sync + 'static> LiveTable<K, V> {
    pub fn new(table: Table<K, V>) -> Self {
        LiveTable {
            current: ArcSwap::from_pointee(table),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.current.load().get(key)
    }

    /// Swaps in a table read in full.
    pub fn replace(&self, table: Table<K, V>) {
        self.current.store(std::sync::Arc::new(table));
    }

    /// Applies an upsert or a delete; `false` for [`Change::Reload`], which
    /// the owner answers by reading everything.
    pub fn apply(&self, change: Change<K, V>) -> bool {
        let table = self.current.load();
        match change {
            Change::Upsert(k, v) => table.insert(k, v),
            Change::Delete(k) => table.remove(&k),
            Change::Reload => return false,
        }
        true
    }

    pub fn stats(&self) -> (usize, usize) {
        self.current.load().stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_a_swap() {
        let t = Table::default();
        t.insert([1u8; 16], 10u32);
        t.insert([2u8; 16], 20);
        let live = LiveTable::new(t);
        assert_eq!(live.get(&[1; 16]), Some(10));
        assert!(live.apply(Change::Upsert([1; 16], 11)));
        assert!(live.apply(Change::Delete([2; 16])));
        assert!(!live.apply(Change::Reload));
        assert_eq!(live.get(&[1; 16]), Some(11));
        assert_eq!(live.get(&[2; 16]), None);
        assert_eq!(live.stats().0, 1);
        let next = Table::default();
        next.insert([3u8; 16], 30);
        live.replace(next);
        assert_eq!(live.get(&[1; 16]), None);
        assert_eq!(live.get(&[3; 16]), Some(30));
    }
}
