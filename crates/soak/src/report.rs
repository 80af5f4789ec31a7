//! What the soak prints: one line per minute (fixed-width columns, to paste
//! into a README table as they are), then a summary and the verdict against
//! issue 15's goal.
//!
//! The verdict, over the run's last five minutes (the second half of a run
//! shorter than ten minutes, at least its last minute):
//!
//! - **errors**: none at all, over the whole run: no error reply (`failure
//!   reason`, BEP 15 error, a status other than 200, a malformed reply), no
//!   timeout, nothing the driver could not send; and every request sent
//!   accounted for (answered or failed).
//! - **RSS**: karuta's VmRSS, sampled every second in the window: the
//!   largest at most 5 % over the smallest.
//! - **p99 flat**: for each protocol, the largest per-minute p99 of the
//!   window at most twice the smallest.
//! - **GC**: some vanished peers are past `peer_lifetime + gc_interval` at
//!   the end (so garbage collection had work), and at every minute the
//!   peers karuta's store holds lie within 2 % of what the driver expects:
//!   at least the active peers and the vanished ones not yet expirable, at
//!   most those plus the vanished ones a GC may not have reached yet.
//! - **reloads**: every SIGUSR1 sent is confirmed by a `configuration
//!   reloaded` line in karuta's log, and none failed.

use std::fmt::Write;
use std::ops::Range;
use std::time::Duration;

use crate::karuta::KernelDrops;
use crate::population::{Events, Expected, Proto};
use crate::stats::{Counts, Period, Stats};

/// How far the store's peer count may stray from the driver's bounds: the
/// metrics are recomputed only every second.
const PEERS_TOLERANCE: f64 = 0.02;
/// How much the largest RSS sample of the window may exceed the smallest.
const RSS_TOLERANCE: f64 = 0.05;
/// How much the largest per-minute p99 of the window may exceed the smallest.
const P99_RATIO: f64 = 2.0;

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with three decimals, `-` for none.
pub fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What was seen of karuta at the end of a minute.
#[derive(Clone, Debug, Default)]
pub struct MinuteSample {
    /// Peers its store holds; `None` when the metrics could not be read.
    pub peers: Option<u64>,
    pub expected: Expected,
}

/// Everything the report reads.
pub struct Run<'a> {
    pub minutes: usize,
    pub stats: &'a Stats,
    /// RSS samples: time since the start, KiB.
    pub rss: &'a [(Duration, u64)],
    /// karuta's CPU time: time since the start, clock ticks.
    pub cpu: &'a [(Duration, u64)],
    /// One per minute, taken at its end.
    pub samples: &'a [MinuteSample],
    /// When each SIGUSR1 was sent, since the start.
    pub reloads_sent: &'a [Duration],
    /// What karuta's log confirms: done, failed.
    pub reloads_logged: (u64, u64),
    pub events: Events,
    /// Requests still unanswered after the last timeout.
    pub in_flight: usize,
    /// What the kernel dropped for full queues during the run (system-wide).
    pub kernel_drops: Option<KernelDrops>,
}

pub const HEADER: &str = "min   udp sent     udp ok   err  p50 ms  p99 ms  http sent    http ok   err  p50 ms  p99 ms  RSS MiB  CPU %      peers           expected  reloads  lag ms";

/// The minutes whose figures the verdict reads (0-based).
pub fn window(minutes: usize) -> Range<usize> {
    let w = (minutes / 2).clamp(1, 5);
    minutes.saturating_sub(w)..minutes
}

fn in_minute(t: Duration, minute: usize) -> bool {
    let (from, to) = (minute as u64 * 60, minute as u64 * 60 + 60);
    t > Duration::from_secs(from) && t <= Duration::from_secs(to)
}

impl Run<'_> {
    fn period(&self, minute: usize) -> Period {
        self.stats.total(minute..minute + 1)
    }

    fn rss_max(&self, minute: usize) -> Option<u64> {
        self.rss
            .iter()
            .filter(|(t, _)| in_minute(*t, minute))
            .map(|&(_, kib)| kib)
            .max()
    }

    /// karuta's CPU use over `minute`, in % of one core.
    fn cpu_percent(&self, minute: usize) -> Option<f64> {
        let at = |t: u64| {
            self.cpu
                .iter()
                .rev()
                .find(|(s, _)| *s <= Duration::from_secs(t))
        };
        let (from, to) = (at(minute as u64 * 60)?, at(minute as u64 * 60 + 60)?);
        let secs = (to.0.saturating_sub(from.0)).as_secs_f64();
        (secs > 0.0)
            .then(|| (to.1 - from.1) as f64 / crate::karuta::TICKS_PER_SECOND as f64 / secs * 100.0)
    }

    /// Minute `minute`'s line (0-based; printed 1-based).
    pub fn line(&self, minute: usize) -> String {
        let p = self.period(minute);
        let [u, h] = &p.proto;
        let sample = self.samples.get(minute).cloned().unwrap_or_default();
        let reloads = self
            .reloads_sent
            .iter()
            .filter(|t| in_minute(**t, minute))
            .count();
        format!(
            "{:>3} {:>10} {:>10} {:>5} {:>7} {:>7} {:>10} {:>10} {:>5} {:>7} {:>7} {:>8} {:>6} {:>10} {:>18} {:>8} {:>7}",
            minute + 1,
            group(u.sent),
            group(u.answered),
            group(u.errors),
            ms(u.latency.quantile(0.5)),
            ms(u.latency.quantile(0.99)),
            group(h.sent),
            group(h.answered),
            group(h.errors),
            ms(h.latency.quantile(0.5)),
            ms(h.latency.quantile(0.99)),
            self.rss_max(minute).map_or("-".into(), mib),
            self.cpu_percent(minute)
                .map_or("-".into(), |c| format!("{c:.0}")),
            sample.peers.map_or("-".into(), group),
            format!(
                "{}-{}",
                group(sample.expected.low),
                group(sample.expected.high)
            ),
            reloads,
            p.lag.as_millis(),
        )
    }

    /// The summary and the verdict; `true` when every check passed.
    pub fn summary(&self, out: &mut String) -> bool {
        let all = self.stats.total(0..self.minutes);
        let secs = (self.minutes * 60) as f64;
        for proto in Proto::ALL {
            let c = &all.proto[proto.index()];
            let _ = writeln!(
                out,
                "{:<5} sent {}, answered {}, errors {} ({:.0} requests/s); p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
                format!("{}:", proto.name()),
                group(c.sent),
                group(c.answered),
                group(c.errors),
                c.sent as f64 / secs,
                ms(c.latency.quantile(0.5)),
                ms(c.latency.quantile(0.99)),
                ms(c.latency.quantile(0.999)),
                ms(c.latency.quantile(1.0)),
            );
            for (text, n) in top_errors(self.stats, proto, 10) {
                let _ = writeln!(out, "       {} x {text}", group(n));
            }
        }
        let e = self.events;
        let end = self.samples.last().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "peers: {} started, {} completed, {} stopped, {} vanished ({} of them past peer_lifetime + gc_interval at the end)",
            group(e.started),
            group(e.completed),
            group(e.stopped),
            group(e.vanished),
            group(end.expected.expired),
        );
        let _ = writeln!(
            out,
            "driver: at most {} ms behind its schedule",
            all.lag.as_millis()
        );
        if let Some(k) = self.kernel_drops {
            let _ = writeln!(
                out,
                "kernel (system-wide): {} UDP datagrams dropped for a full receive buffer, {} TCP connections for a full accept queue",
                group(k.udp_receive_buffer),
                group(k.tcp_accept_queue),
            );
        }

        let window = window(self.minutes);
        let _ = writeln!(
            out,
            "verdict over minutes {}-{} (errors over the whole run):",
            window.start + 1,
            window.end
        );
        let checks = [
            ("errors", self.check_errors(&all)),
            ("RSS", self.check_rss(&window)),
            ("p99 flat", self.check_p99(&window)),
            ("GC", self.check_gc()),
            ("reloads", self.check_reloads()),
        ];
        let mut pass = true;
        for (name, (ok, detail)) in &checks {
            pass &= ok;
            let _ = writeln!(
                out,
                "  {name:<9} {}  {detail}",
                if *ok { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(out, "verdict: {}", if pass { "PASS" } else { "FAIL" });
        pass
    }

    fn check_errors(&self, all: &Period) -> (bool, String) {
        let sum = |f: fn(&Counts) -> u64| all.proto.iter().map(f).sum::<u64>();
        let (sent, answered, errors) = (sum(|c| c.sent), sum(|c| c.answered), sum(|c| c.errors));
        let unaccounted = sent.saturating_sub(answered + errors);
        let ok = errors == 0 && unaccounted == 0 && self.in_flight == 0;
        (
            ok,
            format!(
                "{} errors in {} requests; {} unaccounted",
                group(errors),
                group(sent),
                group(unaccounted.max(self.in_flight as u64))
            ),
        )
    }

    fn check_rss(&self, window: &Range<usize>) -> (bool, String) {
        let from = Duration::from_secs(window.start as u64 * 60);
        let kib: Vec<u64> = self
            .rss
            .iter()
            .filter(|(t, _)| *t > from)
            .map(|&(_, k)| k)
            .collect();
        let (Some(&min), Some(&max)) = (kib.iter().min(), kib.iter().max()) else {
            return (false, "no RSS sample in the window".into());
        };
        let growth = max as f64 / min as f64 - 1.0;
        (
            growth <= RSS_TOLERANCE,
            format!(
                "{} samples, {} to {} MiB: +{:.1} % (at most +{:.0} %)",
                kib.len(),
                mib(min),
                mib(max),
                growth * 100.0,
                RSS_TOLERANCE * 100.0
            ),
        )
    }

    fn check_p99(&self, window: &Range<usize>) -> (bool, String) {
        let mut ok = true;
        let mut parts = Vec::new();
        for proto in Proto::ALL {
            let p99: Vec<Duration> = window
                .clone()
                .filter_map(|m| self.period(m).proto[proto.index()].latency.quantile(0.99))
                .collect();
            let (Some(min), Some(max)) = (p99.iter().min(), p99.iter().max()) else {
                continue;
            };
            let ratio = max.as_secs_f64() / min.as_secs_f64().max(1e-9);
            ok &= ratio <= P99_RATIO && p99.len() == window.len();
            parts.push(format!(
                "{} {}-{} ms ({ratio:.2}x)",
                proto.name(),
                ms(Some(*min)),
                ms(Some(*max))
            ));
        }
        if parts.is_empty() {
            return (false, "no latency in the window".into());
        }
        (
            ok,
            format!(
                "per-minute p99 {} (largest at most {P99_RATIO}x the smallest)",
                parts.join(", ")
            ),
        )
    }

    fn check_gc(&self) -> (bool, String) {
        let end = self.samples.last().cloned().unwrap_or_default();
        let mut outside = Vec::new();
        for (i, s) in self.samples.iter().enumerate() {
            let within = s.peers.is_some_and(|p| {
                let p = p as f64;
                p >= s.expected.low as f64 * (1.0 - PEERS_TOLERANCE)
                    && p <= s.expected.high as f64 * (1.0 + PEERS_TOLERANCE)
            });
            if !within {
                outside.push((i + 1).to_string());
            }
        }
        let ok = end.expected.expired > 0 && outside.is_empty();
        let detail = format!(
            "{} vanished peers expired by the end; store within ±{:.0} % of the expected range {}",
            group(end.expected.expired),
            PEERS_TOLERANCE * 100.0,
            if outside.is_empty() {
                "every minute".into()
            } else {
                format!("except in minutes {}", outside.join(", "))
            }
        );
        (ok, detail)
    }

    fn check_reloads(&self) -> (bool, String) {
        let sent = self.reloads_sent.len() as u64;
        let (done, failed) = self.reloads_logged;
        (
            done == sent && failed == 0,
            format!("{sent} SIGUSR1 sent, {done} reloads in karuta's log, {failed} failed"),
        )
    }
}

fn top_errors(stats: &Stats, proto: Proto, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = stats.errors[proto.index()]
        .iter()
        .map(|(t, &c)| (t.clone(), c))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.1));
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(ms(Some(Duration::from_micros(61))), "0.061");
        assert_eq!(ms(None), "-");
        assert_eq!(mib(1536), "1.5");
    }

    #[test]
    fn the_window_is_the_last_five_minutes_or_the_second_half() {
        assert_eq!(window(10), 5..10);
        assert_eq!(window(30), 25..30);
        assert_eq!(window(4), 2..4);
        assert_eq!(window(2), 1..2);
        assert_eq!(window(1), 0..1);
    }

    /// A run of `minutes` with nothing counted but karuta's CPU time.
    fn run_with_cpu<'a>(stats: &'a Stats, cpu: &'a [(Duration, u64)], minutes: usize) -> Run<'a> {
        Run {
            minutes,
            stats,
            rss: &[],
            cpu,
            samples: &[],
            reloads_sent: &[],
            reloads_logged: (0, 0),
            events: Events::default(),
            in_flight: 0,
            kernel_drops: None,
        }
    }

    #[test]
    fn cpu_is_the_share_of_a_core_over_the_minute() {
        let stats = Stats::new(std::time::Instant::now(), Duration::from_secs(60));
        let s = Duration::from_secs;
        let cpu = [(s(0), 100), (s(30), 1_600), (s(60), 3_100), (s(90), 3_100)];
        let run = run_with_cpu(&stats, &cpu, 2);
        assert_eq!(run.cpu_percent(0), Some(50.0));
        assert_eq!(run.cpu_percent(1), Some(0.0));
        assert_eq!(run.cpu_percent(2), None);
    }

    #[test]
    fn the_header_matches_the_lines() {
        let stats = Stats::new(std::time::Instant::now(), Duration::from_secs(60));
        assert_eq!(run_with_cpu(&stats, &[], 1).line(0).len(), HEADER.len());
    }
}
