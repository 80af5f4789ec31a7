//! The scenario both protocols run, and what its checks see: a [`Tracker`]
//! (announce, scrape) that the HTTP and UDP sides implement, the steps with
//! their printed lines, and what each step expects of the replies.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bittorrent::{InfoHash, PeerId};
use tracker::config::format_duration;

/// The port peer A announces.
const PORT_A: u16 = 10000;
/// The port peer B announces.
const PORT_B: u16 = 10001;

/// Random bytes from the operating system's source (`getrandom`), so runs
/// never share an info hash or a peer id.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source");
    out
}

fn random_peer_id() -> PeerId {
    let mut id: [u8; 20] = random_bytes();
    id[..8].copy_from_slice(b"-KE0001-");
    PeerId(id)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    Started,
    Stopped,
}

pub(super) struct Peer {
    pub(super) name: &'static str,
    pub(super) id: PeerId,
    pub(super) port: u16,
}

pub(super) struct Announced {
    pub(super) seeders: u64,
    pub(super) leechers: u64,
    pub(super) peers: Vec<SocketAddr>,
}

#[derive(Clone, Copy)]
pub(super) struct Counts {
    pub(super) seeders: u64,
    pub(super) leechers: u64,
    pub(super) snatches: u64,
}

/// Why a step failed.
pub(super) enum Fail {
    /// No usable reply (connect, timeout, i/o): nothing was changed on the
    /// tracker by this step.
    Transport(String),
    /// The tracker replied, but not as it should have.
    Check(String),
}

impl Fail {
    pub(super) fn reason(&self) -> &str {
        match self {
            Fail::Transport(r) | Fail::Check(r) => r,
        }
    }
}

pub(super) trait Tracker {
    fn announce(&mut self, ih: InfoHash, peer: &Peer, event: Event) -> Result<Announced, Fail>;
    /// `None`: the reply has no entry for `ih`.
    fn scrape(&mut self, ih: InfoHash) -> Result<Option<Counts>, Fail>;
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary(seeders: u64, leechers: u64) -> String {
    format!(
        "{}, {}",
        plural(seeders, "seeder", "seeders"),
        plural(leechers, "leecher", "leechers")
    )
}

/// Prints `proto: what ... ` then `ok (detail)` or `FAILED`.
pub(super) fn step<T>(
    proto: &str,
    what: &str,
    run: impl FnOnce() -> Result<(T, String), Fail>,
) -> Result<T, Fail> {
    print!("{proto}: {what} ... ");
    let _ = std::io::stdout().flush();
    match run() {
        Ok((value, detail)) => {
            println!("ok ({detail})");
            Ok(value)
        }
        Err(e) => {
            println!("FAILED");
            Err(e)
        }
    }
}

fn peers_text(peers: &[SocketAddr]) -> String {
    match peers {
        [] => "0 peers".into(),
        [p] => format!("1 peer: {p}"),
        ps => format!(
            "{} peers: {}",
            ps.len(),
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The scenario, shared by both protocols; returns how many steps passed.
pub(super) fn scenario(proto: &str, t: &mut dyn Tracker, delay: Duration) -> Result<usize, Fail> {
    let ih = InfoHash(random_bytes());
    let a = Peer {
        name: "A",
        id: random_peer_id(),
        port: PORT_A,
    };
    let b = Peer {
        name: "B",
        id: random_peer_id(),
        port: PORT_B,
    };
    println!("{proto}: info hash {ih}");
    let mut live: Vec<&Peer> = Vec::new();
    let result = checks(proto, t, ih, &a, &b, delay, &mut live);
    if let Err(Fail::Check(_)) = &result {
        // The tracker answers: take our peers out of its swarm again.
        for p in live {
            let _ = t.announce(ih, p, Event::Stopped);
        }
    }
    result
}

fn checks<'p>(
    proto: &str,
    t: &mut dyn Tracker,
    ih: InfoHash,
    a: &'p Peer,
    b: &'p Peer,
    delay: Duration,
    live: &mut Vec<&'p Peer>,
) -> Result<usize, Fail> {
    let mut steps = 0;
    let what = format!("announce A (started, port {})", a.port);
    step(proto, &what, || {
        let r = t.announce(ih, a, Event::Started)?;
        live.push(a);
        if !r.peers.is_empty() {
            return Err(Fail::Check(format!(
                "A got {}, expected 0 (the first peer of a new swarm; karuta never returns the announcer itself)",
                peers_text(&r.peers)
            )));
        }
        if r.leechers < 1 {
            return Err(Fail::Check(format!(
                "A's announce counted {}, expected at least 1 leecher",
                summary(r.seeders, r.leechers)
            )));
        }
        Ok(((), format!("0 peers, {}", summary(r.seeders, r.leechers))))
    })?;
    steps += 1;

    if !delay.is_zero() {
        println!("{proto}: waiting {}", format_duration(delay));
        std::thread::sleep(delay);
    }

    let what = format!("announce B (started, port {})", b.port);
    step(proto, &what, || {
        let r = t.announce(ih, b, Event::Started)?;
        live.push(b);
        if r.peers.len() != 1 || r.peers[0].port() != a.port {
            return Err(Fail::Check(format!(
                "B got {}, expected 1 (port {})",
                peers_text(&r.peers),
                a.port
            )));
        }
        if r.seeders + r.leechers != 2 {
            return Err(Fail::Check(format!(
                "B's announce counted {}, expected 2 peers in all",
                summary(r.seeders, r.leechers)
            )));
        }
        Ok((
            (),
            format!(
                "{}, {}",
                peers_text(&r.peers),
                summary(r.seeders, r.leechers)
            ),
        ))
    })?;
    steps += 1;

    step(proto, "scrape", || {
        let Some(c) = t.scrape(ih)? else {
            return Err(Fail::Check(
                "the scrape reply has no entry for the info hash, expected 2 leechers".into(),
            ));
        };
        if c.leechers != 2 {
            return Err(Fail::Check(format!(
                "the scrape shows {}, expected 2 leechers",
                summary(c.seeders, c.leechers)
            )));
        }
        Ok((
            (),
            format!(
                "{}, {}",
                summary(c.seeders, c.leechers),
                plural(c.snatches, "snatch", "snatches")
            ),
        ))
    })?;
    steps += 1;

    for p in [a, b] {
        let what = format!("announce {} (stopped)", p.name);
        step(proto, &what, || {
            let r = t.announce(ih, p, Event::Stopped)?;
            live.retain(|l| l.port != p.port);
            Ok(((), summary(r.seeders, r.leechers)))
        })?;
        steps += 1;
    }

    step(proto, "scrape after stopped", || {
        let (c, note) = match t.scrape(ih)? {
            Some(c) => (c, ""),
            None => (
                Counts {
                    seeders: 0,
                    leechers: 0,
                    snatches: 0,
                },
                ", no entry",
            ),
        };
        if c.seeders != 0 || c.leechers != 0 {
            return Err(Fail::Check(format!(
                "after both peers stopped the scrape shows {}, expected 0 seeders and 0 leechers",
                summary(c.seeders, c.leechers)
            )));
        }
        Ok(((), format!("{}{note}", summary(c.seeders, c.leechers))))
    })?;
    steps += 1;
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_differ() {
        let a: [u8; 20] = random_bytes();
        let b: [u8; 20] = random_bytes();
        assert_ne!(a, b);
        assert_eq!(&random_peer_id().0[..8], b"-KE0001-");
    }
}
