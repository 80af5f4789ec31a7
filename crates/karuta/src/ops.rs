//! The operations server on `metrics_addr`: `/metrics` (Prometheus),
//! `/health` (for load balancers), `/stats` (a page for people) and
//! `/stats.json`.
//!
//! It runs beside the tracker, not on its hot path: a one-second sampler
//! keeps ten minutes of totals for the page's chart, and every endpoint reads
//! the counters the frontends and the store already keep.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracker::stats::TimedAction;

use crate::metrics::Metrics;
use crate::observe::Observed;

/// How often the page's samples are taken, and how many are kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const SAMPLES_KEPT: usize = 600;
/// How long `/health` waits for the store.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Unix time, seconds.
    at: f64,
    udp: u64,
    http: u64,
    peers: u64,
}

struct State {
    observed: Arc<Observed>,
    metrics: Metrics,
    samples: Mutex<VecDeque<Sample>>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn request_totals(o: &Observed) -> (u64, u64) {
    let udp = o
        .udp
        .workers()
        .iter()
        .map(|w| {
            TimedAction::ALL
                .iter()
                .map(|&a| w.requests.total(a))
                .sum::<u64>()
        })
        .sum();
    let http = TimedAction::ALL
        .iter()
        .map(|&a| o.http.requests.total(a))
        .sum();
    (udp, http)
}

impl State {
    fn sample(&self) -> Sample {
        let (udp, http) = request_totals(&self.observed);
        let s = self.observed.store.stats();
        Sample {
            at: now_unix(),
            udp,
            http,
            peers: s.seeders + s.leechers,
        }
    }

    fn record_sample(&self) {
        let sample = self.sample();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Requests per second between consecutive samples: `(time, udp, http, peers)`.
    fn rates(&self) -> Vec<(f64, f64, f64, u64)> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let dt = (b.at - a.at).max(1e-3);
                (
                    b.at,
                    (b.udp.saturating_sub(a.udp)) as f64 / dt,
                    (b.http.saturating_sub(a.http)) as f64 / dt,
                    b.peers,
                )
            })
            .collect()
    }

    fn stats_json(&self) -> serde_json::Value {
        let o = &self.observed;
        let store = o.store.stats();
        let (udp, http) = request_totals(o);
        let rates = self.rates();
        let (udp_rps, http_rps) = rates.last().map_or((0.0, 0.0), |r| (r.1, r.2));
        let uptime = SystemTime::now()
            .duration_since(o.started)
            .unwrap_or_default()
            .as_secs();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": uptime,
            "swarms": store.swarms,
            "seeders": store.seeders,
            "leechers": store.leechers,
            "requests": { "udp": udp, "http": http },
            "requests_per_second": { "udp": udp_rps, "http": http_rps },
            "history": rates.iter().map(|(t, u, h, p)| json!({"time": t, "udp_rps": u, "http_rps": h, "peers": p})).collect::<Vec<_>>(),
        })
    }

    async fn health(&self) -> (StatusCode, serde_json::Value) {
        let o = &self.observed;
        let mut reasons = Vec::new();
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, o.store.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => reasons.push(format!("storage: {e}")),
            Err(_) => reasons.push(format!("storage: no answer within {STORE_CHECK_TIMEOUT:?}")),
        }
        let mut degraded = Vec::new();
        for named in o.hooks() {
            match named.hook.health() {
                tracker::telemetry::Health::Ok => {}
                tracker::telemetry::Health::Degraded(why) => degraded.push(why),
                tracker::telemetry::Health::Unavailable(why) => reasons.push(why),
            }
        }
        degraded.dedup();
        reasons.dedup();
        let mut frontends = Vec::new();
        for f in o.frontends() {
            let running = f.liveness.running();
            if running < f.expected {
                reasons.push(format!(
                    "{}: {running} of {} workers running",
                    f.name, f.expected
                ));
            }
            frontends.push(json!({
                "name": f.name,
                "addrs": f.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "workers": f.expected,
                "running": running,
            }));
        }
        if reasons.is_empty() && degraded.is_empty() {
            (
                StatusCode::OK,
                json!({"status": "ok", "storage": "ok", "frontends": frontends}),
            )
        } else if reasons.is_empty() {
            (
                StatusCode::OK,
                json!({"status": "degraded", "storage": "ok", "reasons": degraded, "frontends": frontends}),
            )
        } else {
            reasons.extend(degraded);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "reasons": reasons, "frontends": frontends}),
            )
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn route(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let (body, content_type) = state.metrics.render();
            respond(StatusCode::OK, &content_type, body)
        }
        "/health" => {
            let (status, body) = state.health().await;
            respond(status, "application/json", body.to_string().into_bytes())
        }
        "/stats.json" => respond(
            StatusCode::OK,
            "application/json",
            state.stats_json().to_string().into_bytes(),
        ),
        "/stats" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            stats_page(&state).into_bytes(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found: try /metrics, /health, /stats\n".to_vec(),
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A small page with the numbers and an SVG chart of requests per second;
/// rendered on the server (no script), refreshed every five seconds.
fn stats_page(state: &State) -> String {
    let j = state.stats_json();
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let rates = state.rates();
    let (w, h) = (720.0, 200.0);
    let max = rates.iter().map(|r| r.1.max(r.2)).fold(1.0_f64, f64::max);
    let t0 = rates.first().map_or(0.0, |r| r.0);
    let span = rates.last().map_or(1.0, |r| (r.0 - t0).max(1.0));
    let points = |pick: fn(&(f64, f64, f64, u64)) -> f64| {
        let mut s = String::new();
        for r in &rates {
            let _ = write!(
                s,
                "{:.1},{:.1} ",
                (r.0 - t0) / span * w,
                h - pick(r) / max * h
            );
        }
        s
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>karuta: stats</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ text-align: left; padding: .3rem 1.2rem .3rem 0; }}
td {{ font-variant-numeric: tabular-nums; font-weight: 600; }}
.udp {{ stroke: #1f77b4; }} .http {{ stroke: #d62728; }}
svg {{ border: 1px solid #ccc; background: #fafafa; }}
.legend span {{ margin-right: 1.5rem; }}
</style></head>
<body>
<h1>karuta {version}</h1>
<p>Up <span id="uptime">{uptime}</span> s.</p>
<h2>Swarms</h2>
<table>
<tr><th>Swarms</th><td id="swarms">{swarms}</td></tr>
<tr><th>Seeders</th><td id="seeders">{seeders}</td></tr>
<tr><th>Leechers</th><td id="leechers">{leechers}</td></tr>
</table>
<h2>Requests</h2>
<table>
<tr><th></th><th>per second</th><th>total</th></tr>
<tr><th>UDP</th><td id="rps-udp">{udp_rps:.1}</td><td id="requests-udp">{udp_total}</td></tr>
<tr><th>HTTP</th><td id="rps-http">{http_rps:.1}</td><td id="requests-http">{http_total}</td></tr>
</table>
<h2>Requests per second, last {minutes} min</h2>
<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="requests per second">
<polyline class="udp" fill="none" stroke-width="2" points="{udp_points}"/>
<polyline class="http" fill="none" stroke-width="2" points="{http_points}"/>
</svg>
<p class="legend"><span style="color:#1f77b4">&#9632; UDP</span><span style="color:#d62728">&#9632; HTTP</span> peak {max:.1}/s</p>
<p><a href="/stats.json">stats.json</a> · <a href="/metrics">metrics</a> · <a href="/health">health</a></p>
</body></html>
"#,
        version = escape(env!("CARGO_PKG_VERSION")),
        uptime = j["uptime_seconds"],
        swarms = j["swarms"],
        seeders = j["seeders"],
        leechers = j["leechers"],
        udp_rps = n(&j["requests_per_second"]["udp"]),
        http_rps = n(&j["requests_per_second"]["http"]),
        udp_total = j["requests"]["udp"],
        http_total = j["requests"]["http"],
        minutes = (SAMPLES_KEPT as u64 * SAMPLE_EVERY.as_secs()) / 60,
        udp_points = points(|r| r.1),
        http_points = points(|r| r.2),
    )
}

/// The running operations server.
pub struct OpsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl OpsServer {
    /// Binds `addr` and serves until [`stop`](Self::stop).
    pub async fn start(addr: SocketAddr, observed: Arc<Observed>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            metrics: Metrics::new(Arc::clone(&observed)),
            observed,
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
        });
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = ticker.tick() => state.record_sample(),
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = Arc::clone(&state);
                        tokio::spawn(async move {
                            let service = service_fn(move |req| {
                                let state = Arc::clone(&state);
                                async move { Ok::<_, Infallible>(route(state, req).await) }
                            });
                            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                            // Scrapers and browsers are done well within this.
                            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                        });
                    }
                }
            }
        });
        tracing::info!(%addr, "metrics, health and stats listening");
        Ok(OpsServer { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
