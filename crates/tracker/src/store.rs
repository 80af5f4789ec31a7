//! The peer store: where swarms live.
//!
//! The trait has chihaya's operations (put, delete, graduate, announce peers,
//! scrape), which the conformance suite pins, plus [`PeerStore::announce`], the
//! one-step read-and-write the tracker logic uses on the hot path: one lock in
//! memory, one round trip to Redis.

use bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, Event, InfoHash, Peer, Scrape, ScrapeRequest,
    ScrapeResponse,
};

use crate::stats::HistogramSnapshot;
use crate::{ReadyOrBoxed, StoreError};

/// What a store method returns.
pub type StoreFuture<'a, T> = ReadyOrBoxed<'a, Result<T, StoreError>>;

/// Totals across all swarms, for metrics and `/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Swarms (one per info hash and address family).
    pub swarms: u64,
    pub seeders: u64,
    pub leechers: u64,
}

/// How an announce changes its swarm. Every store applies the same rule, so
/// it is decided here once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwarmChange {
    /// `stopped`: the peer leaves the swarm.
    Remove,
    /// `completed`: the peer becomes a seeder; a snatch is counted unless the
    /// peer already was a seeder.
    Graduate,
    /// Nothing left to download.
    PutSeeder,
    PutLeecher,
}

impl SwarmChange {
    pub fn of(req: &AnnounceRequest) -> Self {
        match req.event {
            Event::Stopped => SwarmChange::Remove,
            Event::Completed => SwarmChange::Graduate,
            _ if req.left == 0 => SwarmChange::PutSeeder,
            _ => SwarmChange::PutLeecher,
        }
    }

    /// Whether the peer is a seeder after the change.
    pub fn leaves_seeder(self) -> bool {
        matches!(self, SwarmChange::Graduate | SwarmChange::PutSeeder)
    }
}

/// Storage of swarms.
///
/// Rules every implementation keeps (the conformance suite checks them):
/// IPv4 and IPv6 swarms are separate; a peer is identified by its address and
/// port; a seeder is given leechers only, a leecher seeders then leechers, and
/// never itself; peers are picked at random across the swarm; peers not seen
/// for the configured lifetime are removed.
pub trait PeerStore: Send + Sync + 'static {
    /// Applies the announce (see [`SwarmChange`]) and fills `resp` with the
    /// swarm's counts and up to `req.num_want` peers of the announcer's family,
    /// in one step.
    fn announce<'a>(
        &'a self,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()>;

    /// Applies an announce's change without reading anything (the write after
    /// the reply, when the one-step [`announce`](Self::announce) was skipped).
    /// Removing a peer that is not there is [`StoreError::ResourceDoesNotExist`].
    /// The default is built on the single operations; stores override it to do
    /// it in one step.
    fn apply(&self, info_hash: InfoHash, peer: Peer, change: SwarmChange) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::boxed(async move {
            match change {
                SwarmChange::Remove => match self.delete_seeder(info_hash, peer).await {
                    Err(StoreError::ResourceDoesNotExist) => {
                        self.delete_leecher(info_hash, peer).await
                    }
                    other => other,
                },
                SwarmChange::Graduate => self.graduate_leecher(info_hash, peer).await,
                SwarmChange::PutSeeder => self.put_seeder(info_hash, peer).await,
                SwarmChange::PutLeecher => self.put_leecher(info_hash, peer).await,
            }
        })
    }

    fn put_seeder(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()>;

    /// Fails with [`StoreError::ResourceDoesNotExist`] when the peer is not a seeder.
    fn delete_seeder(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()>;

    fn put_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()>;

    /// Fails with [`StoreError::ResourceDoesNotExist`] when the peer is not a leecher.
    fn delete_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()>;

    /// Turns a leecher into a seeder and counts a snatch; a peer that was not a
    /// leecher is simply added as a seeder (and the snatch still counts unless
    /// it already was a seeder).
    fn graduate_leecher(&self, info_hash: InfoHash, peer: Peer) -> StoreFuture<'_, ()>;

    /// Read only: fills `out`'s peer list for `peer` (of its family) without
    /// changing the swarm. Fails with [`StoreError::ResourceDoesNotExist`] when
    /// the swarm is unknown.
    fn announce_peers<'a>(
        &'a self,
        info_hash: InfoHash,
        seeder: bool,
        num_want: u32,
        peer: Peer,
        out: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()>;

    /// Counts for one swarm; an unknown swarm has all zeros.
    fn scrape(&self, info_hash: InfoHash, family: AddressFamily) -> StoreFuture<'_, Scrape>;

    /// Counts for every info hash of the request, in order. Stores that can
    /// batch (one round trip) override this.
    fn scrape_many<'a>(
        &'a self,
        req: &'a ScrapeRequest,
        resp: &'a mut ScrapeResponse,
    ) -> StoreFuture<'a, ()> {
        ReadyOrBoxed::boxed(async move {
            for ih in &req.info_hashes {
                let scrape = self.scrape(*ih, req.address_family).await?;
                resp.files.push(scrape);
            }
            Ok(())
        })
    }

    /// Whether the store's futures may wait (a network round trip); see
    /// [`Hook::may_wait`](crate::Hook::may_wait). An in-memory store says
    /// `false`.
    fn may_wait(&self) -> bool {
        true
    }

    /// Totals as of the last reporting interval; cheap enough to call per request.
    fn stats(&self) -> StoreStats;

    /// Durations of the garbage collections so far (chihaya's
    /// `chihaya_storage_gc_duration_milliseconds`), if the store collects.
    fn gc_durations(&self) -> Option<HistogramSnapshot> {
        None
    }

    /// Whether the store can serve requests now (for `/health`).
    fn check(&self) -> StoreFuture<'_, ()> {
        ReadyOrBoxed::ready(Ok(()))
    }

    /// Stops background work (garbage collection, reporting). Called once, at
    /// shutdown; a reload keeps the store running.
    fn stop(&self) -> StoreFuture<'_, ()>;
}
