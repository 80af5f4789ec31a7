//! privtrak's PostgreSQL handler in the real karuta binary, against a real
//! PostgreSQL started here, compared with simulated clients whose counters
//! are known: totals in `karuta.transfers` are exact through SIGKILLs and
//! SIGTERMs at random moments under load, and through the database stopped
//! for 30 s under load (and `/health` says so), through COMMIT replies lost
//! under load, through a journal filled while the database is down (refused
//! announces, `/health` 503, then a drain), and on a new machine started
//! while the database is down; a
//! libtorrent private swarm is credited what it transferred, with its
//! snatches.

#[path = "clients/harness.rs"]
mod harness;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::Karuta;
use support::accounting::{Totals, Tracker, clients, drive};
use test_support::postgres::Postgres;
use test_support::proxy::FaultyProxy;
use test_support::{TempDir, free_tcp_port, free_udp_port, http};

struct Setup {
    _dir: TempDir,
    dir: PathBuf,
    tracker: Tracker,
    ops: std::net::SocketAddr,
    config: PathBuf,
    pg: Postgres,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let pg = Postgres::start(tag);
    let (http_port, udp_port, ops_port) = (free_tcp_port(), free_udp_port(), free_tcp_port());
    let d = dir.path().display();
    let url = format!(
        "postgresql://{}@{}:{}/{}?sslmode=disable",
        pg.user(),
        pg.host(),
        pg.port(),
        pg.dbname()
    );
    let text = format!(
        r#"karuta:
  metrics_addr: "127.0.0.1:{ops_port}"
  http:
    addr: "127.0.0.1:{http_port}"
    announce_routes: ["/announce", "/:passkey/announce"]
  udp:
    addr: "127.0.0.1:{udp_port}"
    private_key: "a key every restart shares"
    workers: 2
  storage:
    name: memory
  prehooks:
    - name: privtrak
      options:
        batch_size: 64
        flush_interval: 50ms
        journal_path: {d}/journal
        journal_sync_interval: 1ms
        snapshot_interval: 2s
        shutdown_timeout: 20s
        handler:
          name: postgres
          options:
            url: "{url}"
            connect_timeout: 1s
            statement_timeout: 5s
"#
    );
    let config = dir.path().join("karuta.yaml");
    support::write_config(&config, &text);
    Setup {
        dir: dir.path().to_owned(),
        _dir: dir,
        tracker: Tracker {
            http: format!("127.0.0.1:{http_port}").parse().unwrap(),
            udp: format!("127.0.0.1:{udp_port}").parse().unwrap(),
        },
        ops: format!("127.0.0.1:{ops_port}").parse().unwrap(),
        config,
        pg,
    }
}

/// What `karuta.transfers` credits, per user and torrent.
fn db_totals(pg: &Postgres) -> Totals {
    let text = pg.psql(
        "SELECT encode(user_key, 'hex'), encode(info_hash, 'hex'), uploaded, downloaded FROM karuta.transfers",
    );
    let mut t = Totals::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let v: (u64, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        if v != (0, 0) {
            t.insert((f[0].to_owned(), f[1].to_owned()), v);
        }
    }
    t
}

/// Every batch id once: no two recorded positions of a journal's part
/// overlap.
fn assert_no_overlapping_batches(pg: &Postgres) {
    let overlaps = pg.psql(
        "SELECT count(*) FROM karuta.batches a JOIN karuta.batches b
         ON a.journal = b.journal AND a.part = b.part AND a.last_seq < b.last_seq AND b.first_seq <= a.last_seq",
    );
    assert_eq!(overlaps, "0");
}

/// Replaces `from` (which must be there) with `to` in the setup's config.
fn edit_config(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains(from), "{from:?} is not in the config");
    support::write_config(&s.config, &text.replace(from, to));
}

/// Restarts at random moments while the clients announce on, alternately a
/// SIGKILL (a crash) and a SIGTERM (a graceful stop under load, which must
/// exit 0 having handed over what it could), then a last SIGTERM.
#[test]
fn transfers_are_exact_through_sigkills_and_sigterms_at_random_moments() {
    let s = setup("pg-kill");
    let mut clients = clients();
    let k = std::sync::Mutex::new(Some(Karuta::start(&s.config)));
    let mut kills = 0;
    let mut terms = 0;
    let truth = drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(12),
        21,
        |_| {
            let mut slot = k.lock().unwrap();
            if let Some(mut old) = slot.take() {
                if (kills + terms) % 2 == 0 {
                    old.signal(libc::SIGKILL);
                    old.wait_exit(Duration::from_secs(5));
                    kills += 1;
                } else {
                    old.signal(libc::SIGTERM);
                    let (code, _) = old.wait_exit(Duration::from_secs(30));
                    assert_eq!(code, Some(0), "a SIGTERM under load: {}", old.log());
                    terms += 1;
                }
            }
            *slot = Some(Karuta::start(&s.config));
        },
        |rng| Duration::from_millis(rng.u64(300..1500)),
    );
    let mut k = k.into_inner().unwrap().unwrap();
    // SIGTERM under load's aftermath: everything pending goes to the database.
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert!(
        kills >= 2 && terms >= 2,
        "only {kills} kills and {terms} stops"
    );
    let answered: u64 = clients.iter().map(|c| c.answered).sum();
    assert!(answered > 500, "{answered} announces answered");
    assert_eq!(
        db_totals(&s.pg),
        truth,
        "{kills} kills, {terms} stops, {answered} answered"
    );
    // Every batch id once, positions never overlapping.
    assert_no_overlapping_batches(&s.pg);
}

/// The database's replies to COMMITs lost now and then under load (the
/// connection cut right after the server committed): every such batch is
/// retried and recognised by its id, never counted twice.
#[test]
fn transfers_are_exact_when_commit_replies_are_lost_under_load() {
    let s = setup("pg-commit-cut");
    let direct = format!("{}:{}", s.pg.host(), s.pg.port());
    // The 4th COMMIT through the proxy, then every 6th: the migrations' go
    // through; batches lose their replies from the start of the run on.
    let proxy =
        FaultyProxy::losing_commit_replies(direct.parse().unwrap(), |n| n >= 4 && n % 6 == 4);
    edit_config(&s, &format!("@{direct}/"), &format!("@{}/", proxy.addr()));
    let mut k = Karuta::start(&s.config);
    let mut clients = clients();
    let truth = drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(10),
        41,
        |_| {},
        |_| Duration::from_millis(100),
    );
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    let cuts = proxy.cuts();
    assert!(cuts >= 5, "only {cuts} COMMIT replies lost");
    let failed: u64 = clients.iter().map(|c| c.failed).sum();
    assert_eq!(
        failed, 0,
        "an announce failed while COMMIT replies were lost"
    );
    assert_eq!(db_totals(&s.pg), truth, "{cuts} COMMIT replies lost");
    assert_no_overlapping_batches(&s.pg);
}

fn health(ops: std::net::SocketAddr) -> (u16, String) {
    match http::get(ops, "/health")
        .timeout(Duration::from_secs(3))
        .send()
    {
        Ok(r) => (r.status, r.text()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn transfers_are_exact_through_a_thirty_second_database_outage_under_load() {
    let mut s = setup("pg-outage");
    let mut k = Karuta::start(&s.config);
    let mut clients = clients();
    let t = s.tracker;
    let ops = s.ops;
    let pg = std::sync::Mutex::new(&mut s.pg);
    let mut states = Vec::new();
    let mut phase = 0;
    let started = Instant::now();
    let truth = drive(
        &mut clients,
        t,
        Duration::from_secs(40),
        33,
        |_| {
            let at = started.elapsed();
            let mut pg = pg.lock().unwrap();
            // Down from 3 s to 33 s.
            if phase == 0 && at >= Duration::from_secs(3) {
                pg.stop_fast();
                phase = 1;
            } else if phase == 1 && at >= Duration::from_secs(33) {
                pg.restart();
                phase = 2;
            }
            if phase == 1 && at >= Duration::from_secs(8) {
                states.push(health(ops));
            }
        },
        |_| Duration::from_millis(500),
    );
    assert_eq!(phase, 2, "the database never came back");
    // While it was down: announces went on, /health was degraded (200).
    assert!(!states.is_empty());
    for (status, body) in &states {
        assert_eq!(*status, 200, "{body}");
        assert!(
            body.contains("degraded") && body.contains("refuses batches"),
            "{body}"
        );
    }
    let failed: u64 = clients.iter().map(|c| c.failed).sum();
    assert_eq!(failed, 0, "an announce failed while the database was down");
    // Back: everything drains, without a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(ops).1.contains("degraded") {
        assert!(
            Instant::now() < deadline,
            "still degraded: {}",
            health(ops).1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert_eq!(db_totals(&s.pg), truth);
}

/// A new machine (no journal, no snapshot) started while the database is
/// down, with `start_without_database`: announces are served and journaled,
/// a SIGKILL while the database is still down loses nothing, and once the
/// database is back karuta merges the baselines it holds and credits what
/// the clients reported meanwhile against them — exactly, without a restart.
#[test]
fn a_new_machine_started_while_the_database_is_down_is_exact_once_it_is_back() {
    let mut s = setup("pg-late");
    edit_config(
        &s,
        "statement_timeout: 5s",
        "statement_timeout: 5s\n            start_without_database: true",
    );
    let mut clients = clients();
    // The old machine: every client has a baseline in the database.
    let mut k = Karuta::start(&s.config);
    drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(4),
        5,
        |_| {},
        |_| Duration::from_millis(100),
    );
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert_ne!(s.pg.psql("SELECT count(*) FROM karuta.peers"), "0");
    std::fs::remove_dir_all(s.dir.join("journal")).unwrap();
    s.pg.stop_fast();
    let k = std::sync::Mutex::new(Karuta::start(&s.config));
    let pg = std::sync::Mutex::new(&mut s.pg);
    let started = Instant::now();
    let mut phase = 0;
    let truth = drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(14),
        6,
        |_| {
            let at = started.elapsed();
            if phase == 0 && at >= Duration::from_secs(3) {
                let mut k = k.lock().unwrap();
                k.signal(libc::SIGKILL);
                k.wait_exit(Duration::from_secs(5));
                *k = Karuta::start(&s.config);
                phase = 1;
            } else if phase == 1 && at >= Duration::from_secs(6) {
                pg.lock().unwrap().restart();
                phase = 2;
            }
        },
        |_| Duration::from_millis(250),
    );
    assert_eq!(phase, 2, "the database never came back");
    let mut k = k.into_inner().unwrap();
    k.wait_for("the handler's baselines restored");
    let failed: u64 = clients.iter().map(|c| c.failed).sum();
    let answered: u64 = clients.iter().map(|c| c.answered).sum();
    assert!(answered > 300, "{answered} announces answered");
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert_eq!(
        db_totals(&s.pg),
        truth,
        "{answered} answered, {failed} failed"
    );
}

/// PostgreSQL down until the journal is full: announces are refused with a
/// failure reason and `/health` is 503; once the database is back the journal
/// drains without a restart, announces are taken again, and the totals are
/// exact.
#[test]
fn a_journal_filled_while_the_database_is_down_refuses_then_drains_exactly() {
    let mut s = setup("pg-full");
    edit_config(
        &s,
        "journal_sync_interval: 1ms",
        "journal_sync_interval: 1ms\n        journal_max_bytes: 1MiB\n        max_wait: 200ms",
    );
    let mut k = Karuta::start(&s.config);
    let mut clients = clients();
    drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(2),
        8,
        |_| {},
        |_| Duration::from_millis(100),
    );
    s.pg.stop_fast();
    let failed = |c: &[support::accounting::Client]| c.iter().map(|c| c.failed).sum::<u64>();
    let before = failed(&clients);
    let mut rng = fastrand::Rng::with_seed(9);
    let deadline = Instant::now() + Duration::from_secs(60);
    while failed(&clients) == before {
        assert!(Instant::now() < deadline, "the journal never filled");
        let i = rng.usize(0..clients.len());
        clients[i].step(s.tracker, &mut rng);
    }
    let (status, body) = health(s.ops);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("journal is full"), "{body}");
    s.pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(s.ops).0 != 200 || health(s.ops).1.contains("degraded") {
        assert!(Instant::now() < deadline, "still: {:?}", health(s.ops));
        std::thread::sleep(Duration::from_millis(100));
    }
    let truth = drive(
        &mut clients,
        s.tracker,
        Duration::from_secs(2),
        10,
        |_| {},
        |_| Duration::from_millis(100),
    );
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    assert_eq!(db_totals(&s.pg), truth);
    assert_no_overlapping_batches(&s.pg);
}

#[test]
fn a_private_swarm_of_real_clients_is_in_karuta_transfers() {
    harness::require_clients(false);
    let s = setup("pg-libtorrent");
    let mut k = Karuta::start(&s.config);
    let workdir = s.dir.join("swarm");
    std::fs::create_dir(&workdir).unwrap();
    let t = s.tracker;
    let (seeder, leecher1, leecher2) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
        "00112233445566778899aabbccddeeff",
    );
    let urls = [
        format!("http://{}/{seeder}/announce", t.http),
        format!("udp://{}/{leecher1}/announce", t.udp),
        format!("http://{}/announce?passkey={leecher2}", t.http),
    ];
    let size: u64 = 4 << 20;
    let mut driver = harness::Driver::start(&workdir, &urls.join(","), "private");
    let info_hash = driver.wait_for("infohash ", Duration::from_secs(20));
    driver.wait_for("ready-to-stop", Duration::from_secs(60));
    driver.send_line("go");
    driver.expect_success(Duration::from_secs(30), "clients-stopped");
    assert_eq!(k.stop(), Some(0), "{}", k.log());
    let rows = s.pg.psql(&format!(
        "SELECT encode(user_key, 'hex'), uploaded, downloaded, snatched_at IS NOT NULL
         FROM karuta.transfers WHERE info_hash = decode('{}', 'hex') ORDER BY 1",
        info_hash.trim()
    ));
    let row = |user: &str| -> (u64, u64, bool) {
        let line = rows
            .lines()
            .find(|l| l.starts_with(user))
            .unwrap_or_else(|| panic!("no row for {user}: {rows}"));
        let f: Vec<&str> = line.split('|').collect();
        (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3] == "t")
    };
    let (up, down, _) = row(seeder);
    assert!(up >= size, "the seeder is credited {up} uploaded: {rows}");
    assert_eq!(down, 0);
    for leecher in [leecher1, leecher2] {
        let (_, down, snatched) = row(leecher);
        let off = down.abs_diff(size) as f64 / size as f64;
        assert!(
            off <= 0.01,
            "{leecher} is credited {down} downloaded: {rows}"
        );
        assert!(snatched, "{leecher} has no snatched_at: {rows}");
    }
    // Everyone stopped: no baseline left.
    assert_eq!(s.pg.psql("SELECT count(*) FROM karuta.peers"), "0");
}

#[test]
fn karuta_migrate_creates_the_schema_once_and_check_config_connects_to_nothing() {
    let s = setup("pg-migrate");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "            connect_timeout: 1s\n",
        "            connect_timeout: 1s\n            create_schema: false\n",
    );
    support::write_config(&s.config, &text);
    let run = |args: &[&str]| {
        let out = support::karuta_command(args)
            .arg(&s.config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        s.pg.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'karuta'"),
        "0"
    );
    let (code, out, err) = run(&["migrate"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("applied migrations [1, 2]"), "{out}");
    assert_eq!(
        s.pg.psql("SELECT version FROM karuta.schema_migrations ORDER BY 1"),
        "1\n2"
    );
    let (code, out, _) = run(&["migrate"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("up to date"), "{out}");
    // With the database gone, check-config still passes (it connects to
    // nothing); migrate fails naming the key.
    let mut pg = s.pg;
    pg.stop_fast();
    let (code, out, err) = run(&["check-config"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = run(&["migrate"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("karuta.prehooks[0].options.handler.options.url"),
        "{err}"
    );
}
