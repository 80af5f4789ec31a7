use super::*;
use std::net::Ipv4Addr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn limit(config: Config) -> RateLimit<ManualClock> {
    RateLimit::with_clock(config, ManualClock::new(1_000)).unwrap()
}

fn small(per_minute: u32, burst: u32) -> Config {
    Config {
        announces_per_minute: per_minute,
        announce_burst: burst,
        table_size: 1 << 10,
        ..Config::default()
    }
}

fn passes(rl: &RateLimit<ManualClock>, n: usize, ip: IpAddr) -> usize {
    (0..n)
        .filter(|_| rl.admit(Kind::Announce, ip).is_ok())
        .count()
}

#[test]
fn a_bucket_refills_at_its_rate_up_to_its_burst() {
    // 6 a minute: a token every 10 s; a bucket of 3.
    let rl = limit(small(6, 3));
    let a = ip("192.0.2.1");
    assert_eq!(passes(&rl, 3, a), 3, "the burst at once");
    let wait = rl.admit(Kind::Announce, a).unwrap_err();
    assert_eq!(wait, RetryAfter { millis: 10_000 });
    assert_eq!(
        refusal_message(wait),
        "rate limit exceeded: try again in 10 s"
    );
    rl.clock().advance(Duration::from_millis(7_500));
    let wait = rl.admit(Kind::Announce, a).unwrap_err();
    assert_eq!(wait.millis, 2_500);
    assert_eq!(wait.seconds(), 3, "rounded up");
    rl.clock().advance(Duration::from_millis(2_499));
    assert!(rl.admit(Kind::Announce, a).is_err(), "1 ms early");
    rl.clock().advance(Duration::from_millis(1));
    assert_eq!(passes(&rl, 5, a), 1, "one token came back");
    // 25 s: two and a half tokens; two are spent, the half stays.
    rl.clock().advance(Duration::from_secs(25));
    assert_eq!(passes(&rl, 5, a), 2);
    assert_eq!(rl.admit(Kind::Announce, a).unwrap_err().millis, 5_000);
    // A long rest fills the bucket, no more.
    rl.clock().advance(Duration::from_secs(3600));
    assert_eq!(passes(&rl, 10, a), 3);
    // Refused requests cost nothing: waiting out one interval is enough.
    for _ in 0..100 {
        assert!(rl.admit(Kind::Announce, a).is_err());
    }
    rl.clock().advance(Duration::from_secs(10));
    assert_eq!(passes(&rl, 5, a), 1);
    let s = rl.stats(Kind::Announce).unwrap();
    assert_eq!(s.refusals, 1 + 1 + 1 + 4 + 3 + 1 + 7 + 100 + 4);
    assert_eq!(s.entries, 1);
}

#[test]
fn rates_that_do_not_divide_a_minute_and_a_bucket_of_one() {
    // 7 a minute: 8571 ms a token.
    let rl = limit(small(7, 1));
    let a = ip("192.0.2.1");
    assert!(rl.admit(Kind::Announce, a).is_ok());
    assert_eq!(rl.admit(Kind::Announce, a).unwrap_err().millis, 8_571);
    // The most a client ever waits is one interval: a minute at 1 a minute.
    let rl = limit(small(1, 1));
    assert!(rl.admit(Kind::Announce, a).is_ok());
    let wait = rl.admit(Kind::Announce, a).unwrap_err();
    assert_eq!(
        refusal_message(wait),
        "rate limit exceeded: try again in 60 s"
    );
    // 1000 a second: a token a millisecond.
    let rl = limit(small(MAX_PER_MINUTE, 10));
    assert_eq!(passes(&rl, 20, a), 10);
    rl.clock().advance(Duration::from_millis(5));
    assert_eq!(passes(&rl, 20, a), 5);
}

#[test]
fn ipv6_clients_are_their_64_and_ipv4_clients_their_address() {
    let rl = limit(small(1, 2));
    // One /64: one budget, whatever the interface id.
    assert!(rl.admit(Kind::Announce, ip("2001:db8:1:2::1")).is_ok());
    assert!(
        rl.admit(Kind::Announce, ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .is_ok()
    );
    assert!(
        rl.admit(Kind::Announce, ip("2001:db8:1:2:abcd::7"))
            .is_err()
    );
    // The next /64 is another client.
    assert_eq!(passes(&rl, 3, ip("2001:db8:1:3::1")), 2);
    // IPv4: the full address; an IPv4-mapped IPv6 address is that address.
    assert_eq!(passes(&rl, 3, ip("192.0.2.1")), 2);
    assert!(rl.admit(Kind::Announce, ip("::ffff:192.0.2.1")).is_err());
    assert_eq!(passes(&rl, 3, ip("192.0.2.2")), 2);

    // Other prefixes: a /48 and a /24.
    let rl = limit(Config {
        ipv6_prefix: 48,
        ipv4_prefix: 24,
        ..small(1, 2)
    });
    assert!(rl.admit(Kind::Announce, ip("2001:db8:1:2::1")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("2001:db8:1:ffff::1")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("2001:db8:1::")).is_err());
    assert!(rl.admit(Kind::Announce, ip("2001:db8:2::1")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("198.51.100.1")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("198.51.100.254")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("198.51.100.9")).is_err());
    assert!(rl.admit(Kind::Announce, ip("198.51.101.9")).is_ok());
    // A /128: every address its own.
    let rl = limit(Config {
        ipv6_prefix: 128,
        ..small(1, 1)
    });
    assert!(rl.admit(Kind::Announce, ip("2001:db8::1")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("2001:db8::2")).is_ok());
    assert!(rl.admit(Kind::Announce, ip("2001:db8::1")).is_err());
}

#[test]
fn announces_and_scrapes_have_separate_budgets() {
    let rl = limit(Config {
        scrapes_per_minute: 1,
        scrape_burst: 1,
        ..small(1, 2)
    });
    let a = ip("192.0.2.1");
    assert!(rl.admit(Kind::Scrape, a).is_ok());
    assert!(rl.admit(Kind::Scrape, a).is_err());
    assert_eq!(passes(&rl, 3, a), 2, "the announces' budget is untouched");
    // A kind that is not limited always passes, and has no table.
    let rl = limit(Config {
        scrapes_per_minute: 0,
        ..small(1, 1)
    });
    assert!((0..10).all(|_| rl.admit(Kind::Scrape, a).is_ok()));
    assert!(rl.stats(Kind::Scrape).is_none());
}

#[test]
fn a_full_set_evicts_its_earliest_bucket_instead_of_growing() {
    // One set of 8 slots; a minute a token, a bucket of 1.
    let rl = limit(Config {
        table_size: 8,
        ..small(1, 1)
    });
    let client = |n: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n));
    for n in 1..=8 {
        assert!(rl.admit(Kind::Announce, client(n)).is_ok());
        rl.clock().advance(Duration::from_secs(1));
    }
    let s = rl.stats(Kind::Announce).unwrap();
    assert_eq!((s.entries, s.evicted_full + s.evicted_partial), (8, 0));
    // Each is limited for a minute from its announce.
    for n in 1..=8 {
        assert!(rl.admit(Kind::Announce, client(n)).is_err(), "{n}");
    }
    // A ninth client takes the slot of the first (the earliest bucket),
    // which then starts again with a full bucket.
    assert!(rl.admit(Kind::Announce, client(9)).is_ok());
    let s = rl.stats(Kind::Announce).unwrap();
    assert_eq!((s.entries, s.evicted_partial, s.slots), (8, 1, 8));
    for n in 2..=9 {
        assert!(rl.admit(Kind::Announce, client(n)).is_err(), "{n} kept");
    }
    assert!(rl.admit(Kind::Announce, client(1)).is_ok(), "1 was evicted");
    // Client 2 is now the earliest: evicted by client 1.
    assert!(rl.admit(Kind::Announce, client(2)).is_ok());
    // Once buckets are full again, an eviction loses nothing.
    rl.clock().advance(Duration::from_secs(120));
    assert!(rl.admit(Kind::Announce, client(10)).is_ok());
    let s = rl.stats(Kind::Announce).unwrap();
    assert_eq!((s.entries, s.evicted_partial, s.evicted_full), (8, 3, 1));
}

#[test]
fn a_reload_keeps_the_budgets_but_two_hooks_never_share_them() {
    let kept = KeptTables::default();
    let a = ip("192.0.2.1");
    let spent = |rl: &RateLimit| rl.admit(Kind::Announce, a).is_err();
    let running = kept.hook(small(1, 1)).unwrap();
    assert!(!spent(&running));
    // The reload's hook goes on with the running one's buckets...
    let next = kept.hook(small(1, 1)).unwrap();
    assert!(spent(&next), "the budget survived the reload");
    // ...but a second entry with the same options in that configuration
    // has buckets of its own.
    let sibling = kept.hook(small(1, 1)).unwrap();
    assert!(!spent(&sibling));
    // Once the old configuration is gone, the next reload takes over
    // from its successor again.
    drop(running);
    let after = kept.hook(small(1, 1)).unwrap();
    assert!(spent(&after));
    // Other options, other tables.
    assert!(!spent(&kept.hook(small(2, 1)).unwrap()));
    drop((next, sibling, after));
    assert!(!spent(&kept.hook(small(1, 1)).unwrap()), "nothing kept");
}

#[test]
fn concurrent_requests_never_overspend() {
    let rl = Arc::new(limit(small(1, 1000)));
    let a = ip("192.0.2.7");
    let passed: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| passes(&rl, 1000, a))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(passed, 1000, "exactly the burst, whoever spends it");
}

#[test]
fn bad_options_name_their_key() {
    let err = |c: Config| c.validate().unwrap_err();
    assert_eq!(
        err(Config {
            announce_burst: 0,
            ..Config::default()
        })
        .key,
        "announce_burst"
    );
    assert_eq!(
        err(Config {
            scrapes_per_minute: 60_001,
            ..Config::default()
        })
        .to_string(),
        "scrapes_per_minute: 60001 is more than 60000 (1000 a second)"
    );
    assert_eq!(
        err(Config {
            scrape_burst: u32::MAX,
            ..Config::default()
        })
        .to_string(),
        "scrape_burst: 4294967295 is more than 1099511627 at 60 a minute (an empty bucket would take over 34 years to fill)"
    );
    // At 1000 a second any burst fits.
    Config {
        announces_per_minute: MAX_PER_MINUTE,
        announce_burst: u32::MAX,
        ..Config::default()
    }
    .validate()
    .unwrap();
    assert_eq!(
        err(Config {
            ipv6_prefix: 0,
            ..Config::default()
        })
        .to_string(),
        "ipv6_prefix: 0 is not from 1 to 128"
    );
    assert_eq!(
        err(Config {
            ipv4_prefix: 33,
            ..Config::default()
        })
        .key,
        "ipv4_prefix"
    );
    for bad in [0, 4, 1000, 1 << 29] {
        assert_eq!(
            err(Config {
                table_size: bad,
                ..Config::default()
            })
            .key,
            "table_size",
            "{bad}"
        );
    }
    assert_eq!(
        err(Config {
            announces_per_minute: 0,
            scrapes_per_minute: 0,
            ..Config::default()
        })
        .message,
        "\"rate limit\" limits nothing: announces_per_minute and scrapes_per_minute are both 0"
    );
    // A kind switched off needs no burst.
    Config {
        scrapes_per_minute: 0,
        scrape_burst: 0,
        ..Config::default()
    }
    .validate()
    .unwrap();
}

#[test]
fn metrics_report_each_table() {
    let rl = limit(small(1, 1));
    let a = ip("192.0.2.1");
    rl.admit(Kind::Announce, a).unwrap();
    rl.admit(Kind::Announce, a).unwrap_err();
    let mut out = Vec::new();
    rl.metrics(&mut out);
    let find = |name: &str, kind: &str| {
        out.iter()
            .find(|m| {
                m.name == name
                    && m.labels.contains(&("kind", kind.to_owned()))
                    && !m.labels.contains(&("bucket", "full".to_owned()))
            })
            .map(|m| m.value.clone())
            .unwrap_or_else(|| panic!("{name} {kind}: {out:?}"))
    };
    use tracker::telemetry::MetricValue::{Counter, Gauge};
    assert_eq!(find("karuta_rate_limit_entries", "announce"), Gauge(1.0));
    assert_eq!(
        find("karuta_rate_limit_refusals_total", "announce"),
        Counter(1)
    );
    assert_eq!(
        find("karuta_rate_limit_table_bytes", "scrape"),
        Gauge(8.0 * 1024.0)
    );
    assert_eq!(
        find("karuta_rate_limit_evictions_total", "announce"),
        Counter(0)
    );
}
