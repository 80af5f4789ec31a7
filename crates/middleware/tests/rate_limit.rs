//! `rate limit` while a million distinct client addresses (half IPv4
//! addresses, half IPv6 /64s) announce and scrape through the hook: the
//! process's resident memory stays what it was once the tables were built
//! (at most `table_size` × 8 bytes a kind), every address gets a slot of its
//! own (but for fingerprint collisions), nobody is refused, and a client that spent its budget before the flood
//! is still refused after it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use middleware::rate_limit::{Config, Kind, ManualClock, RateLimit, TableStats};
use tracker::bittorrent::{
    AnnounceRequest, AnnounceResponse, Peer, PeerId, ScrapeRequest, ScrapeResponse,
};
use tracker::{Hook, ReadyOrBoxed, RequestContext, TrackerError};

const ADDRESSES: u32 = 1_000_000;
/// What the process may gain meanwhile: far less than a map of a million
/// addresses (tens of MiB), more than the test's own noise.
const SLACK: u64 = 2 << 20;

fn rss() -> u64 {
    test_support::process::rss_bytes("self")
}

/// The `n`th address: even `n` an IPv4 address, odd `n` an IPv6 /64.
fn address(n: u32) -> IpAddr {
    if n.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (n >> 16) as u16,
            n as u16,
            0,
            0,
            0,
            1,
        ))
    }
}

/// The hook's verdict, which needs no waiting.
fn verdict(f: ReadyOrBoxed<'_, Result<(), TrackerError>>) -> Result<(), String> {
    match f {
        ReadyOrBoxed::Ready(Some(r)) => r.map_err(|e| e.client_message().to_owned()),
        _ => panic!("rate limit waited"),
    }
}

fn announce(
    hook: &RateLimit<ManualClock>,
    req: &mut AnnounceRequest,
    ip: IpAddr,
) -> Result<(), String> {
    req.peer = Peer::new(PeerId([7; 20]), ip, 6881);
    let (mut ctx, mut resp) = (RequestContext::new(), AnnounceResponse::default());
    verdict(hook.handle_announce(&mut ctx, req, &mut resp))
}

fn scrape(
    hook: &RateLimit<ManualClock>,
    req: &mut ScrapeRequest,
    ip: IpAddr,
) -> Result<(), String> {
    req.client = ip;
    let (mut ctx, mut resp) = (RequestContext::new(), ScrapeResponse::default());
    verdict(hook.handle_scrape(&mut ctx, req, &mut resp))
}

fn placed(s: &TableStats) -> u64 {
    s.entries + s.evicted_full + s.evicted_partial
}

#[test]
fn a_million_addresses_leave_memory_as_the_tables_were_built() {
    let config = Config::default();
    let table_bytes = config.table_size * 8;
    let before_tables = rss();
    let hook = RateLimit::with_clock(config, ManualClock::new(1_000)).unwrap();
    let built = rss();
    // Written when built: resident from the start, not as clients come.
    assert!(
        built - before_tables > table_bytes * 2 * 9 / 10,
        "two tables of {table_bytes} bytes: {} bytes",
        built - before_tables
    );
    let mut req = AnnounceRequest::default();
    let mut scrape_req = ScrapeRequest::default();

    // A client spends its whole budget of each kind before the flood.
    let spender: IpAddr = "198.51.100.7".parse().unwrap();
    let burst = hook.config().announce_burst;
    assert!((0..burst).all(|_| announce(&hook, &mut req, spender).is_ok()));
    assert!(announce(&hook, &mut req, spender).is_err());
    let burst = hook.config().scrape_burst;
    assert!((0..burst).all(|_| scrape(&hook, &mut scrape_req, spender).is_ok()));
    assert!(scrape(&hook, &mut scrape_req, spender).is_err());

    for n in 0..ADDRESSES {
        let ip = address(n);
        assert_eq!(announce(&hook, &mut req, ip), Ok(()), "{ip}");
        assert_eq!(scrape(&hook, &mut scrape_req, ip), Ok(()), "{ip}");
        // 100 s over the flood: buckets filled again and half spent ones
        // are both evicted.
        hook.clock().set(1_000 + u64::from(n / 10));
    }
    let after = rss();
    assert!(
        after <= built + SLACK,
        "resident memory grew by {} bytes over {ADDRESSES} addresses",
        after - built
    );
    assert!(after - before_tables <= 2 * table_bytes + SLACK);

    for kind in [Kind::Announce, Kind::Scrape] {
        let s = hook.stats(kind).unwrap();
        assert_eq!((s.slots, s.bytes), (1 << 20, table_bytes), "{kind:?}");
        assert!(s.entries <= s.slots);
        // A slot each, but for the few whose 22-bit fingerprint another
        // client of their set has (about 2 in a million; they share a budget).
        let clients = u64::from(ADDRESSES) + 1;
        assert!(
            (clients - 20..=clients).contains(&placed(&s)),
            "a slot each: {s:?}"
        );
        assert!(
            s.entries > s.slots * 4 / 5,
            "sets fill before they evict: {s:?}"
        );
        assert_eq!(s.refusals, 1, "only the spender: {s:?}");
    }
    // The spender's bucket is the last of its set to go: the flood did not
    // give it a fresh budget (600 announces, 120 scrapes), only what 100 s
    // less 1 ms refill at 2 announces and 1 scrape a second.
    let passes =
        |f: &mut dyn FnMut() -> Result<(), String>| (0..1000).take_while(|_| f().is_ok()).count();
    assert_eq!(passes(&mut || announce(&hook, &mut req, spender)), 199);
    assert_eq!(
        announce(&hook, &mut req, spender).unwrap_err(),
        "rate limit exceeded: try again in 1 s"
    );
    assert_eq!(passes(&mut || scrape(&hook, &mut scrape_req, spender)), 99);
}
