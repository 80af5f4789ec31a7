//! The suite every delta handler passes: exactly once across retries,
//! replays, batches cut differently after a restart, several journals, and a
//! reopened handler (a restart). One line runs it for a handler:
//!
//! ```ignore
//! privtrak::delta_handler_conformance!(MyFixture::new());
//! ```
//!
//! A fixture opens handlers on one backing store (a file, a database) and
//! reads back the totals that store holds per (user, torrent).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bittorrent::{InfoHash, PeerId};

use crate::{Batch, BatchId, Delta, DeltaEvent, DeltaHandler, JournalId, UserId};

pub type Totals = BTreeMap<(UserId, InfoHash), (u64, u64)>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler's backing store, for the suite.
pub trait HandlerFixture: Send + Sync {
    /// A new handler on the same store (the first, or one after a restart).
    fn open(&self) -> BoxFuture<'_, Arc<dyn DeltaHandler>>;
    /// Bytes credited per (user, torrent), as the store holds them.
    fn totals(&self) -> BoxFuture<'_, Totals>;
}

/// Batch `first..=last` of `journal`: delta `n` credits `n` bytes up and
/// `2n` down to user `n % 3` on torrent `n % 2`.
pub fn batch(journal: JournalId, first: u64, last: u64) -> Batch {
    Batch {
        id: BatchId {
            journal,
            first,
            last,
        },
        deltas: (first..=last).map(delta).collect(),
    }
}

fn delta(n: u64) -> Delta {
    Delta {
        seq: n,
        user: UserId([(n % 3) as u8 + 1; 16]),
        info_hash: InfoHash([(n % 2) as u8 + 1; 20]),
        peer_id: PeerId([(n % 5) as u8; 20]),
        addr: Some("192.0.2.1:6881".parse().expect("an address")),
        event: if n.is_multiple_of(7) {
            DeltaEvent::Completed
        } else {
            DeltaEvent::None
        },
        uploaded: n,
        downloaded: 2 * n,
        left: n % 2,
        seed_seconds: 1,
        leech_seconds: 0,
        reported_at: UNIX_EPOCH + Duration::from_secs(1_790_000_000 + n),
        total_uploaded: 1000 + n,
        total_downloaded: 2000 + n,
        site_user: n.is_multiple_of(3).then_some(n as i64 + 100),
        upload_factor: 1.0,
        download_factor: 1.0,
        baseline_unknown: false,
    }
}

/// What the suite expects after deltas `1..=last` of one journal.
pub fn expected(last: u64) -> Totals {
    let mut t = Totals::new();
    for d in (1..=last).map(delta) {
        let e = t.entry((d.user, d.info_hash)).or_default();
        e.0 += d.uploaded;
        e.1 += d.downloaded;
    }
    t
}

fn merge(mut a: Totals, b: Totals) -> Totals {
    for (k, (u, d)) in b {
        let e = a.entry(k).or_default();
        e.0 += u;
        e.1 += d;
    }
    a
}

pub const J1: JournalId = JournalId([0x11; 16]);
pub const J2: JournalId = JournalId([0x22; 16]);

pub async fn applies_batches_and_reports_the_last_position(f: &dyn HandlerFixture) {
    let h = f.open().await;
    assert_eq!(h.applied_through(J1).await.unwrap(), 0);
    h.handle(&batch(J1, 1, 10)).await.unwrap();
    h.handle(&batch(J1, 11, 25)).await.unwrap();
    assert_eq!(h.applied_through(J1).await.unwrap(), 25);
    assert_eq!(f.totals().await, expected(25));
}

pub async fn a_retried_batch_counts_once(f: &dyn HandlerFixture) {
    let h = f.open().await;
    let b = batch(J1, 1, 10);
    h.handle(&b).await.unwrap();
    // The acknowledgement was lost: privtrak sends it again, twice.
    h.handle(&b).await.unwrap();
    h.handle(&b).await.unwrap();
    assert_eq!(f.totals().await, expected(10));
}

pub async fn a_replay_after_a_restart_counts_once(f: &dyn HandlerFixture) {
    let h = f.open().await;
    h.handle(&batch(J1, 1, 10)).await.unwrap();
    h.handle(&batch(J1, 11, 20)).await.unwrap();
    drop(h);
    // A restart: a new handler on the same store, and privtrak replays from
    // an older position with other boundaries (5..=14 straddles 10).
    let h = f.open().await;
    assert_eq!(h.applied_through(J1).await.unwrap(), 20);
    h.handle(&batch(J1, 5, 14)).await.unwrap();
    h.handle(&batch(J1, 15, 30)).await.unwrap();
    assert_eq!(h.applied_through(J1).await.unwrap(), 30);
    assert_eq!(f.totals().await, expected(30));
}

pub async fn journals_are_counted_apart(f: &dyn HandlerFixture) {
    let h = f.open().await;
    h.handle(&batch(J1, 1, 10)).await.unwrap();
    // Another journal (another tracker, or a journal started anew) reuses
    // positions: they are its own.
    h.handle(&batch(J2, 1, 4)).await.unwrap();
    assert_eq!(h.applied_through(J1).await.unwrap(), 10);
    assert_eq!(h.applied_through(J2).await.unwrap(), 4);
    assert_eq!(f.totals().await, merge(expected(10), expected(4)));
}

pub async fn a_reopened_handler_keeps_what_was_applied(f: &dyn HandlerFixture) {
    let h = f.open().await;
    h.handle(&batch(J1, 1, 50)).await.unwrap();
    h.close().await.unwrap();
    drop(h);
    let h = f.open().await;
    assert_eq!(h.applied_through(J1).await.unwrap(), 50);
    h.handle(&batch(J1, 1, 50)).await.unwrap();
    assert_eq!(f.totals().await, expected(50));
}

/// Runs every case of the suite against a fresh fixture each, made by `$fixture`.
#[macro_export]
macro_rules! delta_handler_conformance {
    ($fixture:expr) => {
        $crate::delta_handler_conformance!(@cases $fixture;
            applies_batches_and_reports_the_last_position,
            a_retried_batch_counts_once,
            a_replay_after_a_restart_counts_once,
            journals_are_counted_apart,
            a_reopened_handler_keeps_what_was_applied,
        );
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        mod delta_handler_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = $fixture;
                    $crate::conformance::$case(&fixture).await;
                }
            )*
        }
    };
}
