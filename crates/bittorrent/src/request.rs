//! Announce and scrape requests, after a frontend has parsed and sanitized them.

use std::net::{IpAddr, Ipv4Addr};

use crate::{AddressFamily, Event, InfoHash, Params, Peer};

/// An announce, whatever protocol it arrived by. `Default` is a placeholder
/// for buffers that frontends fill before use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    /// The announcing peer, with the address the frontend decided to trust.
    pub peer: Peer,
    pub event: Event,
    /// Whether the client sent an event at all (chihaya's `EventProvided`).
    pub event_provided: bool,
    /// Peers wanted, already capped by the frontend's `max_numwant`.
    pub num_want: u32,
    pub num_want_provided: bool,
    /// Whether the address came from the request (`ip` parameter, UDP ip field)
    /// rather than from the connection.
    pub ip_provided: bool,
    pub compact: bool,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    /// The client's key (BEP 15's key field; BEP 7's `key` parameter): a
    /// random number a client keeps across its announces, so a tracker can
    /// tell it is the same client after its address changes. Always there
    /// over UDP; over HTTP only when the parameter is 1-8 hex digits, `None`
    /// otherwise.
    pub key: Option<u32>,
    /// URL data and route parameters (passkeys live here).
    pub params: Params,
}

impl AnnounceRequest {
    /// A seeder has nothing left to download.
    pub fn is_seeder(&self) -> bool {
        self.left == 0
    }
}

/// A scrape of one or more torrents, answered for the requester's address family.
/// `Default` is a placeholder, as for [`AnnounceRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeRequest {
    pub address_family: AddressFamily,
    /// The client's address, as the frontend decided to trust it (the
    /// connection's, or a trusted proxy's header): what hooks that tell
    /// clients apart (`rate limit`) key on. A scrape names no address of its
    /// own, so `allow_ip_spoofing` plays no part.
    pub client: IpAddr,
    pub info_hashes: Vec<InfoHash>,
    pub params: Params,
}

impl Default for ScrapeRequest {
    fn default() -> Self {
        ScrapeRequest {
            address_family: AddressFamily::default(),
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            info_hashes: Vec::new(),
            params: Params::default(),
        }
    }
}
