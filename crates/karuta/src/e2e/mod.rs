//! `karuta e2e`: checks a running tracker end to end, the way chihaya's `e2e`
//! command does, over HTTP and/or UDP.
//!
//! For each protocol: a fresh random info hash; peer A announces `started`
//! (port 10000) and must get no peers back (karuta never returns the announcer
//! itself; chihaya's e2e expects exactly one peer, itself) with at least one
//! leecher counted; after `--delay`, peer B (port 10001) announces and must get
//! exactly A back, with two peers counted; a scrape must show two leechers;
//! both peers announce `stopped` and a last scrape must show an empty swarm.
//!
//! Exit codes: 0 when every check passed, 1 on the first failure (with a
//! one-line reason on stderr), 2 for usage errors (clap's). Nothing here
//! panics on a bad reply: refused connections, timeouts, HTTP errors and
//! malformed bencode are all failures with a reason.
//!
//! The parts: `target` reads the URLs, `scenario` runs the steps and
//! checks on either protocol, `http` and `udp` talk to the tracker.

mod http;
mod scenario;
mod target;
mod udp;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::ArgGroup;
use tracker::config::parse_duration;

use scenario::Fail;
pub use target::{HttpTarget, UdpTarget, parse_http_url, parse_udp_url};

/// `karuta e2e`'s flags.
#[derive(Clone, Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(true).args(["http", "udp"])))]
pub struct E2eArgs {
    /// HTTP announce URL, e.g. `http://127.0.0.1:6969/announce` (any announce
    /// path works, e.g. `/PASSKEY/announce`; the scrape URL is derived as BEP
    /// 48 says). Only plain http:// is supported.
    #[arg(long, value_name = "URL", value_parser = parse_http_url)]
    pub http: Option<HttpTarget>,
    /// UDP tracker URL, e.g. `udp://127.0.0.1:6969`; a path and query
    /// (`udp://host:6969/PASSKEY/announce`) are sent as BEP 41 URL data.
    #[arg(long, value_name = "URL", value_parser = parse_udp_url)]
    pub udp: Option<UdpTarget>,
    /// How long to wait between peer A's and peer B's announces (Go syntax).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub delay: Duration,
    /// How long to wait for each reply (Go syntax).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("the timeout must be greater than 0".into()),
        d => Ok(d),
    }
}

/// Runs `karuta e2e`: 0 when everything passed, 1 on the first failure.
pub fn run(args: &E2eArgs) -> ExitCode {
    let started = Instant::now();
    let mut passed = Vec::new();
    if let Some(target) = &args.http {
        println!(
            "http: checking {} (scrape {})",
            target.url,
            target.scrape_url()
        );
        match http::run_http(target, args.delay, args.timeout) {
            Ok(steps) => passed.push(format!("http ({steps} steps)")),
            Err(f) => return failed("http", &f),
        }
    }
    if let Some(target) = &args.udp {
        if target.url_data.is_empty() {
            println!("udp: checking {}", target.url);
        } else {
            println!(
                "udp: checking {} (URL data {:?})",
                target.url, target.url_data
            );
        }
        match udp::run_udp(target, args.delay, args.timeout) {
            Ok(steps) => passed.push(format!("udp ({steps} steps)")),
            Err(f) => return failed("udp", &f),
        }
    }
    println!(
        "karuta e2e: all checks passed: {} in {:.2}s",
        passed.join(", "),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn failed(proto: &str, f: &Fail) -> ExitCode {
    let _ = std::io::stdout().flush();
    eprintln!("karuta e2e: {proto}: {}", f.reason());
    ExitCode::FAILURE
}
