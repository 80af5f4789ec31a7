//! karuta's HTTP and HTTPS frontend: BEP 3 announces, BEP 48 scrapes, BEP 7
//! IPv6 peers, BEP 23 compact replies, BEP 24 external ip.
//!
//! - hyper 1 on tokio; rustls (TLS 1.2 and 1.3) on `https_addr`.
//! - Routes in httprouter syntax ([`router`]); named and catch-all parameters
//!   reach hooks as `AnnounceRequest::params.route_param(..)`.
//! - Requests are parsed with chihaya's rules and error strings ([`parse`]);
//!   every malformed tracker request gets HTTP 200 with a bencoded
//!   `failure reason`; paths that are no route get 404, other methods 405; a
//!   request head over 8 KiB or with more than 64 headers gets 431 and
//!   malformed HTTP 400, with a bencoded `failure reason` too and a graceful
//!   close ([`refusal`]).
//! - The client's address follows chihaya's `real_ip_header` and, from
//!   configured trusted proxies only, `X-Forwarded-For` ([`client_ip`]).
//! - `read_timeout`, `write_timeout` and `idle_timeout` are enforced per
//!   connection ([`io`]).

#![forbid(unsafe_code)]

mod client_ip;
mod config;
mod io;
mod parse;
mod refusal;
mod response;
mod router;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderName;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tracker::{ConfigError, SharedLogic};

pub use config::HttpConfig;
pub use server::HttpStats;
pub use tracker::frontend::StartError;

use client_ip::ClientAddress;
use io::Timeouts;
use parse::AnnounceOptions;
use server::{Listener, Shared};

fn tls_acceptor(config: &HttpConfig) -> Result<TlsAcceptor, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.tls_cert_path)
        .and_then(|it| it.collect())
        .map_err(|e| {
            ConfigError::new(
                "tls_cert_path",
                format!("cannot read {:?}: {e}", config.tls_cert_path),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "tls_cert_path",
            format!("no certificate in {:?}", config.tls_cert_path),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.tls_key_path).map_err(|e| {
        ConfigError::new(
            "tls_key_path",
            format!("cannot read {:?}: {e}", config.tls_key_path),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::new("https_addr", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError::new(
                "tls_key_path",
                format!("certificate and key do not work together: {e}"),
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// A request target (`/path?query`) read as the server reads it: routed
/// over chihaya's default routes and `/:passkey/announce`, then built into
/// an announce or a scrape request with default limits. Returns `None` for a
/// path that is no route. For the fuzz targets (`crates/fuzz-targets`): the
/// server itself never calls this.
#[doc(hidden)]
pub fn parse_request_target(
    target: &str,
    client: std::net::IpAddr,
    allow_ip_spoofing: bool,
) -> Option<Result<(), bittorrent::ClientError>> {
    use std::sync::OnceLock;
    static ROUTER: OnceLock<router::Router> = OnceLock::new();
    let router = ROUTER.get_or_init(|| {
        router::Router::new(
            &["/announce".into(), "/:passkey/announce".into()],
            &["/scrape".into()],
        )
        .expect("the fuzzing routes are valid")
    });
    let mut params = bittorrent::Params::default();
    let parsed = params.parse_into(target.as_bytes());
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let endpoint = router.route(path, &mut params)?;
    let limits = tracker::RequestLimits::default();
    Some(parsed.and_then(|()| match endpoint {
        router::Endpoint::Announce => {
            let opts = AnnounceOptions {
                limits,
                allow_ip_spoofing,
            };
            parse::announce(params, client, &opts).map(drop)
        }
        router::Endpoint::Scrape => parse::scrape(params, client, &limits).map(|s| {
            assert!(!s.info_hashes.is_empty());
            assert!(s.info_hashes.len() <= limits.scrape_len(usize::MAX));
        }),
    }))
}

/// A running HTTP frontend (one or two listeners).
pub struct HttpFrontend {
    liveness: Arc<tracker::stats::Liveness>,
    addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Arc<HttpStats>,
}

impl HttpFrontend {
    /// Binds the listeners and starts serving on the current tokio runtime;
    /// `Ok(None)` when both addresses are empty. Counts into `stats`, which
    /// outlives this frontend.
    pub fn start(
        config: &HttpConfig,
        logic: Arc<SharedLogic>,
        stats: Arc<HttpStats>,
    ) -> Result<Option<Self>, StartError> {
        config.validate()?;
        let plain = config.listen_addr()?;
        let secure = config.https_listen_addr()?;
        if plain.is_none() && secure.is_none() {
            return Ok(None);
        }
        let tls = secure.map(|_| tls_acceptor(config)).transpose()?;
        let real_ip_header = (!config.real_ip_header.is_empty())
            .then(|| HeaderName::from_bytes(config.real_ip_header.as_bytes()))
            .transpose()
            .map_err(|_| ConfigError::new("real_ip_header", "not a valid header name"))?;
        let addresses = ClientAddress::new(real_ip_header, config.trusted_proxy_nets()?);
        if addresses.header_trusted_from_anyone() {
            tracing::warn!(
                header = %config.real_ip_header,
                "http.real_ip_header is believed from any client (no http.trusted_proxies): clients can choose the address they are announced under"
            );
        }

        let shared = Arc::new(Shared {
            router: config.router()?,
            logic,
            addresses,
            announce: AnnounceOptions {
                limits: config.limits(),
                allow_ip_spoofing: config.allow_ip_spoofing,
            },
            limits: config.limits(),
            timing: config.enable_request_timing,
            stats: Arc::clone(&stats),
            post_phase: Arc::new(Semaphore::new(server::POST_PHASE_TASKS)),
        });
        let timeouts = Timeouts {
            read: config.read_timeout(),
            write: config.write_timeout(),
            idle: config.enable_keepalive.then(|| config.idle_timeout()),
        };
        let drain = timeouts.read + timeouts.write;
        let (stop, stopped) = watch::channel(false);
        let mut frontend = HttpFrontend {
            liveness: Arc::new(tracker::stats::Liveness::default()),
            addr: None,
            https_addr: None,
            stop,
            tasks: Vec::new(),
            stats,
        };
        for (addr, tls) in [(plain, None), (secure, tls)] {
            let Some(addr) = addr else { continue };
            let (listener, local) = tracker::frontend::bind_tcp(addr)?;
            let listener = TcpListener::from_std(listener)
                .map_err(|source| StartError::Bind { addr, source })?;
            if tls.is_some() {
                frontend.https_addr = Some(local);
            } else {
                frontend.addr = Some(local);
            }
            tracing::info!(addr = %local, tls = tls.is_some(), "http frontend listening");
            let l = Listener {
                listener,
                tls,
                timeouts,
                keep_alive: config.enable_keepalive,
                connections: Arc::new(Semaphore::new(server::MAX_CONNECTIONS)),
            };
            let alive = frontend.liveness.guard();
            let serve = server::serve(l, Arc::clone(&shared), stopped.clone(), drain);
            frontend.tasks.push(tokio::spawn(async move {
                let _alive = alive;
                serve.await
            }));
        }
        Ok(Some(frontend))
    }

    /// The plain listener's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The HTTPS listener's address.
    pub fn https_local_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Listeners started, and still accepting.
    pub fn listeners(&self) -> (usize, usize) {
        (self.tasks.len(), self.liveness.running())
    }

    /// The running-listeners count, to watch after this frontend is borrowed away.
    pub fn liveness(&self) -> Arc<tracker::stats::Liveness> {
        Arc::clone(&self.liveness)
    }

    /// Stops accepting, lets open requests finish (bounded by the read and
    /// write timeouts), then returns.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        tracing::info!("http frontend stopped");
    }
}

impl Drop for HttpFrontend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
