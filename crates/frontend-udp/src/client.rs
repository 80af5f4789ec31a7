//! A small blocking BEP 15 client: for tests, for `karuta e2e`, and for
//! anyone checking a tracker by hand. Not on the tracker's hot path.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::time::Duration;

use bittorrent::udp::{self, Reply};
use bittorrent::{InfoHash, PeerId};

/// What can go wrong talking to a tracker.
#[derive(Debug, thiserror::Error)]
pub enum UdpClientError {
    #[error("udp i/o: {0}")]
    Io(#[from] io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The tracker answered with a BEP 15 error.
    #[error("tracker error: {0}")]
    Tracker(String),
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
}

/// The fields of an announce request.
#[derive(Clone, Debug)]
pub struct AnnounceParams {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    /// BEP 15 code: 0 none, 1 completed, 2 started, 3 stopped.
    pub event: u32,
    /// Claimed IPv4 address (0: none).
    pub ip: u32,
    pub key: u32,
    pub num_want: i32,
    pub port: u16,
    /// Raw BEP 41 options appended to the request.
    pub options: Vec<u8>,
}

impl AnnounceParams {
    pub fn new(info_hash: InfoHash, peer_id: PeerId, port: u16) -> Self {
        AnnounceParams {
            info_hash,
            peer_id,
            downloaded: 0,
            left: 1,
            uploaded: 0,
            event: 2,
            ip: 0,
            key: 0,
            num_want: -1,
            port,
            options: Vec::new(),
        }
    }

    /// Sets BEP 41 URL data, split into options of at most 255 bytes each.
    pub fn with_url_data(mut self, url: &[u8]) -> Self {
        self.options.clear();
        for chunk in url.chunks(255) {
            self.options.push(0x2);
            self.options.push(chunk.len() as u8);
            self.options.extend_from_slice(chunk);
        }
        self.options.push(0x0);
        self
    }

    /// The request packet for `connection_id`.
    pub fn encode(&self, connection_id: u64, transaction_id: u32) -> Vec<u8> {
        let mut p = Vec::with_capacity(udp::ANNOUNCE_LEN + self.options.len());
        p.extend_from_slice(&connection_id.to_be_bytes());
        p.extend_from_slice(&udp::ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&transaction_id.to_be_bytes());
        p.extend_from_slice(&self.info_hash.0);
        p.extend_from_slice(&self.peer_id.0);
        p.extend_from_slice(&self.downloaded.to_be_bytes());
        p.extend_from_slice(&self.left.to_be_bytes());
        p.extend_from_slice(&self.uploaded.to_be_bytes());
        p.extend_from_slice(&self.event.to_be_bytes());
        p.extend_from_slice(&self.ip.to_be_bytes());
        p.extend_from_slice(&self.key.to_be_bytes());
        p.extend_from_slice(&self.num_want.to_be_bytes());
        p.extend_from_slice(&self.port.to_be_bytes());
        p.extend_from_slice(&self.options);
        p
    }
}

/// An announce reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceReply {
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: Vec<SocketAddr>,
}

/// One scraped torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeEntry {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// A client bound to an ephemeral port of the server's family.
pub struct UdpTrackerClient {
    socket: UdpSocket,
    server: SocketAddr,
    timeout: Duration,
    connection_id: Option<u64>,
    next_transaction: u32,
}

impl UdpTrackerClient {
    pub fn new(server: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let local: SocketAddr = match server {
            SocketAddr::V4(a) if a.ip().is_loopback() => "127.0.0.1:0".parse().expect("literal"),
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
            SocketAddr::V6(a) if a.ip().is_loopback() => "[::1]:0".parse().expect("literal"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
        };
        Self::bound_to(local, server, timeout)
    }

    /// A client sending from `local` (a given address and port).
    pub fn bound_to(local: SocketAddr, server: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.set_read_timeout(Some(timeout))?;
        Ok(UdpTrackerClient {
            socket,
            server,
            timeout,
            connection_id: None,
            next_transaction: 0x5eed_0000,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends raw bytes to the tracker.
    pub fn send_raw(&self, packet: &[u8]) -> io::Result<()> {
        self.socket.send_to(packet, self.server).map(drop)
    }

    /// The next datagram from the tracker, or `None` after the timeout.
    pub fn recv_raw(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server || crate::same_host(from, self.server) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn transaction(&mut self) -> u32 {
        self.next_transaction = self.next_transaction.wrapping_add(1);
        self.next_transaction
    }

    /// Sends `packet` and waits for the reply to `transaction_id`.
    fn exchange(&mut self, packet: &[u8], transaction_id: u32) -> Result<Vec<u8>, UdpClientError> {
        self.send_raw(packet)?;
        loop {
            let Some(reply) = self.recv_raw()? else {
                return Err(UdpClientError::Timeout(self.timeout));
            };
            let tid = match Reply::parse(&reply).map_err(UdpClientError::Malformed)? {
                Reply::Connect { transaction_id, .. }
                | Reply::Announce { transaction_id, .. }
                | Reply::Scrape { transaction_id, .. }
                | Reply::Error { transaction_id, .. } => transaction_id,
            };
            if tid == transaction_id {
                return Ok(reply);
            }
        }
    }

    /// Obtains a connection id (and keeps it for later requests).
    pub fn connect(&mut self) -> Result<u64, UdpClientError> {
        let tid = self.transaction();
        let mut p = Vec::with_capacity(16);
        p.extend_from_slice(&udp::PROTOCOL_ID.to_be_bytes());
        p.extend_from_slice(&udp::ACTION_CONNECT.to_be_bytes());
        p.extend_from_slice(&tid.to_be_bytes());
        let reply = self.exchange(&p, tid)?;
        match Reply::parse(&reply).map_err(UdpClientError::Malformed)? {
            Reply::Connect { connection_id, .. } => {
                self.connection_id = Some(connection_id);
                Ok(connection_id)
            }
            Reply::Error { message, .. } => Err(tracker_error(message)),
            _ => Err(UdpClientError::Malformed("not a connect reply")),
        }
    }

    /// Uses `id` for the following requests instead of connecting.
    pub fn set_connection_id(&mut self, id: u64) {
        self.connection_id = Some(id);
    }

    fn connection_id(&mut self) -> Result<u64, UdpClientError> {
        match self.connection_id {
            Some(id) => Ok(id),
            None => self.connect(),
        }
    }

    pub fn announce(&mut self, params: &AnnounceParams) -> Result<AnnounceReply, UdpClientError> {
        let id = self.connection_id()?;
        let tid = self.transaction();
        let reply = self.exchange(&params.encode(id, tid), tid)?;
        match Reply::parse(&reply).map_err(UdpClientError::Malformed)? {
            Reply::Announce {
                interval,
                leechers,
                seeders,
                peers,
                ..
            } => Ok(AnnounceReply {
                interval,
                leechers,
                seeders,
                peers: decode_peers(peers, self.server.is_ipv6() && !self.ipv4_mapped())?,
            }),
            Reply::Error { message, .. } => Err(tracker_error(message)),
            _ => Err(UdpClientError::Malformed("not an announce reply")),
        }
    }

    /// An IPv6 server address that is really an IPv4 one.
    fn ipv4_mapped(&self) -> bool {
        matches!(self.server, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some())
    }

    pub fn scrape(&mut self, hashes: &[InfoHash]) -> Result<Vec<ScrapeEntry>, UdpClientError> {
        let id = self.connection_id()?;
        let tid = self.transaction();
        let mut p = Vec::with_capacity(16 + 20 * hashes.len());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&udp::ACTION_SCRAPE.to_be_bytes());
        p.extend_from_slice(&tid.to_be_bytes());
        for h in hashes {
            p.extend_from_slice(&h.0);
        }
        let reply = self.exchange(&p, tid)?;
        match Reply::parse(&reply).map_err(UdpClientError::Malformed)? {
            Reply::Scrape { entries, .. } => Ok(entries
                .chunks_exact(12)
                .map(|e| ScrapeEntry {
                    seeders: u32::from_be_bytes(e[0..4].try_into().expect("4")),
                    completed: u32::from_be_bytes(e[4..8].try_into().expect("4")),
                    leechers: u32::from_be_bytes(e[8..12].try_into().expect("4")),
                })
                .collect()),
            Reply::Error { message, .. } => Err(tracker_error(message)),
            _ => Err(UdpClientError::Malformed("not a scrape reply")),
        }
    }
}

fn tracker_error(message: &[u8]) -> UdpClientError {
    UdpClientError::Tracker(String::from_utf8_lossy(message).into_owned())
}

fn decode_peers(bytes: &[u8], ipv6: bool) -> Result<Vec<SocketAddr>, UdpClientError> {
    let size = if ipv6 { 18 } else { 6 };
    if !bytes.len().is_multiple_of(size) {
        return Err(UdpClientError::Malformed(
            "peer list is not a whole number of entries",
        ));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| {
            let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
            if ipv6 {
                let ip: [u8; 16] = c[..16].try_into().expect("16");
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
            } else {
                SocketAddr::V4(SocketAddrV4::new([c[0], c[1], c[2], c[3]].into(), port))
            }
        })
        .collect())
}
