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
//! - **RSS**: karuta's VmRSS is sampled every second; a minute's RSS is the
//!   median of its samples (of an even number, the mean of the middle two),
//!   the figure each minute's line prints. The largest of the window's
//!   per-minute figures is at most 5 % over the smallest. Per minute, not per
//!   sample: karuta's allocator trim hands pages back to the kernel and takes
//!   them again within seconds, so single samples swing by 10 % and more
//!   while the minutes hold steady.
//! - **p99 flat**: for each protocol, every minute of the window has a p99
//!   and the largest per-minute p99 is at most twice the smallest, or, when
//!   it is not, at most 25 ms: p99s of a few milliseconds (the 1 ms tick
//!   alone puts p50 near 1.7 ms) swing by more than 2x on noise, and a p99
//!   that never exceeds 25 ms is flat for a tracker whose clients time out
//!   after 15 s. The verdict says which of the two held.
//! - **GC**: some vanished peers are past `peer_lifetime + gc_interval` at
//!   the end (so garbage collection had work), and at every minute the
//!   peers karuta's store holds lie within 2 % of what the driver expects:
//!   at least the active peers and the vanished ones not yet expirable, at
//!   most those plus the vanished ones a GC may not have reached yet.
//! - **reloads**: every SIGUSR1 sent is confirmed by a `configuration
//!   reloaded` line in karuta's log, and none failed.
//!
//! All of it holds only if the driver kept its schedule: latency counts from
//! each request's due time, so a driver that sends late charges its own lag
//! to karuta. Each minute's line prints the most the driver sent behind
//! schedule in it (`lag ms`) and the driver's own CPU use (`drv %`). When the
//! lag went over 100 ms at any point of the run, the verdict is **not
//! valid**: the run judged the driver, not karuta (the soak exits 2, "could
//! not run", rather than 1).

use std::fmt::Write;
use std::ops::Range;
use std::time::Duration;

use crate::http::Connections;
use crate::karuta::KernelDrops;
use crate::population::{Events, Expected, Proto};
use crate::stats::{Counts, Period, Stats};

/// How far the store's peer count may stray from the driver's bounds: the
/// metrics are recomputed only every second.
const PEERS_TOLERANCE: f64 = 0.02;
/// How much the largest per-minute RSS of the window may exceed the smallest.
const RSS_TOLERANCE: f64 = 0.05;
/// The most the driver may send behind its schedule for the run to judge
/// karuta.
pub const MAX_DRIVER_LAG: Duration = Duration::from_millis(100);
/// How much the largest per-minute p99 of the window may exceed the smallest.
const P99_RATIO: f64 = 2.0;
/// A window whose largest per-minute p99 is at most this is flat whatever
/// the ratio.
const P99_FLOOR: Duration = Duration::from_millis(25);

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
    /// The driver's own CPU time, the same way.
    pub driver_cpu: &'a [(Duration, u64)],
    /// One per minute, taken at its end.
    pub samples: &'a [MinuteSample],
    /// When each SIGUSR1 was sent, since the start.
    pub reloads_sent: &'a [Duration],
    /// What karuta's log confirms: done, failed.
    pub reloads_logged: (u64, u64),
    pub events: Events,
    /// Requests still unanswered after the last timeout.
    pub in_flight: usize,
    /// What the driver's HTTP connections came to.
    pub connections: Option<Connections>,
    /// What the kernel dropped for full queues during the run (system-wide).
    pub kernel_drops: Option<KernelDrops>,
}

pub const HEADER: &str = "min   udp sent     udp ok   err  p50 ms  p99 ms  http sent    http ok   err  p50 ms  p99 ms  RSS MiB  CPU %      peers           expected  reloads  lag ms  drv %";

/// What the verdict says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The driver fell behind its schedule: karuta was not judged.
    NotValid,
}

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

    /// karuta's RSS over `minute` (0-based), KiB: the median of its
    /// per-second samples; `None` without any.
    pub fn rss_minute(&self, minute: usize) -> Option<u64> {
        let mut kib: Vec<u64> = self
            .rss
            .iter()
            .filter(|(t, _)| in_minute(*t, minute))
            .map(|&(_, kib)| kib)
            .collect();
        median(&mut kib)
    }

    /// karuta's CPU use over `minute`, in % of one core.
    fn cpu_percent(&self, minute: usize) -> Option<f64> {
        cpu_percent(self.cpu, minute)
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
            "{:>3} {:>10} {:>10} {:>5} {:>7} {:>7} {:>10} {:>10} {:>5} {:>7} {:>7} {:>8} {:>6} {:>10} {:>18} {:>8} {:>7} {:>6}",
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
            self.rss_minute(minute).map_or("-".into(), mib),
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
            cpu_percent(self.driver_cpu, minute).map_or("-".into(), |c| format!("{c:.0}")),
        )
    }

    /// The summary and the verdict.
    pub fn summary(&self, out: &mut String) -> Verdict {
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
        if let Some(c) = &self.connections {
            let _ = writeln!(out, "http connections: {}", c.describe());
        }
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
        let (kept, detail) = self.check_driver();
        let _ = writeln!(
            out,
            "  {:<9} {}  {detail}",
            "driver",
            if kept { "OK  " } else { "LATE" }
        );
        let verdict = match (kept, pass) {
            (false, _) => Verdict::NotValid,
            (true, true) => Verdict::Pass,
            (true, false) => Verdict::Fail,
        };
        let _ = match verdict {
            Verdict::Pass => writeln!(out, "verdict: PASS"),
            Verdict::Fail => writeln!(out, "verdict: FAIL"),
            Verdict::NotValid => writeln!(
                out,
                "verdict: NOT VALID: the driver fell behind its schedule by more than {} ms, so the latencies (and any timeouts) above are partly its own; this run does not judge karuta's p99",
                MAX_DRIVER_LAG.as_millis()
            ),
        };
        verdict
    }

    /// Whether the driver kept its schedule (never more than
    /// [`MAX_DRIVER_LAG`] behind) over the whole run.
    fn check_driver(&self) -> (bool, String) {
        let late: Vec<String> = (0..self.minutes)
            .filter(|&m| self.period(m).lag > MAX_DRIVER_LAG)
            .map(|m| (m + 1).to_string())
            .collect();
        let all = self.stats.total(0..self.minutes);
        let detail = format!(
            "at most {} ms behind its schedule, at {} (at most {} ms for a valid run){}",
            all.lag.as_millis(),
            tracker::config::format_duration(Duration::from_secs(all.lag_at.as_secs())),
            MAX_DRIVER_LAG.as_millis(),
            if late.is_empty() {
                String::new()
            } else {
                format!("; over it in minutes {}", late.join(", "))
            }
        );
        (late.is_empty(), detail)
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
        let per_minute: Vec<Option<u64>> = window.clone().map(|m| self.rss_minute(m)).collect();
        if per_minute.iter().any(Option::is_none) {
            return (false, "a minute of the window has no RSS sample".into());
        }
        let kib: Vec<u64> = per_minute.into_iter().flatten().collect();
        let (Some(&min), Some(&max)) = (kib.iter().min(), kib.iter().max()) else {
            return (false, "no RSS sample in the window".into());
        };
        let growth = max as f64 / min as f64 - 1.0;
        (
            growth <= RSS_TOLERANCE,
            format!(
                "per-minute RSS (median of each minute's samples) {} to {} MiB: +{:.1} % (at most +{:.0} %)",
                mib(min),
                mib(max),
                growth * 100.0,
                RSS_TOLERANCE * 100.0
            ),
        )
    }

    /// Per protocol, the window's per-minute p99s flat: every minute has
    /// one, and the largest is at most [`P99_RATIO`] times the smallest or at
    /// most [`P99_FLOOR`].
    fn check_p99(&self, window: &Range<usize>) -> (bool, String) {
        let floor = P99_FLOOR.as_millis();
        let mut ok = true;
        let mut parts = Vec::new();
        for proto in Proto::ALL {
            let p99: Vec<Duration> = window
                .clone()
                .filter_map(|m| self.period(m).proto[proto.index()].latency.quantile(0.99))
                .collect();
            let (Some(&min), Some(&max)) = (p99.iter().min(), p99.iter().max()) else {
                continue;
            };
            let ratio = max.as_secs_f64() / min.as_secs_f64().max(1e-9);
            let (within_ratio, under_floor) = (ratio <= P99_RATIO, max <= P99_FLOOR);
            let every_minute = p99.len() == window.len();
            ok &= (within_ratio || under_floor) && every_minute;
            let branch = match (within_ratio, under_floor) {
                (true, true) => format!("within {P99_RATIO}x and under {floor} ms"),
                (true, false) => format!("within {P99_RATIO}x"),
                (false, true) => format!("over {P99_RATIO}x but under {floor} ms"),
                (false, false) => format!("over {P99_RATIO}x and over {floor} ms: not flat"),
            };
            parts.push(format!(
                "{} {}-{} ms ({ratio:.2}x: {branch}{})",
                proto.name(),
                ms(Some(min)),
                ms(Some(max)),
                if every_minute {
                    String::new()
                } else {
                    format!("; {} minutes without one", window.len() - p99.len())
                }
            ));
        }
        if parts.is_empty() {
            return (false, "no latency in the window".into());
        }
        (
            ok,
            format!(
                "per-minute p99 {} (flat: the largest at most {P99_RATIO}x the smallest, or at most {floor} ms)",
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

/// CPU use over `minute` from `samples` (time since the start, clock
/// ticks), in % of one core.
fn cpu_percent(samples: &[(Duration, u64)], minute: usize) -> Option<f64> {
    let at = |t: u64| {
        samples
            .iter()
            .rev()
            .find(|(s, _)| *s <= Duration::from_secs(t))
    };
    let (from, to) = (at(minute as u64 * 60)?, at(minute as u64 * 60 + 60)?);
    let secs = (to.0.saturating_sub(from.0)).as_secs_f64();
    (secs > 0.0).then(|| {
        to.1.saturating_sub(from.1) as f64 / crate::karuta::TICKS_PER_SECOND as f64 / secs * 100.0
    })
}

/// The median of `values` (of an even number, the mean of the middle two,
/// rounded down); `None` when empty. Sorts `values`.
fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2),
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
            driver_cpu: &[],
            samples: &[],
            reloads_sent: &[],
            reloads_logged: (0, 0),
            events: Events::default(),
            in_flight: 0,
            connections: None,
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

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [7]), Some(7));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut [10, 20]), Some(15));
    }

    /// Per-second RSS samples for `minutes` minutes: each minute two thirds
    /// of its samples at `steady(minute)` KiB and a third at 14,000 KiB (the
    /// allocator trim's troughs).
    fn trimmed_rss(minutes: u64, steady: impl Fn(u64) -> u64) -> Vec<(Duration, u64)> {
        (1..=minutes * 60)
            .map(|t| {
                let minute = (t - 1) / 60;
                let kib = if t % 3 == 0 { 14_000 } else { steady(minute) };
                (Duration::from_secs(t), kib)
            })
            .collect()
    }

    #[test]
    fn rss_is_judged_by_the_median_of_each_minute() {
        let stats = Stats::new(std::time::Instant::now(), Duration::from_secs(60));
        // The samples swing by 11 % within every minute; the minutes are flat.
        let rss = trimmed_rss(10, |m| 15_600 + 20 * m);
        let run = Run {
            rss: &rss,
            ..run_with_cpu(&stats, &[], 10)
        };
        assert_eq!(run.rss_minute(0), Some(15_600));
        assert_eq!(run.rss_minute(9), Some(15_780));
        assert_eq!(run.rss_minute(10), None);
        let (ok, detail) = run.check_rss(&window(10));
        assert!(ok, "{detail}");
        assert!(detail.contains("15.3 to 15.4 MiB: +0.5 %"), "{detail}");
        // The minute's line prints the median too.
        assert!(run.line(9).contains("    15.4 "), "{}", run.line(9));

        // One minute of the window 7 % up fails, whatever the samples did.
        let rss = trimmed_rss(10, |m| if m == 7 { 16_700 } else { 15_600 });
        let run = Run {
            rss: &rss,
            ..run_with_cpu(&stats, &[], 10)
        };
        let (ok, detail) = run.check_rss(&window(10));
        assert!(!ok);
        assert!(detail.contains("+7.1 %"), "{detail}");
        // A minute of the window without samples fails too.
        let run = Run {
            rss: &rss[..8 * 60],
            ..run_with_cpu(&stats, &[], 10)
        };
        assert!(!run.check_rss(&window(10)).0);
    }

    /// The p99 check of a ten-minute run whose UDP requests of minutes 6-10
    /// (the window) all took `udp_ms[minute - 5]` ms; the rest took 1 ms.
    fn p99_check(udp_ms: [u64; 5]) -> (bool, String) {
        let t0 = std::time::Instant::now();
        let mut stats = Stats::new(t0, Duration::from_secs(60));
        for minute in 0..10u64 {
            for i in 0..100u64 {
                let at = t0 + Duration::from_secs(minute * 60) + Duration::from_millis(i * 500);
                for proto in Proto::ALL {
                    let took = match (proto, minute.checked_sub(5)) {
                        (Proto::Udp, Some(w)) => udp_ms[w as usize],
                        _ => 1,
                    };
                    stats.sent(proto, at, at);
                    let end = at + Duration::from_millis(took);
                    stats.ended(proto, at, end, crate::stats::Outcome::Answered);
                }
            }
        }
        run_with_cpu(&stats, &[], 10).check_p99(&window(10))
    }

    #[test]
    fn small_p99s_are_flat_under_the_floor_whatever_their_ratio() {
        // The README's run of 2026-12-02: 2.75x apart, all under 25 ms.
        let (ok, detail) = p99_check([22, 20, 18, 8, 12]);
        assert!(ok, "{detail}");
        assert!(
            detail.contains("udp 8.061-21.758 ms (2.70x: over 2x but under 25 ms)"),
            "{detail}"
        );
        assert!(
            detail.contains("http 1.008-1.008 ms (1.00x: within 2x and under 25 ms)"),
            "{detail}"
        );
    }

    #[test]
    fn p99s_over_2x_apart_and_over_the_floor_are_not_flat() {
        let (ok, detail) = p99_check([12, 30, 14, 13, 12]);
        assert!(!ok, "{detail}");
        assert!(
            detail.contains("over 2x and over 25 ms: not flat"),
            "{detail}"
        );
    }

    #[test]
    fn large_p99s_within_2x_are_flat() {
        let (ok, detail) = p99_check([100, 180, 150, 120, 170]);
        assert!(ok, "{detail}");
        assert!(detail.contains("x: within 2x)"), "{detail}");
    }

    #[test]
    fn a_minute_without_a_p99_is_not_flat() {
        let t0 = std::time::Instant::now();
        let mut stats = Stats::new(t0, Duration::from_secs(60));
        for proto in Proto::ALL {
            stats.sent(proto, t0, t0);
            let end = t0 + Duration::from_millis(1);
            stats.ended(proto, t0, end, crate::stats::Outcome::Answered);
        }
        // Minute 2 of 2 has nothing.
        let (ok, detail) = run_with_cpu(&stats, &[], 2).check_p99(&(0..2));
        assert!(!ok, "{detail}");
        assert!(detail.contains("1 minutes without one"), "{detail}");
    }

    /// A two-minute run that passes every check, the driver at most `lag`
    /// behind its schedule in its second minute.
    fn verdict_with_lag(lag: Duration) -> (Verdict, String) {
        let t0 = std::time::Instant::now();
        let mut stats = Stats::new(t0, Duration::from_secs(60));
        for minute in 0..2u64 {
            for i in 0..100u64 {
                let at = t0 + Duration::from_secs(minute * 60) + Duration::from_millis(i * 500);
                let late = if minute == 1 && i == 50 {
                    lag
                } else {
                    Duration::ZERO
                };
                for proto in Proto::ALL {
                    stats.sent(proto, at, at + late);
                    let end = at + late + Duration::from_micros(300);
                    stats.ended(proto, at, end, crate::stats::Outcome::Answered);
                }
            }
        }
        let rss = trimmed_rss(2, |_| 15_600);
        let expected = Expected {
            low: 1_000,
            high: 1_100,
            expired: 50,
        };
        let sample = MinuteSample {
            peers: Some(1_050),
            expected,
        };
        let samples = [sample.clone(), sample];
        let reloads = [
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(90),
        ];
        let run = Run {
            rss: &rss,
            samples: &samples,
            reloads_sent: &reloads,
            reloads_logged: (3, 0),
            ..run_with_cpu(&stats, &[], 2)
        };
        let mut out = String::new();
        (run.summary(&mut out), out)
    }

    #[test]
    fn a_driver_behind_its_schedule_makes_the_run_not_valid() {
        let (verdict, out) = verdict_with_lag(Duration::from_millis(60));
        assert_eq!(verdict, Verdict::Pass, "{out}");
        assert!(
            out.contains("driver    OK    at most 60 ms behind"),
            "{out}"
        );
        assert!(out.ends_with("verdict: PASS\n"), "{out}");

        let (verdict, out) = verdict_with_lag(Duration::from_millis(150));
        assert_eq!(verdict, Verdict::NotValid, "{out}");
        assert!(
            out.contains("driver    LATE  at most 150 ms behind its schedule, at 1m25s (at most 100 ms for a valid run); over it in minutes 2"),
            "{out}"
        );
        assert!(out.contains("verdict: NOT VALID"), "{out}");
        // Every other check still passed: the driver alone is to blame.
        assert!(!out.contains("FAIL"), "{out}");
    }
}
