//! `rate limit` in the real binary, over HTTP and UDP on 127.0.0.1: a client
//! over its budget is refused with the time to wait while other clients are
//! answered, for announces and scrapes, over both frontends, with one budget a
//! client whichever frontend it uses; a reload with the same options keeps
//! the budgets; and the tracker's memory stays put while 126,000 distinct
//! addresses announce. Addresses come from `allow_ip_spoofing` (announces),
//! X-Forwarded-For from a trusted proxy (HTTP scrapes) and the 127.0.0.0/8
//! source addresses the loopback interface answers for (UDP scrapes).

mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use frontend_udp::client::{AnnounceParams, UdpClientError, UdpTrackerClient};
use support::Karuta;
use test_support::bencode::failure_reason;
use test_support::{TempDir, free_tcp_port, http, percent_encode};
use tracker::bittorrent::udp::Reply;
use tracker::bittorrent::{InfoHash, PeerId};

const IH: InfoHash = InfoHash([0x6c; 20]);
const PEER: &[u8; 20] = b"-KR0001-ratelimit001";

/// 6 a minute (a token every 10 s), 3 announces or 2 scrapes at once.
const SMALL: &str = "        announces_per_minute: 6\n        announce_burst: 3\n        scrapes_per_minute: 6\n        scrape_burst: 2\n        table_size: 1024\n";

/// A tracker on both frontends with `rate limit` and these `options`.
struct Tracker {
    karuta: Karuta,
    http: SocketAddr,
    udp: SocketAddr,
    ops: SocketAddr,
    _dir: TempDir,
}

fn config(ops: SocketAddr, options: &str) -> String {
    format!(
        "karuta:\n  metrics_addr: \"{ops}\"\n  http:\n    addr: \"127.0.0.1:0\"\n    enable_keepalive: true\n    allow_ip_spoofing: true\n    trusted_proxies: [\"127.0.0.1\"]\n  udp:\n    addr: \"127.0.0.1:0\"\n    private_key: \"rate-limit\"\n    allow_ip_spoofing: true\n  storage:\n    name: memory\n  prehooks:\n    - name: \"rate limit\"\n      options:\n{options}"
    )
}

impl Tracker {
    fn start(options: &str) -> Tracker {
        let dir = TempDir::new("rate-limit");
        let ops: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let karuta = Karuta::start_text(dir.path(), &config(ops, options));
        Tracker {
            http: karuta.listening("http"),
            udp: karuta.listening("udp"),
            karuta,
            ops,
            _dir: dir,
        }
    }

    /// A GET with `headers`: `Err(failure reason)`, or `Ok` when served.
    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Result<(), String> {
        let reply = http::get(self.http, target)
            .headers(headers)
            .send()
            .unwrap();
        assert_eq!(reply.status, 200, "{target}: {reply:?}");
        failure_reason(&reply.body).map_or(Ok(()), Err)
    }

    /// An HTTP announce under the address `ip`.
    fn http_announce(&self, ip: &str) -> Result<(), String> {
        self.get(&announce_target(ip, "started"), &[])
    }

    /// Spends the budget of `ip` (3 announces over HTTP), and sees the
    /// next one refused.
    fn spend_http_announces(&self, ip: &str) {
        for _ in 0..3 {
            assert_eq!(self.http_announce(ip), Ok(()), "{ip}");
        }
        assert_refused(self.http_announce(ip));
    }

    /// An HTTP scrape by a client behind the trusted proxy (127.0.0.1).
    fn http_scrape(&self, client: &str) -> Result<(), String> {
        let target = format!("/scrape?info_hash={}", percent_encode(&IH.0));
        self.get(&target, &[("X-Forwarded-For", client)])
    }

    /// A UDP client sending from `source` (any address of 127.0.0.0/8).
    fn udp_client(&self, source: Ipv4Addr) -> UdpTrackerClient {
        let local = SocketAddr::new(IpAddr::V4(source), 0);
        UdpTrackerClient::bound_to(local, self.udp, Duration::from_secs(3)).unwrap()
    }

    /// The `/metrics` page.
    fn metrics(&self) -> Metrics {
        Metrics(http::get(self.ops, "/metrics").send().unwrap().text())
    }
}

fn announce_target(ip: &str, event: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=1&numwant=0&event={event}&ip={ip}",
        percent_encode(&IH.0),
        percent_encode(PEER)
    )
}

/// A UDP announce under the claimed address `ip` (0.0.0.0: the source's).
fn udp_announce(c: &mut UdpTrackerClient, ip: Ipv4Addr) -> Result<(), String> {
    let mut p = AnnounceParams::new(IH, PeerId(*PEER), 6882);
    p.ip = u32::from(ip);
    served(c.announce(&p))
}

fn udp_scrape(c: &mut UdpTrackerClient) -> Result<(), String> {
    served(c.scrape(&[IH]))
}

/// `Err(the BEP 15 error)`, or `Ok` when served.
fn served<T>(reply: Result<T, UdpClientError>) -> Result<(), String> {
    match reply {
        Ok(_) => Ok(()),
        Err(UdpClientError::Tracker(message)) => Err(message),
        Err(e) => panic!("{e}"),
    }
}

/// Asserts a refusal of a client that just spent its budget: the wait is
/// one token's, 10 s (9 when a second has passed since).
#[track_caller]
fn assert_refused(verdict: Result<(), String>) {
    let message = verdict.expect_err("refused");
    let wait = message
        .strip_prefix("rate limit exceeded: try again in ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{message:?}"));
    assert!((9..=10).contains(&wait), "{message:?}");
}

/// Series of a `/metrics` page.
struct Metrics(String);

impl Metrics {
    /// The value of `series` (name and labels, as written).
    fn get(&self, series: &str) -> f64 {
        let value = self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        });
        value.unwrap_or_else(|| panic!("no {series} in:\n{}", self.0))
    }

    /// Clients the `kind` table has placed: held, or evicted since.
    fn placed(&self, kind: &str) -> f64 {
        self.get(&format!("karuta_rate_limit_entries{{kind=\"{kind}\"}}"))
            + self.get(&format!(
                "karuta_rate_limit_evictions_total{{bucket=\"full\",kind=\"{kind}\"}}"
            ))
            + self.get(&format!(
                "karuta_rate_limit_evictions_total{{bucket=\"partial\",kind=\"{kind}\"}}"
            ))
    }
}

#[test]
fn over_http_a_client_over_its_budget_is_refused_and_others_are_not() {
    let mut t = Tracker::start(SMALL);
    t.spend_http_announces("10.0.0.1");
    assert_eq!(t.http_announce("10.0.0.2"), Ok(()), "another client");
    // An IPv6 client is its /64.
    for _ in 0..3 {
        assert_eq!(t.http_announce("2001:db8:1:2::1"), Ok(()));
    }
    assert_refused(t.http_announce("2001:db8:1:2:ffff::9"));
    assert_eq!(t.http_announce("2001:db8:1:3::1"), Ok(()), "the next /64");

    // Scrapes have their own budget: 10.0.0.1 spent only its announces.
    for _ in 0..2 {
        assert_eq!(t.http_scrape("10.0.0.1"), Ok(()));
    }
    assert_refused(t.http_scrape("10.0.0.1"));
    assert_eq!(t.http_scrape("10.0.0.2"), Ok(()));
    let proxy = format!("/scrape?info_hash={}", percent_encode(&IH.0));
    assert_eq!(t.get(&proxy, &[]), Ok(()), "the proxy itself");

    // One budget a client, whichever frontend it comes by.
    let mut udp = t.udp_client(Ipv4Addr::LOCALHOST);
    assert_refused(udp_announce(&mut udp, Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(udp_announce(&mut udp, Ipv4Addr::new(10, 0, 0, 3)), Ok(()));

    let m = t.metrics();
    assert_eq!(
        m.get("karuta_rate_limit_refusals_total{kind=\"announce\"}"),
        3.0
    );
    assert_eq!(
        m.get("karuta_rate_limit_refusals_total{kind=\"scrape\"}"),
        1.0
    );
    assert_eq!(
        m.get("karuta_rate_limit_table_bytes{kind=\"scrape\"}"),
        8192.0
    );
    t.karuta.stop_cleanly();
}

#[test]
fn over_udp_a_client_over_its_budget_is_refused_and_others_are_not() {
    let mut t = Tracker::start(SMALL);
    let mut c = t.udp_client(Ipv4Addr::LOCALHOST);
    for _ in 0..3 {
        assert_eq!(udp_announce(&mut c, Ipv4Addr::new(10, 1, 0, 1)), Ok(()));
    }
    assert_refused(udp_announce(&mut c, Ipv4Addr::new(10, 1, 0, 1)));
    assert_eq!(udp_announce(&mut c, Ipv4Addr::new(10, 1, 0, 2)), Ok(()));
    // The connection's address when the ip field is 0.
    for _ in 0..3 {
        assert_eq!(udp_announce(&mut c, Ipv4Addr::UNSPECIFIED), Ok(()));
    }
    assert_refused(udp_announce(&mut c, Ipv4Addr::UNSPECIFIED));

    // Scrapes: the source address is the client.
    let mut second = t.udp_client(Ipv4Addr::new(127, 0, 0, 2));
    for _ in 0..2 {
        assert_eq!(udp_scrape(&mut second), Ok(()));
    }
    assert_refused(udp_scrape(&mut second));
    let mut third = t.udp_client(Ipv4Addr::new(127, 0, 0, 3));
    assert_eq!(udp_scrape(&mut third), Ok(()), "another client");
    assert_eq!(
        udp_announce(&mut second, Ipv4Addr::UNSPECIFIED),
        Ok(()),
        "its announces have their own budget"
    );
    // Over HTTP the same client has no scrapes left either.
    assert_refused(t.http_scrape("127.0.0.2"));
    t.karuta.stop_cleanly();
}

#[test]
fn a_reload_keeps_every_clients_budget() {
    let mut t = Tracker::start(SMALL);
    t.spend_http_announces("10.2.0.1");
    t.karuta.signal(libc::SIGUSR1);
    t.karuta.wait_for("configuration reloaded");
    assert_refused(t.http_announce("10.2.0.1"));
    assert_eq!(t.http_announce("10.2.0.2"), Ok(()));
    // Other options are other tables: everyone starts with a full bucket.
    t.karuta
        .rewrite_config(&config(t.ops, &SMALL.replace("burst: 3", "burst: 4")));
    t.karuta.signal(libc::SIGUSR1);
    t.karuta.wait_for("configuration reloaded");
    assert_eq!(t.http_announce("10.2.0.1"), Ok(()));
    t.karuta.stop_cleanly();
}

/// Announces (`stopped`, so that the store keeps nothing) of the IPv4
/// addresses `ips` over UDP, 64 datagrams in flight.
fn udp_flood(t: &Tracker, ips: std::ops::Range<u32>) {
    let mut c = t.udp_client(Ipv4Addr::LOCALHOST);
    let id = c.connect().unwrap();
    let mut p = AnnounceParams::new(IH, PeerId(*PEER), 6883);
    (p.event, p.num_want) = (3, 0);
    let ips: Vec<u32> = ips.collect();
    for window in ips.chunks(64) {
        for (n, &ip) in window.iter().enumerate() {
            p.ip = ip;
            c.send_raw(&p.encode(id, n as u32)).unwrap();
        }
        for _ in window {
            let reply = c.recv_raw().unwrap().expect("a reply within 3 s");
            match Reply::parse(&reply) {
                Ok(Reply::Announce { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}

/// Announces of the IPv6 /64s `2001:db8:ffff:n::1` over one kept-alive
/// HTTP connection.
fn http_flood(t: &Tracker, nets: std::ops::Range<u32>) {
    let mut stream = TcpStream::connect(t.http).unwrap();
    // One write a request, sent at once: no wait for a delayed ACK.
    stream.set_nodelay(true).unwrap();
    for n in nets {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, n as u16, 0, 0, 0, 1);
        let target = announce_target(&ip.to_string(), "stopped");
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let reply = http::read_response(&mut stream, Duration::from_secs(5)).unwrap();
        assert_eq!(failure_reason(&reply.body), None, "{ip}");
    }
}

#[test]
fn memory_stays_put_while_126_000_addresses_announce() {
    let started = Instant::now();
    let mut t = Tracker::start("        {}\n");
    let pid = t.karuta.pid();
    // What karuta allocates once (workers' buffers, a connection, the metrics
    // page) is there before the measure.
    udp_flood(&t, 0x0a00_0000..0x0a00_0000 + 10_000);
    http_flood(&t, 0..1_000);
    t.metrics();
    let before = test_support::process::rss_bytes(pid);
    let flood = Instant::now();
    udp_flood(&t, 0x0b00_0000..0x0b00_0000 + 120_000);
    let udp = flood.elapsed();
    http_flood(&t, 1_000..7_000);
    let after = test_support::process::rss_bytes(pid);
    eprintln!("udp {udp:?}, http {:?}", flood.elapsed() - udp);
    let m = t.metrics();
    // Every address had a slot of its own (or took one over; but for the
    // rare two of a set with the same fingerprint) and none was refused.
    let placed = m.placed("announce");
    assert!((136_990.0..=137_000.0).contains(&placed), "{placed}");
    assert_eq!(
        m.get("karuta_rate_limit_refusals_total{kind=\"announce\"}"),
        0.0
    );
    let table = m.get("karuta_rate_limit_table_bytes{kind=\"announce\"}");
    assert_eq!(table, 8.0 * 1024.0 * 1024.0, "2^20 slots of 8 bytes");
    // A map of clients would hold 126,000 more entries: 2 MiB and more.
    let grown = after.saturating_sub(before);
    assert!(
        grown < 1 << 20,
        "resident memory grew by {grown} bytes ({before} to {after})"
    );
    eprintln!(
        "126,000 addresses in {:?}: RSS {before} -> {after} bytes",
        started.elapsed()
    );
    t.karuta.stop_cleanly();
}
