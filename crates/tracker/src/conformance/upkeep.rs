//! What keeps a store's totals right over time: stale peers expire,
//! statistics count swarms and peers, and concurrent announces are all
//! counted.

use std::sync::Arc;
use std::time::Duration;

use bittorrent::{AddressFamily, AnnounceResponse, Event};

use super::{MakeStore, StoreTestConfig, announce, counts, ih, peer, peers_for};
use crate::{StoreError, StoreStats};

pub async fn stale_peers_expire(make: MakeStore<'_>) {
    let cfg = StoreTestConfig {
        peer_lifetime: Duration::from_secs(1),
        gc_interval: Duration::from_millis(200),
        reporting_interval: Duration::from_millis(50),
    };
    let s = make(cfg);
    let f = AddressFamily::V4;
    let (h, stale, fresh) = (ih(11), peer(f, 1), peer(f, 2));
    s.put_leecher(h, stale).await.unwrap();
    s.put_seeder(ih(12), stale).await.unwrap();
    // `fresh` keeps announcing; `stale` goes quiet.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while tokio::time::Instant::now() < deadline {
        s.put_leecher(h, fresh).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    assert_eq!(
        peers_for(&*s, h, true, 50, peer(f, 3)).await.unwrap(),
        vec![fresh.addr()]
    );
    // A swarm whose peers all expired is gone.
    assert_eq!(
        peers_for(&*s, ih(12), false, 50, peer(f, 3)).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    tokio::time::sleep(cfg.reporting_interval * 4).await;
    assert_eq!(
        s.stats(),
        StoreStats {
            swarms: 1,
            seeders: 0,
            leechers: 1
        }
    );
    s.stop().await.unwrap();
}

pub async fn stats_count_swarms_and_peers(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let (v4, v6) = (AddressFamily::V4, AddressFamily::V6);
    s.put_seeder(ih(1), peer(v4, 1)).await.unwrap();
    for (h, p) in [
        (1, peer(v4, 2)),
        (1, peer(v6, 2)),
        (2, peer(v4, 3)),
        (2, peer(v4, 4)),
    ] {
        s.put_leecher(ih(h), p).await.unwrap();
    }
    let want = StoreStats {
        swarms: 3,
        seeders: 1,
        leechers: 4,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.stats() != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.stats(), want);
}

pub async fn concurrent_announces_are_all_counted(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    const TASKS: u16 = 8;
    const PER_TASK: u16 = 250;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let mut resp = AnnounceResponse::default();
            for i in 0..PER_TASK {
                let n = t * PER_TASK + i + 1;
                let f = if n.is_multiple_of(2) {
                    AddressFamily::V4
                } else {
                    AddressFamily::V6
                };
                let event = if i.is_multiple_of(5) {
                    Event::Completed
                } else {
                    Event::Started
                };
                let left = if event == Event::Completed { 0 } else { 1 };
                resp.clear();
                s.announce(&announce(ih(20), peer(f, n), event, left, 30), &mut resp)
                    .await
                    .unwrap();
                assert!(resp.peer_count() <= 30);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let total = u32::from(TASKS * PER_TASK);
    let (c4, i4, s4) = counts(&*s, ih(20), AddressFamily::V4).await;
    let (c6, i6, s6) = counts(&*s, ih(20), AddressFamily::V6).await;
    assert_eq!(c4 + i4 + c6 + i6, total);
    assert_eq!(c4 + c6, total / 5);
    // Snatches are per torrent: both families report all of them.
    assert_eq!((s4, s6), (total / 5, total / 5));
}
