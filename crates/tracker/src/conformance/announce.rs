//! The one-step announce: events applied in one call, [`SwarmChange`] doing
//! what an announce does, snatches counted once per completion and per
//! torrent, and scrapes of many info hashes in request order.

use bittorrent::{AddressFamily, AnnounceResponse, Event, ScrapeRequest, ScrapeResponse};

use super::{
    DNE, MakeStore, StoreTestConfig, addrs, announce, announced, counts, ih, peer, peers_for,
};
use crate::{StoreError, SwarmChange};

pub async fn apply_changes_the_swarm_like_an_announce(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V6;
    let (h, p) = (ih(14), peer(f, 1));
    // Removing from a swarm that does not exist fails and creates nothing.
    assert_eq!(s.apply(h, p, SwarmChange::Remove).await, DNE);
    assert_eq!(
        peers_for(&*s, h, true, 50, peer(f, 2)).await,
        Err(StoreError::ResourceDoesNotExist)
    );
    s.apply(h, p, SwarmChange::PutLeecher).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 1, 0));
    s.apply(h, p, SwarmChange::Graduate).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (1, 0, 1));
    s.apply(h, p, SwarmChange::PutSeeder).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (1, 0, 1));
    s.apply(h, p, SwarmChange::Remove).await.unwrap();
    assert_eq!(counts(&*s, h, f).await, (0, 0, 1));
    assert_eq!(s.apply(h, p, SwarmChange::Remove).await, DNE);
}

pub async fn announce_applies_events(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let (h, a, b) = (ih(7), peer(f, 1), peer(f, 2));
    let resp = announced(&*s, &announce(h, a, Event::Started, 100, 50)).await;
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (0, 1, 0));
    assert!(addrs(&resp).is_empty(), "the announcer never gets itself");

    let resp = announced(&*s, &announce(h, b, Event::Started, 100, 50)).await;
    assert_eq!((resp.complete, resp.incomplete), (0, 2));
    assert_eq!(addrs(&resp), vec![a.addr()]);

    let resp = announced(&*s, &announce(h, a, Event::Completed, 0, 50)).await;
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 1, 1));
    assert_eq!(addrs(&resp), vec![b.addr()]);

    // A regular announce with left = 0 keeps a seeder a seeder.
    let resp = announced(&*s, &announce(h, a, Event::None, 0, 50)).await;
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 1, 1));

    let resp = announced(&*s, &announce(h, b, Event::Stopped, 100, 50)).await;
    assert_eq!((resp.complete, resp.incomplete), (1, 0));
    assert_eq!(counts(&*s, h, f).await, (1, 0, 1));

    // Stopping an unknown peer on an unknown swarm is harmless.
    let resp = announced(&*s, &announce(ih(8), b, Event::Stopped, 100, 50)).await;
    assert_eq!((resp.complete, resp.incomplete), (0, 0));
}

pub async fn snatches_counted_once_per_completion(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    let h = ih(10);
    let mut resp = AnnounceResponse::default();
    for n in 1..=3 {
        s.announce(&announce(h, peer(f, n), Event::Started, 10, 0), &mut resp)
            .await
            .unwrap();
        s.announce(&announce(h, peer(f, n), Event::Completed, 0, 0), &mut resp)
            .await
            .unwrap();
    }
    // A repeated `completed` from a seeder is not a new snatch.
    s.announce(&announce(h, peer(f, 1), Event::Completed, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(counts(&*s, h, f).await, (3, 0, 3));
    resp.clear();
    s.announce(&announce(h, peer(f, 9), Event::None, 10, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(resp.snatches, 3);
    // Leaving does not undo a snatch.
    s.announce(&announce(h, peer(f, 2), Event::Stopped, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(counts(&*s, h, f).await, (2, 1, 3));
    // Snatches are the torrent's: a completion over IPv6 counts for IPv4
    // scrapes and announces too, while seeders and leechers stay per family.
    let v6 = AddressFamily::V6;
    s.announce(&announce(h, peer(v6, 1), Event::Completed, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!((resp.complete, resp.incomplete, resp.snatches), (1, 0, 4));
    assert_eq!(counts(&*s, h, f).await, (2, 1, 4));
    assert_eq!(counts(&*s, h, v6).await, (1, 0, 4));
    resp.clear();
    s.announce(&announce(h, peer(f, 3), Event::None, 0, 0), &mut resp)
        .await
        .unwrap();
    assert_eq!(resp.snatches, 4);
}

pub async fn scrape_many_in_request_order(make: MakeStore<'_>) {
    let s = make(StoreTestConfig::default());
    let f = AddressFamily::V4;
    s.put_seeder(ih(1), peer(f, 1)).await.unwrap();
    s.put_leecher(ih(2), peer(f, 1)).await.unwrap();
    s.put_leecher(ih(2), peer(f, 2)).await.unwrap();
    let req = ScrapeRequest {
        address_family: f,
        info_hashes: vec![ih(2), ih(3), ih(1)],
        ..ScrapeRequest::default()
    };
    let mut resp = ScrapeResponse::default();
    s.scrape_many(&req, &mut resp).await.unwrap();
    let got: Vec<_> = resp
        .files
        .iter()
        .map(|f| (f.info_hash, f.complete, f.incomplete))
        .collect();
    assert_eq!(got, vec![(ih(2), 0, 2), (ih(3), 0, 0), (ih(1), 1, 0)]);
}
