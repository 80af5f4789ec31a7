//! privtrak end to end in one process, with the in-memory handler: deltas
//! reach the handler exactly once through batching, failures, slowness,
//! back-pressure, expiry and restarts.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittorrent::{AnnounceRequest, Event, InfoHash, Peer, PeerId};
use privtrak::config::ByteSize;
use privtrak::handlers::memory::MemoryHandler;
use privtrak::{DeltaEvent, Privtrak, PrivtrakConfig, UserId};
use tracker::config::ConfigDuration;

fn config(dir: &std::path::Path) -> PrivtrakConfig {
    PrivtrakConfig {
        journal_path: dir.join("journal"),
        batch_size: 16,
        flush_interval: ConfigDuration(Duration::from_millis(20)),
        journal_sync_interval: ConfigDuration(Duration::from_millis(1)),
        shard_count: 8,
        ..PrivtrakConfig::default()
    }
}

fn announce(ih: u8, peer: u8, event: Event, up: u64, down: u64, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([ih; 20]),
        peer: Peer::new(
            PeerId([peer; 20]),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer)),
            6881,
        ),
        event,
        uploaded: up,
        downloaded: down,
        left,
        ..AnnounceRequest::default()
    }
}

async fn settle(p: &Privtrak) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.pending() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} deltas still pending",
            p.pending()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sum of (uploaded, downloaded) the handler got for `user` on torrent `ih`.
fn credited(h: &MemoryHandler, user: UserId, ih: u8) -> (u64, u64) {
    h.deltas()
        .iter()
        .filter(|d| d.user == user && d.info_hash == InfoHash([ih; 20]))
        .fold((0, 0), |(u, d), x| (u + x.uploaded, d + x.downloaded))
}

const ALICE: UserId = UserId([0xa; 16]);
const BOB: UserId = UserId([0xb; 16]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_reach_the_handler_exactly_once_in_journal_order() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let p = Privtrak::open(&config(tmp.path()), Arc::new(h.clone()))
        .await
        .unwrap();
    // Two clients of Alice on torrent 1, Bob on torrents 1 and 2.
    for step in 0..50u64 {
        p.announce(ALICE, &announce(1, 1, Event::None, step * 10, step, 100))
            .await
            .unwrap();
        p.announce(ALICE, &announce(1, 2, Event::None, step * 3, 0, 0))
            .await
            .unwrap();
        p.announce(BOB, &announce(1, 1, Event::None, 0, step * 7, 100))
            .await
            .unwrap();
        p.announce(BOB, &announce(2, 1, Event::None, step, step, 100))
            .await
            .unwrap();
    }
    settle(&p).await;
    // Alice's two clients are counted apart: 490 + 147 up, 49 down.
    assert_eq!(credited(&h, ALICE, 1), (490 + 147, 49));
    assert_eq!(credited(&h, BOB, 1), (0, 343));
    assert_eq!(credited(&h, BOB, 2), (49, 49));
    let deltas = h.deltas();
    let seqs: Vec<u64> = deltas.iter().map(|d| d.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, none twice"
    );
    // Batches cover the journal without gaps.
    let batches = h.batches();
    assert!(batches.len() > 1);
    for w in batches.windows(2) {
        assert_eq!(w[1].first, w[0].last + 1);
    }
    assert!(batches.iter().all(|b| b.last - b.first < 16));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_with_the_same_batch_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    h.fail_next(4);
    let p = Privtrak::open(&config(tmp.path()), Arc::new(h.clone()))
        .await
        .unwrap();
    for step in 0..20u64 {
        p.announce(ALICE, &announce(1, 1, Event::None, step * 100, 0, 0))
            .await
            .unwrap();
    }
    settle(&p).await;
    assert_eq!(credited(&h, ALICE, 1), (1900, 0));
    assert_eq!(p.metrics().batches().1, 4, "four refusals");
    assert!(h.calls() >= 5);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_without_moving_the_baseline_then_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    h.fail_next(u64::MAX);
    let c = PrivtrakConfig {
        journal_max_bytes: ByteSize(1 << 20),
        max_wait: ConfigDuration(Duration::from_millis(50)),
        ..config(tmp.path())
    };
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    // Each peer's first sighting is a delta: fill the journal past 1 MiB
    // (recorded without waiting for each sync, as concurrent clients would).
    let mut refused = None;
    let mut last = 0;
    for n in 0..20_000u32 {
        let user = UserId([(n % 251) as u8; 16]);
        let mut a = announce((n / 251) as u8, 1, Event::None, 0, 0, 5);
        a.peer.port = (n % 60_000) as u16;
        match p.record(user, &a, std::time::SystemTime::now()) {
            Ok(privtrak::Recorded::Pending(seq)) => last = seq,
            Ok(privtrak::Recorded::Nothing) => panic!("a first sighting is delivered"),
            Err(privtrak::NotRecorded::Full) => {
                refused = Some(n);
                break;
            }
            Err(privtrak::NotRecorded::Failed(e)) => panic!("{e}"),
            Err(privtrak::NotRecorded::TooManyPeers) => panic!("one peer per user and torrent"),
        }
    }
    p.durable(last).await.unwrap();
    let refused = refused.expect("back-pressure refused an announce");
    assert!(p.journal().unacknowledged_bytes() >= 1 << 20);
    // Alice announces while the journal is full: refused, baseline unmoved.
    let e = p
        .announce(ALICE, &announce(9, 9, Event::None, 500, 0, 5))
        .await
        .unwrap_err();
    assert_eq!(e.client_message(), "tracker busy, try again later");
    assert_eq!(p.metrics().busy(), 1);
    assert_eq!(
        p.baseline(ALICE, &InfoHash([9; 20]), &PeerId([9; 20])),
        None
    );

    // The handler comes back: everything drains, announces are taken again.
    h.fail_next(0);
    settle(&p).await;
    assert_eq!(h.deltas().len() as u32, refused);
    p.announce(ALICE, &announce(9, 9, Event::None, 500, 0, 5))
        .await
        .unwrap();
    p.announce(ALICE, &announce(9, 9, Event::None, 800, 0, 5))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(credited(&h, ALICE, 9), (300, 0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_records_expire_and_the_handler_is_told() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let c = PrivtrakConfig {
        peer_lifetime: ConfigDuration(Duration::from_secs(1)),
        gc_interval: ConfigDuration(Duration::from_millis(300)),
        ..config(tmp.path())
    };
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    p.announce(ALICE, &announce(1, 1, Event::None, 10, 10, 5))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.deltas().iter().any(|d| d.event == DeltaEvent::Expired) {
        assert!(Instant::now() < deadline, "no expiry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = h
        .deltas()
        .into_iter()
        .find(|d| d.event == DeltaEvent::Expired)
        .unwrap();
    assert_eq!(expired.user, ALICE);
    assert_eq!(expired.addr, None);
    assert_eq!((expired.uploaded, expired.total_uploaded), (0, 10));
    assert_eq!(
        p.baseline(ALICE, &InfoHash([1; 20]), &PeerId([1; 20])),
        None
    );
    // Its return is a first sighting: no credit for what it did unseen.
    p.announce(ALICE, &announce(1, 1, Event::None, 90, 10, 5))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(credited(&h, ALICE, 1), (0, 0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_survive_a_restart_and_what_was_not_taken_is_handed_over_then() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let c = config(tmp.path());
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    p.announce(ALICE, &announce(1, 1, Event::Started, 0, 0, 100))
        .await
        .unwrap();
    p.announce(ALICE, &announce(1, 1, Event::None, 1000, 50, 100))
        .await
        .unwrap();
    settle(&p).await;
    // The handler goes down; two more announces are durable but not taken.
    h.fail_next(u64::MAX);
    p.announce(ALICE, &announce(1, 1, Event::None, 3000, 70, 100))
        .await
        .unwrap();
    p.announce(BOB, &announce(1, 2, Event::None, 5, 5, 100))
        .await
        .unwrap();
    let quick = PrivtrakConfig {
        shutdown_timeout: ConfigDuration(Duration::from_millis(200)),
        ..c.clone()
    };
    p.reconfigure(&quick);
    p.shutdown().await;
    assert_eq!(
        credited(&h, ALICE, 1),
        (1000, 50),
        "what was taken before the stop"
    );

    // Restart with the handler back: the snapshot and journal restore the
    // baselines, the two deltas are handed over, nothing twice.
    h.fail_next(0);
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    assert_eq!(
        p.baseline(ALICE, &InfoHash([1; 20]), &PeerId([1; 20]))
            .map(|b| b.uploaded),
        Some(3000)
    );
    settle(&p).await;
    assert_eq!(credited(&h, ALICE, 1), (3000, 70));
    // The client goes on after the restart.
    p.announce(ALICE, &announce(1, 1, Event::None, 3500, 70, 100))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(credited(&h, ALICE, 1), (3500, 70));
    let seqs: Vec<u64> = h.deltas().iter().map(|d| d.seq).collect();
    let mut dedup = seqs.clone();
    dedup.dedup();
    assert_eq!(seqs, dedup, "no delta twice");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_journal_is_refused_rather_than_replayed_under_old_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let c = config(tmp.path());
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    for n in 0..5 {
        p.announce(ALICE, &announce(1, 1, Event::None, n, 0, 5))
            .await
            .unwrap();
    }
    settle(&p).await;
    p.shutdown().await;
    // The segments are lost but the id is kept: positions would restart at 1
    // and the handler would skip them as already applied.
    for e in std::fs::read_dir(&c.journal_path).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "log") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let e = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap_err();
    assert!(e.to_string().contains("move it away"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_the_handler_unreachable_serves_and_hands_over_once_it_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let c = config(tmp.path());
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    p.announce(ALICE, &announce(1, 1, Event::None, 100, 0, 5))
        .await
        .unwrap();
    p.announce(ALICE, &announce(1, 1, Event::None, 300, 0, 5))
        .await
        .unwrap();
    settle(&p).await;
    h.fail_next(u64::MAX);
    p.announce(ALICE, &announce(1, 1, Event::None, 700, 0, 5))
        .await
        .unwrap();
    p.crash().await;

    // The database is down at the start: privtrak restores from its own
    // files, serves, and hands over once the handler answers.
    h.set_down(true);
    h.fail_next(0);
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    p.announce(ALICE, &announce(1, 1, Event::None, 1000, 0, 5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        credited(&h, ALICE, 1),
        (200, 0),
        "nothing handed over while down"
    );
    h.set_down(false);
    settle(&p).await;
    assert_eq!(credited(&h, ALICE, 1), (900, 0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_state_and_the_last_hook_or_a_shutdown_ends_it() {
    use tracker::{Hook, StopReason};
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path());
    let hook = |p: &Arc<Privtrak>, live: &Arc<std::sync::atomic::AtomicUsize>| {
        privtrak::PrivtrakHook::new(
            Arc::clone(p),
            Box::new(privtrak::identifier(&c)),
            Arc::clone(live),
        )
    };
    let p = Privtrak::open(&c, Arc::new(MemoryHandler::new()))
        .await
        .unwrap();
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (old, new) = (hook(&p, &live), hook(&p, &live));
    // A reload: the old hook stops, the new one carries on.
    old.stop(StopReason::Reload).await;
    assert!(!p.is_closed());
    p.announce(ALICE, &announce(1, 1, Event::None, 5, 0, 1))
        .await
        .unwrap();
    // The configuration no longer has privtrak: its last hook ends it.
    new.stop(StopReason::Reload).await;
    assert!(p.is_closed());

    // A shutdown ends it whatever other hook is alive.
    let p = Privtrak::open(&c, Arc::new(MemoryHandler::new()))
        .await
        .unwrap();
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (a, _b) = (hook(&p, &live), hook(&p, &live));
    a.stop(StopReason::Shutdown).await;
    assert!(p.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_gets_at_most_max_peers_per_user_torrent_peers_on_a_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let c = PrivtrakConfig {
        max_peers_per_user_torrent: 2,
        ..config(tmp.path())
    };
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    for peer in [1, 2] {
        p.announce(ALICE, &announce(1, peer, Event::Started, 0, 0, 9))
            .await
            .unwrap();
    }
    let refused = p
        .announce(ALICE, &announce(1, 3, Event::Started, 0, 0, 9))
        .await
        .unwrap_err();
    assert_eq!(refused.to_string(), "too many peers for this torrent");
    // Known peers go on; the limit is per user and per torrent.
    p.announce(ALICE, &announce(1, 2, Event::None, 5, 0, 9))
        .await
        .unwrap();
    p.announce(ALICE, &announce(2, 3, Event::Started, 0, 0, 9))
        .await
        .unwrap();
    p.announce(BOB, &announce(1, 3, Event::Started, 0, 0, 9))
        .await
        .unwrap();
    // A stopped announce of the refused peer is no error and records nothing.
    p.announce(ALICE, &announce(1, 3, Event::Stopped, 0, 0, 9))
        .await
        .unwrap();
    assert_eq!(p.peers_of(ALICE, &InfoHash([1; 20])), 2);
    // One stops: there is room for the next.
    p.announce(ALICE, &announce(1, 1, Event::Stopped, 0, 0, 9))
        .await
        .unwrap();
    p.announce(ALICE, &announce(1, 3, Event::Started, 0, 0, 9))
        .await
        .unwrap();
    assert_eq!(p.peers_of(ALICE, &InfoHash([1; 20])), 2);
    // A reload can lift the limit.
    p.reconfigure(&PrivtrakConfig {
        max_peers_per_user_torrent: 0,
        ..c.clone()
    });
    for peer in 4..10 {
        p.announce(ALICE, &announce(1, peer, Event::Started, 0, 0, 9))
            .await
            .unwrap();
    }
    assert_eq!(p.peers_of(ALICE, &InfoHash([1; 20])), 8);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_is_raw_bytes_times_the_factors_in_force_when_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let h = MemoryHandler::new();
    let c = config(tmp.path());
    let p = Privtrak::open(&c, Arc::new(h.clone())).await.unwrap();
    let at = |up: f32, down: f32| privtrak::Account {
        user: ALICE,
        site_user: Some(7),
        upload_factor: up,
        download_factor: down,
    };
    p.announce(at(2.0, 1.0), &announce(1, 1, Event::Started, 0, 0, 9))
        .await
        .unwrap();
    p.announce(at(2.0, 0.5), &announce(1, 1, Event::None, 100, 1000, 9))
        .await
        .unwrap();
    // Global freeleech from now on: the user's factor does not matter.
    p.reconfigure(&PrivtrakConfig {
        freeleech: true,
        ..c.clone()
    });
    p.announce(at(1.0, 1.0), &announce(1, 1, Event::None, 150, 3000, 9))
        .await
        .unwrap();
    settle(&p).await;
    let deltas = h.deltas();
    let raw = deltas
        .iter()
        .fold((0, 0), |(u, d), x| (u + x.uploaded, d + x.downloaded));
    let credited = deltas.iter().fold((0, 0), |(u, d), x| {
        let (cu, cd) = x.credited();
        (u + cu, d + cd)
    });
    assert_eq!(raw, (150, 3000));
    assert_eq!(credited, (2 * 100 + 50, 500));
    assert!(deltas.iter().all(|d| d.site_user == Some(7)));
    p.shutdown().await;
}
