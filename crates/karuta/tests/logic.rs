//! The hook chain end to end on the real memory store: pre-hooks can reject,
//! attach typed facts, and skip the response or the store write; post-hooks
//! run after; hooks are stopped exactly once on reload and on shutdown; a
//! reload keeps the swarms.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use karuta::Tracker;
use karuta::config::{self, ConfigSource};
use serde::Deserialize;
use test_support::TempDir;
use tracker::bittorrent::{
    AddressFamily, AnnounceRequest, AnnounceResponse, ClientError, Event, InfoHash, Peer, PeerId,
    ScrapeRequest, ScrapeResponse,
};
use tracker::testing::FnHook;
use tracker::{
    DriverConfig, Hook, ReadyOrBoxed, Registry, RequestContext, StopReason, TrackerError,
};

/// What the test hooks saw, in order.
#[derive(Default)]
struct Journal {
    events: Mutex<Vec<String>>,
    stops: AtomicUsize,
    /// Why each stop happened, in order.
    reasons: Mutex<Vec<StopReason>>,
}

impl Journal {
    fn log(&self, s: String) {
        self.events.lock().unwrap().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.events.lock().unwrap())
    }
}

#[derive(Deserialize)]
struct ProbeOptions {
    label: String,
    #[serde(default)]
    reject_port: Option<u16>,
    #[serde(default)]
    skip_response: bool,
    #[serde(default)]
    skip_swarm_interaction: bool,
}
impl DriverConfig for ProbeOptions {}

/// A fact a pre-hook attaches for later hooks.
struct SeenBy(String);

/// A hook that journals what it sees (the label of the hook before it, the
/// peers in the response so far), then does what its options say.
fn probe(options: ProbeOptions, journal: &Arc<Journal>) -> FnHook {
    let label = options.label.clone();
    let (announces, scrapes, stops) = (
        Arc::clone(journal),
        Arc::clone(journal),
        Arc::clone(journal),
    );
    FnHook::new()
        .on_announce_future(move |ctx, req, resp| {
            let o = &options;
            let seen = ctx
                .extensions
                .get::<SeenBy>()
                .map(|s| s.0.clone())
                .unwrap_or_default();
            announces.log(format!(
                "{} port={} seen={seen} peers={}",
                o.label,
                req.peer.port,
                resp.peer_count()
            ));
            if o.reject_port == Some(req.peer.port) {
                return ReadyOrBoxed::ready(Err(ClientError::new("port not welcome").into()));
            }
            ctx.extensions.insert(SeenBy(o.label.clone()));
            ctx.skip_response |= o.skip_response;
            ctx.skip_swarm_interaction |= o.skip_swarm_interaction;
            // Waiting hooks work as well as ready ones.
            ReadyOrBoxed::boxed(async { Ok(()) })
        })
        .on_scrape(move |_, req, _| {
            scrapes.log(format!("{label} scrape {}", req.info_hashes.len()));
            Ok(())
        })
        .on_stop(move |reason| {
            stops.stops.fetch_add(1, Ordering::SeqCst);
            stops.reasons.lock().unwrap().push(reason);
        })
}

#[derive(Deserialize)]
struct Unreachable {}
impl DriverConfig for Unreachable {}

fn registry(journal: &Arc<Journal>) -> Arc<Registry> {
    let mut r = karuta::default_registry();
    // A hook whose construction waits for a service that is not there.
    r.register_hook_async("unreachable", |_: Unreachable| async {
        tokio::task::yield_now().await;
        Err(tracker::ConfigError::new("", "cannot reach the service"))
    });
    let j = Arc::clone(journal);
    r.register_hook("probe", move |options: ProbeOptions| {
        Ok(Arc::new(probe(options, &j)) as Arc<dyn Hook>)
    });
    Arc::new(r)
}

async fn start(journal: &Arc<Journal>, yaml: &str) -> Tracker {
    let reg = registry(journal);
    let loaded = config::parse(&ConfigSource::Embedded, yaml, &reg).expect("config");
    Tracker::start(reg, loaded).await.expect("start")
}

const IH: InfoHash = InfoHash([0x42; 20]);

fn announce(port: u16, left: u64, event: Event) -> AnnounceRequest {
    let peer = Peer::new(
        PeerId([port as u8; 20]),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        port,
    );
    tracker::conformance::announce(IH, peer, event, left, 50)
}

/// One announce the way a frontend runs it: handle, (reply), after.
async fn run(t: &Tracker, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
    let logic = t.logic();
    let mut ctx = RequestContext::new();
    let mut resp = AnnounceResponse::default();
    logic.handle_announce(&mut ctx, req, &mut resp).await?;
    logic.after_announce(&mut ctx, req, &mut resp).await;
    Ok(resp)
}

async fn scrape(t: &Tracker) -> (u32, u32, u32) {
    let s = t.store().scrape(IH, AddressFamily::V4).await.unwrap();
    (s.complete, s.incomplete, s.snatches)
}

const CHAIN: &str = "
chihaya:
  announce_interval: 20m
  min_announce_interval: 10m
  prehooks:
    - name: probe
      options: {label: first, reject_port: 1000}
    - name: probe
      options: {label: second}
  posthooks:
    - name: probe
      options: {label: post}
";

/// A tracker started from a file holding `CHAIN`, which the test may rewrite
/// before reloading. Returns the tracker, the file, and the folder holding it.
async fn start_from_file(journal: &Arc<Journal>, tag: &str) -> (Tracker, PathBuf, TempDir) {
    let dir = TempDir::new(&format!("logic-{tag}"));
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, CHAIN).unwrap();
    let reg = registry(journal);
    let source = ConfigSource::File(path.clone());
    let loaded = config::load(&source, &reg).unwrap();
    let t = Tracker::start(reg, loaded).await.unwrap();
    (t, path, dir)
}

#[tokio::test]
async fn pre_hooks_then_store_then_post_hooks() {
    let journal = Arc::new(Journal::default());
    let t = start(&journal, CHAIN).await;

    let resp = run(&t, &announce(2000, 10, Event::Started)).await.unwrap();
    assert_eq!(resp.interval.as_secs(), 20 * 60);
    assert_eq!(resp.min_interval.as_secs(), 10 * 60);
    assert_eq!((resp.complete, resp.incomplete), (0, 1));
    assert_eq!(
        journal.take(),
        [
            "first port=2000 seen= peers=0",
            "second port=2000 seen=first peers=0",
            "post port=2000 seen=second peers=0"
        ]
    );

    let resp = run(&t, &announce(2001, 0, Event::Completed)).await.unwrap();
    assert_eq!(resp.ipv4_peers.len(), 1, "the seeder gets the leecher");
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 1, 1));
    // Post-hooks see the filled response.
    assert_eq!(journal.take()[2], "post port=2001 seen=second peers=1");

    // A rejection stops the chain: no later hook, no store write, client text kept.
    let err = run(&t, &announce(1000, 10, Event::Started))
        .await
        .unwrap_err();
    assert_eq!(err.client_message(), "port not welcome");
    assert_eq!(journal.take(), ["first port=1000 seen= peers=0"]);
    assert_eq!(scrape(&t).await, (1, 1, 1));

    // Scrapes go through the pre-hooks too.
    let logic = t.logic();
    let req = ScrapeRequest {
        address_family: AddressFamily::V4,
        info_hashes: vec![IH, InfoHash([1; 20])],
        ..ScrapeRequest::default()
    };
    let mut resp = ScrapeResponse::default();
    let mut ctx = RequestContext::new();
    logic
        .handle_scrape(&mut ctx, &req, &mut resp)
        .await
        .unwrap();
    logic.after_scrape(&mut ctx, &req, &mut resp).await;
    assert_eq!(
        journal.take(),
        ["first scrape 2", "second scrape 2", "post scrape 2"]
    );
    assert_eq!(resp.files.len(), 2);
    assert_eq!(
        (
            resp.files[0].complete,
            resp.files[0].incomplete,
            resp.files[0].snatches
        ),
        (1, 1, 1)
    );
    assert_eq!(resp.files[1].complete + resp.files[1].incomplete, 0);
    drop(logic);
    t.shutdown().await;
}

/// A tracker whose one pre-hook is a probe with `options`, and whose swarm
/// has one seeder.
async fn start_with_a_seeder(options: &str) -> Tracker {
    let journal = Arc::new(Journal::default());
    let yaml = format!(
        "chihaya:\n  udp:\n    addr: \"127.0.0.1:0\"\n  prehooks:\n    - name: probe\n      options: {options}\n"
    );
    let t = start(&journal, &yaml).await;
    t.store()
        .put_seeder(IH, announce(7, 0, Event::None).peer)
        .await
        .unwrap();
    t
}

#[tokio::test]
async fn skip_swarm_interaction_reads_without_writing() {
    let t = start_with_a_seeder("{label: ro, skip_swarm_interaction: true}").await;
    let resp = run(&t, &announce(3000, 10, Event::Started)).await.unwrap();
    assert_eq!(resp.ipv4_peers.len(), 1, "peers are still read");
    assert_eq!((resp.complete, resp.incomplete), (1, 0));
    assert_eq!(scrape(&t).await, (1, 0, 0), "the announcer was not stored");
    t.shutdown().await;
}

#[tokio::test]
async fn skip_response_writes_after_the_reply() {
    let t = start_with_a_seeder("{label: fill, skip_response: true}").await;
    let logic = t.logic();
    let req = announce(3000, 10, Event::Started);
    let (mut ctx, mut resp) = (RequestContext::new(), AnnounceResponse::default());
    logic
        .handle_announce(&mut ctx, &req, &mut resp)
        .await
        .unwrap();
    assert_eq!(resp.peer_count(), 0, "the store was not read");
    assert_eq!(scrape(&t).await, (1, 0, 0), "nor written yet");
    logic.after_announce(&mut ctx, &req, &mut resp).await;
    assert!(ctx.swarm_written());
    assert_eq!(scrape(&t).await, (1, 1, 0), "written after the reply");

    // The post-phase write applies events the same way the one-step write does.
    for (port, left, event, want) in [
        (3000, 0, Event::Completed, (2, 0, 1)),
        (3000, 0, Event::Stopped, (1, 0, 1)),
    ] {
        let req = announce(port, left, event);
        let (mut ctx, mut resp) = (RequestContext::new(), AnnounceResponse::default());
        logic
            .handle_announce(&mut ctx, &req, &mut resp)
            .await
            .unwrap();
        logic.after_announce(&mut ctx, &req, &mut resp).await;
        assert_eq!(scrape(&t).await, want, "{event:?}");
    }
    drop(logic);
    t.shutdown().await;
}

#[tokio::test]
async fn hooks_stop_once_on_reload_and_shutdown_and_swarms_survive_reload() {
    let journal = Arc::new(Journal::default());
    let (mut t, path, _dir) = start_from_file(&journal, "reload").await;

    run(&t, &announce(2000, 10, Event::Started)).await.unwrap();
    assert_eq!(journal.stops.load(Ordering::SeqCst), 0);

    // Reload into a chain of one hook: the three old hooks stop, once each.
    std::fs::write(
        &path,
        "chihaya:\n  udp:\n    addr: \"127.0.0.1:0\"\n  prehooks:\n    - name: probe\n      options: {label: only}\n",
    )
    .unwrap();
    t.reload().await.unwrap();
    assert_eq!(journal.stops.load(Ordering::SeqCst), 3);
    assert_eq!(*journal.reasons.lock().unwrap(), [StopReason::Reload; 3]);
    journal.take();

    // The swarm announced before the reload is served after it.
    let resp = run(&t, &announce(2001, 10, Event::Started)).await.unwrap();
    assert_eq!(resp.ipv4_peers.len(), 1);
    assert_eq!(resp.ipv4_peers[0].port(), 2000);
    assert_eq!(journal.take(), ["only port=2001 seen= peers=0"]);

    // A failing reload changes nothing and stops nothing.
    std::fs::write(
        &path,
        "chihaya:\n  udp:\n    addr: \"127.0.0.1:0\"\n  prehooks:\n    - name: nonexistent\n",
    )
    .unwrap();
    let err = t.reload().await.unwrap_err();
    assert!(
        err.to_string().contains("chihaya.prehooks[0].name"),
        "{err}"
    );
    assert_eq!(journal.stops.load(Ordering::SeqCst), 3);
    assert_eq!(t.reloads(), 1);

    t.shutdown().await;
    assert_eq!(journal.stops.load(Ordering::SeqCst), 4);
    assert_eq!(
        journal.reasons.lock().unwrap().last(),
        Some(&StopReason::Shutdown)
    );
}

#[tokio::test]
async fn a_hook_that_fails_to_build_stops_those_built_before_it() {
    let journal = Arc::new(Journal::default());
    let reg = registry(&journal);
    let yaml = "chihaya:\n  udp:\n    addr: \"127.0.0.1:0\"\n  prehooks:\n    - name: probe\n      options: {label: a}\n  posthooks:\n    - name: unreachable\n";
    let loaded = config::parse(&ConfigSource::Embedded, yaml, &reg).unwrap();
    let err = Tracker::start(reg, loaded)
        .await
        .err()
        .expect("start fails");
    assert!(
        err.detail
            .starts_with("chihaya.posthooks[0].options: cannot reach the service"),
        "{err}"
    );
    assert_eq!(
        journal.stops.load(Ordering::SeqCst),
        1,
        "the probe built before it was stopped"
    );
}

#[tokio::test]
async fn a_reload_waits_for_requests_in_flight_before_stopping_old_hooks() {
    let journal = Arc::new(Journal::default());
    let (mut t, path, _dir) = start_from_file(&journal, "drain").await;

    // A request is still running on the current logic when the reload comes.
    let in_flight = t.logic();
    std::fs::write(
        &path,
        "chihaya:\n  udp:\n    addr: \"127.0.0.1:0\"\n  storage:\n    config:\n      shard_count: 3\n",
    )
    .unwrap();
    let stops = Arc::clone(&journal);
    let request_finishes = async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            stops.stops.load(Ordering::SeqCst),
            0,
            "old hooks stopped under a running request"
        );
        drop(in_flight);
    };
    let (reloaded, ()) = tokio::join!(t.reload(), request_finishes);
    reloaded.unwrap();
    assert_eq!(journal.stops.load(Ordering::SeqCst), 3);
    // The storage section changed in the file, but the store did not: the
    // configuration in effect says so.
    assert_eq!(t.config().tracker.storage.config, serde_json::Value::Null);
    t.shutdown().await;
}
