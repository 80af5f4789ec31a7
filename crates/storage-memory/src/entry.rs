//! A stored peer: its address and port plus a 16-bit last-seen tick, 8 bytes
//! for IPv4 and 20 for IPv6, no peer id (a peer is identified by address and
//! port, as opentracker does, so a client that restarts with a new id replaces
//! its old entry instead of doubling it).
//!
//! The address comes first and big-endian, so entries sort by address and the
//! peers of one network are contiguous in a sorted part of a swarm: the
//! same-subnet preference searches for the bounds [`tracker::ipnet`] gives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use tracker::bittorrent::{AnnounceResponse, Peer};
use tracker::ipnet;

/// A stored peer as a swarm sees it: a sortable address key of its family and
/// the tick it was last seen.
pub(crate) trait Entry: Copy {
    type Key: FamilyKey;
    /// The inline storage of a swarm's first peers.
    type Inline: smallvec::Array<Item = Self>;
    fn new(key: Self::Key, tick: u16) -> Self;
    fn key(&self) -> Self::Key;
    fn tick(&self) -> u16;
    fn set_tick(&mut self, tick: u16);
}

/// The entry of either family: the key, then the tick. The families differ
/// only in their key ([`FamilyKey`]).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Stamped<K> {
    /// The address then the port, big-endian: for IPv4 exactly the compact
    /// peer format.
    addr: K,
    tick: u16,
}

pub(crate) type V4Entry = Stamped<[u8; 6]>;
pub(crate) type V6Entry = Stamped<[u8; 18]>;

/// What an address family's key knows: how it is handed out, shuffled and
/// bounded to a subnet, and how many of its entries a swarm holds inline.
pub(crate) trait FamilyKey: Ord + Copy {
    type Inline: smallvec::Array<Item = Stamped<Self>>;
    /// Whether this is the IPv6 key.
    const IPV6: bool;
    fn push_to(&self, resp: &mut AnnounceResponse);
    /// Shuffles the last `n` peers of this family in `resp`.
    fn shuffle_last(resp: &mut AnnounceResponse, n: usize, rng: &mut fastrand::Rng);
    /// The lowest and highest keys of the network of this key's address with
    /// `prefix` bits: its peers are contiguous in a sorted part.
    fn subnet_bounds(self, prefix: u8) -> (Self, Self);
}

impl<K: FamilyKey> Entry for Stamped<K> {
    type Key = K;
    type Inline = K::Inline;
    fn new(addr: K, tick: u16) -> Self {
        Stamped { addr, tick }
    }
    fn key(&self) -> K {
        self.addr
    }
    fn tick(&self) -> u16 {
        self.tick
    }
    fn set_tick(&mut self, tick: u16) {
        self.tick = tick;
    }
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

impl FamilyKey for [u8; 6] {
    type Inline = [V4Entry; 2];
    const IPV6: bool = false;
    fn push_to(&self, resp: &mut AnnounceResponse) {
        let a = self;
        let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        resp.ipv4_peers
            .push(SocketAddrV4::new(ip, u16::from_be_bytes([a[4], a[5]])));
    }
    fn shuffle_last(resp: &mut AnnounceResponse, n: usize, rng: &mut fastrand::Rng) {
        let len = resp.ipv4_peers.len();
        rng.shuffle(&mut resp.ipv4_peers[len - n..]);
    }
    fn subnet_bounds(self, prefix: u8) -> ([u8; 6], [u8; 6]) {
        let ip = Ipv4Addr::new(self[0], self[1], self[2], self[3]);
        let (first, last) = ipnet::ipv4_range(ip, prefix);
        (v4_key(first, 0), v4_key(last, u16::MAX))
    }
}

impl FamilyKey for [u8; 18] {
    type Inline = [V6Entry; 1];
    const IPV6: bool = true;
    fn push_to(&self, resp: &mut AnnounceResponse) {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&self[..16]);
        let port = u16::from_be_bytes([self[16], self[17]]);
        resp.ipv6_peers
            .push(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0));
    }
    fn shuffle_last(resp: &mut AnnounceResponse, n: usize, rng: &mut fastrand::Rng) {
        let len = resp.ipv6_peers.len();
        rng.shuffle(&mut resp.ipv6_peers[len - n..]);
    }
    fn subnet_bounds(self, prefix: u8) -> ([u8; 18], [u8; 18]) {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&self[..16]);
        let (first, last) = ipnet::ipv6_range(Ipv6Addr::from(ip), prefix);
        (v6_key(first, 0), v6_key(last, u16::MAX))
    }
}

/// A peer's address in the form its family's swarms key it by.
pub(crate) enum Key {
    V4([u8; 6]),
    V6([u8; 18]),
}

pub(crate) fn key_of(peer: &Peer) -> Key {
    match peer.ip() {
        IpAddr::V4(ip) => Key::V4(v4_key(ip, peer.port)),
        IpAddr::V6(ip) => Key::V6(v6_key(ip, peer.port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_compact() {
        assert_eq!(std::mem::size_of::<V4Entry>(), 8);
        assert_eq!(std::mem::size_of::<V6Entry>(), 20);
    }

    #[test]
    fn subnet_bounds() {
        let (lo, hi) = [192, 168, 7, 9, 0, 80].subnet_bounds(24);
        assert_eq!(lo, [192, 168, 7, 0, 0, 0]);
        assert_eq!(hi, [192, 168, 7, 255, 255, 255]);
        let (lo, hi) = [1, 2, 3, 4, 0, 1].subnet_bounds(0);
        assert_eq!(
            (lo[..4].to_vec(), hi[..4].to_vec()),
            (vec![0; 4], vec![255; 4])
        );
        let mut k6 = [0u8; 18];
        k6[..2].copy_from_slice(&[0x20, 0x01]);
        k6[15] = 7;
        let (lo, hi) = k6.subnet_bounds(64);
        assert_eq!(lo[15], 0);
        assert_eq!(hi[8..16], [0xff; 8]);
        assert_eq!(hi[..2], [0x20, 0x01]);
    }
}
