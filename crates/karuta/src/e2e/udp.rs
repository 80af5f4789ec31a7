//! The UDP side of `karuta e2e` (BEP 15) through frontend-udp's blocking
//! client: connect, then the scenario's announces (with the target's BEP 41
//! URL data) and scrapes, connecting again when the connection id may have
//! expired.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bittorrent::InfoHash;
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use tracker::config::format_duration;

use super::UdpTarget;
use super::scenario::{Announced, Counts, Event, Fail, Peer, Tracker, scenario, step};

struct Udp {
    client: UdpTrackerClient,
    server: SocketAddr,
    url_data: String,
}

fn udp_fail(what: &str, server: SocketAddr, e: UdpClientError) -> Fail {
    match e {
        UdpClientError::Io(e) => Fail::Transport(format!("{what}: {server}: {e}")),
        UdpClientError::Timeout(d) => Fail::Transport(format!(
            "{what}: no reply from {server} within {}",
            format_duration(d)
        )),
        UdpClientError::Tracker(m) => Fail::Check(format!("{what}: tracker error: {m}")),
        UdpClientError::Malformed(m) => Fail::Check(format!("{what}: malformed reply: {m}")),
    }
}

impl Tracker for Udp {
    fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail> {
        let mut p = AnnounceParams::new(ih, peer.id, peer.port);
        p.left = 1;
        p.num_want = 50;
        p.event = match event {
            Event::Started => 2,
            Event::Stopped => 3,
        };
        if !self.url_data.is_empty() {
            p = p.with_url_data(self.url_data.as_bytes());
        }
        let what = format!("announce {}", peer.name);
        let r = self
            .client
            .announce(&p)
            .map_err(|e| udp_fail(&what, self.server, e))?;
        Ok(Announced {
            seeders: r.seeders.into(),
            leechers: r.leechers.into(),
            peers: r.peers,
        })
    }

    fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail> {
        let entries = self
            .client
            .scrape(&[ih])
            .map_err(|e| udp_fail("scrape", self.server, e))?;
        match entries.as_slice() {
            [e] => Ok(Some(Counts {
                seeders: e.seeders.into(),
                leechers: e.leechers.into(),
                snatches: e.completed.into(),
            })),
            es => Err(Fail::Check(format!(
                "scrape: {} entries for 1 info hash",
                es.len()
            ))),
        }
    }
}

/// The first address of `host`: the UDP client talks to one server.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, Fail> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| Fail::Transport(format!("{host} has no address"))),
        Err(e) => Err(Fail::Transport(format!("cannot resolve {host}: {e}"))),
    }
}

pub(super) fn run_udp(
    target: &UdpTarget,
    delay: Duration,
    timeout: Duration,
) -> Result<usize, Fail> {
    let server = resolve(&target.host, target.port)?;
    let client = UdpTrackerClient::new(server, timeout)
        .map_err(|e| Fail::Transport(format!("cannot open a UDP socket: {e}")))?;
    let mut udp = Udp {
        client,
        server,
        url_data: target.url_data.clone(),
    };
    let what = format!("connect to {server}");
    step("udp", &what, || {
        udp.client
            .connect()
            .map(|_| ((), "got a connection id".to_owned()))
            .map_err(|e| udp_fail("connect", server, e))
    })?;
    // Connection ids expire (after 2 min in chihaya): connect again after a
    // long delay, through a tracker that wraps `Udp`.
    struct Reconnecting<'a> {
        udp: &'a mut Udp,
        last: Instant,
    }
    impl Tracker for Reconnecting<'_> {
        fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail> {
            self.fresh()?;
            self.udp.announce(ih, peer, event)
        }
        fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail> {
            self.fresh()?;
            self.udp.scrape(ih)
        }
    }
    impl Reconnecting<'_> {
        fn fresh(&mut self) -> Result<(), Fail> {
            if self.last.elapsed() > Duration::from_secs(30) {
                let server = self.udp.server;
                self.udp
                    .client
                    .connect()
                    .map_err(|e| udp_fail("connect", server, e))?;
                self.last = Instant::now();
            }
            Ok(())
        }
    }
    let mut t = Reconnecting {
        udp: &mut udp,
        last: Instant::now(),
    };
    Ok(1 + scenario("udp", &mut t, delay)?)
}
