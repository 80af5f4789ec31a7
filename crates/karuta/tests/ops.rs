//! The operations endpoints against a tracker serving real HTTP and UDP
//! traffic: chihaya's metric names with their labels and plausible values
//! (checked by promtool), `/health` following the store, `/stats` rendered
//! by headless Chromium, the Grafana dashboard's names, and logs that never
//! show a passkey or a token.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use frontend_udp::client::{AnnounceParams, UdpTrackerClient};
use karuta::config::{self, ConfigSource};
use karuta::ops::OpsServer;
use serde::Deserialize;
use storage_memory::{MemoryConfig, MemoryStore};
use test_support::{http, percent_encode};
use tracker::bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, ClientError, InfoHash, Peer, PeerId, Scrape,
};
use tracker::config::ConfigDuration;
use tracker::stats::HistogramSnapshot;
use tracker::testing::FnHook;
use tracker::{DriverConfig, Hook, PeerStore, ReadyOrBoxed, StoreError, StoreFuture, StoreStats};

/// The memory store, with a switch that makes it report itself unavailable.
struct Flaky {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
}

#[derive(Deserialize)]
struct FlakyOptions {}
impl DriverConfig for FlakyOptions {}

impl PeerStore for Flaky {
    fn announce<'a>(
        &'a self,
        req: &'a AnnounceRequest,
        resp: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()> {
        self.inner.announce(req, resp)
    }
    fn put_seeder(&self, ih: InfoHash, p: Peer) -> StoreFuture<'_, ()> {
        self.inner.put_seeder(ih, p)
    }
    fn delete_seeder(&self, ih: InfoHash, p: Peer) -> StoreFuture<'_, ()> {
        self.inner.delete_seeder(ih, p)
    }
    fn put_leecher(&self, ih: InfoHash, p: Peer) -> StoreFuture<'_, ()> {
        self.inner.put_leecher(ih, p)
    }
    fn delete_leecher(&self, ih: InfoHash, p: Peer) -> StoreFuture<'_, ()> {
        self.inner.delete_leecher(ih, p)
    }
    fn graduate_leecher(&self, ih: InfoHash, p: Peer) -> StoreFuture<'_, ()> {
        self.inner.graduate_leecher(ih, p)
    }
    fn announce_peers<'a>(
        &'a self,
        ih: InfoHash,
        seeder: bool,
        n: u32,
        p: Peer,
        out: &'a mut AnnounceResponse,
    ) -> StoreFuture<'a, ()> {
        self.inner.announce_peers(ih, seeder, n, p, out)
    }
    fn scrape(&self, ih: InfoHash, f: AddressFamily) -> StoreFuture<'_, Scrape> {
        self.inner.scrape(ih, f)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn gc_durations(&self) -> Option<HistogramSnapshot> {
        self.inner.gc_durations()
    }
    fn check(&self) -> StoreFuture<'_, ()> {
        if self.down.load(Ordering::SeqCst) {
            ReadyOrBoxed::ready(Err(StoreError::Unavailable("connection refused".into())))
        } else {
            ReadyOrBoxed::ready(Ok(()))
        }
    }
    fn stop(&self) -> StoreFuture<'_, ()> {
        self.inner.stop()
    }
}

#[derive(Deserialize)]
struct DenyOptions {}
impl DriverConfig for DenyOptions {}

/// Rejects the info hash 0xee….
fn deny() -> FnHook {
    FnHook::new().on_announce(|_, req, _| {
        if req.info_hash.0 == [0xee; 20] {
            Err(ClientError::new("unapproved torrent").into())
        } else {
            Ok(())
        }
    })
}

struct Running {
    tracker: karuta::Tracker,
    ops: OpsServer,
    down: Arc<AtomicBool>,
}

async fn start() -> Running {
    let down = Arc::new(AtomicBool::new(false));
    let mut registry = karuta::default_registry();
    let switch = Arc::clone(&down);
    registry.register_store("flaky", move |_: FlakyOptions| {
        let inner = MemoryStore::new(MemoryConfig {
            gc_interval: ConfigDuration(Duration::from_millis(200)),
            prometheus_reporting_interval: ConfigDuration(Duration::from_millis(50)),
            shard_count: 8,
            ..MemoryConfig::default()
        })
        .expect("a valid memory config");
        Ok(Arc::new(Flaky {
            inner,
            down: Arc::clone(&switch),
        }) as Arc<dyn PeerStore>)
    });
    registry.register_hook("deny", |_: DenyOptions| {
        Ok(Arc::new(deny()) as Arc<dyn Hook>)
    });
    let yaml = "karuta:\n  http:\n    addr: \"127.0.0.1:0\"\n    enable_request_timing: true\n    announce_routes: [\"/announce\", \"/:passkey/announce\"]\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"ops\"\n    enable_request_timing: true\n  storage:\n    name: flaky\n  prehooks:\n    - name: deny\n";
    let registry = Arc::new(registry);
    let loaded = config::parse(&ConfigSource::Embedded, yaml, &registry).unwrap();
    let tracker = karuta::Tracker::start(registry, loaded).await.unwrap();
    let ops = OpsServer::start("127.0.0.1:0".parse().unwrap(), tracker.observed())
        .await
        .unwrap();
    Running { tracker, ops, down }
}

/// A GET: status and body as text.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = http::get(addr, path).send().unwrap();
    (reply.status, reply.text())
}

/// Drives real traffic: UDP connect/announce/scrape, a bad connection id,
/// HTTP announces and scrapes, a malformed request, a hook rejection.
fn traffic(t: &karuta::Tracker) {
    let udp = t.udp().unwrap().local_addr();
    let mut c = UdpTrackerClient::new(udp, Duration::from_secs(3)).unwrap();
    for n in 1..=3u8 {
        c.announce(&AnnounceParams::new(
            InfoHash([1; 20]),
            PeerId([n; 20]),
            7000 + u16::from(n),
        ))
        .unwrap();
    }
    c.scrape(&[InfoHash([1; 20])]).unwrap();
    let mut bad = UdpTrackerClient::new(udp, Duration::from_secs(3)).unwrap();
    bad.set_connection_id(42);
    assert!(
        bad.announce(&AnnounceParams::new(
            InfoHash([1; 20]),
            PeerId([9; 20]),
            7009
        ))
        .is_err()
    );

    let http = t.http().unwrap().local_addr().unwrap();
    for n in 1..=2u8 {
        let q = format!(
            "/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left=0",
            percent_encode(&[2; 20]),
            percent_encode(&[n; 20]),
            8000 + u16::from(n)
        );
        assert_eq!(get(http, &q).0, 200);
    }
    assert_eq!(
        get(
            http,
            &format!("/scrape?info_hash={}", percent_encode(&[2; 20]))
        )
        .0,
        200
    );
    assert!(
        get(http, "/announce?info_hash=short")
            .1
            .contains("failure reason")
    );
    let denied = format!(
        "/announce?info_hash={}&peer_id={}&port=1&uploaded=0&downloaded=0&left=1",
        percent_encode(&[0xee; 20]),
        percent_encode(&[1; 20])
    );
    assert!(get(http, &denied).1.contains("unapproved torrent"));
}

/// `name{labels} value` lines of the exposition.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_real_traffic_have_chihayas_names_and_labels() {
    let r = start().await;
    let (tracker, ops) = (&r.tracker, r.ops.local_addr());
    tokio::task::block_in_place(|| traffic(tracker));
    tokio::time::sleep(Duration::from_millis(400)).await; // a GC and a stats refresh
    let (status, m) = tokio::task::block_in_place(|| get(ops, "/metrics"));
    assert_eq!(status, 200);

    // chihaya's histograms, with their labels.
    let v4 = |action: &str, err: &str| {
        format!("{{action=\"{action}\",address_family=\"IPv4\",error=\"{err}\"}}")
    };
    for (frontend, action, err, count) in [
        ("udp", "announce", "", 3.0),
        ("udp", "connect", "", 1.0),
        ("udp", "scrape", "", 1.0),
        ("udp", "announce", "error", 1.0),
        ("http", "announce", "", 2.0),
        ("http", "announce", "error", 2.0),
        ("http", "scrape", "", 1.0),
    ] {
        let series = format!(
            "chihaya_{frontend}_response_duration_milliseconds_count{}",
            v4(action, err)
        );
        assert_eq!(sample(&m, &series), count, "{series}");
    }
    let sum = sample(
        &m,
        &format!(
            "chihaya_http_response_duration_milliseconds_sum{}",
            v4("announce", "")
        ),
    );
    assert!(sum > 0.0 && sum < 2000.0, "milliseconds: {sum}");
    let le = "chihaya_udp_response_duration_milliseconds_bucket{action=\"announce\",address_family=\"IPv4\",error=\"\",le=\"+Inf\"}";
    assert_eq!(sample(&m, le), 3.0);
    assert!(sample(&m, "chihaya_storage_gc_duration_milliseconds_count") >= 1.0);
    assert_eq!(sample(&m, "chihaya_storage_infohashes_count"), 2.0);
    assert_eq!(sample(&m, "chihaya_storage_seeders_count"), 2.0);
    assert_eq!(sample(&m, "chihaya_storage_leechers_count"), 3.0);

    // karuta's own.
    assert_eq!(
        sample(
            &m,
            "karuta_requests_total{frontend=\"udp\",action=\"announce\",address_family=\"IPv4\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(
            &m,
            "karuta_request_errors_total{frontend=\"http\",action=\"announce\",address_family=\"IPv4\"}"
        ),
        2.0
    );
    assert_eq!(sample(&m, "karuta_udp_bad_connection_ids_total"), 1.0);
    assert_eq!(
        sample(&m, "karuta_hook_rejections_total{hook=\"deny\"}"),
        1.0
    );
    assert!(sample(&m, "karuta_bytes_received_total{frontend=\"udp\"}") >= 4.0 * 98.0);
    assert!(sample(&m, "karuta_bytes_sent_total{frontend=\"http\"}") > 0.0);
    assert_eq!(
        sample(&m, "karuta_http_connections_total"),
        5.0,
        "one per request"
    );
    assert_eq!(
        sample(
            &m,
            &format!(
                "karuta_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert!(sample(&m, "process_resident_memory_bytes") > 1e6);

    // promtool parses it; its only complaints are about chihaya's own names.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(m.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool failed to parse: {report}"
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let inherited = line.starts_with("chihaya_")
            && (line.contains("use base unit \"seconds\" instead of \"milliseconds\"")
                || line.contains("should not have \"_count\" suffix"));
        assert!(
            inherited,
            "promtool finding about karuta's own metrics: {line}"
        );
    }

    // The Grafana dashboard uses only exported names.
    let exported: BTreeSet<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/check-dashboard.py");
    let names = Command::new("python3")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        names.status.success(),
        "{}",
        String::from_utf8_lossy(&names.stderr)
    );
    let used = String::from_utf8(names.stdout).unwrap();
    assert!(used.lines().count() > 10, "{used}");
    for name in used.lines() {
        assert!(
            exported.contains(name),
            "the dashboard uses {name}, which karuta does not export"
        );
    }
    r.ops.stop().await;
    r.tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_store() {
    let r = start().await;
    let ops = r.ops.local_addr();
    let (status, body) = tokio::task::block_in_place(|| get(ops, "/health"));
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["frontends"].as_array().unwrap().len(), 2);

    r.down.store(true, Ordering::SeqCst);
    let (status, body) = tokio::task::block_in_place(|| get(ops, "/health"));
    assert_eq!(status, 503, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["status"], "unavailable");
    assert_eq!(
        j["reasons"][0],
        "storage: storage unavailable: connection refused"
    );

    r.down.store(false, Ordering::SeqCst);
    assert_eq!(
        tokio::task::block_in_place(|| get(ops, "/health")).0,
        200,
        "back when the store is"
    );
    r.ops.stop().await;
    r.tracker.shutdown().await;
}

/// Headless Chromium, as set up on these machines (see the machine notes).
fn chromium(args: &[&str], url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "karuta-chromium-{}-{}",
        std::process::id(),
        args.len()
    ));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (Debian's chromium package; scripts/test installs it)");
    let _ = std::fs::remove_dir_all(profile);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cell(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"))
        + id.len()
        + 6;
    dom[start..start + dom[start..].find('<').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stats_page_renders_the_trackers_numbers() {
    let r = start().await;
    let ops = r.ops.local_addr();
    tokio::task::block_in_place(|| traffic(&r.tracker));
    tokio::time::sleep(Duration::from_millis(2500)).await; // two samples for the rate
    let url = format!("http://{ops}/stats");
    let dom = tokio::task::block_in_place(|| chromium(&["--dump-dom"], &url));
    let stats = r.tracker.store().stats();
    assert_eq!(cell(&dom, "swarms"), stats.swarms.to_string());
    assert_eq!(cell(&dom, "seeders"), stats.seeders.to_string());
    assert_eq!(cell(&dom, "leechers"), stats.leechers.to_string());
    assert_eq!((stats.swarms, stats.seeders, stats.leechers), (2, 2, 3));
    assert_eq!(
        cell(&dom, "requests-udp"),
        "6",
        "a connect, 3 announces, a scrape, a bad id"
    );
    assert_eq!(cell(&dom, "requests-http"), "5");
    assert!(dom.contains("<svg"), "the chart");
    let json: serde_json::Value =
        serde_json::from_str(&tokio::task::block_in_place(|| get(ops, "/stats.json")).1).unwrap();
    assert_eq!(json["leechers"], 3);
    assert!(!json["history"].as_array().unwrap().is_empty());
    // A picture for people to look at.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("stats.png");
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::block_in_place(|| chromium(&[&arg, "--window-size=900,900"], &url));
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "a screenshot at {}",
        shot.display()
    );
    r.ops.stop().await;
    r.tracker.shutdown().await;
}

#[derive(Deserialize)]
struct NoOptions {}
impl DriverConfig for NoOptions {}

/// The port of the announce that [`panic_on_port`] panics on.
const PANIC_PORT: u16 = 6666;

/// A buggy hook: panics on the announce from port [`PANIC_PORT`].
fn panic_on_port() -> FnHook {
    FnHook::new().on_announce(|_, req, _| {
        assert_ne!(req.peer.port, PANIC_PORT, "the chosen request");
        Ok(())
    })
}

/// A broken hook: fails every scrape with an internal error (not the
/// client's fault).
fn broken_scrapes() -> FnHook {
    FnHook::new().on_scrape(|_, _, _| {
        Err(tracker::TrackerError::Internal(
            "a broken scrape hook".into(),
        ))
    })
}

/// What the process logs, for tests that look for a line.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Every thread's logs from the first call on (one subscriber per
    /// process, shared by the tests that run in it).
    fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            logs
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The first line containing `needle`, waiting up to 5 s for it.
    async fn line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.text().lines().find(|l| l.contains(needle)) {
                return l.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}; logs:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A tracker on the memory store with one UDP worker, an HTTP listener and
/// the ops server, running the pre-hook `hook` built by `build`.
async fn start_with_prehook<H: Hook>(hook: &str, build: fn() -> H) -> (karuta::Tracker, OpsServer) {
    let mut registry = karuta::default_registry();
    registry.register_hook(hook, move |_: NoOptions| {
        Ok(Arc::new(build()) as Arc<dyn Hook>)
    });
    let yaml = format!(
        "karuta:\n  http:\n    addr: \"127.0.0.1:0\"\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"ops\"\n    workers: 1\n  storage:\n    name: memory\n  prehooks:\n    - name: {hook}\n"
    );
    support::start_in_process(registry, &yaml).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_udp_worker_is_logged_when_it_dies_and_fails_health() {
    let logs = Logs::capture();
    let (tracker, ops) = start_with_prehook("panic on port", panic_on_port).await;
    let (status, body) = tokio::task::block_in_place(|| get(ops.local_addr(), "/health"));
    assert_eq!(status, 200, "{body}");

    let udp = tracker.udp().unwrap().local_addr();
    tokio::task::block_in_place(|| {
        let mut c = UdpTrackerClient::new(udp, Duration::from_secs(3)).unwrap();
        c.announce(&AnnounceParams::new(
            InfoHash([1; 20]),
            PeerId([1; 20]),
            7001,
        ))
        .expect("a healthy worker answers");
        let mut c = UdpTrackerClient::new(udp, Duration::from_millis(500)).unwrap();
        let dead = c.announce(&AnnounceParams::new(
            InfoHash([1; 20]),
            PeerId([2; 20]),
            PANIC_PORT,
        ));
        assert!(dead.is_err(), "a panicking worker sends no reply");
    });

    // Logged when it happens, with the panic's message, not only at stop.
    let line = logs.line("a udp worker panicked").await;
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("the chosen request"), "{line}");

    let (status, body) = tokio::task::block_in_place(|| get(ops.local_addr(), "/health"));
    assert_eq!(status, 503, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["status"], "unavailable");
    assert_eq!(
        j["reasons"],
        serde_json::json!(["udp: 0 of 1 workers running"]),
        "only the udp frontend is named"
    );
    ops.stop().await;
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_udp_log_failures_that_are_not_the_clients_alike() {
    let logs = Logs::capture();
    let (tracker, ops) = start_with_prehook("broken scrapes", broken_scrapes).await;
    let http = tracker.http().unwrap().local_addr().unwrap();
    let udp = tracker.udp().unwrap().local_addr();
    let (status, body) = tokio::task::block_in_place(|| {
        get(
            http,
            &format!("/scrape?info_hash={}", percent_encode(&[3; 20])),
        )
    });
    assert_eq!(status, 200);
    assert!(body.contains("internal server error"), "{body}");
    let udp_reply = tokio::task::block_in_place(|| {
        UdpTrackerClient::new(udp, Duration::from_secs(3))
            .unwrap()
            .scrape(&[InfoHash([3; 20])])
    });
    assert!(
        format!("{udp_reply:?}").contains("internal server error"),
        "{udp_reply:?}"
    );
    for frontend in ["http", "udp"] {
        let line = logs.line(&format!("{frontend} scrape failed")).await;
        assert!(line.contains("WARN"), "{line}");
        assert!(
            line.contains("internal error: a broken scrape hook"),
            "{line}"
        );
    }
    ops.stop().await;
    tracker.shutdown().await;
}
