//! The simulated peers: who announces next, with which event, and how many of
//! them karuta should be holding.
//!
//! Each protocol has a ring of peers of a fixed size; every request slot of
//! that protocol takes the peer at the front, sends its next announce and puts
//! it at the back, so a peer announces once per trip round the ring (the ring
//! size over the protocol's rate: `--peer-interval`). A peer's life is
//! `started`, a few announces while leeching, `completed`, a few while seeding,
//! then `stopped` — or it vanishes without a word, and only karuta's garbage
//! collection can remove it. Some peers start as seeders, some leechers give up
//! before completing. A peer that leaves is replaced at once by a new one, so
//! the rings keep their size and peers join and leave all the time.
//!
//! karuta's memory store knows a peer by address and port, and every peer here
//! comes from 127.0.0.1: each torrent hands out its own ports in turn, so peers
//! of one swarm differ as long as it has fewer than 65,535 at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bittorrent::{InfoHash, PeerId};

/// The two frontends under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Http,
}

impl Proto {
    pub const ALL: [Proto; 2] = [Proto::Udp, Proto::Http];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Http => "http",
        }
    }
}

/// An announce's event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    None,
    Completed,
    Started,
    Stopped,
}

impl Event {
    /// BEP 15's code.
    pub fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }

    /// The `&event=` part of an HTTP announce's query.
    pub fn http_query(self) -> &'static str {
        match self {
            Event::None => "",
            Event::Completed => "&event=completed",
            Event::Started => "&event=started",
            Event::Stopped => "&event=stopped",
        }
    }
}

/// The shape of the simulated swarms.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Peers in each protocol's ring.
    pub peers: [usize; 2],
    /// Torrents, the lower indexes the more popular.
    pub torrents: usize,
    /// The share of peers that vanish instead of stopping.
    pub vanish: f64,
    /// UDP sockets a UDP peer is given one of.
    pub udp_sockets: usize,
}

/// One announce to send.
#[derive(Clone, Copy, Debug)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    /// The UDP socket to send from (UDP peers only).
    pub socket: usize,
    pub event: Event,
    pub left: u64,
    pub downloaded: u64,
    pub uploaded: u64,
}

/// Bytes a torrent's content has; what a leecher starts with as `left`.
const TORRENT_BYTES: u64 = 1 << 30;
/// What a peer moves per announce, downloading or uploading.
const BYTES_PER_ANNOUNCE: u64 = 64 << 20;

#[derive(Clone, Debug)]
struct Peer {
    torrent: u32,
    id: PeerId,
    port: u16,
    socket: u16,
    started: bool,
    left: u64,
    downloaded: u64,
    uploaded: u64,
    /// Announces still to send while leeching (after `started`).
    leech: u8,
    /// Whether it completes; if not it leaves after leeching.
    completes: bool,
    /// Announces still to send while seeding (after `completed`).
    seed: u8,
    /// Leaves without `stopped`.
    vanishes: bool,
    /// When its last announce was sent.
    last: Instant,
}

/// Every simulated peer, and what karuta should hold of them.
pub struct Population {
    rng: fastrand::Rng,
    hashes: Vec<InfoHash>,
    /// The next port each torrent hands out.
    next_port: Vec<u16>,
    rings: [VecDeque<Peer>; 2],
    vanish: f64,
    udp_sockets: usize,
    /// Peers that announced `started` and neither stopped nor vanished.
    active: u64,
    /// When each vanished peer last announced, oldest first (rings are FIFO,
    /// so they come in order); trimmed once far past any expiry.
    vanished: VecDeque<Instant>,
    started: u64,
    stopped: u64,
    completed: u64,
    vanished_total: u64,
}

impl Population {
    pub fn new(shape: &Shape, seed: u64) -> Population {
        let mut rng = fastrand::Rng::with_seed(seed);
        let hashes = (0..shape.torrents)
            .map(|_| {
                let mut h = [0u8; 20];
                rng.fill(&mut h);
                InfoHash(h)
            })
            .collect();
        let mut pop = Population {
            rng,
            hashes,
            next_port: vec![1; shape.torrents],
            rings: [VecDeque::new(), VecDeque::new()],
            vanish: shape.vanish,
            udp_sockets: shape.udp_sockets.max(1),
            active: 0,
            vanished: VecDeque::new(),
            started: 0,
            stopped: 0,
            completed: 0,
            vanished_total: 0,
        };
        let now = Instant::now();
        for proto in Proto::ALL {
            for _ in 0..shape.peers[proto.index()].max(1) {
                let peer = pop.fresh(now);
                pop.rings[proto.index()].push_back(peer);
            }
        }
        pop
    }

    /// A torrent, by popularity: index `T·u²` makes the first torrents the
    /// big swarms (the first holds √(1/T) of the peers) and most small.
    fn torrent(&mut self) -> u32 {
        let u = self.rng.f64();
        ((u * u * self.hashes.len() as f64) as usize).min(self.hashes.len() - 1) as u32
    }

    fn fresh(&mut self, now: Instant) -> Peer {
        let torrent = self.torrent();
        let port = self.next_port[torrent as usize];
        self.next_port[torrent as usize] = port.checked_add(1).unwrap_or(1);
        let mut id = *b"-KS0100-000000000000";
        for b in &mut id[8..] {
            *b = self.rng.alphanumeric() as u8;
        }
        let seeder = self.rng.f64() < 0.1;
        Peer {
            torrent,
            id: PeerId(id),
            port,
            socket: self.rng.usize(..self.udp_sockets) as u16,
            started: false,
            left: if seeder { 0 } else { TORRENT_BYTES },
            downloaded: 0,
            uploaded: 0,
            leech: if seeder { 0 } else { self.rng.u8(0..=4) },
            completes: !seeder && self.rng.f64() >= 0.1,
            seed: self.rng.u8(0..=4),
            vanishes: self.rng.f64() < self.vanish,
            last: now,
        }
    }

    /// The next announce of `proto`'s ring, sent at `now`.
    pub fn next_announce(&mut self, proto: Proto, now: Instant) -> Announce {
        loop {
            let mut peer = self.rings[proto.index()]
                .pop_front()
                .expect("rings are never empty");
            let Some(event) = Self::step(&mut peer) else {
                // Its life is over and it leaves without a word.
                self.active -= 1;
                self.vanished_total += 1;
                self.vanished.push_back(peer.last);
                let fresh = self.fresh(now);
                self.rings[proto.index()].push_back(fresh);
                continue;
            };
            match event {
                Event::Started => {
                    self.active += 1;
                    self.started += 1;
                }
                Event::Completed => self.completed += 1,
                Event::Stopped => {
                    self.active -= 1;
                    self.stopped += 1;
                }
                Event::None => {}
            }
            peer.last = now;
            let announce = Announce {
                info_hash: self.hashes[peer.torrent as usize],
                peer_id: peer.id,
                port: peer.port,
                socket: usize::from(peer.socket),
                event,
                left: peer.left,
                downloaded: peer.downloaded,
                uploaded: peer.uploaded,
            };
            let next = if event == Event::Stopped {
                self.fresh(now)
            } else {
                peer
            };
            self.rings[proto.index()].push_back(next);
            return announce;
        }
    }

    /// Moves `peer` one announce on: the event to send, or `None` when it
    /// vanishes now.
    fn step(peer: &mut Peer) -> Option<Event> {
        if !peer.started {
            peer.started = true;
            return Some(Event::Started);
        }
        if peer.left > 0 && peer.leech > 0 {
            peer.leech -= 1;
            peer.downloaded += BYTES_PER_ANNOUNCE;
            peer.left = peer.left.saturating_sub(BYTES_PER_ANNOUNCE);
            peer.uploaded += BYTES_PER_ANNOUNCE / 4;
            return Some(Event::None);
        }
        if peer.left > 0 && peer.completes {
            peer.downloaded += peer.left;
            peer.left = 0;
            return Some(Event::Completed);
        }
        if peer.left == 0 && peer.seed > 0 {
            peer.seed -= 1;
            peer.uploaded += BYTES_PER_ANNOUNCE;
            return Some(Event::None);
        }
        if peer.vanishes {
            None
        } else {
            Some(Event::Stopped)
        }
    }

    /// `n` torrents to scrape, by popularity.
    pub fn scrape_hashes(&mut self, n: usize) -> Vec<InfoHash> {
        (0..n)
            .map(|_| {
                let t = self.torrent();
                self.hashes[t as usize]
            })
            .collect()
    }

    /// How many peers karuta's store should hold at `now`: at least those
    /// active and those vanished within `lifetime - margin` (not yet
    /// expirable), at most those active and vanished within `lifetime +
    /// gc_interval + margin` (a GC has run since the rest expired).
    pub fn expected(
        &mut self,
        now: Instant,
        lifetime: Duration,
        gc_interval: Duration,
        margin: Duration,
    ) -> Expected {
        let age = |t: Instant| now.saturating_duration_since(t);
        let keep = lifetime + gc_interval + margin + Duration::from_secs(60);
        while self.vanished.front().is_some_and(|&t| age(t) > keep) {
            self.vanished.pop_front();
        }
        // Oldest first: the entries at least `d` old are a prefix.
        let younger_than = |d: Duration| {
            let older = self.vanished.partition_point(|&t| age(t) >= d);
            (self.vanished.len() - older) as u64
        };
        let must_hold = younger_than(lifetime.saturating_sub(margin));
        let may_hold = younger_than(lifetime + gc_interval + margin);
        Expected {
            low: self.active + must_hold,
            high: self.active + may_hold,
            expired: self.vanished_total - may_hold,
        }
    }

    /// Lifecycle events sent so far.
    pub fn events(&self) -> Events {
        Events {
            started: self.started,
            completed: self.completed,
            stopped: self.stopped,
            vanished: self.vanished_total,
        }
    }
}

/// The bounds of karuta's peer count, and how many vanished peers karuta
/// must have collected by then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub low: u64,
    pub high: u64,
    /// Vanished peers past `lifetime + gc_interval`: garbage karuta has
    /// removed if its GC works.
    pub expired: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Events {
    pub started: u64,
    pub completed: u64,
    pub stopped: u64,
    pub vanished: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(vanish: f64) -> Shape {
        Shape {
            peers: [50, 50],
            torrents: 10,
            vanish,
            udp_sockets: 4,
        }
    }

    #[test]
    fn every_peer_starts_first_and_leaves_once() {
        let mut pop = Population::new(&shape(0.3), 7);
        let now = Instant::now();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let a = pop.next_announce(Proto::Udp, now);
            let events: &mut Vec<Event> = seen.entry(a.peer_id).or_default();
            events.push(a.event);
            assert!(a.socket < 4);
        }
        for events in seen.values() {
            assert_eq!(events[0], Event::Started);
            assert!(!events[1..].contains(&Event::Started));
            let stops = events.iter().filter(|e| **e == Event::Stopped).count();
            assert!(stops <= 1);
            if stops == 1 {
                assert_eq!(events.last(), Some(&Event::Stopped));
            }
        }
        let e = pop.events();
        assert!(e.vanished > 0 && e.stopped > 0 && e.completed > 0);
        // Active peers: every started one that has not left.
        assert_eq!(pop.active, e.started - e.stopped - e.vanished);
    }

    #[test]
    fn vanished_peers_expire_after_the_lifetime() {
        let mut pop = Population::new(&shape(1.0), 1);
        let t0 = Instant::now();
        for _ in 0..2_000 {
            pop.next_announce(Proto::Http, t0);
        }
        let vanished = pop.events().vanished;
        assert!(vanished > 0);
        let (life, gc, margin) = (
            Duration::from_secs(60),
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        let soon = pop.expected(t0 + Duration::from_secs(1), life, gc, margin);
        assert_eq!(soon.low, pop.active + vanished);
        assert_eq!(soon.expired, 0);
        let late = pop.expected(t0 + Duration::from_secs(100), life, gc, margin);
        assert_eq!((late.low, late.high), (pop.active, pop.active));
        assert_eq!(late.expired, vanished);
    }
}
