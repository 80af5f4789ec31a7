//! Announce and scrape responses, filled by hooks and the store, written by a frontend.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use crate::InfoHash;

/// What an announce gets back.
///
/// Frontends keep one per worker and [`clear`](Self::clear) it between requests,
/// so the peer lists' buffers are reused and an announce allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub compact: bool,
    /// Seeders in the requester's swarm.
    pub complete: u32,
    /// Leechers in the requester's swarm.
    pub incomplete: u32,
    /// Completed downloads seen (`downloaded` in BEP 48 and the HTTP reply).
    pub snatches: u32,
    pub interval: Duration,
    pub min_interval: Duration,
    pub ipv4_peers: Vec<SocketAddrV4>,
    pub ipv6_peers: Vec<SocketAddrV6>,
    /// BEP 3 `warning message`, which a hook may set.
    pub warning_message: Option<Cow<'static, str>>,
    /// BEP 24: the address the tracker saw, which frontends may echo.
    pub external_ip: Option<IpAddr>,
}

impl AnnounceResponse {
    /// Resets every field, keeping the peer lists' capacity.
    pub fn clear(&mut self) {
        self.compact = false;
        self.complete = 0;
        self.incomplete = 0;
        self.snatches = 0;
        self.interval = Duration::ZERO;
        self.min_interval = Duration::ZERO;
        self.ipv4_peers.clear();
        self.ipv6_peers.clear();
        self.warning_message = None;
        self.external_ip = None;
    }

    /// Number of peers in the reply, both families.
    pub fn peer_count(&self) -> usize {
        self.ipv4_peers.len() + self.ipv6_peers.len()
    }

    /// Every peer in the reply, IPv4 first.
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let v4 = self.ipv4_peers.iter().map(|a| SocketAddr::V4(*a));
        v4.chain(self.ipv6_peers.iter().map(|a| SocketAddr::V6(*a)))
    }
}

/// One torrent's counts in a scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scrape {
    pub info_hash: InfoHash,
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    /// Completed downloads.
    pub snatches: u32,
}

/// What a scrape gets back: one entry per requested info hash, in request order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeResponse {
    pub files: Vec<Scrape>,
}
