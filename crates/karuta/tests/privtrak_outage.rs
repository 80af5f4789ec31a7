//! privtrak with a handler in trouble, over real sockets: a slow handler
//! does not slow announces; a failing one leaves announces going, the
//! deltas piling up in the journal and not in memory, `/health` degraded,
//! until the journal is full and announces are refused (`/health` 503);
//! once the handler recovers, everything reaches it and the totals equal
//! what the simulated clients reported, exactly.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use karuta::ops::OpsServer;
use privtrak::handlers::memory::MemoryHandler;
use support::accounting::{Client, Totals, Tracker, Via, truth};
use test_support::{TempDir, http};

async fn start(h: &MemoryHandler, dir: &std::path::Path) -> (karuta::Tracker, OpsServer) {
    let mut registry = karuta::default_registry();
    let handler = h.clone();
    privtrak::register_with(&mut registry, "privtrak", move || Arc::new(handler.clone()));
    let yaml = format!(
        r#"karuta:
  http:
    addr: "127.0.0.1:0"
    announce_routes: ["/announce", "/:passkey/announce"]
  udp:
    addr: "127.0.0.1:0"
    private_key: "outage"
    workers: 1
  storage:
    name: memory
  prehooks:
    - name: privtrak
      options:
        batch_size: 256
        flush_interval: 20ms
        journal_path: {}/journal
        journal_sync_interval: 1ms
        journal_max_bytes: 1MiB
        max_wait: 100ms
"#,
        dir.display()
    );
    support::start_in_process(registry, &yaml).await
}

/// A gauge or counter of `/metrics` (no labels).
fn metric(ops: &OpsServer, name: &str) -> f64 {
    let body = http::get(ops.local_addr(), "/metrics")
        .send()
        .unwrap()
        .text();
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn health(ops: &OpsServer) -> (u16, serde_json::Value) {
    let r = http::get(ops.local_addr(), "/health").send().unwrap();
    (r.status, serde_json::from_str(&r.text()).unwrap())
}

/// Runs each group of clients on its own thread for `d`.
fn drive(groups: &mut [Vec<Client>], t: Tracker, d: Duration) {
    std::thread::scope(|scope| {
        for (g, clients) in groups.iter_mut().enumerate() {
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(g as u64);
                let end = Instant::now() + d;
                while Instant::now() < end {
                    let i = rng.usize(0..clients.len());
                    clients[i].step(t, &mut rng);
                }
            });
        }
    });
}

fn failed(groups: &[Vec<Client>]) -> u64 {
    groups.iter().flatten().map(|c| c.failed).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_then_failing_handler_throttles_announces_and_loses_nothing() {
    let dir = TempDir::new("privtrak-outage");
    let h = MemoryHandler::new();
    let (tracker, ops) = start(&h, dir.path()).await;
    let t = Tracker {
        http: tracker.http().unwrap().local_addr().unwrap(),
        udp: tracker.udp().unwrap().local_addr(),
    };
    let mut groups: Vec<Vec<Client>> = (0..6u8)
        .map(|g| {
            (0..4u8)
                .map(|i| {
                    let via = [Via::HttpPath, Via::HttpQuery, Via::Udp][usize::from((g + i) % 3)];
                    Client::new(g * 4 + i, i % 2, 0, via)
                })
                .collect()
        })
        .collect();

    tokio::task::block_in_place(|| {
        // privtrak's own metric names, next to karuta's.
        drive(&mut groups, t, Duration::from_millis(1500));
        // 24 clients, each its own user; one between two sessions has no
        // record for a moment.
        let users = metric(&ops, "chihaya_privtrak_users_count");
        assert!((12.0..=24.0).contains(&users), "{users} users");
        assert_eq!(metric(&ops, "karuta_privtrak_records"), users);
        assert!(metric(&ops, "chihaya_privtrak_gc_duration_milliseconds_count") >= 0.0);
        // Slow: every batch takes 100 ms; announces are not held up.
        h.set_delay(Duration::from_millis(100));
        drive(&mut groups, t, Duration::from_secs(2));
        assert_eq!(failed(&groups), 0, "a slow handler failed announces");
        assert_eq!(health(&ops).0, 200);
        h.set_delay(Duration::ZERO);

        // Failing: announces go on, the journal grows, memory does not.
        h.set_down(true);
        drive(&mut groups, t, Duration::from_millis(50));
        let pending_then = metric(&ops, "karuta_privtrak_deltas_pending");
        let memory_then = metric(&ops, "karuta_privtrak_memory_bytes");
        // Degraded as soon as the handler has refused a batch.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (status, body) = loop {
            let (status, body) = health(&ops);
            if body["status"] == "degraded" || Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "degraded", "{body}");
        assert!(
            body["reasons"][0]
                .as_str()
                .unwrap()
                .contains("refuses batches"),
            "{body}"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while failed(&groups) == 0 {
            assert!(Instant::now() < deadline, "the journal never filled");
            drive(&mut groups, t, Duration::from_millis(300));
        }
        // Full: refused ("tracker busy, try again later"), /health 503.
        let pending_full = metric(&ops, "karuta_privtrak_deltas_pending");
        assert!(metric(&ops, "karuta_privtrak_journal_bytes") >= f64::from(1 << 20));
        assert!(metric(&ops, "karuta_privtrak_busy_total") > 0.0);
        let (status, body) = health(&ops);
        assert_eq!(status, 503, "{body}");
        assert!(
            body["reasons"].to_string().contains("journal is full"),
            "{body}"
        );
        std::thread::sleep(Duration::from_millis(1200));
        // A full journal: 1 MiB of deltas (within 2 %).
        let full = f64::from(1 << 20) / privtrak::journal::RECORD_LEN as f64;
        assert!(
            pending_full >= full * 0.98,
            "{pending_then} then {pending_full} pending"
        );
        // The records of the same 24 clients: a few bytes either way as
        // sessions end and start, never the ~150 bytes a waiting delta
        // would take if it were held in memory.
        let memory_full = metric(&ops, "karuta_privtrak_memory_bytes");
        assert!(
            memory_full <= memory_then + 4096.0,
            "memory {memory_then} -> {memory_full} with {pending_full} deltas waiting"
        );

        // Back: everything drains, announces are taken again.
        h.set_down(false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&ops, "karuta_privtrak_deltas_pending") > 0.0 {
            assert!(Instant::now() < deadline, "the journal did not drain");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(health(&ops).0, 200);
    });
    let mut all: Vec<Client> = groups.into_iter().flatten().collect();
    let truth = tokio::task::block_in_place(|| truth(&mut all, t));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&ops, "karuta_privtrak_deltas_pending") > 0.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = Totals::new();
    for d in h.deltas() {
        let e = got
            .entry((d.user.to_hex(), d.info_hash.to_string()))
            .or_default();
        e.0 += d.uploaded;
        e.1 += d.downloaded;
    }
    got.retain(|_, v| *v != (0, 0));
    assert_eq!(got, truth);
    tracker.shutdown().await;
    ops.stop().await;
}
