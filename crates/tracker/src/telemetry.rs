//! What a hook reports about itself to the operations endpoints: metrics read
//! at each Prometheus scrape, and its health for `/health`.
//!
//! The core does not depend on a metrics library: a hook describes its
//! samples with these plain types and the binary turns them into Prometheus
//! families. Counts live in the hook (atomics), so reading them is cheap and
//! they survive reloads when the hook's state does.

use crate::stats::HistogramSnapshot;

/// The value of one sample.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(f64),
    /// In chihaya's millisecond buckets ([`crate::stats::BUCKETS_MS`]).
    Histogram(HistogramSnapshot),
}

/// One series: a name, its help text, labels and a value. Samples with the
/// same name form one family (same help, same kind).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSample {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: MetricValue,
}

impl MetricSample {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self::new(name, help, MetricValue::Counter(value))
    }

    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self::new(name, help, MetricValue::Gauge(value))
    }

    pub fn histogram(name: &'static str, help: &'static str, value: HistogramSnapshot) -> Self {
        Self::new(name, help, MetricValue::Histogram(value))
    }

    fn new(name: &'static str, help: &'static str, value: MetricValue) -> Self {
        MetricSample {
            name,
            help,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((name, value.into()));
        self
    }
}

/// A hook's health, for `/health`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Health {
    #[default]
    Ok,
    /// Serving, but something needs attention (the reason is shown with a
    /// 200).
    Degraded(String),
    /// Requests are being refused (`/health` answers 503).
    Unavailable(String),
}
