//! One worker: a thread with its own socket and its own single-threaded
//! runtime, receiving a batch, answering it, sending the replies in one
//! batch, then running the post-reply phase of the batch's requests.
//!
//! Everything a request needs (request, response, context, URL data, reply
//! buffer) is a slot allocated once per worker, so a steady stream of packets
//! allocates nothing. The [`Worker`] owns the socket, the batches and the
//! order of work; a [`Handler`] answers one request on its slot
//! (`handle`, then `after_reply` once the reply is sent).
//!
//! How requests are scheduled depends on the tracker logic: when nothing in
//! it waits (the memory store, hooks that answer from memory), each batch is
//! answered in place, allocation-free. When something may wait (Redis,
//! privtrak's journal), each request becomes a job of its own
//! ([`crate::in_flight`]): a request that waits does not hold up the others,
//! and its reply goes out as soon as it is ready.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bittorrent::udp::{self, RequestHeader};
use bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, ClientError, Event, Peer, ScrapeRequest,
    ScrapeResponse, canonical_ip,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracker::{RequestContext, RequestLimits, SharedLogic, TrackerError, TrackerLogic};

use crate::batch::{BATCH, RecvBatch, SendBatch};
use crate::connection_id::ConnectionIdSigner;
use crate::in_flight::{InFlight, Job, Step};
use crate::stats::WorkerStats;
use tracker::frontend::{add, bump, failure_text};
use tracker::stats::TimedAction;

/// What every worker of a frontend shares.
pub(crate) struct Settings {
    pub signer: ConnectionIdSigner,
    pub limits: RequestLimits,
    pub allow_ip_spoofing: bool,
    pub request_timing: bool,
}

/// What a request still needs after the replies are sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Announce,
    Scrape,
}

/// The reusable state of one request.
pub(crate) struct Slot {
    ctx: RequestContext,
    announce: AnnounceRequest,
    announce_resp: AnnounceResponse,
    scrape: ScrapeRequest,
    scrape_resp: ScrapeResponse,
    /// BEP 41 URL data of the announce, gathered from its options.
    url: Vec<u8>,
    after: After,
}

impl Slot {
    /// Whether the request has a post-reply phase to run.
    pub(crate) fn has_after(&self) -> bool {
        self.after != After::Nothing
    }

    pub(crate) fn new() -> Self {
        Slot {
            ctx: RequestContext::new(),
            announce: AnnounceRequest::default(),
            announce_resp: AnnounceResponse::default(),
            scrape: ScrapeRequest::default(),
            scrape_resp: ScrapeResponse::default(),
            url: Vec::with_capacity(512),
            after: After::Nothing,
        }
    }
}

/// What became of a packet.
pub(crate) enum Outcome {
    Dropped,
    Replied { action: TimedAction, error: bool },
}

pub(crate) struct Worker {
    settings: Arc<Settings>,
    logic: Arc<SharedLogic>,
    stats: Arc<WorkerStats>,
    recv: RecvBatch,
    send: SendBatch,
    slots: Vec<Slot>,
    in_flight: InFlight,
    /// Jobs answered since the last send, whose replies are to go out.
    answered: Vec<(Job, Arc<TrackerLogic>)>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a stopping worker waits for its waiting requests.
const STOP_DRAIN: Duration = Duration::from_secs(5);

impl Worker {
    pub(crate) fn new(
        settings: Arc<Settings>,
        logic: Arc<SharedLogic>,
        stats: Arc<WorkerStats>,
    ) -> Self {
        Worker {
            in_flight: InFlight::new(Arc::clone(&settings), Arc::clone(&stats)),
            settings,
            logic,
            stats,
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            slots: (0..BATCH).map(|_| Slot::new()).collect(),
            answered: Vec::new(),
        }
    }

    /// Serves `socket` until `stop` turns true, then lets waiting requests
    /// finish (at most [`STOP_DRAIN`]).
    pub(crate) fn run(mut self, socket: std::net::UdpSocket, mut stop: watch::Receiver<bool>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "udp worker cannot start its runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let socket = match UdpSocket::from_std(socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "udp worker cannot register its socket");
                    return;
                }
            };
            let fd = socket.as_raw_fd();
            loop {
                let room = self.in_flight.has_room();
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => break,
                    Some(step) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                        self.finished(step);
                    }
                    r = socket.async_io(Interest::READABLE, || self.recv.recv(fd)), if room => {
                        match r {
                            Ok(n) => self.process(n, &socket).await,
                            Err(e) => {
                                bump(&self.stats.recv_errors);
                                tracing::warn!(error = %e, "udp receive failed");
                                // A persistent error must not spin the core.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                }
                self.deliver(&socket).await;
            }
            let deadline = tokio::time::Instant::now() + STOP_DRAIN;
            while !self.in_flight.is_empty() {
                match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                    Ok(Some(step)) => self.finished(step),
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(
                            requests = self.in_flight.len(),
                            "udp worker stopped with requests still waiting"
                        );
                        break;
                    }
                }
                self.deliver(&socket).await;
            }
        });
    }

    /// Answers a received batch: in place when nothing in the logic waits,
    /// else as jobs.
    async fn process(&mut self, n: usize, socket: &UdpSocket) {
        let now = unix_now();
        // Loaded once per batch; a job keeps its own clone, so a reload's
        // old logic is retired once the batch and its jobs are done.
        let logic = self.logic.load();
        if logic.may_wait() {
            for i in 0..n {
                match intake(&self.recv, &self.stats, i) {
                    Some((packet, source, false)) => {
                        self.in_flight.start(packet, source, now, &logic);
                    }
                    Some((packet, source, true)) => {
                        too_large(
                            &self.settings,
                            &self.stats,
                            &mut self.send,
                            socket,
                            packet,
                            source,
                            now,
                        )
                        .await;
                    }
                    None => {}
                }
            }
            if self.send.pending() > 0 {
                flush(&mut self.send, &self.stats, socket).await;
            }
            return;
        }
        let handler = Handler {
            settings: &self.settings,
            logic: &logic,
            stats: &self.stats,
        };
        let mut bytes_out = 0u64;
        for i in 0..n {
            let Some((packet, source, truncated)) = intake(&self.recv, &self.stats, i) else {
                continue;
            };
            if truncated {
                too_large(
                    &self.settings,
                    &self.stats,
                    &mut self.send,
                    socket,
                    packet,
                    source,
                    now,
                )
                .await;
                continue;
            }
            if self.send.is_full() {
                flush(&mut self.send, &self.stats, socket).await;
            }
            let started = self.settings.request_timing.then(Instant::now);
            let out = self.send.next_buf();
            let outcome = handler
                .handle(&mut self.slots[i], packet, source, now, out)
                .await;
            if let Outcome::Replied { action, error } = outcome {
                bytes_out += out.len() as u64;
                self.send.commit(source);
                record(&self.stats, action, error, source, started);
            }
        }
        flush(&mut self.send, &self.stats, socket).await;
        add(&self.stats.bytes_sent, bytes_out);
        for slot in &mut self.slots[..n] {
            handler.after_reply(slot).await;
        }
    }

    /// Takes what a job's step ended with.
    fn finished(&mut self, step: Step) {
        match step {
            Step::Answered(job, logic) => self.answered.push((job, logic)),
            Step::Done(job) => self.in_flight.recycle(job),
        }
    }

    /// Sends the replies of every job answered so far (and of those that
    /// finish meanwhile without waiting), then starts their post phases.
    async fn deliver(&mut self, socket: &UdpSocket) {
        while let Some(step) = self.in_flight.ready() {
            self.finished(step);
        }
        if self.answered.is_empty() {
            return;
        }
        let mut bytes_out = 0u64;
        for (job, _) in &self.answered {
            let Outcome::Replied { action, error } = *job.outcome() else {
                continue;
            };
            if self.send.is_full() {
                flush(&mut self.send, &self.stats, socket).await;
            }
            self.send.next_buf().extend_from_slice(job.reply());
            self.send.commit(job.source());
            bytes_out += job.reply().len() as u64;
            record(&self.stats, action, error, job.source(), job.started());
        }
        flush(&mut self.send, &self.stats, socket).await;
        add(&self.stats.bytes_sent, bytes_out);
        for (job, logic) in std::mem::take(&mut self.answered) {
            self.in_flight.after_reply(job, logic);
        }
    }
}

/// Packet `i` of a received batch, counted, and whether it was longer than
/// the buffer; `None` (counted as dropped) for one from no known family.
fn intake<'r>(
    recv: &'r RecvBatch,
    stats: &WorkerStats,
    i: usize,
) -> Option<(&'r [u8], SocketAddr, bool)> {
    let Some((packet, source, truncated)) = recv.packet(i) else {
        bump(&stats.packets_dropped);
        return None;
    };
    bump(&stats.packets_received);
    add(&stats.bytes_received, packet.len() as u64);
    Some((packet, source, truncated))
}

/// A datagram longer than [`PACKET_SIZE`]: an error reply when its
/// header carries a valid connection id (the reply is far smaller than
/// the request: no amplification), else dropped.
async fn too_large(
    settings: &Settings,
    stats: &WorkerStats,
    send: &mut SendBatch,
    socket: &UdpSocket,
    packet: &[u8],
    source: SocketAddr,
    now: u64,
) {
    let header = RequestHeader::parse(packet)
        .filter(|h| h.action != udp::ACTION_CONNECT)
        .filter(|h| {
            settings
                .signer
                .verify(h.connection_id, canonical_ip(source.ip()), now)
                .is_ok()
        });
    let Some(header) = header else {
        bump(&stats.packets_dropped);
        return;
    };
    if send.is_full() {
        flush(send, stats, socket).await;
    }
    let out = send.next_buf();
    udp::write_error(out, header.transaction_id, TOO_LARGE);
    add(&stats.bytes_sent, out.len() as u64);
    send.commit(source);
    let action = if header.action == udp::ACTION_SCRAPE {
        TimedAction::Scrape
    } else {
        TimedAction::Announce
    };
    record(stats, action, true, source, None);
}

/// Counts an answered request (and its duration when timing is on).
fn record(
    stats: &WorkerStats,
    action: TimedAction,
    error: bool,
    source: SocketAddr,
    started: Option<Instant>,
) {
    let ipv6 = canonical_ip(source.ip()).is_ipv6();
    stats
        .requests
        .record(action, ipv6, error, started.map(|s| s.elapsed()));
}

/// Sends every queued reply, then empties the batch; a reply the kernel
/// refuses is counted, logged and skipped.
async fn flush(send: &mut SendBatch, stats: &WorkerStats, socket: &UdpSocket) {
    let fd = socket.as_raw_fd();
    while send.pending() > 0 {
        match socket.try_io(Interest::WRITABLE, || send.send(fd)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    break;
                }
            }
            Err(e) => {
                bump(&stats.send_errors);
                tracing::warn!(to = ?send.next_destination(), error = %e, "udp send failed");
                send.skip_one();
            }
        }
    }
    send.clear();
}

/// What a datagram longer than the receive buffer is told.
const TOO_LARGE: &str = "request too large: at most 2048 bytes";

const OBSOLETE_IPV6_ANNOUNCE: ClientError =
    ClientError::new("action 4 (the old IPv6 announce) is not supported: send action 1 over IPv6");

/// Answers requests: what handling one needs besides its own [`Slot`] and
/// reply buffer. Borrowed, so a batch builds one for nothing, and shared (the
/// methods take `&self`), so several requests can be in progress at once.
pub(crate) struct Handler<'a> {
    pub settings: &'a Settings,
    pub logic: &'a TrackerLogic,
    pub stats: &'a WorkerStats,
}

impl Handler<'_> {
    /// Answers one packet from `source` into `out` (empty on entry), leaving
    /// in `slot` what [`after_reply`](Self::after_reply) needs.
    pub(crate) async fn handle(
        &self,
        slot: &mut Slot,
        packet: &[u8],
        source: SocketAddr,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        slot.after = After::Nothing;
        let (s, stats) = (self.settings, self.stats);
        let Some(header) = RequestHeader::parse(packet) else {
            bump(&stats.packets_dropped);
            return Outcome::Dropped;
        };
        let ip = canonical_ip(source.ip());
        let tid = header.transaction_id;
        if header.action == udp::ACTION_CONNECT {
            if header.connection_id != udp::PROTOCOL_ID {
                bump(&stats.packets_dropped);
                return Outcome::Dropped;
            }
            udp::write_connect(out, tid, s.signer.issue(ip, now));
            return Outcome::Replied {
                action: TimedAction::Connect,
                error: false,
            };
        }
        let action = if header.action == udp::ACTION_SCRAPE {
            TimedAction::Scrape
        } else {
            TimedAction::Announce
        };
        if let Err(e) = s.signer.verify(header.connection_id, ip, now) {
            bump(&stats.bad_connection_ids);
            // An unverified source never gets more bytes than it sent, so the
            // tracker cannot be used to amplify a spoofed flood.
            if udp::ERROR_REPLY_HEADER_LEN + e.message().len() > packet.len() {
                bump(&stats.packets_dropped);
                return Outcome::Dropped;
            }
            udp::write_error(out, tid, e.message());
            return Outcome::Replied {
                action,
                error: true,
            };
        }
        let result = match header.action {
            udp::ACTION_ANNOUNCE => self.announce(slot, packet, ip, tid, out).await,
            udp::ACTION_SCRAPE => self.scrape(slot, packet, ip, tid, out).await,
            udp::ACTION_ANNOUNCE_V6_LEGACY => Err(OBSOLETE_IPV6_ANNOUNCE.into()),
            other => Err(ClientError::owned(format!("unknown action {other}")).into()),
        };
        match result {
            Ok(()) => Outcome::Replied {
                action,
                error: false,
            },
            Err(e) => {
                slot.after = After::Nothing;
                out.clear();
                udp::write_error(out, tid, failure_text(&e, "udp", action));
                Outcome::Replied {
                    action,
                    error: true,
                }
            }
        }
    }

    /// The post-reply phase of the request in `slot`, once its reply is sent:
    /// post-hooks and, where the store did not do it in one step, the swarm
    /// write. Nothing for a request that failed or was dropped.
    pub(crate) async fn after_reply(&self, slot: &mut Slot) {
        match std::mem::replace(&mut slot.after, After::Nothing) {
            After::Nothing => {}
            After::Announce => {
                self.logic
                    .after_announce(&mut slot.ctx, &slot.announce, &mut slot.announce_resp)
                    .await
            }
            After::Scrape => {
                self.logic
                    .after_scrape(&mut slot.ctx, &slot.scrape, &mut slot.scrape_resp)
                    .await
            }
        }
    }

    async fn announce(
        &self,
        slot: &mut Slot,
        packet: &[u8],
        ip: IpAddr,
        tid: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), TrackerError> {
        let s = self.settings;
        let a = udp::Announce::parse(packet)?;
        slot.url.clear();
        udp::collect_url_data(a.options, &mut slot.url)?;
        let req = &mut slot.announce;
        req.params.parse_into(&slot.url)?;
        req.info_hash = a.info_hash;
        req.peer = Peer::new(
            a.peer_id,
            udp::announce_ip(ip, a.ip, s.allow_ip_spoofing),
            a.port,
        );
        req.ip_provided = a.ip.is_some() && s.allow_ip_spoofing;
        req.event = Event::from_udp(a.event)?;
        req.event_provided = req.event != Event::None;
        let family = req.peer.family();
        let fits = udp::max_peers_in_reply(family) as u32;
        req.num_want = s.limits.num_want(Some(i64::from(a.num_want))).min(fits);
        req.num_want_provided = a.num_want >= 0;
        req.compact = true;
        req.uploaded = a.uploaded;
        req.downloaded = a.downloaded;
        req.left = a.left;
        req.key = Some(a.key);

        slot.ctx.clear();
        slot.announce_resp.clear();
        self.logic
            .handle_announce(&mut slot.ctx, req, &mut slot.announce_resp)
            .await?;
        udp::write_announce(out, tid, &slot.announce_resp, family);
        if let Some(gate) = slot.ctx.take_reply_gate() {
            gate.await?;
        }
        slot.after = After::Announce;
        Ok(())
    }

    async fn scrape(
        &self,
        slot: &mut Slot,
        packet: &[u8],
        ip: IpAddr,
        tid: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), TrackerError> {
        let max = self.settings.limits.max_scrape_infohashes as usize;
        let hashes = udp::ScrapeHashes::parse(packet, max)?;
        let req = &mut slot.scrape;
        req.address_family = AddressFamily::of(&ip);
        req.client = ip;
        req.info_hashes.clear();
        req.info_hashes.extend(hashes.iter());
        req.params.clear();
        slot.ctx.clear();
        slot.scrape_resp.files.clear();
        self.logic
            .handle_scrape(&mut slot.ctx, req, &mut slot.scrape_resp)
            .await?;
        udp::write_scrape(out, tid, &slot.scrape_resp.files);
        if let Some(gate) = slot.ctx.take_reply_gate() {
            gate.await?;
        }
        slot.after = After::Scrape;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
