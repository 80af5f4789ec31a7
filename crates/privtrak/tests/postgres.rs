//! The `postgres` handler against a real PostgreSQL started here: the
//! handler conformance suite, the schema's rows, baselines restored from the
//! database, a COMMIT whose reply is lost, and starts with the database away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bittorrent::{AnnounceRequest, Event, InfoHash, Peer, PeerId};
use database::PgOptions;
use privtrak::conformance::{BoxFuture, HandlerFixture, J1, J2, Totals, batch, expected};
use privtrak::handlers::postgres::{PostgresConfig, PostgresHandler};
use privtrak::{DeltaHandler, Privtrak, PrivtrakConfig, UserId};
use test_support::postgres::Postgres;
use test_support::proxy::FaultyProxy;
use tracker::config::ConfigDuration;

/// One cluster for the whole test binary; each test gets a database of its own.
fn cluster() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| Postgres::start("privtrak-pg"))
}

fn new_database() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let pg = cluster();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    pg.psql(&format!("CREATE DATABASE {name}"));
    format!(
        "postgresql://{}@{}:{}/{name}?sslmode=disable",
        pg.user(),
        pg.host(),
        pg.port()
    )
}

fn options(url: &str) -> PostgresConfig {
    PostgresConfig {
        database: PgOptions {
            url: url.to_owned(),
            ..PgOptions::default()
        },
        ..PostgresConfig::default()
    }
}

/// SQL through `psql` on one test's database.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn hex16(s: &str) -> [u8; 16] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

/// Transfers totals as the database holds them.
fn db_totals(url: &str) -> Totals {
    let text = psql(
        url,
        "SELECT encode(user_key, 'hex'), encode(info_hash, 'hex'), uploaded, downloaded FROM karuta.transfers",
    );
    let mut t = Totals::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let (up, down): (u64, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        if (up, down) != (0, 0) {
            t.insert((UserId(hex16(f[0])), f[1].parse().unwrap()), (up, down));
        }
    }
    t
}

struct Fixture {
    url: String,
    writers: usize,
}

impl HandlerFixture for Fixture {
    fn open(&self) -> BoxFuture<'_, Arc<dyn DeltaHandler>> {
        Box::pin(async {
            let mut c = options(&self.url);
            c.writers = self.writers;
            Arc::new(PostgresHandler::open(&c).await.unwrap()) as Arc<dyn DeltaHandler>
        })
    }
    fn totals(&self) -> BoxFuture<'_, Totals> {
        let url = self.url.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || db_totals(&url))
                .await
                .unwrap()
        })
    }
}

/// One transaction per batch (the default).
mod conformance {
    use super::*;
    privtrak::delta_handler_conformance!(Fixture {
        url: new_database(),
        writers: 1,
    });
}

/// A batch in four transactions at once, split by user.
mod conformance_four_writers {
    use super::*;
    privtrak::delta_handler_conformance!(Fixture {
        url: new_database(),
        writers: 4,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_becomes_transfers_baselines_and_a_batch_id() {
    let url = new_database();
    let h = PostgresHandler::open(&options(&url)).await.unwrap();
    h.handle(&batch(J1, 1, 14)).await.unwrap();
    // Batch deltas: n credits n up, 2n down to user n % 3 on torrent n % 2;
    // n = 7 and 14 are `completed`.
    let rows = psql(
        &url,
        "SELECT encode(user_key, 'hex'), encode(info_hash, 'hex'), uploaded, downloaded, seed_seconds,
                announces, snatched_at IS NOT NULL
         FROM karuta.transfers ORDER BY 1, 2",
    );
    let mut want = Vec::new();
    for user in 0..3u64 {
        for torrent in 0..2u64 {
            let ns: Vec<u64> = (1..=14)
                .filter(|n| n % 3 == user && n % 2 == torrent)
                .collect();
            if ns.is_empty() {
                continue;
            }
            let up: u64 = ns.iter().sum();
            let snatched = ns.iter().any(|n| n % 7 == 0);
            want.push(format!(
                "{}|{}|{up}|{}|{}|{}|{}",
                UserId([user as u8 + 1; 16]).to_hex(),
                InfoHash([torrent as u8 + 1; 20]),
                2 * up,
                ns.len(),
                ns.len(),
                if snatched { "t" } else { "f" }
            ));
        }
    }
    assert_eq!(rows.lines().collect::<Vec<_>>(), want);
    // One baseline per peer: its last delta's totals.
    let peers: std::collections::BTreeSet<(u64, u64, u64)> =
        (1..=14u64).map(|n| (n % 3, n % 2, n % 5)).collect();
    assert_eq!(
        psql(&url, "SELECT count(*) FROM karuta.peers"),
        peers.len().to_string()
    );
    assert_eq!(
        psql(
            &url,
            "SELECT DISTINCT journal, first_seq, last_seq FROM karuta.batches"
        ),
        format!("{J1}|1|14")
    );
    // Recorded once for each part it was applied in (by user).
    assert_eq!(
        psql(&url, "SELECT count(*), sum(deltas) FROM karuta.batches"),
        format!("{}|14", privtrak::handlers::postgres::PARTS)
    );
    // A user's ratio in one query.
    let totals = psql(
        &url,
        "SELECT sum(uploaded), sum(downloaded) FROM karuta.user_totals",
    );
    assert_eq!(
        totals,
        format!("{}|{}", (1..=14).sum::<u64>(), 2 * (1..=14).sum::<u64>())
    );
    h.close().await.unwrap();
}

/// A batch that four writers left half-applied (one part's transaction
/// committed, then the process died) is completed by a single writer
/// without the committed part counted twice: each part goes on from its own
/// recorded position, whatever `writers` wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_applied_by_four_writers_is_completed_once_by_one() {
    use privtrak::handlers::postgres::part_of;
    let url = new_database();
    let mut four = options(&url);
    four.writers = 4;
    let h = PostgresHandler::open(&four).await.unwrap();
    // Part 2's transaction alone: its deltas applied, its position recorded.
    let whole = batch(J1, 1, 10);
    let mut part_two = whole.clone();
    part_two.deltas.retain(|d| part_of(&d.user) == 2);
    assert!(!part_two.deltas.is_empty() && part_two.deltas.len() < whole.deltas.len());
    h.handle(&part_two).await.unwrap();
    psql(&url, "DELETE FROM karuta.batches WHERE part <> 2");
    assert_eq!(h.applied_through(J1).await.unwrap(), 0);
    h.close().await.unwrap();
    // The restart replays the whole batch into one transaction.
    let one = PostgresHandler::open(&options(&url)).await.unwrap();
    one.handle(&whole).await.unwrap();
    assert_eq!(one.applied_through(J1).await.unwrap(), 10);
    one.handle(&batch(J1, 11, 20)).await.unwrap();
    let totals = tokio::task::spawn_blocking(move || db_totals(&url))
        .await
        .unwrap();
    assert_eq!(totals, expected(20));
}

#[test]
fn writers_must_divide_the_parts_and_fit_the_pool() {
    let mut c = options("postgresql://u@127.0.0.1/db");
    for ok in [1, 2, 4] {
        c.writers = ok;
        assert!(c.validate().is_ok(), "writers: {ok}");
    }
    for bad in [0, 3, 5, 8] {
        c.writers = bad;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("writers") && e.contains("must be 1, 2 or 4"),
            "{e}"
        );
    }
    c.writers = 4;
    c.database.pool_size = 2;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("writers") && e.contains("pool_size is 2"), "{e}");
}

fn announce(peer: u8, event: Event, up: u64, down: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([9; 20]),
        peer: Peer::new(PeerId([peer; 20]), "10.0.0.1".parse().unwrap(), 6881),
        event,
        uploaded: up,
        downloaded: down,
        left: 10,
        ..AnnounceRequest::default()
    }
}

const ALICE: UserId = UserId([0xa1; 16]);

fn privtrak_config(dir: &std::path::Path) -> PrivtrakConfig {
    PrivtrakConfig {
        journal_path: dir.join("journal"),
        flush_interval: ConfigDuration(Duration::from_millis(20)),
        journal_sync_interval: ConfigDuration(Duration::from_millis(1)),
        shutdown_timeout: ConfigDuration(Duration::from_secs(5)),
        ..PrivtrakConfig::default()
    }
}

async fn settle(p: &Privtrak) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.pending() > 0 {
        assert!(Instant::now() < deadline, "{} pending", p.pending());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_come_back_from_the_database_and_stops_remove_them() {
    let url = new_database();
    let tmp = tempfile::tempdir().unwrap();
    let c = privtrak_config(tmp.path());
    let h = Arc::new(PostgresHandler::open(&options(&url)).await.unwrap());
    let p = Privtrak::open(&c, h.clone()).await.unwrap();
    p.announce(ALICE, &announce(1, Event::Started, 0, 0))
        .await
        .unwrap();
    p.announce(ALICE, &announce(1, Event::None, 1000, 400))
        .await
        .unwrap();
    p.announce(ALICE, &announce(2, Event::Started, 0, 0))
        .await
        .unwrap();
    p.announce(ALICE, &announce(2, Event::Stopped, 50, 0))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(
        psql(
            &url,
            "SELECT encode(peer_id, 'hex'), uploaded, downloaded, bytes_left, host(ip), port, seeding FROM karuta.peers"
        ),
        format!("{}|1000|400|10|10.0.0.1|6881|f", PeerId([1; 20]))
    );
    p.crash().await;
    // A new machine: the local snapshot and state are gone, the journal
    // too (everything was applied). The baselines come from the database.
    std::fs::remove_dir_all(&c.journal_path).unwrap();
    let p = Privtrak::open(&c, h.clone()).await.unwrap();
    assert_eq!(
        p.baseline(ALICE, &InfoHash([9; 20]), &PeerId([1; 20]))
            .map(|b| (b.uploaded, b.downloaded)),
        Some((1000, 400))
    );
    assert_eq!(
        p.baseline(ALICE, &InfoHash([9; 20]), &PeerId([2; 20])),
        None
    );
    // The client goes on: only the new bytes are credited.
    p.announce(ALICE, &announce(1, Event::None, 1500, 400))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(
        psql(&url, "SELECT uploaded, downloaded FROM karuta.transfers"),
        "1550|400"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_keep_raw_bytes_credited_bytes_and_the_site_user() {
    let url = new_database();
    let tmp = tempfile::tempdir().unwrap();
    let h = Arc::new(PostgresHandler::open(&options(&url)).await.unwrap());
    let p = Privtrak::open(&privtrak_config(tmp.path()), h)
        .await
        .unwrap();
    let alice = privtrak::Account {
        user: UserId::from_site_id(42),
        site_user: Some(42),
        upload_factor: 2.0,
        download_factor: 0.0,
    };
    p.announce(alice, &announce(1, Event::Started, 0, 0))
        .await
        .unwrap();
    p.announce(alice, &announce(1, Event::None, 1000, 400))
        .await
        .unwrap();
    // Bytes reported while the user's download factor is 0.5.
    let half = privtrak::Account {
        download_factor: 0.5,
        ..alice
    };
    p.announce(half, &announce(1, Event::None, 1500, 1400))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(
        psql(
            &url,
            "SELECT user_id, uploaded, downloaded, credited_uploaded, credited_downloaded FROM karuta.transfers"
        ),
        "42|1500|1400|3000|500"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT user_id, uploaded, credited_uploaded, credited_downloaded FROM karuta.user_totals"
        ),
        "42|1500|3000|500"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_reply_is_lost_is_not_counted_twice() {
    let url = new_database();
    // The schema first, straight: the cut is meant for a batch's COMMIT.
    PostgresHandler::open(&options(&url)).await.unwrap();
    let pg = cluster();
    let direct = format!("{}:{}", pg.host(), pg.port());
    let proxy = FaultyProxy::losing_commit_replies(direct.parse().unwrap(), |n| n == 1);
    let through_proxy = url.replace(&direct, &proxy.addr().to_string());
    let mut c = options(&through_proxy);
    c.database.create_schema = false;
    let h = PostgresHandler::open(&c).await.unwrap();
    let b = batch(J1, 1, 10);
    let first = h.handle(&b).await;
    assert_eq!(proxy.cuts(), 1, "the proxy saw no COMMIT");
    assert!(first.is_err(), "the lost reply must look like a failure");
    // It was committed all the same; the retry is recognised by its id.
    assert_eq!(h.applied_through(J1).await.unwrap(), 10);
    h.handle(&b).await.unwrap();
    h.handle(&batch(J1, 11, 20)).await.unwrap();
    assert_eq!(
        tokio::task::spawn_blocking(move || db_totals(&url))
            .await
            .unwrap(),
        expected(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_the_start_naming_the_url_but_never_the_password() {
    let port = test_support::free_tcp_port();
    let url = format!("postgresql://karuta:hunter2@127.0.0.1:{port}/site?sslmode=disable");
    let mut c = options(&url);
    c.database.connect_timeout = ConfigDuration(Duration::from_millis(300));
    let e = PostgresHandler::open(&c).await.err().expect("refused");
    assert_eq!(e.key, "url", "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("karuta@127.0.0.1:{port}/site")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    // Allowed to start without it: it does, and says so only in the log.
    c.start_without_database = true;
    let h = PostgresHandler::open(&c).await.expect("starts");
    let e = h.applied_through(J1).await.unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// A new machine (no journal, no snapshot) starts while the database is
/// away: announces are served, and once it answers the baselines it holds
/// are merged in and the bytes reported meanwhile are credited against them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_the_database_restores_from_it_once_it_answers() {
    let url = new_database();
    let tmp = tempfile::tempdir().unwrap();
    let c = PrivtrakConfig {
        max_peers_per_user_torrent: 0,
        ..privtrak_config(tmp.path())
    };
    let h = Arc::new(PostgresHandler::open(&options(&url)).await.unwrap());
    let p = Privtrak::open(&c, h).await.unwrap();
    for (peer, up) in [(1, 1000), (2, 500), (3, 300), (4, 200)] {
        p.announce(ALICE, &announce(peer, Event::Started, 0, 0))
            .await
            .unwrap();
        p.announce(ALICE, &announce(peer, Event::None, up, 400))
            .await
            .unwrap();
    }
    settle(&p).await;
    p.shutdown().await;
    assert_eq!(
        psql(&url, "SELECT uploaded, downloaded FROM karuta.transfers"),
        "2000|1600"
    );

    std::fs::remove_dir_all(&c.journal_path).unwrap();
    let pg = cluster();
    let direct = format!("{}:{}", pg.host(), pg.port());
    let proxy = FaultyProxy::start(direct.parse().unwrap());
    proxy.refuse(true);
    let mut o = options(&url.replace(&direct, &proxy.addr().to_string()));
    o.start_without_database = true;
    o.database.connect_timeout = ConfigDuration(Duration::from_millis(300));
    let h = Arc::new(PostgresHandler::open(&o).await.expect("starts"));
    let p = Privtrak::open(&c, h).await.unwrap();
    assert!(p.baselines_pending());
    let ih = InfoHash([9; 20]);
    // Against the stored 1000 up: +500; then +100 against the new baseline.
    for up in [1500, 1600] {
        p.announce(ALICE, &announce(1, Event::None, up, 400))
            .await
            .unwrap();
    }
    // A stop: +200 against the stored 500, and the stored baseline goes.
    p.announce(ALICE, &announce(2, Event::Stopped, 700, 400))
        .await
        .unwrap();
    // A new session, and a peer the database never saw: nothing.
    p.announce(ALICE, &announce(3, Event::Started, 0, 0))
        .await
        .unwrap();
    p.announce(ALICE, &announce(5, Event::None, 10, 0))
        .await
        .unwrap();
    assert_eq!(p.baseline(ALICE, &ih, &PeerId([4; 20])), None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(p.baselines_pending(), "merged while the database was away");
    assert_eq!(p.acked_through(), 0);

    proxy.refuse(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.baselines_pending() || p.pending() > 0 {
        assert!(Instant::now() < deadline, "never restored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = |peer: u8| {
        p.baseline(ALICE, &ih, &PeerId([peer; 20]))
            .map(|b| (b.uploaded, b.downloaded))
    };
    // Peer 4 did not announce: its stored baseline is back. Peer 2 stopped
    // while the database was away: not brought back.
    assert_eq!(held(4), Some((200, 400)));
    assert_eq!(held(2), None);
    assert_eq!(held(1), Some((1600, 400)));
    p.announce(ALICE, &announce(4, Event::None, 300, 400))
        .await
        .unwrap();
    settle(&p).await;
    assert_eq!(
        psql(&url, "SELECT uploaded, downloaded FROM karuta.transfers"),
        "2900|1600"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(get_byte(peer_id, 0) || ':' || uploaded, ' ' ORDER BY peer_id) FROM karuta.peers"
        ),
        "1:1600 3:0 4:300 5:10"
    );
    p.shutdown().await;
}

/// Batch ids older than a week go, except each journal's and part's newest
/// (which is what it has applied): a batch retried after the pruning is
/// still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_batch_ids_are_pruned_but_each_parts_newest_stays() {
    let url = new_database();
    let h = PostgresHandler::open(&options(&url)).await.unwrap();
    for (first, last) in [(1, 10), (11, 20), (21, 30)] {
        h.handle(&batch(J1, first, last)).await.unwrap();
    }
    h.handle(&batch(J2, 1, 5)).await.unwrap();
    let rows = |url: &str| {
        psql(
            url,
            "SELECT string_agg(format('%s:%s', substr(journal, 1, 2), last_seq), ' ' ORDER BY journal, last_seq)
             FROM (SELECT DISTINCT journal, last_seq FROM karuta.batches) AS b",
        )
    };
    assert_eq!(rows(&url), "11:10 11:20 11:30 22:5");
    // The first two of J1 and J2's only one are eight days old.
    psql(
        &url,
        "UPDATE karuta.batches SET applied_at = now() - interval '8 days' WHERE last_seq <= 20",
    );
    // A handler prunes at its first batch, then every ten minutes.
    let h = PostgresHandler::open(&options(&url)).await.unwrap();
    h.handle(&batch(J1, 31, 40)).await.unwrap();
    assert_eq!(rows(&url), "11:30 11:40 22:5");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM karuta.batches"),
        (3 * privtrak::handlers::postgres::PARTS).to_string()
    );
    h.handle(&batch(J1, 1, 10)).await.unwrap();
    h.handle(&batch(J2, 1, 5)).await.unwrap();
    assert_eq!(h.applied_through(J1).await.unwrap(), 40);
    assert_eq!(h.applied_through(J2).await.unwrap(), 5);
    let mut want = expected(40);
    for (key, (up, down)) in expected(5) {
        let e = want.entry(key).or_default();
        e.0 += up;
        e.1 += down;
    }
    assert_eq!(
        tokio::task::spawn_blocking(move || db_totals(&url))
            .await
            .unwrap(),
        want
    );
}

/// A deadlock with another session (a site's job holding `transfers` rows
/// and then waiting for the journal's lock): PostgreSQL aborts the batch's
/// transaction, the handler retries it, and it is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_with_another_session_is_retried_and_counted_once() {
    let url = new_database();
    let h = PostgresHandler::open(&options(&url)).await.unwrap();
    h.handle(&batch(J1, 1, 10)).await.unwrap();
    let deadlocks = |url: &str| -> u64 {
        psql(
            url,
            "SELECT pg_stat_clear_snapshot(); SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap()
    };
    let before = deadlocks(&url);
    // The other session locks every transfers row, waits a second, then
    // asks for the lock the batch's transaction holds by then. It waits
    // longer than the handler's backend before checking for a deadlock, so
    // PostgreSQL aborts the batch's transaction, not this one.
    let site = {
        let url = url.clone();
        let script = format!(
            "SET deadlock_timeout = '10s';
             BEGIN;
             UPDATE karuta.transfers SET announces = announces;
             SELECT pg_sleep(1);
             SELECT pg_advisory_xact_lock(hashtextextended('{J1}', 0));
             COMMIT;"
        );
        std::thread::spawn(move || psql(&url, &script))
    };
    // Once it holds the rows (it is in its sleep), the batch goes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while psql(
        &url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'",
    ) == "0"
    {
        assert!(Instant::now() < deadline, "the other session never slept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    h.handle(&batch(J1, 11, 20)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the batch did not wait for the other session"
    );
    site.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while deadlocks(&url) == before {
        assert!(Instant::now() < deadline, "PostgreSQL saw no deadlock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.applied_through(J1).await.unwrap(), 20);
    assert_eq!(
        tokio::task::spawn_blocking(move || db_totals(&url))
            .await
            .unwrap(),
        expected(20)
    );
}
