//! privtrak against a model of what it must credit: for any sequence of
//! announces from several users, torrents and clients — counters going up,
//! clients restarting with and without `started`, stops, and the tracker
//! itself restarting, with its handler down for a while — the deltas the
//! handler received sum, per (user, torrent), to exactly what the model
//! credits.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittorrent::{AnnounceRequest, Event, InfoHash, Peer, PeerId};
use privtrak::handlers::memory::MemoryHandler;
use privtrak::{Privtrak, PrivtrakConfig, UserId};
use proptest::prelude::*;
use tracker::config::ConfigDuration;

/// A simulated client: user, torrent, and which of the user's clients.
type Client = (u8, u8, u8);

#[derive(Clone, Debug)]
enum Op {
    Announce {
        client: Client,
        up: u64,
        down: u64,
        event: Event,
    },
    /// The client restarts its session: counters from zero, announced with
    /// `started` or (a client that forgets) without.
    ClientRestart { client: Client, started: bool },
    /// The tracker stops gracefully and starts again.
    TrackerRestart,
    /// The tracker is killed and starts again.
    TrackerCrash,
    /// The handler refuses the next few batches.
    HandlerOutage(u64),
}

fn client() -> impl Strategy<Value = Client> {
    (0..3u8, 0..2u8, 0..2u8)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (client(), 0..5000u64, 0..5000u64, prop_oneof![
            6 => Just(Event::None),
            1 => Just(Event::Started),
            1 => Just(Event::Completed),
            1 => Just(Event::Paused),
            1 => Just(Event::Stopped),
        ]).prop_map(|(client, up, down, event)| Op::Announce { client, up, down, event }),
        2 => (client(), any::<bool>()).prop_map(|(client, started)| Op::ClientRestart { client, started }),
        1 => Just(Op::TrackerRestart),
        1 => Just(Op::TrackerCrash),
        1 => (1..4u64).prop_map(Op::HandlerOutage),
    ]
}

#[derive(Default)]
struct Model {
    /// Each client's cumulative counters in its current session.
    counters: BTreeMap<Client, (u64, u64)>,
    /// Whether the next announce of a restarted client says `started`.
    restarted: BTreeMap<Client, bool>,
    /// What the tracker's baseline of each client should be.
    baseline: BTreeMap<Client, (u64, u64)>,
    credited: BTreeMap<(u8, u8), (u64, u64)>,
}

impl Model {
    /// The rules, from the client's side: credit the growth since the last
    /// announce of the same session the tracker knows of.
    fn announce(&mut self, c: Client, event: Event) -> (u64, u64, Event) {
        let (up, down) = self.counters.get(&c).copied().unwrap_or_default();
        let event = match self.restarted.remove(&c) {
            Some(true) => Event::Started,
            _ => event,
        };
        let prev = self.baseline.get(&c).copied();
        let new_session =
            matches!(event, Event::Started) || prev.is_some_and(|(bu, bd)| up < bu || down < bd);
        if let (Some((bu, bd)), false) = (prev, new_session) {
            let e = self.credited.entry((c.0, c.1)).or_default();
            e.0 += up - bu;
            e.1 += down - bd;
        }
        if event == Event::Stopped {
            self.baseline.remove(&c);
        } else {
            self.baseline.insert(c, (up, down));
        }
        (up, down, event)
    }
}

fn request(c: Client, up: u64, down: u64, event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([c.1 + 1; 20]),
        peer: Peer::new(
            PeerId([c.2 + 1; 20]),
            IpAddr::V4(Ipv4Addr::new(10, c.0, c.1, c.2)),
            6881,
        ),
        event,
        uploaded: up,
        downloaded: down,
        left: 1,
        ..AnnounceRequest::default()
    }
}

fn user(c: Client) -> UserId {
    UserId([c.0 + 1; 16])
}

async fn settle(p: &Privtrak) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.pending() > 0 {
        assert!(Instant::now() < deadline, "{} deltas pending", p.pending());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let config = PrivtrakConfig {
        journal_path: tmp.path().join("journal"),
        batch_size: 7,
        flush_interval: ConfigDuration(Duration::from_millis(5)),
        journal_sync_interval: ConfigDuration(Duration::ZERO),
        shutdown_timeout: ConfigDuration(Duration::from_millis(100)),
        shard_count: 4,
        ..PrivtrakConfig::default()
    };
    let handler = MemoryHandler::new();
    let mut p = Privtrak::open(&config, Arc::new(handler.clone()))
        .await
        .unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Announce {
                client,
                up,
                down,
                event,
            } => {
                let counters = model.counters.entry(client).or_default();
                counters.0 += up;
                counters.1 += down;
                let (up, down, event) = model.announce(client, event);
                p.announce(user(client), &request(client, up, down, event))
                    .await
                    .unwrap();
            }
            Op::ClientRestart { client, started } => {
                model.counters.insert(client, (0, 0));
                model.restarted.insert(client, started);
            }
            Op::TrackerRestart => {
                p.shutdown().await;
                p = Privtrak::open(&config, Arc::new(handler.clone()))
                    .await
                    .unwrap();
            }
            Op::TrackerCrash => {
                p.crash().await;
                p = Privtrak::open(&config, Arc::new(handler.clone()))
                    .await
                    .unwrap();
            }
            Op::HandlerOutage(n) => handler.fail_next(n),
        }
    }
    handler.fail_next(0);
    settle(&p).await;
    let mut got: BTreeMap<(u8, u8), (u64, u64)> = BTreeMap::new();
    for d in handler.deltas() {
        let key = (d.user.0[0] - 1, d.info_hash.0[0] - 1);
        let e = got.entry(key).or_default();
        e.0 += d.uploaded;
        e.1 += d.downloaded;
    }
    got.retain(|_, v| *v != (0, 0));
    model.credited.retain(|_, v| *v != (0, 0));
    prop_assert_eq!(got, model.credited);
    let seqs: Vec<u64> = handler.deltas().iter().map(|d| d.seq).collect();
    prop_assert_eq!(seqs.clone(), (1..=seqs.len() as u64).collect::<Vec<_>>());
    p.shutdown().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn credited_bytes_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops))?;
    }
}
