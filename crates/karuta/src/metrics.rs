//! `/metrics`: chihaya's metric names and labels, karuta's own, and the
//! process's, in Prometheus' text format.
//!
//! Nothing here runs per request: the frontends and the store count into
//! atomics ([`tracker::stats`]); this collector reads them when Prometheus
//! scrapes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};
use tracker::stats::{BUCKETS_MS, HistogramSnapshot, RequestMetrics, TimedAction};

use crate::observe::Observed;

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn histogram(pairs: &[(&str, &str)], h: &HistogramSnapshot) -> Metric {
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(BUCKETS_MS.len());
    for (bound, count) in BUCKETS_MS.iter().zip(h.buckets) {
        cumulative += count;
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let mut hist = Histogram::default();
    hist.set_sample_count(h.count());
    hist.set_sample_sum(h.sum.as_secs_f64() * 1000.0);
    hist.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_histogram(hist);
    m
}

const FAMILIES: [&str; 2] = ["IPv4", "IPv6"];

fn actions(frontend: &str) -> &'static [TimedAction] {
    if frontend == "udp" {
        &TimedAction::ALL
    } else {
        &[TimedAction::Announce, TimedAction::Scrape]
    }
}

/// The response-duration histogram of one frontend, in chihaya's labels.
fn durations(frontend: &str, m: &RequestMetrics) -> Vec<Metric> {
    let mut out = Vec::new();
    for &action in actions(frontend) {
        for (f, family) in FAMILIES.iter().enumerate() {
            for error in [false, true] {
                let h = m.durations(action, f == 1, error);
                let err = if error { "error" } else { "" };
                out.push(histogram(
                    &[
                        ("action", action.as_str()),
                        ("address_family", family),
                        ("error", err),
                    ],
                    &h,
                ));
            }
        }
    }
    out
}

/// karuta_requests_total or karuta_request_errors_total samples of one frontend.
fn request_counts(frontend: &str, m: &RequestMetrics, errors_only: bool, out: &mut Vec<Metric>) {
    for &action in actions(frontend) {
        for (f, family) in FAMILIES.iter().enumerate() {
            let errors = m.count(action, f == 1, true);
            let value = if errors_only {
                errors
            } else {
                errors + m.count(action, f == 1, false)
            };
            out.push(counter(
                &[
                    ("frontend", frontend),
                    ("action", action.as_str()),
                    ("address_family", family),
                ],
                value,
            ));
        }
    }
}

/// What the hooks export (privtrak's counters, say), as families: samples
/// with one name form one family; a hook configured twice on one state
/// reports the same series twice, which is kept once.
fn hook_families(o: &Observed) -> Vec<MetricFamily> {
    use tracker::telemetry::{MetricSample, MetricValue};
    let mut samples: Vec<MetricSample> = Vec::new();
    for named in o.hooks() {
        named.hook.metrics(&mut samples);
    }
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in samples {
        if !seen.insert((s.name, s.labels.clone())) {
            continue;
        }
        let pairs: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (kind, metric) = match &s.value {
            MetricValue::Counter(v) => (MetricType::COUNTER, counter(&pairs, *v)),
            MetricValue::Gauge(v) => (MetricType::GAUGE, gauge(&pairs, *v)),
            MetricValue::Histogram(h) => (MetricType::HISTOGRAM, histogram(&pairs, h)),
        };
        match families.iter_mut().find(|f| f.name() == s.name) {
            Some(f) => f.mut_metric().push(metric),
            None => families.push(family(s.name, s.help, kind, vec![metric])),
        }
    }
    families
}

/// Reads everything in [`Observed`] at scrape time.
struct TrackerCollector {
    observed: Arc<Observed>,
    descs: Vec<Desc>,
}

impl Collector for TrackerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let o = &self.observed;
        let udp_workers = o.udp.workers();
        let udp = frontend_udp::UdpStats::sum(udp_workers.iter().map(|w| &**w));
        // One histogram per frontend: UDP workers' histograms are summed.
        let udp_requests = RequestMetrics::default();
        for w in &udp_workers {
            for &action in &TimedAction::ALL {
                for ipv6 in [false, true] {
                    for error in [false, true] {
                        udp_requests.add(
                            action,
                            ipv6,
                            error,
                            w.requests.count(action, ipv6, error),
                            &w.requests.durations(action, ipv6, error),
                        );
                    }
                }
            }
        }
        let http = &o.http;
        let store = o.store.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

        let mut requests = Vec::new();
        request_counts("http", &http.requests, false, &mut requests);
        request_counts("udp", &udp_requests, false, &mut requests);
        let mut errors = Vec::new();
        request_counts("http", &http.requests, true, &mut errors);
        request_counts("udp", &udp_requests, true, &mut errors);
        let hooks = o
            .hook_counters()
            .into_iter()
            .map(|(name, c)| counter(&[("hook", &name)], c.load(Ordering::Relaxed)))
            .collect();
        let gc = o.store.gc_durations().unwrap_or_default();

        let mut families = vec![
            family(
                "chihaya_http_response_duration_milliseconds",
                "The duration of time it takes to receive and write a response to an API request",
                MetricType::HISTOGRAM,
                durations("http", &http.requests),
            ),
            family(
                "chihaya_udp_response_duration_milliseconds",
                "The duration of time it takes to receive and write a response to an API request",
                MetricType::HISTOGRAM,
                durations("udp", &udp_requests),
            ),
            family(
                "chihaya_storage_gc_duration_milliseconds",
                "The time it takes to perform storage garbage collection",
                MetricType::HISTOGRAM,
                vec![histogram(&[], &gc)],
            ),
            family(
                "chihaya_storage_infohashes_count",
                "The number of swarms (infohash and address family) tracked",
                MetricType::GAUGE,
                vec![gauge(&[], store.swarms as f64)],
            ),
            family(
                "chihaya_storage_seeders_count",
                "The number of seeders tracked",
                MetricType::GAUGE,
                vec![gauge(&[], store.seeders as f64)],
            ),
            family(
                "chihaya_storage_leechers_count",
                "The number of leechers tracked",
                MetricType::GAUGE,
                vec![gauge(&[], store.leechers as f64)],
            ),
            family(
                "karuta_requests_total",
                "Tracker requests answered, errors included.",
                MetricType::COUNTER,
                requests,
            ),
            family(
                "karuta_request_errors_total",
                "Tracker requests answered with an error.",
                MetricType::COUNTER,
                errors,
            ),
            family(
                "karuta_udp_bad_connection_ids_total",
                "UDP requests with an invalid or expired connection id.",
                MetricType::COUNTER,
                vec![counter(&[], udp.bad_connection_ids)],
            ),
            family(
                "karuta_udp_packets_dropped_total",
                "UDP packets dropped unanswered (too short, bad connect magic, truncated, or an unverified source).",
                MetricType::COUNTER,
                vec![counter(&[], udp.packets_dropped)],
            ),
            family(
                "karuta_socket_errors_total",
                "Socket receive and send errors (logged, never fatal).",
                MetricType::COUNTER,
                vec![
                    counter(
                        &[("frontend", "udp"), ("direction", "receive")],
                        udp.recv_errors,
                    ),
                    counter(
                        &[("frontend", "udp"), ("direction", "send")],
                        udp.send_errors,
                    ),
                ],
            ),
            family(
                "karuta_http_connections_total",
                "HTTP connections accepted.",
                MetricType::COUNTER,
                vec![counter(&[], load(&http.connections))],
            ),
            family(
                "karuta_http_connection_errors_total",
                "HTTP connections that ended with an error (timeouts, TLS, malformed requests).",
                MetricType::COUNTER,
                vec![counter(&[], load(&http.connection_errors))],
            ),
            family(
                "karuta_hook_rejections_total",
                "Requests a pre-hook rejected, by hook.",
                MetricType::COUNTER,
                hooks,
            ),
            family(
                "karuta_bytes_received_total",
                "Bytes received by the frontends (UDP payloads; HTTP including headers).",
                MetricType::COUNTER,
                vec![
                    counter(&[("frontend", "http")], load(&http.bytes_received)),
                    counter(&[("frontend", "udp")], udp.bytes_received),
                ],
            ),
            family(
                "karuta_bytes_sent_total",
                "Bytes sent by the frontends (UDP payloads; HTTP including headers).",
                MetricType::COUNTER,
                vec![
                    counter(&[("frontend", "http")], load(&http.bytes_sent)),
                    counter(&[("frontend", "udp")], udp.bytes_sent),
                ],
            ),
            family(
                "karuta_build_info",
                "karuta's version; always 1.",
                MetricType::GAUGE,
                vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
            ),
        ];
        families.extend(hook_families(o));
        families
    }
}

/// Renders `/metrics`.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(observed: Arc<Observed>) -> Self {
        let registry = Registry::new();
        let descs = Vec::new();
        registry
            .register(Box::new(TrackerCollector { observed, descs }))
            .expect("a fresh registry takes the collector");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("a fresh registry takes the process collector");
        Metrics { registry }
    }

    /// The text exposition and its content type.
    pub fn render(&self) -> (Vec<u8>, String) {
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        (out, encoder.format_type().to_owned())
    }
}
