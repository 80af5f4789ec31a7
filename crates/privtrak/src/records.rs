//! The per-peer records: one baseline per (user, info hash, peer id).
//!
//! Two clients of one user on one torrent are two records (privtrak kept one
//! per user and torrent, so they overwrote each other's baseline).
//!
//! Layout, for memory (goal: at most 64 bytes a tracked peer): records are
//! sharded by user; a shard maps each user to one sorted vector of 45-byte
//! packed records `(torrent id, peer id, uploaded, downloaded, last seen,
//! seeding)`. The user's 16 bytes are stored once per user and the info
//! hash once per torrent ([`Torrents`]); the vectors grow by an eighth, not
//! double, so they stay nearly full. A lookup is a hash probe and a binary
//! search over one user's peers.
//!
//! Every change runs under the shard's lock through [`Records::update`],
//! whose closure is where the caller appends to the journal: a peer's
//! baseline changes and its journal entries are written in the same order.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bittorrent::{InfoHash, PeerId};
use hashbrown::HashMap;

use crate::UserId;
use crate::delta::Baseline;
use crate::torrents::{TorrentId, Torrents};

/// One peer's baseline, packed (no padding: 45 bytes).
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Rec {
    torrent: u32,
    peer_id: [u8; 20],
    uploaded: u64,
    downloaded: u64,
    last_seen: u32,
    seeding: bool,
}

impl Rec {
    fn key(&self) -> (u32, [u8; 20]) {
        (self.torrent, self.peer_id)
    }

    fn baseline(&self) -> Baseline {
        Baseline {
            uploaded: self.uploaded,
            downloaded: self.downloaded,
            last_seen: self.last_seen,
            seeding: self.seeding,
        }
    }

    fn set(&mut self, b: &Baseline) {
        self.uploaded = b.uploaded;
        self.downloaded = b.downloaded;
        self.last_seen = b.last_seen;
        self.seeding = b.seeding;
    }
}

/// A peer's full key, as the closed set remembers it.
type Key = (UserId, [u8; 20], [u8; 20]);

#[derive(Default)]
struct Shard {
    users: HashMap<UserId, Vec<Rec>>,
    /// While the handler's baselines are still to be merged in (see
    /// [`Records::track_closed`]): the peers whose records closed since the
    /// start, so the merge does not bring back a baseline the database still
    /// holds only because it has not applied the close yet.
    closed: Option<hashbrown::HashSet<Key>>,
}

/// Adds `key` to a shard's closed set, when it keeps one.
fn remember_closed(closed: &mut Option<hashbrown::HashSet<Key>>, key: Key) {
    if let Some(closed) = closed {
        closed.insert(key);
    }
}

/// A record as a snapshot or an expiry sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub user: UserId,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub baseline: Baseline,
}

pub(crate) struct Records {
    shards: Box<[Mutex<Shard>]>,
    torrents: Torrents,
}

/// Grows `v` by an eighth (at least one) when full, so a vector is at least
/// ~89 % used; doubling would leave a quarter empty on average.
fn reserve_one(v: &mut Vec<Rec>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(1));
    }
}

impl Records {
    pub fn new(shard_count: usize) -> Self {
        Records {
            shards: (0..shard_count.max(1)).map(|_| Mutex::default()).collect(),
            torrents: Torrents::new(),
        }
    }

    fn shard_index(&self, user: &UserId) -> usize {
        // FNV-1a: passkeys are random but site ids are sequential in the low
        // bytes, so mix all sixteen.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in user.0 {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % self.shards.len() as u64) as usize
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the baseline of (user, info hash, peer) under its shard's
    /// lock, with how many records the user has on that torrent (the peer's
    /// own included), and stores what `f` returns as the new baseline
    /// (`None` removes the record). `f` also returns a value for the caller.
    pub fn update<R>(
        &self,
        user: UserId,
        info_hash: &InfoHash,
        peer_id: &PeerId,
        f: impl FnOnce(Option<&Baseline>, usize) -> (Option<Baseline>, R),
    ) -> R {
        self.update_journaled(user, info_hash, peer_id, |prev, on_torrent| {
            let (next, out) = f(prev, on_torrent);
            (next, false, out)
        })
    }

    /// [`update`](Self::update) for a caller that journals: `f` also says
    /// whether it journaled a close of the peer (a `stopped`, an expiry),
    /// which the closed set remembers even when there was no record.
    pub fn update_journaled<R>(
        &self,
        user: UserId,
        info_hash: &InfoHash,
        peer_id: &PeerId,
        f: impl FnOnce(Option<&Baseline>, usize) -> (Option<Baseline>, bool, R),
    ) -> R {
        let mut shard = self.lock(self.shard_index(&user));
        self.update_in(&mut shard, user, info_hash, peer_id, f)
    }

    /// [`update_journaled`](Self::update_journaled) in a shard already locked.
    fn update_in<R>(
        &self,
        shard: &mut Shard,
        user: UserId,
        info_hash: &InfoHash,
        peer_id: &PeerId,
        f: impl FnOnce(Option<&Baseline>, usize) -> (Option<Baseline>, bool, R),
    ) -> R {
        let torrent = self.torrents.get(info_hash);
        let on_torrent = match (torrent, shard.users.get(&user)) {
            (Some(t), Some(recs)) => {
                recs.partition_point(|r| { r.torrent } <= t.0)
                    - recs.partition_point(|r| { r.torrent } < t.0)
            }
            _ => 0,
        };
        if let Some(t) = torrent
            && let Some(recs) = shard.users.get_mut(&user)
            && let Ok(i) = recs.binary_search_by(|r| r.key().cmp(&(t.0, peer_id.0)))
        {
            let (next, _, out) = f(Some(&recs[i].baseline()), on_torrent);
            match next {
                Some(b) => recs[i].set(&b),
                None => {
                    recs.remove(i);
                    if recs.is_empty() {
                        shard.users.remove(&user);
                    }
                    self.torrents.release(t);
                    remember_closed(&mut shard.closed, (user, info_hash.0, peer_id.0));
                }
            }
            return out;
        }
        let (next, closed, out) = f(None, on_torrent);
        if closed {
            remember_closed(&mut shard.closed, (user, info_hash.0, peer_id.0));
        }
        if let Some(b) = next {
            let torrent = self.torrents.acquire(info_hash);
            let recs = shard.users.entry(user).or_default();
            let key = (torrent.0, peer_id.0);
            let at = recs
                .binary_search_by(|r| r.key().cmp(&key))
                .unwrap_or_else(|at| at);
            reserve_one(recs);
            let mut rec = Rec {
                torrent: torrent.0,
                peer_id: peer_id.0,
                uploaded: 0,
                downloaded: 0,
                last_seen: 0,
                seeding: false,
            };
            rec.set(&b);
            recs.insert(at, rec);
        }
        out
    }

    /// The baseline of one peer, if there is a record.
    pub fn get(&self, user: UserId, info_hash: &InfoHash, peer_id: &PeerId) -> Option<Baseline> {
        self.update(user, info_hash, peer_id, |b, _| (b.copied(), b.copied()))
    }

    /// How many records one user has on one torrent (its active peers).
    pub fn peers_of(&self, user: UserId, info_hash: &InfoHash) -> usize {
        let shard = self.lock(self.shard_index(&user));
        let (Some(t), Some(recs)) = (self.torrents.get(info_hash), shard.users.get(&user)) else {
            return 0;
        };
        let start = recs.partition_point(|r| { r.torrent } < t.0);
        let end = recs.partition_point(|r| { r.torrent } <= t.0);
        end - start
    }

    /// Removes every record for which `expired(baseline)` holds, one shard at
    /// a time, calling `removed` for each under that shard's lock (so the
    /// journal entry of an expiry is ordered with the peer's announces).
    pub fn remove_where(
        &self,
        mut expired: impl FnMut(&Baseline) -> bool,
        mut removed: impl FnMut(&PeerRecord),
    ) -> usize {
        let mut count = 0;
        for i in 0..self.shards.len() {
            let mut guard = self.lock(i);
            let shard = &mut *guard;
            let closed = &mut shard.closed;
            shard.users.retain(|user, recs| {
                recs.retain(|r| {
                    let baseline = r.baseline();
                    if !expired(&baseline) {
                        return true;
                    }
                    let torrent = TorrentId(r.torrent);
                    let info_hash = self.torrents.info_hash(torrent);
                    removed(&PeerRecord {
                        user: *user,
                        info_hash,
                        peer_id: PeerId(r.peer_id),
                        baseline,
                    });
                    remember_closed(closed, (*user, info_hash.0, r.peer_id));
                    self.torrents.release(torrent);
                    count += 1;
                    false
                });
                if recs.len() * 2 < recs.capacity() {
                    recs.shrink_to_fit();
                }
                !recs.is_empty()
            });
        }
        count
    }

    /// From now on remembers the peers whose records close, until
    /// [`untrack_closed`](Self::untrack_closed): for a start that merges
    /// the handler's baselines in later ([`insert_absent`](Self::insert_absent)).
    pub fn track_closed(&self) {
        for i in 0..self.shards.len() {
            self.lock(i).closed = Some(hashbrown::HashSet::new());
        }
    }

    /// Forgets the closed peers and stops remembering them.
    pub fn untrack_closed(&self) {
        for i in 0..self.shards.len() {
            self.lock(i).closed = None;
        }
    }

    /// Adds `r` unless its peer has a record or closed since
    /// [`track_closed`](Self::track_closed): what privtrak knows of a peer
    /// is newer than any stored baseline. Whether it was added.
    pub fn insert_absent(&self, r: &PeerRecord) -> bool {
        let mut shard = self.lock(self.shard_index(&r.user));
        if shard
            .closed
            .as_ref()
            .is_some_and(|c| c.contains(&(r.user, r.info_hash.0, r.peer_id.0)))
        {
            return false;
        }
        self.update_in(
            &mut shard,
            r.user,
            &r.info_hash,
            &r.peer_id,
            |prev, _| match prev {
                Some(b) => (Some(*b), false, false),
                None => (Some(r.baseline), false, true),
            },
        )
    }

    /// Visits every record, one shard at a time (a snapshot).
    pub fn for_each(&self, mut visit: impl FnMut(&PeerRecord)) {
        for i in 0..self.shards.len() {
            let shard = self.lock(i);
            for (user, recs) in &shard.users {
                for r in recs {
                    visit(&PeerRecord {
                        user: *user,
                        info_hash: self.torrents.info_hash(TorrentId(r.torrent)),
                        peer_id: PeerId(r.peer_id),
                        baseline: r.baseline(),
                    });
                }
            }
        }
    }

    /// Records held, users with at least one, and the heap bytes they take
    /// (capacities, the torrent table included), in one pass.
    pub fn stats(&self) -> (usize, usize, usize) {
        let mut records = 0;
        let mut users = 0;
        let mut bytes = self.torrents.heap_bytes();
        for i in 0..self.shards.len() {
            let shard = self.lock(i);
            users += shard.users.len();
            bytes += shard.users.allocation_size();
            for v in shard.users.values() {
                records += v.len();
                bytes += v.capacity() * std::mem::size_of::<Rec>();
            }
        }
        (records, users, bytes)
    }

    /// Records held, and users with at least one.
    pub fn counts(&self) -> (usize, usize) {
        let (records, users, _) = self.stats();
        (records, users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(up: u64, last: u32) -> Baseline {
        Baseline {
            uploaded: up,
            downloaded: 0,
            last_seen: last,
            seeding: false,
        }
    }

    #[test]
    fn a_record_is_packed() {
        assert_eq!(std::mem::size_of::<Rec>(), 45);
    }

    #[test]
    fn records_per_user_torrent_and_peer() {
        let r = Records::new(4);
        let (u1, u2) = (UserId([1; 16]), UserId([2; 16]));
        let (t1, t2) = (InfoHash([1; 20]), InfoHash([2; 20]));
        let (p1, p2) = (PeerId([1; 20]), PeerId([2; 20]));
        for (u, t, p, up) in [
            (u1, t1, p1, 10),
            (u1, t1, p2, 20),
            (u1, t2, p1, 30),
            (u2, t1, p1, 40),
        ] {
            r.update(u, &t, &p, |prev, _| {
                assert!(prev.is_none());
                (Some(b(up, 1)), ())
            });
        }
        assert_eq!(r.get(u1, &t1, &p1), Some(b(10, 1)));
        assert_eq!(r.get(u1, &t1, &p2), Some(b(20, 1)));
        assert_eq!(r.get(u1, &t2, &p1), Some(b(30, 1)));
        assert_eq!(r.get(u2, &t1, &p1), Some(b(40, 1)));
        assert_eq!(r.get(u2, &t2, &p1), None);
        assert_eq!(r.peers_of(u1, &t1), 2);
        assert_eq!(r.peers_of(u1, &t2), 1);
        assert_eq!(r.peers_of(u2, &t2), 0);
        assert_eq!(r.counts(), (4, 2));
        assert_eq!(r.torrents.len(), 2);

        // Update, then remove.
        r.update(u1, &t1, &p1, |prev, on_torrent| {
            assert_eq!(prev, Some(&b(10, 1)));
            assert_eq!(on_torrent, 2, "two peers of u1 on t1");
            (Some(b(15, 2)), ())
        });
        assert_eq!(r.get(u1, &t1, &p1), Some(b(15, 2)));
        r.update(u1, &t2, &p1, |_, _| (None, ()));
        assert_eq!(r.get(u1, &t2, &p1), None);
        assert_eq!(r.torrents.len(), 1, "t2 has no records left");

        // Expire everything last seen before 2.
        let mut gone = Vec::new();
        let n = r.remove_where(|b| b.last_seen < 2, |rec| gone.push(*rec));
        assert_eq!(n, 2);
        gone.sort_by_key(|g| (g.user, g.peer_id));
        assert_eq!(gone[0].peer_id, p2);
        assert_eq!(gone[1].user, u2);
        assert_eq!(r.counts(), (1, 1));
        let mut seen = Vec::new();
        r.for_each(|rec| seen.push(*rec));
        assert_eq!(
            seen,
            [PeerRecord {
                user: u1,
                info_hash: t1,
                peer_id: p1,
                baseline: b(15, 2)
            }]
        );
    }

    #[test]
    fn a_late_merge_adds_only_peers_neither_held_nor_closed() {
        let r = Records::new(2);
        let t = InfoHash([1; 20]);
        let rec = |user: u8, peer: u8, up: u64| PeerRecord {
            user: UserId([user; 16]),
            info_hash: t,
            peer_id: PeerId([peer; 20]),
            baseline: b(up, 1),
        };
        r.track_closed();
        // Held: announced since the start.
        r.update(UserId([1; 16]), &t, &PeerId([1; 20]), |_, _| {
            (Some(b(500, 2)), ())
        });
        // Closed since the start: held, then stopped.
        r.update(UserId([1; 16]), &t, &PeerId([2; 20]), |_, _| {
            (Some(b(10, 2)), ())
        });
        r.update(UserId([1; 16]), &t, &PeerId([2; 20]), |_, _| (None, ()));
        // Closed without a record (a journaled stop of an unknown peer).
        r.update_journaled(UserId([2; 16]), &t, &PeerId([3; 20]), |_, _| {
            (None, true, ())
        });
        // Expired by the collector.
        r.update(UserId([2; 16]), &t, &PeerId([4; 20]), |_, _| {
            (Some(b(7, 0)), ())
        });
        assert_eq!(r.remove_where(|b| b.last_seen == 0, |_| {}), 1);
        // Refused, nothing journaled: not closed.
        r.update_journaled(UserId([2; 16]), &t, &PeerId([5; 20]), |_, _| {
            (None, false, ())
        });
        let added: Vec<bool> = [
            rec(1, 1, 100),
            rec(1, 2, 100),
            rec(2, 3, 100),
            rec(2, 4, 100),
            rec(2, 5, 100),
            rec(3, 6, 100),
        ]
        .iter()
        .map(|x| r.insert_absent(x))
        .collect();
        assert_eq!(added, [false, false, false, false, true, true]);
        assert_eq!(
            r.get(UserId([1; 16]), &t, &PeerId([1; 20])),
            Some(b(500, 2))
        );
        assert_eq!(
            r.get(UserId([3; 16]), &t, &PeerId([6; 20])),
            Some(b(100, 1))
        );
        // Once merged, closes are no longer remembered.
        r.untrack_closed();
        r.update(UserId([3; 16]), &t, &PeerId([6; 20]), |_, _| (None, ()));
        assert!(r.insert_absent(&rec(3, 6, 200)));
    }

    #[test]
    fn a_closure_that_creates_nothing_leaves_nothing() {
        let r = Records::new(1);
        r.update(
            UserId([1; 16]),
            &InfoHash([1; 20]),
            &PeerId([1; 20]),
            |_, _| (None, ()),
        );
        assert_eq!(r.counts(), (0, 0));
        assert_eq!(r.torrents.len(), 0);
    }
}
