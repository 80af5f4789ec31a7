//! `soak`: the load driver of `scripts/soak`, against a karuta already
//! running on 127.0.0.1 (the script starts it, pinned to its own core).
//!
//! ```text
//! soak calibrate --udp ADDR --http ADDR [--duration 20s]        closed loop, flat out
//! soak run --udp ADDR --http ADDR --rate N --minutes M \
//!          --pid PID --metrics ADDR --log FILE                  open loop at N requests/s
//! ```
//!
//! `calibrate` keeps `--in-flight` requests going for `--duration` and prints
//! the answers per second it got as its last line, `capacity: N requests/s`;
//! with `--peers` at a soak's population, a `--warm-up` past its peer
//! lifetime and `--reload-every`, that is the capacity under the soak's
//! conditions (a full store, garbage collection, reloads).
//! `run` sends `--rate` requests per second on a fixed schedule for
//! `--minutes`, sends karuta a SIGUSR1 every `--reload-every`, prints a line
//! per minute, then a summary and the verdict (`report`); it exits 0 when
//! the verdict passes, 1 when it fails, 2 when the soak could not run, the
//! driver's falling behind its schedule included (the verdict is then not
//! valid).
//!
//! Both mix UDP and HTTP (`--http-share` of the requests over HTTP, of
//! those `--http-close-share` on a connection of their own with `Connection:
//! close`, the rest over kept-alive connections: `http`) and announces with
//! scrapes (`--scrape-share`), from simulated peers that join, announce,
//! complete and stop or vanish (`population`).

#![forbid(unsafe_code)]

mod engine;
mod http;
mod karuta;
mod population;
mod report;
mod stats;
mod udp;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracker::config::{format_duration, parse_duration};

use engine::{Engine, Mix, Target};
use karuta::Karuta;
use population::{Proto, Shape};
use report::{MinuteSample, Run, Verdict, group};
use stats::Stats;

#[derive(Debug, Parser)]
#[command(
    name = "soak",
    about = "scripts/soak's load driver: UDP and HTTP announces against a running karuta."
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Closed loop, as fast as karuta and the driver go; the last line is
    /// `capacity: N requests/s` (answers per second after a warm-up).
    Calibrate {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        calibration: Calibration,
    },
    /// Open loop: `--rate` requests per second on a fixed schedule for
    /// `--minutes`, a line per minute, a summary and the verdict.
    Run {
        #[command(flatten)]
        load: LoadArgs,
        /// Requests per second, both protocols together.
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        minutes: usize,
        /// karuta's process id: its RSS is read from /proc/PID/status and
        /// SIGUSR1 sent to it.
        #[arg(long)]
        pid: u32,
        /// karuta's `metrics_addr` (its store's peer counts).
        #[arg(long)]
        metrics: String,
        /// karuta's log (its reloads are counted there).
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        reload_every: Duration,
        /// How often each simulated peer announces: the population is the
        /// rate times this.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        peer_interval: Duration,
        /// karuta's memory store settings, for the expected peer counts.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        peer_lifetime: Duration,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        gc_interval: Duration,
        /// How often the schedule sends what fell due since its last tick
        /// (default: `engine::TICK`, 1 ms; at least 1 ms, Tokio's timer
        /// counting whole milliseconds).
        #[arg(long, value_parser = parse_duration)]
        tick: Option<Duration>,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// karuta's UDP address.
    #[arg(long)]
    udp: SocketAddr,
    /// karuta's HTTP address.
    #[arg(long)]
    http: SocketAddr,
    /// The share of requests sent over HTTP.
    #[arg(long, default_value_t = 0.25)]
    http_share: f64,
    /// The share of HTTP requests sent on a connection of their own, with
    /// `Connection: close`; the rest go over kept-alive connections.
    #[arg(long, default_value_t = 0.25)]
    http_close_share: f64,
    /// The share of requests that are scrapes.
    #[arg(long, default_value_t = 0.02)]
    scrape_share: f64,
    #[arg(long, default_value_t = 10_000)]
    torrents: usize,
    /// The share of peers that leave without `stopped`.
    #[arg(long, default_value_t = 0.2)]
    vanish: f64,
    /// UDP client sockets (ports).
    #[arg(long, default_value_t = 16)]
    udp_sockets: usize,
    /// How long an answer may take before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

impl LoadArgs {
    fn target(&self) -> anyhow::Result<Target> {
        Ok(Target {
            udp: self.udp,
            http: self.http,
            timeout: self.timeout,
        })
    }

    fn mix(&self) -> Mix {
        Mix {
            http_share: self.http_share.clamp(0.0, 1.0),
            http_close_share: self.http_close_share.clamp(0.0, 1.0),
            scrape_share: self.scrape_share.clamp(0.0, 1.0),
        }
    }

    /// `peers` split between the protocols as the requests are.
    fn shape(&self, peers: usize) -> Shape {
        let http = (peers as f64 * self.mix().http_share) as usize;
        Shape {
            peers: [peers - http, http],
            torrents: self.torrents.max(1),
            vanish: self.vanish.clamp(0.0, 1.0),
            udp_sockets: self.udp_sockets.max(1),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async {
        match cli.mode {
            Mode::Calibrate { load, calibration } => calibration.run(&load).await,
            Mode::Run {
                load,
                rate,
                minutes,
                pid,
                metrics,
                log,
                reload_every,
                peer_interval,
                peer_lifetime,
                gc_interval,
                tick,
            } => {
                let karuta = Karuta::new(pid, &metrics, log)?;
                let soak = Soak {
                    rate,
                    minutes: minutes.max(1),
                    reload_every,
                    peer_interval,
                    peer_lifetime,
                    gc_interval,
                    tick: tick.unwrap_or(engine::TICK).max(Duration::from_millis(1)),
                };
                soak.run(&load, &karuta).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The driver's own CPU time, in clock ticks.
fn driver_cpu() -> u64 {
    karuta::cpu_ticks("self").unwrap_or_default()
}

/// Waits (at most `limit`) for the requests in flight, then declares what is
/// left timed out.
async fn drain(engine: &Rc<Engine>, limit: Duration) {
    let until = Instant::now() + limit;
    while engine.in_flight() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.sweep();
}

/// The closed-loop calibration's settings.
#[derive(Debug, Args)]
struct Calibration {
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Simulated peers.
    #[arg(long, default_value_t = 100_000)]
    peers: usize,
    /// karuta's process id, to print the share of its core it used (and
    /// so whether it or the driver was the limit).
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds not counted at the start (default: a quarter of the
    /// duration, at most 5 s): long enough for karuta's store to reach
    /// the population and its garbage collection to start removing
    /// vanished peers, when the capacity is to be that of a soak.
    #[arg(long, value_parser = parse_duration)]
    warm_up: Option<Duration>,
    /// A SIGUSR1 to `--pid` this often (0: none), as in a soak.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    reload_every: Duration,
}

impl Calibration {
    async fn run(&self, load: &LoadArgs) -> anyhow::Result<ExitCode> {
        let Calibration {
            duration,
            in_flight,
            peers,
            pid,
            ..
        } = *self;
        let engine = Rc::new(Engine::new(
            load.target()?,
            load.mix(),
            &load.shape(peers),
            Duration::from_secs(1),
            Some(in_flight.max(1)),
        )?);
        engine.start_tasks().await?;
        // The first seconds warm up (connections, swarms; a quarter, at most
        // 5 s, unless told).
        let secs = duration.as_secs().max(2) as usize;
        let warm = match self.warm_up {
            Some(w) => (w.as_secs() as usize).clamp(1, secs - 1),
            None => (secs / 4).clamp(1, 5),
        };
        let counted = (secs - warm) as f64;
        let start = engine.begin();
        if let Some(pid) = pid.filter(|_| !self.reload_every.is_zero()) {
            let every = self.reload_every;
            tokio::task::spawn_local(async move {
                let mut at = start + every;
                while at < start + duration {
                    tokio::time::sleep_until(at.into()).await;
                    if let Err(e) = karuta::reload(pid) {
                        eprintln!("soak: {e:#}");
                    }
                    at += every;
                }
            });
        }
        // CPU time of karuta and of the driver over the counted seconds.
        let ticks = || {
            let karuta = pid.and_then(|p| karuta::cpu_ticks(&p.to_string()));
            (karuta, driver_cpu())
        };
        let (_, before) = tokio::join!(engine.closed_loop(start + duration), async {
            tokio::time::sleep_until((start + Duration::from_secs(warm as u64)).into()).await;
            ticks()
        });
        let after = ticks();
        drain(&engine, load.timeout * 2).await;

        let stats = engine.stats.borrow();
        let total = stats.total(warm..secs);
        println!(
            "calibration: {} closed loop, {in_flight} requests in flight, {:.0} % of them over HTTP ({:.0} % of those on a connection of their own); seconds {}-{secs} counted",
            format_duration(duration),
            load.mix().http_share * 100.0,
            load.mix().http_close_share * 100.0,
            warm + 1,
        );
        let mut capacity = 0.0;
        for proto in Proto::ALL {
            let c = &total.proto[proto.index()];
            capacity += c.answered as f64 / counted;
            println!(
                "  {:<5} {:>9.0} answered/s, {} errors; p50 {} ms, p99 {} ms",
                format!("{}:", proto.name()),
                c.answered as f64 / counted,
                group(c.errors),
                report::ms(c.latency.quantile(0.5)),
                report::ms(c.latency.quantile(0.99)),
            );
            for (text, n) in &stats.errors[proto.index()] {
                println!("        {} x {text}", group(*n));
            }
        }
        println!("  HTTP: {}", engine.connections().describe());
        let share = |a: u64, b: u64| {
            let ticks = b.saturating_sub(a) as f64;
            ticks / karuta::TICKS_PER_SECOND as f64 / counted * 100.0
        };
        let driver = share(before.1, after.1);
        if let (Some(a), Some(b)) = (before.0, after.0) {
            let karuta = share(a, b);
            println!(
                "  CPU: karuta {karuta:.0} % of its core, the driver {driver:.0} % of its own (the busier, and so the limit: {})",
                if karuta >= driver {
                    "karuta"
                } else {
                    "the driver"
                }
            );
        } else {
            println!("  CPU: the driver {driver:.0} % of its core");
        }
        println!("capacity: {capacity:.0} requests/s");
        Ok(ExitCode::SUCCESS)
    }
}

/// The open-loop soak's settings.
struct Soak {
    rate: f64,
    minutes: usize,
    reload_every: Duration,
    peer_interval: Duration,
    peer_lifetime: Duration,
    gc_interval: Duration,
    tick: Duration,
}

/// What is seen of karuta while the soak runs.
#[derive(Default)]
struct Observed {
    rss: Vec<(Duration, u64)>,
    cpu: Vec<(Duration, u64)>,
    driver_cpu: Vec<(Duration, u64)>,
    samples: Vec<MinuteSample>,
    reloads: Vec<Duration>,
}

impl Soak {
    async fn run(&self, load: &LoadArgs, karuta: &Karuta) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.rate.is_finite() && self.rate >= 1.0,
            "--rate must be at least 1"
        );
        karuta
            .rss_kib()
            .with_context(|| format!("no process {} to soak", karuta.pid))?;
        let peers = (self.rate * self.peer_interval.as_secs_f64()) as usize;
        let engine = Rc::new(Engine::new(
            load.target()?,
            load.mix(),
            &load.shape(peers),
            Duration::from_secs(60),
            None,
        )?);
        engine.start_tasks().await?;
        let share = load.mix().http_share;
        println!(
            "soak: {} min at {} requests/s (udp {}/s, http {}/s, {:.0} % of it on a connection of its own, {:.0} % scrapes); {} peers announcing every {} over {} torrents, {:.0} % of them vanish",
            self.minutes,
            group(self.rate as u64),
            group((self.rate * (1.0 - share)) as u64),
            group((self.rate * share) as u64),
            load.mix().http_close_share * 100.0,
            load.mix().scrape_share * 100.0,
            group(peers as u64),
            format_duration(self.peer_interval),
            group(load.torrents as u64),
            load.vanish * 100.0,
        );
        println!(
            "karuta pid {}: peer_lifetime {}, gc_interval {}, SIGUSR1 every {}; requests sent in ticks of {}, latency from each request's scheduled time, timeout {}",
            karuta.pid,
            format_duration(self.peer_lifetime),
            format_duration(self.gc_interval),
            format_duration(self.reload_every),
            format_duration(self.tick),
            format_duration(load.timeout),
        );
        println!("{}", report::HEADER);

        let start = engine.begin();
        let duration = Duration::from_secs(self.minutes as u64 * 60);
        let schedule = Rc::clone(&engine);
        let (rate, tick) = (self.rate, self.tick);
        tokio::task::spawn_local(async move { schedule.open_loop(rate, duration, tick).await });
        let cpu_at_start = karuta.cpu_ticks().unwrap_or_default();
        let drops_at_start = karuta::KernelDrops::read();
        let observed = RefCell::new(Observed {
            cpu: vec![(Duration::ZERO, cpu_at_start)],
            driver_cpu: vec![(Duration::ZERO, driver_cpu())],
            ..Observed::default()
        });
        self.watch(&engine, karuta, start, &observed).await?;
        drain(&engine, load.timeout).await;

        let observed = observed.into_inner();
        let stats = engine.stats.borrow();
        let logged = karuta.reloads();
        let run = Run {
            reloads_logged: (logged.done, logged.failed),
            in_flight: engine.in_flight(),
            connections: Some(engine.connections()),
            kernel_drops: drops_at_start
                .zip(karuta::KernelDrops::read())
                .map(|(before, after)| after.since(before)),
            ..self.view(&engine, &stats, &observed)
        };
        // The last minute, now that its last requests have ended.
        println!("{}", run.line(self.minutes - 1));
        let mut summary = String::new();
        let verdict = run.summary(&mut summary);
        print!("\n{summary}");
        Ok(match verdict {
            Verdict::Pass => ExitCode::SUCCESS,
            Verdict::Fail => ExitCode::from(1),
            Verdict::NotValid => ExitCode::from(2),
        })
    }

    /// The report's view of the run so far.
    fn view<'a>(&self, engine: &Engine, stats: &'a Stats, o: &'a Observed) -> Run<'a> {
        Run {
            minutes: self.minutes,
            stats,
            rss: &o.rss,
            cpu: &o.cpu,
            driver_cpu: &o.driver_cpu,
            samples: &o.samples,
            reloads_sent: &o.reloads,
            reloads_logged: (0, 0),
            events: engine.population.borrow().events(),
            in_flight: 0,
            connections: None,
            kernel_drops: None,
        }
    }

    /// Every second until the run's end: karuta's RSS, a SIGUSR1 when due,
    /// at each minute's end its store's peers, and each minute's line once
    /// its requests have had their timeout to end. Returns when the last
    /// minute's requests have had it.
    async fn watch(
        &self,
        engine: &Rc<Engine>,
        karuta: &Karuta,
        start: Instant,
        observed: &RefCell<Observed>,
    ) -> anyhow::Result<()> {
        let grace = engine.timeout() + Duration::from_millis(500);
        let minute = Duration::from_secs(60);
        let end = minute * self.minutes as u32;
        let mut tick = tokio::time::interval_at(
            (start + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        let mut next_reload = self.reload_every;
        let mut printed = 0;
        loop {
            tick.tick().await;
            let t = start.elapsed();
            let gone = || {
                let t = format_duration(t);
                format!("karuta (pid {}) is gone after {t}", karuta.pid)
            };
            let kib = karuta.rss_kib().with_context(gone)?;
            let ticks = karuta.cpu_ticks().with_context(gone)?;
            observed.borrow_mut().rss.push((t, kib));
            observed.borrow_mut().cpu.push((t, ticks));
            observed.borrow_mut().driver_cpu.push((t, driver_cpu()));
            if !self.reload_every.is_zero() && t >= next_reload && t < end {
                karuta.reload()?;
                observed.borrow_mut().reloads.push(t);
                next_reload += self.reload_every;
            }
            let sampled = observed.borrow().samples.len();
            if sampled < self.minutes && t >= minute * (sampled as u32 + 1) {
                let peers = karuta.peers().await;
                let expected = engine.population.borrow_mut().expected(
                    Instant::now(),
                    self.peer_lifetime,
                    self.gc_interval,
                    Duration::from_secs(3),
                );
                if let Err(e) = &peers {
                    eprintln!("soak: karuta's metrics: {e}");
                }
                observed.borrow_mut().samples.push(MinuteSample {
                    peers: peers.ok(),
                    expected,
                });
            }
            // The last minute is printed by the caller, after the drain.
            if printed + 1 < self.minutes && t >= minute * (printed as u32 + 1) + grace {
                let (o, stats) = (observed.borrow(), engine.stats.borrow());
                let run = self.view(engine, &stats, &o);
                println!("{}", run.line(printed));
                printed += 1;
            }
            if t >= end + grace {
                return Ok(());
            }
        }
    }
}
