//! chihaya's `TestPeerStore` cases, each run once per address family, plus
//! graduating an unknown peer and stopping a store that holds peers.

use bittorrent::AddressFamily;

use super::{DNE, MakeStore, StoreTestConfig, counts, ih, peer, peers_for};
use crate::StoreError;

/// The `_v4` and `_v6` cases of a case that takes the family.
macro_rules! per_family {
    ($($case:ident => $v4:ident, $v6:ident;)*) => {$(
        pub async fn $v4(make: MakeStore<'_>) {
            $case(make, AddressFamily::V4).await
        }
        pub async fn $v6(make: MakeStore<'_>) {
            $case(make, AddressFamily::V6).await
        }
    )*};
}

per_family! {
    empty_store => empty_store_v4, empty_store_v6;
    put_leecher => put_leecher_v4, put_leecher_v6;
    delete_leecher => delete_leecher_v4, delete_leecher_v6;
    put_seeder => put_seeder_v4, put_seeder_v6;
    delete_seeder => delete_seeder_v4, delete_seeder_v6;
    graduate_leecher => graduate_leecher_v4, graduate_leecher_v6;
}

async fn empty_store(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p) = (ih(1), peer(f, 1));
    assert_eq!(s.delete_seeder(h, p).await, DNE);
    assert_eq!(s.delete_leecher(h, p).await, DNE);
    assert_eq!(
        peers_for(&*s, h, false, 50, p).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    assert_eq!(
        peers_for(&*s, h, true, 50, p).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    assert_eq!(counts(&*s, h, f).await, (0, 0, 0));
    s.stop().await.unwrap();
}

async fn put_leecher(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_leecher(h, p).await.unwrap();
    // A seeder sees both leechers; another leecher sees p; p does not see itself.
    let seeder = peer(f, 3);
    let seen = peers_for(&*s, h, true, 50, seeder).await.unwrap();
    assert!(
        seen.contains(&p.addr()) && seen.contains(&helper.addr()),
        "{seen:?}"
    );
    let seen = peers_for(&*s, h, false, 50, helper).await.unwrap();
    assert_eq!(seen, vec![p.addr()]);
    assert_eq!(counts(&*s, h, f).await, (0, 2, 0));
    // Putting again changes nothing.
    s.put_leecher(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 2, 0));
}

async fn delete_leecher(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_leecher(h, p).await.unwrap();
    s.delete_leecher(h, p).await.unwrap();
    let seen = peers_for(&*s, h, true, 50, peer(f, 3)).await.unwrap();
    assert_eq!(seen, vec![helper.addr()]);
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    assert_eq!(s.delete_leecher(h, p).await, DNE);
    // A leecher is not a seeder.
    assert_eq!(s.delete_seeder(h, helper).await, DNE);
}

async fn put_seeder(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_seeder(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (1, 1, 0));
    // A leecher sees the seeder; another seeder does not.
    assert_eq!(
        peers_for(&*s, h, false, 50, helper).await.unwrap(),
        vec![p.addr()]
    );
    let other_seeder = peer(f, 3);
    assert_eq!(
        peers_for(&*s, h, true, 50, other_seeder).await.unwrap(),
        vec![helper.addr()]
    );
    // put_seeder on a leecher moves it.
    s.put_seeder(h, helper).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (2, 0, 0));
}

async fn delete_seeder(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_seeder(h, p).await.unwrap();
    s.delete_seeder(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    assert!(
        peers_for(&*s, h, false, 50, helper)
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(s.delete_seeder(h, p).await, DNE);
}

async fn graduate_leecher(make: MakeStore<'_>, f: AddressFamily) {
    let s = make(StoreTestConfig::default());
    let (h, p, helper) = (ih(1), peer(f, 1), peer(f, 2));
    s.put_leecher(h, helper).await.unwrap();
    s.put_leecher(h, p).await.unwrap();
    s.graduate_leecher(h, p).await.unwrap();
    assert_eq!(s.delete_leecher(h, p).await, DNE);
    assert_eq!(
        peers_for(&*s, h, false, 50, helper).await.unwrap(),
        vec![p.addr()]
    );
    assert_eq!(counts(&*s, h, f).await, (1, 1, 1));
    s.delete_seeder(h, p).await.unwrap();
    s.delete_leecher(h, helper).await.unwrap();
    assert_eq!(counts(&*s, h, f).await.0 + counts(&*s, h, f).await.1, 0);
}

pub async fn graduate_unknown_peer_adds_seeder(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let (h, p) = (ih(1), peer(AddressFamily::V4, 1));
    s.graduate_leecher(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, AddressFamily::V4).await, (1, 0, 1));
    // Graduating a seeder again is not another snatch.
    s.graduate_leecher(h, p).await.unwrap();
    assert_eq!(counts(&*s, h, AddressFamily::V4).await, (1, 0, 1));
}

pub async fn stop_returns_ok(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    s.put_leecher(ih(1), peer(AddressFamily::V4, 1))
        .await
        .unwrap();
    assert_eq!(s.stop().await, Ok(()));
}
