//! Simulated clients of a private tracker whose cumulative counters are known,
//! and what an exact tracker must have credited them: the ground truth the
//! accounting tests compare the handler's totals with.
//!
//! A client's counters only grow within a session. A session ends with a
//! `stopped`, or with a client restart (counters from zero, announced with
//! `started`, or — a client that forgets — without, so the counters go down).
//! The truth for a session is its last counters minus its first. So that
//! the truth does not depend on what a killed tracker managed to record, a
//! client repeats the first announce of a session, and an announce with its
//! current counters before a session ends, until one is answered; every
//! other announce may fail (the tracker down, a reply lost) and is simply
//! superseded by the next one, as with real clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bittorrent::{InfoHash, PeerId};
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use test_support::{http, percent_encode};

/// How a client reaches the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `GET /<passkey>/announce?...`
    HttpPath,
    /// `GET /announce?passkey=<passkey>&...`
    HttpQuery,
    /// BEP 15 with BEP 41 URL data `/<passkey>/announce`.
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    None,
    Started,
    Stopped,
}

/// What the next announce of a client must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Must {
    /// Anything; a failure is fine.
    Nothing,
    /// The first announce of a session, until answered.
    Begin(Event),
    /// An answered announce of the current counters, then the session ends.
    Flush(End),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Stop,
    RestartWithStarted,
    RestartWithoutStarted,
}

pub struct Client {
    pub passkey: String,
    pub info_hash: InfoHash,
    peer_id: PeerId,
    port: u16,
    via: Via,
    up: u64,
    down: u64,
    left: u64,
    base: (u64, u64),
    must: Must,
    /// Bytes of finished sessions (the truth so far).
    credited: (u64, u64),
    udp: Option<UdpTrackerClient>,
    pub answered: u64,
    pub failed: u64,
}

/// The tracker's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Tracker {
    pub http: SocketAddr,
    pub udp: SocketAddr,
}

const TIMEOUT: Duration = Duration::from_millis(700);

impl Client {
    pub fn new(user: u8, torrent: u8, peer: u8, via: Via) -> Client {
        Client {
            passkey: format!("{:032x}", 0xa000_u128 + u128::from(user)),
            info_hash: InfoHash([torrent + 1; 20]),
            peer_id: PeerId([user.wrapping_mul(31) ^ torrent.wrapping_mul(7) ^ peer; 20]),
            port: 10_000 + u16::from(user) * 100 + u16::from(torrent) * 10 + u16::from(peer),
            via,
            up: 0,
            down: 0,
            left: 1 << 30,
            base: (0, 0),
            must: Must::Begin(Event::Started),
            credited: (0, 0),
            udp: None,
            answered: 0,
            failed: 0,
        }
    }

    /// The passkey's user id (32 hex digits, as the handler writes it).
    pub fn user_hex(&self) -> &str {
        &self.passkey
    }

    /// One step: the announce it must make, or a random one.
    pub fn step(&mut self, t: Tracker, rng: &mut fastrand::Rng) {
        match self.must {
            Must::Begin(event) => {
                if self.announce(t, event) {
                    self.base = (self.up, self.down);
                    self.must = Must::Nothing;
                }
            }
            Must::Flush(end) => {
                let event = if end == End::Stop {
                    Event::Stopped
                } else {
                    Event::None
                };
                if self.announce(t, event) {
                    self.credited.0 += self.up - self.base.0;
                    self.credited.1 += self.down - self.base.1;
                    (self.up, self.down, self.left) = (0, 0, 1 << 30);
                    self.must = Must::Begin(match end {
                        End::Stop | End::RestartWithStarted => Event::Started,
                        End::RestartWithoutStarted => Event::None,
                    });
                }
            }
            Must::Nothing => match rng.u32(0..100) {
                0..3 => self.must = Must::Flush(End::Stop),
                3..6 => self.must = Must::Flush(End::RestartWithStarted),
                6..9 => self.must = Must::Flush(End::RestartWithoutStarted),
                _ => {
                    self.up += rng.u64(0..100_000);
                    let got = rng.u64(0..100_000).min(self.left);
                    self.down += got;
                    self.left -= got;
                    self.announce(t, Event::None);
                }
            },
        }
    }

    /// Ends with an answered announce of the current counters; the truth of
    /// this client.
    pub fn finish(&mut self, t: Tracker) -> (u64, u64) {
        for _ in 0..100 {
            match self.must {
                Must::Nothing => {
                    if self.announce(t, Event::None) {
                        return (
                            self.credited.0 + self.up - self.base.0,
                            self.credited.1 + self.down - self.base.1,
                        );
                    }
                }
                _ => {
                    let mut rng = fastrand::Rng::with_seed(0);
                    self.step(t, &mut rng);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "client {} could not finish: the tracker does not answer",
            self.passkey
        );
    }

    fn event_name(event: Event) -> &'static str {
        match event {
            Event::None => "",
            Event::Started => "started",
            Event::Stopped => "stopped",
        }
    }

    /// Sends one announce; whether it was answered.
    fn announce(&mut self, t: Tracker, event: Event) -> bool {
        let ok = match self.via {
            Via::HttpPath | Via::HttpQuery => self.http(t.http, event),
            Via::Udp => self.udp(t.udp, event),
        };
        if ok {
            self.answered += 1;
        } else {
            self.failed += 1;
        }
        ok
    }

    fn http(&self, addr: SocketAddr, event: Event) -> bool {
        let query = format!(
            "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&event={}&numwant=5",
            percent_encode(&self.info_hash.0),
            percent_encode(&self.peer_id.0),
            self.port,
            self.up,
            self.down,
            self.left,
            Self::event_name(event)
        );
        let target = match self.via {
            Via::HttpPath => format!("/{}/announce?{query}", self.passkey),
            _ => format!("/announce?passkey={}&{query}", self.passkey),
        };
        match http::get(addr, &target).timeout(TIMEOUT).send() {
            Ok(r) if r.status == 200 => {
                let body = r.text();
                if body.contains("failure reason") {
                    // Only the tracker's own trouble is retried.
                    assert!(
                        body.contains("try again later"),
                        "client {}: {body}",
                        self.passkey
                    );
                    return false;
                }
                true
            }
            _ => false,
        }
    }

    fn udp(&mut self, addr: SocketAddr, event: Event) -> bool {
        let client = match &mut self.udp {
            Some(c) => c,
            None => match UdpTrackerClient::new(addr, TIMEOUT) {
                Ok(c) => self.udp.insert(c),
                Err(_) => return false,
            },
        };
        let mut params = AnnounceParams::new(self.info_hash, self.peer_id, self.port)
            .with_url_data(format!("/{}/announce", self.passkey).as_bytes());
        params.uploaded = self.up;
        params.downloaded = self.down;
        params.left = self.left;
        params.num_want = 5;
        params.event = match event {
            Event::None => 0,
            Event::Started => 2,
            Event::Stopped => 3,
        };
        match client.announce(&params) {
            Ok(_) => true,
            Err(UdpClientError::Tracker(message)) => {
                assert!(
                    message.contains("try again later"),
                    "client {}: {message}",
                    self.passkey
                );
                false
            }
            Err(_) => false,
        }
    }
}

/// Totals per (user hex, info hash hex).
pub type Totals = BTreeMap<(String, String), (u64, u64)>;

/// The truth of every client, summed per user and torrent.
pub fn truth(clients: &mut [Client], t: Tracker) -> Totals {
    let mut totals = Totals::new();
    for c in clients {
        let (up, down) = c.finish(t);
        let e = totals
            .entry((c.user_hex().to_owned(), c.info_hash.to_string()))
            .or_default();
        e.0 += up;
        e.1 += down;
    }
    totals.retain(|_, v| *v != (0, 0));
    totals
}

/// What a jsonl file credits, per user and torrent; checks on the way that
/// no journal position appears twice.
pub fn jsonl_totals(path: &std::path::Path) -> Totals {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut totals = Totals::new();
    let mut positions = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let batch = v["batch"].as_str().expect("a batch id");
        let (journal, range) = batch.split_once(':').expect("journal:first-last");
        let first: u64 = range.split('-').next().unwrap().parse().unwrap();
        let position = first + v["seq"].as_u64().unwrap();
        assert!(
            positions.insert((journal.to_owned(), position)),
            "journal position {position} of {journal} written twice"
        );
        let e = totals
            .entry((
                v["user"].as_str().unwrap().to_owned(),
                v["info_hash"].as_str().unwrap().to_owned(),
            ))
            .or_default();
        e.0 += v["uploaded"].as_u64().unwrap();
        e.1 += v["downloaded"].as_u64().unwrap();
    }
    totals.retain(|_, v| *v != (0, 0));
    totals
}

/// Drives `clients` for `duration` while `disturb` is called every
/// `interval` (a kill and restart, a reload); returns the truth.
pub fn drive(
    clients: &mut [Client],
    t: Tracker,
    duration: Duration,
    seed: u64,
    mut disturb: impl FnMut(&mut fastrand::Rng) + Send,
    interval: impl Fn(&mut fastrand::Rng) -> Duration + Send,
) -> Totals {
    let mut rng = fastrand::Rng::with_seed(seed);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let done = &done;
        scope.spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0xdead);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(interval(&mut rng));
                if !done.load(std::sync::atomic::Ordering::SeqCst) {
                    disturb(&mut rng);
                }
            }
        });
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let i = rng.usize(0..clients.len());
            clients[i].step(t, &mut rng);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    truth(clients, t)
}

/// Four users, each with two clients on three torrents, through every kind of URL.
pub fn clients() -> Vec<Client> {
    let mut clients = Vec::new();
    for user in 0..4u8 {
        for torrent in 0..3u8 {
            for peer in 0..2u8 {
                let via = [Via::HttpPath, Via::HttpQuery, Via::Udp]
                    [usize::from((user + torrent + peer) % 3)];
                clients.push(Client::new(user, torrent, peer, via));
            }
        }
    }
    clients
}
