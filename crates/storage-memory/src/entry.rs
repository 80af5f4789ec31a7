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
    /// The lowest and highest keys of the network of `key`'s address with
    /// `prefix` bits: its peers are contiguous in a sorted part.
    fn subnet_bounds(key: Self::Key, prefix: u8) -> (Self::Key, Self::Key);
    /// Whether this is the IPv6 entry.
    const IPV6: bool;
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
    fn subnet_bounds(key: [u8; 6], prefix: u8) -> ([u8; 6], [u8; 6]) {
        let ip = Ipv4Addr::new(key[0], key[1], key[2], key[3]);
        let (first, last) = ipnet::ipv4_range(ip, prefix);
        (v4_key(first, 0), v4_key(last, u16::MAX))
    }
    const IPV6: bool = false;
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
    fn subnet_bounds(key: [u8; 18], prefix: u8) -> ([u8; 18], [u8; 18]) {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&key[..16]);
        let (first, last) = ipnet::ipv6_range(Ipv6Addr::from(ip), prefix);
        (v6_key(first, 0), v6_key(last, u16::MAX))
    }
    const IPV6: bool = true;
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
        let (lo, hi) = V4Entry::subnet_bounds([192, 168, 7, 9, 0, 80], 24);
        assert_eq!(lo, [192, 168, 7, 0, 0, 0]);
        assert_eq!(hi, [192, 168, 7, 255, 255, 255]);
        let (lo, hi) = V4Entry::subnet_bounds([1, 2, 3, 4, 0, 1], 0);
        assert_eq!(
            (lo[..4].to_vec(), hi[..4].to_vec()),
            (vec![0; 4], vec![255; 4])
        );
        let mut k6 = [0u8; 18];
        k6[..2].copy_from_slice(&[0x20, 0x01]);
        k6[15] = 7;
        let (lo, hi) = V6Entry::subnet_bounds(k6, 64);
        assert_eq!(lo[15], 0);
        assert_eq!(hi[8..16], [0xff; 8]);
        assert_eq!(hi[..2], [0x20, 0x01]);
    }
}
