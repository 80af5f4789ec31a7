//! The load itself: requests issued on a schedule, replies matched, timeouts
//! declared, everything counted in [`Stats`].
//!
//! One single-threaded Tokio runtime runs it all (the driver has one core):
//! the scheduler, a receiver per UDP socket, one task per HTTP request, a
//! sweeper for UDP timeouts, the connection-id renewals and the HTTP
//! connections idle too long, sharing the engine through an `Rc` with
//! `RefCell`s that are never held across an `.await`.
//!
//! An HTTP request is sent from the schedule itself, on a kept-alive
//! connection of the pool ([`http::Pool`]) or, `http_close_share` of them, on
//! a connection of its own; its task then reads the reply. Both loops use
//! the same mix.
//!
//! Two schedules. [`Engine::open_loop`]: request `i` is due at `start +
//! i/rate`, whatever happened to the ones before, and its latency is measured
//! from that due time, not from when it went out, so a tracker (or driver)
//! that stalls is charged for the queue it builds (no coordinated omission).
//! [`Engine::closed_loop`]: a fixed number of requests in flight, each answer
//! (or timeout) letting the next one go: as fast as the tracker and the
//! driver together can, which is how the capacity is measured.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::http;
use crate::population::{Population, Proto, Shape};
use crate::stats::{Outcome, Stats};
use crate::udp::{self, Pending};

/// How many distinct error texts are kept per protocol; the rest are counted
/// under one line.
const MAX_ERROR_TEXTS: usize = 100;
/// How often the open loop sends what fell due since its last tick, unless
/// `soak run --tick` says otherwise. A request waits for the tick after its
/// due time (Tokio's timer counts whole milliseconds, so up to about 2 ms,
/// 1 ms on average) and its latency, which counts from its due time,
/// includes the wait. Finer ticks cost the driver more than the precision is
/// worth: every tick wakes it, and every burst smaller than karuta can take
/// at once wakes karuta once per request, each wake-up an inter-processor
/// interrupt (dear in a virtual machine) paid on the driver's core. 100 µs
/// ticks, on a thread of their own, kept the driver from holding 0.8 of the
/// calibrated rate.
pub const TICK: Duration = Duration::from_millis(1);

/// What the load is made of.
#[derive(Clone, Debug)]
pub struct Mix {
    /// The share of requests that go over HTTP (the rest over UDP).
    pub http_share: f64,
    /// The share of HTTP requests sent on a connection of their own, with
    /// `Connection: close` (the rest over kept-alive connections).
    pub http_close_share: f64,
    /// The share of requests that are scrapes (of 1 to 4 torrents).
    pub scrape_share: f64,
}

/// Where the tracker listens and how long an answer may take.
#[derive(Clone, Debug)]
pub struct Target {
    pub udp: SocketAddr,
    pub http: SocketAddr,
    pub timeout: Duration,
}

pub struct Engine {
    /// When the load began: the schedule's zero and the first period's start.
    start: Cell<Instant>,
    period: Duration,
    target: Target,
    mix: Mix,
    pub population: RefCell<Population>,
    pub stats: RefCell<Stats>,
    udp: Vec<udp::Client>,
    /// The `Host` of HTTP requests.
    host: String,
    /// The kept-alive HTTP connections.
    pool: http::Pool,
    /// Picks the HTTP requests sent on a connection of their own.
    close: RefCell<Share>,
    /// Request and reply buffers of the HTTP requests that ended, for the
    /// next ones.
    buffers: RefCell<Vec<Buffers>>,
    http_in_flight: Cell<usize>,
    /// The most HTTP requests in flight at once: each may hold a file
    /// descriptor, and the driver has a limited number (the pool's
    /// [`http::POOL_MAX`] come on top).
    http_cap: usize,
    /// The closed loop's requests in flight; `None` in the open loop.
    permits: Option<Semaphore>,
    rng: RefCell<fastrand::Rng>,
}

impl Engine {
    /// An engine counting in periods of `period` (from [`Engine::begin`]);
    /// `closed_loop`: requests in flight, when measuring capacity.
    pub fn new(
        target: Target,
        mix: Mix,
        shape: &Shape,
        period: Duration,
        closed_loop: Option<usize>,
    ) -> anyhow::Result<Engine> {
        let mut rng = fastrand::Rng::new();
        let udp = (0..shape.udp_sockets.max(1))
            .map(|_| udp::Client::bind(target.udp, rng.u32(..)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let start = Instant::now();
        Ok(Engine {
            start: Cell::new(start),
            period,
            population: RefCell::new(Population::new(shape, rng.u64(..))),
            stats: RefCell::new(Stats::new(start, period)),
            udp,
            host: target.http.to_string(),
            pool: http::Pool::new(target.http, http::POOL_MAX),
            close: RefCell::new(Share::new(mix.http_close_share)),
            buffers: RefCell::new(Vec::new()),
            http_in_flight: Cell::new(0),
            http_cap: http_cap(),
            permits: closed_loop.map(Semaphore::new),
            rng: RefCell::new(rng),
            target,
            mix,
        })
    }

    /// Starts the background tasks (UDP receivers, the sweeper) and waits
    /// until every UDP socket has a connection id.
    pub async fn start_tasks(self: &Rc<Self>) -> anyhow::Result<()> {
        for i in 0..self.udp.len() {
            tokio::task::spawn_local(Rc::clone(self).receive(i));
        }
        tokio::task::spawn_local(Rc::clone(self).sweep_forever());
        let deadline = Instant::now() + self.target.timeout;
        while !self.udp.iter().all(udp::Client::has_connection_id) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no BEP 15 connect reply from {} within {}",
                self.target.udp,
                tracker::config::format_duration(self.target.timeout)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts the clock: the schedule and the periods count from now, and
    /// what was counted before (the first connects) is dropped.
    pub fn begin(&self) -> Instant {
        let now = Instant::now();
        self.start.set(now);
        *self.stats.borrow_mut() = Stats::new(now, self.period);
        now
    }

    /// Requests `rate` per second for `duration` from [`Engine::begin`],
    /// each due at its place in the schedule: every `tick`, all that fell
    /// due since the last one go out at once.
    pub async fn open_loop(self: &Rc<Self>, rate: f64, duration: Duration, tick: Duration) {
        let start = self.start.get();
        let total = (rate * duration.as_secs_f64()) as u64;
        let mut http = Share::new(self.mix.http_share);
        let mut issued = 0u64;
        let mut ticks = tokio::time::interval_at(start.into(), tick);
        // Behind, it sends all that is due at once anyway.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while issued < total {
            ticks.tick().await;
            let elapsed = start.elapsed().as_secs_f64();
            let due = ((elapsed * rate) as u64).min(total);
            while issued < due {
                let scheduled = start + Duration::from_secs_f64(issued as f64 / rate);
                self.issue(proto(&mut http), scheduled, false);
                issued += 1;
                // Behind schedule: let the replies in between bursts.
                if issued.is_multiple_of(256) {
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Keeps the closed loop's permits busy until `end`.
    pub async fn closed_loop(self: &Rc<Self>, end: Instant) {
        let permits = self.permits.as_ref().expect("a closed-loop engine");
        let mut http = Share::new(self.mix.http_share);
        while let Ok(Ok(permit)) = tokio::time::timeout_at(end.into(), permits.acquire()).await {
            permit.forget();
            self.issue(proto(&mut http), Instant::now(), true);
        }
    }

    fn release(&self, permit: bool) {
        if let (true, Some(p)) = (permit, &self.permits) {
            p.add_permits(1);
        }
    }

    fn ended(&self, proto: Proto, scheduled: Instant, outcome: Outcome, permit: bool) {
        let outcome = match outcome {
            Outcome::Error(text)
                if self.stats.borrow().errors[proto.index()].len() >= MAX_ERROR_TEXTS
                    && !self.stats.borrow().errors[proto.index()].contains_key(&text) =>
            {
                Outcome::Error("(other errors)".into())
            }
            o => o,
        };
        self.stats
            .borrow_mut()
            .ended(proto, scheduled, Instant::now(), outcome);
        self.release(permit);
    }

    /// Sends one request of `proto` due at `scheduled`.
    fn issue(self: &Rc<Self>, proto: Proto, scheduled: Instant, permit: bool) {
        let now = Instant::now();
        self.stats.borrow_mut().sent(proto, scheduled, now);
        let scrape = {
            let mut rng = self.rng.borrow_mut();
            (rng.f64() < self.mix.scrape_share).then(|| rng.usize(1..=4))
        };
        match proto {
            Proto::Udp => {
                let result = if let Some(n) = scrape {
                    let hashes = self.population.borrow_mut().scrape_hashes(n);
                    let socket = self.rng.borrow_mut().usize(..self.udp.len());
                    let kind = udp::Kind::Scrape(n as u8);
                    self.udp[socket].scrape(&hashes, pending(scheduled, kind, permit))
                } else {
                    let a = self.population.borrow_mut().next_announce(Proto::Udp, now);
                    let kind = udp::Kind::Announce;
                    self.udp[a.socket].announce(&a, pending(scheduled, kind, permit))
                };
                if let Err(e) = result {
                    self.ended(proto, scheduled, Outcome::Error(e), permit);
                }
            }
            Proto::Http => {
                if self.http_in_flight.get() >= self.http_cap {
                    let e = format!(
                        "driver: {} HTTP requests already in flight (not sent)",
                        self.http_cap
                    );
                    self.ended(proto, scheduled, Outcome::Error(e), permit);
                    return;
                }
                let mut bufs = self.buffers.borrow_mut().pop().unwrap_or_default();
                let keep_alive = !self.close.borrow_mut().next();
                let kind = if let Some(n) = scrape {
                    let hashes = self.population.borrow_mut().scrape_hashes(n);
                    http::request(&mut bufs.request, &self.host, keep_alive, |o| {
                        http::scrape_target(o, &hashes);
                    });
                    http::Kind::Scrape
                } else {
                    let a = self.population.borrow_mut().next_announce(Proto::Http, now);
                    http::request(&mut bufs.request, &self.host, keep_alive, |o| {
                        http::announce_target(o, &a);
                    });
                    http::Kind::Announce
                };
                let started = if keep_alive {
                    // `None`: every connection busy, the task waits for one.
                    self.pool
                        .try_start(&bufs.request)
                        .transpose()
                        .map(Started::KeptAlive)
                } else {
                    self.pool.count_own();
                    http::send(self.target.http, &bufs.request).map(Started::Own)
                };
                let started = match started {
                    Ok(started) => started,
                    Err(e) => {
                        self.buffers.borrow_mut().push(bufs);
                        let e = format!("HTTP {}: {e}", kind.name());
                        self.ended(proto, scheduled, Outcome::Error(e), permit);
                        return;
                    }
                };
                self.http_in_flight.set(self.http_in_flight.get() + 1);
                let engine = Rc::clone(self);
                tokio::task::spawn_local(async move {
                    let mut bufs = bufs;
                    let timeout = engine.target.timeout;
                    let result = {
                        let Buffers { request, reply } = &mut bufs;
                        let pool = &engine.pool;
                        let exchange = async move {
                            match started {
                                Started::Own(sent) => http::receive(sent, request, reply).await,
                                Started::KeptAlive(ex) => {
                                    let ex = match ex {
                                        Some(ex) => ex,
                                        None => pool.start(request).await?,
                                    };
                                    pool.finish(ex, request, reply).await
                                }
                            }
                        };
                        tokio::time::timeout(timeout, exchange).await
                    };
                    let outcome = match result {
                        Ok(Ok(())) => http::outcome(kind, &bufs.reply),
                        Ok(Err(e)) => Outcome::Error(format!("HTTP {}: {e}", kind.name())),
                        Err(_) => Outcome::Error(format!(
                            "HTTP {}: no reply within {}",
                            kind.name(),
                            tracker::config::format_duration(timeout)
                        )),
                    };
                    let mut buffers = engine.buffers.borrow_mut();
                    if buffers.len() < 1024 {
                        buffers.push(bufs);
                    }
                    drop(buffers);
                    engine.http_in_flight.set(engine.http_in_flight.get() - 1);
                    engine.ended(Proto::Http, scheduled, outcome, permit);
                });
            }
        }
    }

    /// Reads socket `i`'s replies until the runtime ends.
    async fn receive(self: Rc<Self>, i: usize) {
        let mut buf = vec![0u8; udp::MAX_REPLY];
        loop {
            // Errors (ICMP "port unreachable" while the tracker is away) are
            // seen as the timeouts of the requests they leave unanswered.
            if self.udp[i].socket.readable().await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            while let Ok(n) = self.udp[i].socket.try_recv(&mut buf) {
                if let Some(answer) = self.udp[i].answer(&buf[..n]) {
                    let p = answer.pending;
                    self.ended(Proto::Udp, p.scheduled, answer.outcome, p.permit);
                }
            }
        }
    }

    /// Declares UDP timeouts and renews connection ids, ten times a second.
    async fn sweep_forever(self: Rc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// One sweep; also run once more before the last figures are read.
    pub fn sweep(self: &Rc<Self>) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for client in &self.udp {
            client.expire(now, self.target.timeout, &mut expired);
            if client.needs_connect(now) {
                self.stats.borrow_mut().sent(Proto::Udp, now, now);
                if let Err(e) = client.connect(pending(now, udp::Kind::Connect, false)) {
                    self.ended(Proto::Udp, now, Outcome::Error(e), false);
                }
            }
        }
        self.pool.prune(now, http::POOL_IDLE);
        let timeout = tracker::config::format_duration(self.target.timeout);
        for p in expired {
            let e = format!("UDP {}: no reply within {timeout}", p.kind.name());
            self.ended(Proto::Udp, p.scheduled, Outcome::Error(e), p.permit);
        }
    }

    /// How long an answer may take.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// What the HTTP connections came to.
    pub fn connections(&self) -> http::Connections {
        self.pool.counts()
    }

    /// Requests sent and not yet answered or timed out.
    pub fn in_flight(&self) -> usize {
        self.http_in_flight.get() + self.udp.iter().map(udp::Client::in_flight).sum::<usize>()
    }
}

fn pending(scheduled: Instant, kind: udp::Kind, permit: bool) -> Pending {
    Pending {
        scheduled,
        kind,
        permit,
    }
}

/// An HTTP request's buffers, kept from one request to the next.
#[derive(Default)]
struct Buffers {
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// How an HTTP request went out.
enum Started {
    Own(http::Sent),
    /// `None`: not yet, every kept-alive connection was busy.
    KeptAlive(Option<http::Exchange>),
}

/// Picks `share` of the times (to within one), evenly spread.
struct Share {
    share: f64,
    credit: f64,
}

impl Share {
    fn new(share: f64) -> Share {
        Share {
            share: share.clamp(0.0, 1.0),
            credit: 0.0,
        }
    }

    fn next(&mut self) -> bool {
        self.credit += self.share;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The next request's protocol: HTTP when `http` picks it.
fn proto(http: &mut Share) -> Proto {
    if http.next() { Proto::Http } else { Proto::Udp }
}

/// Half the driver's file descriptor limit (its soft `Max open files`), for
/// HTTP connections.
fn http_cap() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1024);
    (soft / 2).clamp(64, 16_384)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_kept_exactly() {
        let mut c = Share::new(0.25);
        let http = (0..1000).filter(|_| proto(&mut c) == Proto::Http).count();
        assert_eq!(http, 250);
        let mut none = Share::new(0.0);
        assert!((0..100).all(|_| proto(&mut none) == Proto::Udp));
        let mut all = Share::new(1.0);
        assert!((0..100).all(|_| all.next()));
    }
}
