//! The delta handler conformance suite for the built-in handlers, and what
//! is particular to `jsonl`: a torn last batch cut off at open.

use std::path::PathBuf;
use std::sync::Arc;

use privtrak::DeltaHandler;
use privtrak::conformance::{BoxFuture, HandlerFixture, J1, Totals, batch, expected};
use privtrak::handlers::jsonl::JsonlHandler;
use privtrak::handlers::memory::MemoryHandler;

/// The in-memory handler: "reopening" hands out the same store.
struct Memory(MemoryHandler);

impl HandlerFixture for Memory {
    fn open(&self) -> BoxFuture<'_, Arc<dyn DeltaHandler>> {
        Box::pin(async { Arc::new(self.0.clone()) as Arc<dyn DeltaHandler> })
    }
    fn totals(&self) -> BoxFuture<'_, Totals> {
        Box::pin(async {
            let mut t = Totals::new();
            for d in self.0.deltas() {
                let e = t.entry((d.user, d.info_hash)).or_default();
                e.0 += d.uploaded;
                e.1 += d.downloaded;
            }
            t
        })
    }
}

mod memory {
    use super::*;
    privtrak::delta_handler_conformance!(Memory(MemoryHandler::new()));
}

/// A jsonl file in a temp dir; totals read back from the file itself.
struct Jsonl {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Jsonl {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltas.jsonl");
        Jsonl { _dir: dir, path }
    }
}

fn jsonl_totals(path: &std::path::Path) -> Totals {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut t = Totals::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let hex16 = |s: &str| -> [u8; 16] {
            std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        };
        let user = privtrak::UserId(hex16(v["user"].as_str().unwrap()));
        let ih: bittorrent::InfoHash = v["info_hash"].as_str().unwrap().parse().unwrap();
        let e = t.entry((user, ih)).or_default();
        e.0 += v["uploaded"].as_u64().unwrap();
        e.1 += v["downloaded"].as_u64().unwrap();
    }
    t
}

impl HandlerFixture for Jsonl {
    fn open(&self) -> BoxFuture<'_, Arc<dyn DeltaHandler>> {
        Box::pin(async {
            Arc::new(JsonlHandler::open(&self.path).unwrap()) as Arc<dyn DeltaHandler>
        })
    }
    fn totals(&self) -> BoxFuture<'_, Totals> {
        Box::pin(async { jsonl_totals(&self.path) })
    }
}

mod jsonl {
    use super::*;
    privtrak::delta_handler_conformance!(Jsonl::new());

    #[tokio::test]
    async fn lines_have_exactly_the_documented_fields() {
        let f = Jsonl::new();
        let h = f.open().await;
        h.handle(&batch(J1, 1, 2)).await.unwrap();
        let text = std::fs::read_to_string(&f.path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let mut keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "batch",
                "downloaded",
                "event",
                "info_hash",
                "ip",
                "leech_seconds",
                "left",
                "peer_id",
                "port",
                "reported_at",
                "seed_seconds",
                "seq",
                "uploaded",
                "user"
            ]
        );
        assert_eq!(first["batch"], format!("{J1}:1-2"));
        assert_eq!(first["seq"], 0);
        assert_eq!(first["ip"], "192.0.2.1");
        assert_eq!(first["port"], 6881);
        assert_eq!(first["event"], "none");
        assert_eq!(first["reported_at"], "2026-09-21T14:13:21.000Z");
        assert_eq!(first["user"].as_str().unwrap().len(), 32);
        assert_eq!(first["peer_id"].as_str().unwrap().len(), 40);
    }

    /// A crash while a batch is written leaves part of it; the next open cuts
    /// it off, and privtrak's replay writes it whole, once.
    #[tokio::test]
    async fn a_torn_last_batch_is_cut_off_and_written_again_once() {
        for cut in [1usize, 100, 400, 1200] {
            let f = Jsonl::new();
            let h = f.open().await;
            h.handle(&batch(J1, 1, 10)).await.unwrap();
            h.handle(&batch(J1, 11, 20)).await.unwrap();
            drop(h);
            let whole = std::fs::read(&f.path).unwrap();
            let first_batch = whole
                .split(|&b| b == b'\n')
                .take(10)
                .map(|l| l.len() + 1)
                .sum::<usize>();
            // Keep the first batch and part of the second.
            std::fs::write(&f.path, &whole[..first_batch + cut]).unwrap();
            // A stale checkpoint must not matter either.
            let _ = std::fs::remove_file(f.path.with_extension("jsonl.state"));
            let h = f.open().await;
            assert_eq!(h.applied_through(J1).await.unwrap(), 10, "cut {cut}");
            assert_eq!(f.totals().await, expected(10));
            h.handle(&batch(J1, 11, 20)).await.unwrap();
            h.handle(&batch(J1, 11, 20)).await.unwrap();
            assert_eq!(f.totals().await, expected(20));
        }
    }

    #[tokio::test]
    async fn damage_in_the_middle_is_refused() {
        let f = Jsonl::new();
        let h = f.open().await;
        h.handle(&batch(J1, 1, 10)).await.unwrap();
        h.handle(&batch(J1, 11, 20)).await.unwrap();
        drop(h);
        let text = std::fs::read_to_string(&f.path).unwrap();
        let damaged = text.replacen("\"seq\":3", "\"seq\":7", 1);
        std::fs::write(&f.path, damaged).unwrap();
        let _ = std::fs::remove_file(f.path.with_extension("jsonl.state"));
        let e = JsonlHandler::open(&f.path).err().expect("refused");
        assert!(e.to_string().contains("line 7 of batch"), "{e}");
    }
}
