//! A private site run from its PostgreSQL, in the real karuta binary:
//! `passkey approval` and `torrent approval` with their `postgres:` sources
//! and `privtrak` with its `postgres` handler, against a real PostgreSQL
//! started here. What the site writes with a second connection reaches
//! karuta through NOTIFY within a second; credit follows the factors;
//! a passkey rotation keeps the user's row; the peer limit holds; and a
//! restarted database is heard again while the last sets serve meanwhile.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bittorrent::{InfoHash, PeerId};
use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use support::Karuta;
use test_support::postgres::Postgres;
use test_support::{TempDir, free_tcp_port, free_udp_port, http, percent_encode};

struct Site {
    _dir: TempDir,
    pg: Postgres,
    karuta: Karuta,
    http: SocketAddr,
    udp: SocketAddr,
    ops: SocketAddr,
}

fn start(tag: &str, privtrak_options: &str) -> Site {
    let dir = TempDir::new(tag);
    let pg = Postgres::start(tag);
    let (http_port, udp_port, ops_port) = (free_tcp_port(), free_udp_port(), free_tcp_port());
    let url = format!(
        "postgresql://{}@{}:{}/{}?sslmode=disable",
        pg.user(),
        pg.host(),
        pg.port(),
        pg.dbname()
    );
    let d = dir.path().display();
    let text = format!(
        r#"karuta:
  metrics_addr: "127.0.0.1:{ops_port}"
  http:
    addr: "127.0.0.1:{http_port}"
    announce_routes: ["/announce", "/:passkey/announce"]
    scrape_routes: ["/scrape", "/:passkey/scrape"]
  udp:
    addr: "127.0.0.1:{udp_port}"
    private_key: "site test"
    workers: 2
  storage:
    name: memory
  prehooks:
    - name: passkey approval
      options:
        postgres: {{url: "{url}", connect_timeout: 1s}}
        reload_interval: 5m
    - name: torrent approval
      options:
        postgres: {{url: "{url}", connect_timeout: 1s}}
    - name: privtrak
      options:
        batch_size: 64
        flush_interval: 50ms
        journal_path: {d}/journal
        journal_sync_interval: 1ms
{privtrak_options}        handler:
          name: postgres
          options:
            url: "{url}"
            connect_timeout: 1s
            statement_timeout: 5s
"#
    );
    let karuta = Karuta::start_text(dir.path(), &text);
    Site {
        _dir: dir,
        pg,
        karuta,
        http: format!("127.0.0.1:{http_port}").parse().unwrap(),
        udp: format!("127.0.0.1:{udp_port}").parse().unwrap(),
        ops: format!("127.0.0.1:{ops_port}").parse().unwrap(),
    }
}

const ALICE: &str = "a11ce0000000000000000000000000aa";
const ALICE2: &str = "a11ce0000000000000000000000000bb";
const MALLORY: &str = "ba0ba0000000000000000000000000cc";

fn ih(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

fn register_torrent(pg: &Postgres, t: InfoHash, up: f32, down: f32) {
    pg.psql(&format!(
        "INSERT INTO karuta.torrents (info_hash, upload_factor, download_factor) VALUES ('\\x{t}', {up}, {down})"
    ));
}

#[derive(Clone, Copy)]
struct Ann {
    torrent: InfoHash,
    peer: u8,
    up: u64,
    down: u64,
    left: u64,
    event: &'static str,
}

fn ann(torrent: InfoHash, peer: u8) -> Ann {
    Ann {
        torrent,
        peer,
        up: 0,
        down: 0,
        left: 1000,
        event: "started",
    }
}

/// An HTTP announce with the passkey in the path: `Ok` or the failure reason.
fn http_announce(s: &Site, passkey: &str, a: Ann) -> Result<(), String> {
    let target = format!(
        "/{passkey}/announce?info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&event={}",
        percent_encode(&a.torrent.0),
        percent_encode(&[a.peer; 20]),
        7000 + u16::from(a.peer),
        a.up,
        a.down,
        a.left,
        a.event
    );
    let r = http::get(s.http, &target).send().expect("karuta answers");
    assert_eq!(r.status, 200);
    let value = bittorrent::bencode::decode(&r.body).expect("a bencoded reply");
    match value.get("failure reason") {
        Some(reason) => Err(reason.as_str().unwrap().to_owned()),
        None => Ok(()),
    }
}

/// A UDP announce with BEP 41 URL data `/PASSKEY/announce`.
fn udp_announce(s: &Site, passkey: &str, a: Ann) -> Result<(), String> {
    let mut client = UdpTrackerClient::new(s.udp, Duration::from_secs(5)).unwrap();
    let mut p = AnnounceParams::new(a.torrent, PeerId([a.peer; 20]), 7000 + u16::from(a.peer))
        .with_url_data(format!("/{passkey}/announce").as_bytes());
    p.uploaded = a.up;
    p.downloaded = a.down;
    p.left = a.left;
    p.event = match a.event {
        "started" => 2,
        "stopped" => 3,
        "completed" => 1,
        _ => 0,
    };
    match client.announce(&p) {
        Ok(_) => Ok(()),
        Err(UdpClientError::Tracker(message)) => Err(message),
        Err(e) => panic!("UDP announce: {e:?}"),
    }
}

/// Polls `check` until it holds, for at most `limit`; returns how long.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until privtrak has handed everything to the database.
fn settled(s: &Site) {
    within(Duration::from_secs(10), "deltas in the database", || {
        metric(s, "karuta_privtrak_deltas_pending") == Some(0.0)
    });
}

fn metric(s: &Site, name: &str) -> Option<f64> {
    let body = http::get(s.ops, "/metrics").send().unwrap().text();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.rsplit(' ').next())
        })
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn only_the_sites_users_and_torrents_are_served_and_changes_apply_within_a_second() {
    let mut s = start("site-live", "");
    let t = ih(1);
    register_torrent(&s.pg, t, 1.0, 1.0);
    // An invented passkey, over HTTP and over UDP (BEP 41).
    let unregistered = Err("unregistered passkey".to_owned());
    assert_eq!(http_announce(&s, MALLORY, ann(t, 1)), unregistered);
    assert_eq!(udp_announce(&s, MALLORY, ann(t, 1)), unregistered);
    let no_passkey = format!(
        "/announce?info_hash={}&peer_id={}&port=7001&uploaded=0&downloaded=0&left=5",
        percent_encode(&t.0),
        percent_encode(&[1; 20])
    );
    let r = http::get(s.http, &no_passkey).send().unwrap();
    assert!(r.text().contains("missing passkey"), "{}", r.text());

    // The site adds the user with a connection of its own.
    let inserted = Instant::now();
    s.pg.psql(&format!(
        "INSERT INTO karuta.users (user_id, passkey) VALUES (1, '{ALICE}')"
    ));
    let took = within(Duration::from_secs(1), "an inserted user admitted", || {
        http_announce(&s, ALICE, ann(t, 1)).is_ok()
    });
    eprintln!(
        "insert → admitted: {took:?} ({:?} since the INSERT began)",
        inserted.elapsed()
    );
    assert_eq!(udp_announce(&s, ALICE, ann(t, 2)), Ok(()));

    // Torrents: one the site never registered, one it deletes.
    assert_eq!(
        http_announce(&s, ALICE, ann(ih(2), 1)),
        Err("unregistered torrent".into())
    );
    assert_eq!(
        udp_announce(&s, ALICE, ann(ih(2), 1)),
        Err("unregistered torrent".into())
    );
    s.pg.psql(&format!(
        "UPDATE karuta.torrents SET deleted = true WHERE info_hash = '\\x{t}'"
    ));
    within(Duration::from_secs(1), "a deleted torrent refused", || {
        http_announce(&s, ALICE, ann(t, 1)) == Err("unregistered torrent".into())
    });
    register_torrent(&s.pg, ih(3), 1.0, 1.0);
    within(Duration::from_secs(1), "a new torrent admitted", || {
        http_announce(&s, ALICE, ann(ih(3), 1)).is_ok()
    });

    // A scrape needs a registered passkey and registered torrents too.
    let scrape = |passkey: &str, t: InfoHash| {
        http::get(
            s.http,
            &format!("/{passkey}/scrape?info_hash={}", percent_encode(&t.0)),
        )
        .send()
        .unwrap()
        .text()
    };
    assert!(scrape(MALLORY, ih(3)).contains("unregistered passkey"));
    assert!(scrape(ALICE, ih(2)).contains("unregistered torrent"));
    assert!(!scrape(ALICE, ih(3)).contains("failure reason"));

    // The site deletes the user.
    s.pg.psql("DELETE FROM karuta.users WHERE user_id = 1");
    let took = within(Duration::from_secs(1), "a deleted user refused", || {
        http_announce(&s, ALICE, ann(ih(3), 1)) == unregistered
    });
    eprintln!("delete → refused: {took:?}");
    assert_eq!(udp_announce(&s, ALICE, ann(ih(3), 2)), unregistered);
    assert_eq!(
        metric(&s, "karuta_site_entries{table=\"users\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&s, "karuta_site_entries{table=\"torrents\"}"),
        Some(1.0)
    );
    assert_eq!(s.karuta.stop(), Some(0), "{}", s.karuta.log());
}

#[test]
fn a_user_who_may_not_leech_still_seeds() {
    let mut s = start("site-leech", "");
    let t = ih(1);
    register_torrent(&s.pg, t, 1.0, 1.0);
    s.pg.psql(&format!(
        "INSERT INTO karuta.users (user_id, passkey, can_leech) VALUES (5, '{ALICE}', false)"
    ));
    within(Duration::from_secs(1), "the user admitted", || {
        http_announce(
            &s,
            ALICE,
            Ann {
                left: 0,
                ..ann(t, 1)
            },
        )
        .is_ok()
    });
    let no = Err("downloading is disabled for this account".to_owned());
    assert_eq!(http_announce(&s, ALICE, ann(t, 2)), no);
    assert_eq!(udp_announce(&s, ALICE, ann(t, 2)), no);
    assert_eq!(
        udp_announce(
            &s,
            ALICE,
            Ann {
                left: 0,
                ..ann(t, 3)
            }
        ),
        Ok(())
    );
    // A stop is always let through.
    assert_eq!(
        http_announce(
            &s,
            ALICE,
            Ann {
                event: "stopped",
                ..ann(t, 2)
            }
        ),
        Ok(())
    );
    // The site lifts it.
    s.pg.psql("UPDATE karuta.users SET can_leech = true WHERE user_id = 5");
    within(Duration::from_secs(1), "leeching allowed", || {
        http_announce(&s, ALICE, ann(t, 2)).is_ok()
    });
    // SIGUSR1 reads the users in full (the running set serves meanwhile).
    let reloads = |s: &Site| metric(s, "karuta_site_reloads_total{table=\"users\"}").unwrap();
    let before = reloads(&s);
    s.karuta.signal(libc::SIGUSR1);
    within(Duration::from_secs(5), "a full read at SIGUSR1", || {
        reloads(&s) > before
    });
    assert_eq!(http_announce(&s, ALICE, ann(t, 2)), Ok(()));
    assert_eq!(s.karuta.stop(), Some(0), "{}", s.karuta.log());
}

/// `user_id|uploaded|downloaded|credited_uploaded|credited_downloaded` of
/// each transfers row of torrent `t`.
fn transfers(pg: &Postgres, t: InfoHash) -> String {
    pg.psql(&format!(
        "SELECT user_id, uploaded, downloaded, credited_uploaded, credited_downloaded
         FROM karuta.transfers WHERE info_hash = '\\x{t}' ORDER BY user_key"
    ))
}

#[test]
fn credit_follows_the_factors_and_a_rotated_passkey_keeps_the_users_row() {
    let mut s = start("site-credit", "        max_peers_per_user_torrent: 3\n");
    let (free, double) = (ih(1), ih(2));
    register_torrent(&s.pg, free, 1.0, 0.0);
    register_torrent(&s.pg, double, 2.0, 1.0);
    s.pg.psql(&format!(
        "INSERT INTO karuta.users (user_id, passkey, upload_factor) VALUES (7, '{ALICE}', 1.5)"
    ));
    within(Duration::from_secs(1), "the user admitted", || {
        http_announce(&s, ALICE, ann(free, 1)).is_ok()
    });
    // Freeleech torrent: raw downloaded grows, credited downloaded stays 0.
    let step = |up, down, peer, torrent| Ann {
        up,
        down,
        left: 1000,
        event: "",
        ..ann(torrent, peer)
    };
    http_announce(&s, ALICE, step(100, 4000, 1, free)).unwrap();
    udp_announce(&s, ALICE, ann(double, 1)).unwrap();
    udp_announce(&s, ALICE, step(1000, 10, 1, double)).unwrap();
    settled(&s);
    assert_eq!(transfers(&s.pg, free), "7|100|4000|150|0");
    assert_eq!(transfers(&s.pg, double), "7|1000|10|3000|10");

    // The site rotates the passkey: the old one is refused, the new one
    // continues the same row (the same user, the same counters).
    s.pg.psql(&format!(
        "UPDATE karuta.users SET passkey = '{ALICE2}' WHERE user_id = 7"
    ));
    within(Duration::from_secs(1), "the old passkey refused", || {
        http_announce(&s, ALICE, step(100, 4000, 1, free)).is_err()
    });
    http_announce(&s, ALICE2, step(300, 9000, 1, free)).unwrap();
    settled(&s);
    assert_eq!(transfers(&s.pg, free), "7|300|9000|450|0");

    // The torrent stops being freeleech: only bytes reported after count.
    let heard =
        |s: &Site| metric(s, "karuta_site_notifications_total{table=\"torrents\"}").unwrap();
    let before = heard(&s);
    s.pg.psql(&format!(
        "UPDATE karuta.torrents SET download_factor = 1 WHERE info_hash = '\\x{free}'"
    ));
    within(Duration::from_secs(1), "the change heard", || {
        heard(&s) > before
    });
    http_announce(&s, ALICE2, step(300, 9500, 1, free)).unwrap();
    settled(&s);
    assert_eq!(transfers(&s.pg, free), "7|300|9500|450|500");

    // The peer limit: three peers of one user on one torrent, no fourth
    // until one stops.
    for peer in [2, 3] {
        http_announce(&s, ALICE2, ann(free, peer)).unwrap();
    }
    let too_many = Err("too many peers for this torrent".to_owned());
    assert_eq!(http_announce(&s, ALICE2, ann(free, 4)), too_many);
    assert_eq!(udp_announce(&s, ALICE2, ann(free, 4)), too_many);
    http_announce(&s, ALICE2, ann(double, 4)).unwrap();
    http_announce(
        &s,
        ALICE2,
        Ann {
            event: "stopped",
            ..ann(free, 2)
        },
    )
    .unwrap();
    http_announce(&s, ALICE2, ann(free, 4)).unwrap();
    assert_eq!(s.karuta.stop(), Some(0), "{}", s.karuta.log());
    assert_eq!(
        s.pg.psql("SELECT count(*), count(DISTINCT user_key) FROM karuta.transfers"),
        "2|1"
    );
}

#[test]
fn a_restarted_database_is_heard_again_and_the_last_sets_serve_meanwhile() {
    let mut s = start("site-restart", "");
    let t = ih(1);
    register_torrent(&s.pg, t, 1.0, 1.0);
    s.pg.psql(&format!(
        "INSERT INTO karuta.users (user_id, passkey) VALUES (1, '{ALICE}')"
    ));
    within(Duration::from_secs(1), "the user admitted", || {
        http_announce(&s, ALICE, ann(t, 1)).is_ok()
    });
    let reloads = |s: &Site| metric(s, "karuta_site_reloads_total{table=\"users\"}").unwrap();
    let before = reloads(&s);

    // The database goes away: the users and torrents held serve on.
    s.pg.stop_fast();
    within(Duration::from_secs(5), "the loss noticed", || {
        metric(&s, "karuta_site_listening{table=\"users\"}") == Some(0.0)
    });
    for peer in 2..4 {
        assert_eq!(http_announce(&s, ALICE, ann(t, peer)), Ok(()));
        assert_eq!(
            http_announce(&s, MALLORY, ann(t, peer)),
            Err("unregistered passkey".into())
        );
    }
    let health = http::get(s.ops, "/health").send().unwrap();
    assert_eq!(health.status, 200);
    assert!(
        health.text().contains("passkey approval: lost"),
        "{}",
        health.text()
    );
    // A reload (SIGUSR1) while it is away keeps the sets it has.
    s.karuta.signal(libc::SIGUSR1);
    s.karuta.wait_for("configuration reloaded");
    assert_eq!(http_announce(&s, ALICE, ann(t, 1)), Ok(()));

    // It comes back: LISTEN again, and a full read.
    s.pg.restart();
    within(Duration::from_secs(10), "listening again", || {
        metric(&s, "karuta_site_listening{table=\"users\"}") == Some(1.0) && reloads(&s) > before
    });
    // A change made while karuta was not listening is not notified to it;
    // the full read at the next LISTEN finds it. Cut karuta's LISTEN
    // connections and insert in the same statement, before they reconnect.
    s.pg.psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%';
         SELECT pg_sleep(0.05);
         INSERT INTO karuta.users (user_id, passkey) VALUES (2, '{MALLORY}')"
    ));
    within(
        Duration::from_secs(5),
        "a change missed by NOTIFY read in full",
        || http_announce(&s, MALLORY, ann(t, 9)).is_ok(),
    );
    assert_eq!(s.karuta.stop(), Some(0), "{}", s.karuta.log());
}

#[test]
fn an_unreachable_site_database_stops_the_start_naming_the_key_but_not_the_password() {
    let dir = TempDir::new("site-down");
    let closed = free_tcp_port();
    let path = dir.path().join("karuta.yaml");
    support::write_config(
        &path,
        &format!(
            r#"karuta:
  http:
    addr: "127.0.0.1:{}"
  storage:
    name: memory
  prehooks:
    - name: passkey approval
      options:
        postgres: {{url: "postgresql://site:hunter2@127.0.0.1:{closed}/site?sslmode=disable", connect_timeout: 1s}}
"#,
            free_tcp_port()
        ),
    );
    let out = support::karuta_command(&["--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("karuta.prehooks[0].options.postgres.url"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// The README's "Running a private tracker", step by step, with the shipped
/// `dist/private-tracker.yaml` (addresses and paths moved into the test's).
#[test]
fn the_readme_walkthrough_with_the_shipped_configuration() {
    let dir = TempDir::new("site-readme");
    let pg = Postgres::start("site-readme");
    let url = format!(
        "postgresql://{}@{}:{}/{}?sslmode=disable",
        pg.user(),
        pg.host(),
        pg.port(),
        pg.dbname()
    );
    let (http_port, udp_port) = (free_tcp_port(), free_udp_port());
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dist/private-tracker.yaml"
    ))
    .unwrap();
    let text = shipped
        .replace("${KARUTA_DB}", &url)
        .replacen("0.0.0.0:6969", &format!("127.0.0.1:{http_port}"), 1)
        .replacen("0.0.0.0:6969", &format!("127.0.0.1:{udp_port}"), 1)
        .replace("127.0.0.1:6880", &format!("127.0.0.1:{}", free_tcp_port()))
        .replace(
            "/var/lib/karuta/privtrak.journal",
            &dir.path().join("journal").display().to_string(),
        );
    let config = dir.path().join("private-tracker.yaml");
    support::write_config(&config, &text);

    // 2. karuta migrate, then start.
    let out = support::karuta_command(&["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        said.matches("applied migrations [1, 2]").count(),
        1,
        "{said}"
    );
    let mut karuta = Karuta::start(&config);

    // 3. The site registers a user and a torrent.
    let passkey = "0123456789abcdef0123456789abcdef";
    pg.psql(&format!(
        "INSERT INTO karuta.users (user_id, passkey) VALUES (1, '{passkey}')"
    ));
    pg.psql("INSERT INTO karuta.torrents (info_hash) VALUES (decode('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'hex'))");

    // 4. The user's client announces.
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let aa = "%aa".repeat(20);
    let announce = |up: u64, event: &str| {
        http::get(
            http,
            &format!(
                "/{passkey}/announce?info_hash={aa}&peer_id=-qB4630-000000000001&port=6881&uploaded={up}&downloaded=0&left=1000&event={event}"
            ),
        )
        .send()
        .unwrap()
        .text()
    };
    let started = Instant::now();
    while announce(0, "started").contains("failure reason") {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{}",
            announce(0, "started")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(announce(5000, "").contains("8:intervali1800e"));
    assert_eq!(karuta.stop(), Some(0), "{}", karuta.log());

    // 5. What the user is credited.
    assert_eq!(
        pg.psql("SELECT user_id, encode(info_hash, 'hex'), uploaded, downloaded, credited_uploaded, credited_downloaded FROM karuta.transfers"),
        format!("1|{}|5000|0|5000|0", "aa".repeat(20))
    );
}
