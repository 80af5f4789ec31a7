//! The UDP side: a few sockets, each a client of its own port with its own
//! BEP 15 connection id, the requests in flight on each, and what a reply or
//! its absence means.
//!
//! Requests are encoded with the workspace's codec (`frontend_udp::client`'s
//! `AnnounceParams::encode`, the 16-byte connect and scrape headers of
//! `bittorrent::udp`) and replies read with `bittorrent::udp::Reply::parse`.
//! A socket's transaction ids count up from a random start, so the request a
//! reply answers is found by subtraction in a queue of the socket's requests
//! in sending order, and timeouts are found at the queue's front.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bittorrent::InfoHash;
use bittorrent::udp::{self, Reply};
use frontend_udp::client::AnnounceParams;
use tokio::net::UdpSocket;

use crate::population::Announce;
use crate::stats::Outcome;

/// How long a connection id is used before a new one is asked for: half the
/// two minutes BEP 15 (and karuta's default `connection_id_lifetime`) gives.
pub const CONNECTION_ID_REFRESH: Duration = Duration::from_secs(60);
/// What the driver's sockets ask the kernel to buffer each way.
const SOCKET_BUFFER: usize = 4 << 20;
/// The largest reply read (an announce reply of 50 IPv4 peers is 320 bytes).
pub const MAX_REPLY: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Announce,
    Scrape(u8),
}

/// A request in flight.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub scheduled: Instant,
    pub kind: Kind,
    /// Whether it holds one of the closed loop's permits.
    pub permit: bool,
}

#[derive(Default)]
struct State {
    connection_id: Option<u64>,
    /// When the connect that got `connection_id` was sent.
    connected_at: Option<Instant>,
    connecting: bool,
    /// The transaction id of `pending`'s front.
    base: u32,
    /// Requests in sending order; `None` once answered.
    pending: VecDeque<Option<Pending>>,
}

/// One client socket, connected to the tracker.
pub struct Client {
    pub socket: UdpSocket,
    state: RefCell<State>,
}

/// What a datagram from the tracker turned out to be.
pub struct Answer {
    pub pending: Pending,
    pub outcome: Outcome,
}

impl Client {
    pub fn bind(server: SocketAddr, first_transaction: u32) -> io::Result<Client> {
        let domain = socket2::Domain::for_address(server);
        let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        // Best effort: the kernel caps both at net.core.[rw]mem_max.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        let local: SocketAddr = if server.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        socket.bind(&local.into())?;
        socket.connect(&server.into())?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(Client {
            socket,
            state: RefCell::new(State {
                base: first_transaction,
                ..State::default()
            }),
        })
    }

    /// Whether a connect should go out now: no id, or one due for renewal,
    /// and none on its way.
    pub fn needs_connect(&self, now: Instant) -> bool {
        let s = self.state.borrow();
        !s.connecting
            && s.connected_at
                .is_none_or(|at| now.saturating_duration_since(at) >= CONNECTION_ID_REFRESH)
    }

    pub fn has_connection_id(&self) -> bool {
        self.state.borrow().connection_id.is_some()
    }

    /// Queues `pending` and returns its transaction id.
    fn enqueue(&self, pending: Pending) -> u32 {
        let mut s = self.state.borrow_mut();
        if pending.kind == Kind::Connect {
            s.connecting = true;
        }
        let tid = s.base.wrapping_add(s.pending.len() as u32);
        s.pending.push_back(Some(pending));
        tid
    }

    /// Forgets the request just queued, which could not be sent.
    fn unqueue(&self) {
        let mut s = self.state.borrow_mut();
        if let Some(Some(p)) = s.pending.pop_back()
            && p.kind == Kind::Connect
        {
            s.connecting = false;
        }
    }

    fn send(&self, packet: &[u8]) -> Result<(), String> {
        match self.socket.try_send(packet) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err("driver: UDP send buffer full (not sent)".into())
            }
            Err(e) => Err(format!("udp send: {e}")),
        }
    }

    pub fn connect(&self, pending: Pending) -> Result<(), String> {
        let tid = self.enqueue(pending);
        let mut p = Vec::with_capacity(udp::HEADER_LEN);
        p.extend_from_slice(&udp::PROTOCOL_ID.to_be_bytes());
        p.extend_from_slice(&udp::ACTION_CONNECT.to_be_bytes());
        p.extend_from_slice(&tid.to_be_bytes());
        self.send(&p).inspect_err(|_| self.unqueue())
    }

    pub fn announce(&self, a: &Announce, pending: Pending) -> Result<(), String> {
        let Some(id) = self.state.borrow().connection_id else {
            return Err("driver: no connection id yet (not sent)".into());
        };
        let tid = self.enqueue(pending);
        let params = AnnounceParams {
            downloaded: a.downloaded,
            left: a.left,
            uploaded: a.uploaded,
            event: a.event.udp_code(),
            key: u32::from(a.port),
            ..AnnounceParams::new(a.info_hash, a.peer_id, a.port)
        };
        self.send(&params.encode(id, tid))
            .inspect_err(|_| self.unqueue())
    }

    pub fn scrape(&self, hashes: &[InfoHash], pending: Pending) -> Result<(), String> {
        let Some(id) = self.state.borrow().connection_id else {
            return Err("driver: no connection id yet (not sent)".into());
        };
        let tid = self.enqueue(pending);
        let mut p = Vec::with_capacity(udp::HEADER_LEN + 20 * hashes.len());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&udp::ACTION_SCRAPE.to_be_bytes());
        p.extend_from_slice(&tid.to_be_bytes());
        for h in hashes {
            p.extend_from_slice(&h.0);
        }
        self.send(&p).inspect_err(|_| self.unqueue())
    }

    /// Reads a datagram from the tracker: `None` when it answers nothing in
    /// flight (a reply after its timeout, or garbage with an unknown id).
    pub fn answer(&self, packet: &[u8]) -> Option<Answer> {
        let reply = Reply::parse(packet);
        let tid = match &reply {
            Ok(r) => r.transaction_id(),
            // Still find the request, to count the malformed reply against it.
            Err(_) if packet.len() >= 8 => u32::from_be_bytes(packet[4..8].try_into().ok()?),
            Err(_) => return None,
        };
        let mut s = self.state.borrow_mut();
        let index = tid.wrapping_sub(s.base) as usize;
        let pending = s.pending.get_mut(index)?.take()?;
        let outcome = match (reply, pending.kind) {
            (
                Ok(Reply::Connect {
                    connection_id: id, ..
                }),
                Kind::Connect,
            ) => {
                s.connection_id = Some(id);
                s.connected_at = Some(pending.scheduled);
                s.connecting = false;
                Outcome::Answered
            }
            (Ok(Reply::Announce { peers, .. }), Kind::Announce) if peers.len() % 6 == 0 => {
                Outcome::Answered
            }
            (Ok(Reply::Scrape { entries, .. }), Kind::Scrape(n))
                if entries.len() == 12 * usize::from(n) =>
            {
                Outcome::Answered
            }
            (Ok(Reply::Error { message, .. }), kind) => Outcome::Error(format!(
                "BEP 15 error to a {}: {}",
                kind.name(),
                String::from_utf8_lossy(message)
            )),
            (Ok(_), kind) => Outcome::Error(format!("malformed reply to a {}", kind.name())),
            (Err(why), kind) => {
                Outcome::Error(format!("malformed reply to a {}: {why}", kind.name()))
            }
        };
        if pending.kind == Kind::Connect && !matches!(outcome, Outcome::Answered) {
            s.connecting = false;
        }
        Some(Answer { pending, outcome })
    }

    /// Takes the requests scheduled `timeout` or longer before `now` that
    /// got no reply.
    pub fn expire(&self, now: Instant, timeout: Duration, expired: &mut Vec<Pending>) {
        let mut s = self.state.borrow_mut();
        while let Some(&front) = s.pending.front() {
            if let Some(p) = front {
                if now.saturating_duration_since(p.scheduled) < timeout {
                    break;
                }
                if p.kind == Kind::Connect {
                    s.connecting = false;
                }
                expired.push(p);
            }
            s.pending.pop_front();
            s.base = s.base.wrapping_add(1);
        }
    }

    /// Requests still waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.state.borrow().pending.iter().flatten().count()
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Announce => "announce",
            Kind::Scrape(_) => "scrape",
        }
    }
}
