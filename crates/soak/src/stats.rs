//! What the driver counts: per period (a minute of the soak, a second of the
//! calibration) and per protocol, the requests sent, answered and failed and
//! a latency histogram; the error texts with their counts; the driver's own
//! lag behind its schedule.
//!
//! A request belongs to the period it was scheduled in, whenever its answer
//! or timeout comes, so a period's `sent` is exactly its `answered + errors`
//! once its last request has timed out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::population::Proto;

/// Sub-buckets per power of two: values are kept to within 1/32 (3 %).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Nanosecond values below this have a bucket each.
const LINEAR: u64 = 2 * SUB as u64;
const BUCKETS: usize = LINEAR as usize + (64 - (SUB_BITS + 1) as usize) * SUB;

/// A log-linear histogram of durations (HdrHistogram's layout, small):
/// exact below 64 ns, then 32 buckets per power of two.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl Histogram {
    fn index(nanos: u64) -> usize {
        if nanos < LINEAR {
            return nanos as usize;
        }
        let exp = 63 - nanos.leading_zeros();
        let sub = (nanos >> (exp - SUB_BITS)) as usize & (SUB - 1);
        LINEAR as usize + (exp - SUB_BITS - 1) as usize * SUB + sub
    }

    /// The middle of a bucket's range.
    fn value(index: usize) -> u64 {
        if index < LINEAR as usize {
            return index as u64;
        }
        let i = index - LINEAR as usize;
        let exp = (i / SUB) as u32 + SUB_BITS + 1;
        let low = (1u64 << exp) | (((i % SUB) as u64) << (exp - SUB_BITS));
        low + (1u64 << (exp - SUB_BITS)) / 2
    }

    pub fn record(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile (0 < q ≤ 1); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos(Self::value(i)));
            }
        }
        None
    }
}

/// One protocol's requests of one period.
#[derive(Clone, Default)]
pub struct Counts {
    pub sent: u64,
    /// Valid, non-error replies.
    pub answered: u64,
    /// Error replies (a `failure reason`, a BEP 15 error, a status other than
    /// 200, a malformed reply), timeouts and requests that could not be sent.
    pub errors: u64,
    /// Scheduled time to a valid reply.
    pub latency: Histogram,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.errors += other.errors;
        self.latency.add(&other.latency);
    }
}

/// One period.
#[derive(Clone, Default)]
pub struct Period {
    pub proto: [Counts; 2],
    /// The most the driver sent behind schedule.
    pub lag: Duration,
    /// When (since the start) the request sent `lag` late was due.
    pub lag_at: Duration,
}

/// How a request ended.
pub enum Outcome {
    Answered,
    Error(String),
}

/// Everything counted, by period.
pub struct Stats {
    start: Instant,
    period: Duration,
    pub periods: Vec<Period>,
    /// Error texts, per protocol, with how often each came.
    pub errors: [BTreeMap<String, u64>; 2],
}

impl Stats {
    pub fn new(start: Instant, period: Duration) -> Stats {
        Stats {
            start,
            period,
            periods: Vec::new(),
            errors: [BTreeMap::new(), BTreeMap::new()],
        }
    }

    fn period_of(&mut self, at: Instant) -> &mut Period {
        let i =
            (at.saturating_duration_since(self.start).as_nanos() / self.period.as_nanos()) as usize;
        if self.periods.len() <= i {
            self.periods.resize_with(i + 1, Period::default);
        }
        &mut self.periods[i]
    }

    /// A request scheduled at `scheduled` went out at `sent`.
    pub fn sent(&mut self, proto: Proto, scheduled: Instant, sent: Instant) {
        let at = scheduled.saturating_duration_since(self.start);
        let p = self.period_of(scheduled);
        p.proto[proto.index()].sent += 1;
        let lag = sent.saturating_duration_since(scheduled);
        if lag > p.lag {
            (p.lag, p.lag_at) = (lag, at);
        }
    }

    /// The request scheduled at `scheduled` ended at `now`.
    pub fn ended(&mut self, proto: Proto, scheduled: Instant, now: Instant, outcome: Outcome) {
        let counts = &mut self.period_of(scheduled).proto[proto.index()];
        match outcome {
            Outcome::Answered => {
                counts.answered += 1;
                counts
                    .latency
                    .record(now.saturating_duration_since(scheduled));
            }
            Outcome::Error(text) => {
                counts.errors += 1;
                *self.errors[proto.index()].entry(text).or_default() += 1;
            }
        }
    }

    /// The sum of periods `range`.
    pub fn total(&self, range: std::ops::Range<usize>) -> Period {
        let mut sum = Period::default();
        for p in self.periods.get(range).unwrap_or_default() {
            for proto in Proto::ALL {
                sum.proto[proto.index()].add(&p.proto[proto.index()]);
            }
            if p.lag > sum.lag {
                (sum.lag, sum.lag_at) = (p.lag, p.lag_at);
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_three_percent() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0)] {
            let got = h.quantile(q).unwrap().as_secs_f64() * 1e6;
            assert!((got - want).abs() / want < 0.03, "q{q}: {got} µs");
        }
        assert_eq!(h.total, 10_000);
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut tiny = Histogram::default();
        tiny.record(Duration::from_nanos(7));
        assert_eq!(tiny.quantile(0.5), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn bucket_indexes_cover_every_value() {
        for nanos in [0, 63, 64, 65, 1_000, 1 << 40, u64::MAX] {
            let i = Histogram::index(nanos);
            assert!(i < BUCKETS, "{nanos}");
            let v = Histogram::value(i);
            assert!(v.abs_diff(nanos) <= nanos / 32 + 1, "{nanos} -> {v}");
        }
    }

    #[test]
    fn requests_count_in_the_period_they_were_scheduled_in() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0, Duration::from_secs(60));
        let at = t0 + Duration::from_secs(59);
        s.sent(Proto::Udp, at, at + Duration::from_millis(3));
        s.ended(
            Proto::Udp,
            at,
            at + Duration::from_secs(2),
            Outcome::Answered,
        );
        s.sent(Proto::Http, at, at);
        s.ended(
            Proto::Http,
            at,
            at + Duration::from_secs(5),
            Outcome::Error("timeout".into()),
        );
        assert_eq!(s.periods.len(), 1);
        let p = &s.periods[0];
        assert_eq!((p.proto[0].sent, p.proto[0].answered), (1, 1));
        assert_eq!((p.proto[1].sent, p.proto[1].errors), (1, 1));
        assert_eq!(p.lag, Duration::from_millis(3));
        assert_eq!(p.lag_at, Duration::from_secs(59));
        assert_eq!(s.errors[1]["timeout"], 1);
    }
}
