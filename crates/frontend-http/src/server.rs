//! Listeners, connections and the request handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bittorrent::{AnnounceResponse, BencodeWriter, Params, ScrapeResponse};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracker::frontend::{bump, failure_text};
use tracker::stats::{RequestMetrics, TimedAction};
use tracker::{ReplyGate, RequestContext, RequestLimits, SharedLogic};

use crate::client_ip::ClientAddress;
use crate::io::{TimedIo, Timeouts};
use crate::parse::{self, AnnounceOptions};
use crate::refusal::{self, ServiceReplies};
use crate::router::{Endpoint, Router};

/// Requests whose post-reply phase may run as background tasks at once;
/// beyond that it runs before the reply is returned (back-pressure instead of
/// an unbounded queue).
pub(crate) const POST_PHASE_TASKS: usize = 1024;

/// Counters, shared by all connections and kept for the life of the
/// process (a frontend restarted by a reload counts on).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Answered tracker requests by action, family and error (a `failure
    /// reason`); durations when `enable_request_timing` is on.
    pub requests: RequestMetrics,
    /// 404 and 405 replies.
    pub not_tracker_paths: AtomicU64,
    pub connections: AtomicU64,
    /// Connections that ended with an error (timeouts, TLS, malformed HTTP).
    pub connection_errors: AtomicU64,
    pub bytes_received: Arc<AtomicU64>,
    pub bytes_sent: Arc<AtomicU64>,
}

/// What every connection of a frontend shares.
pub(crate) struct Shared {
    pub router: Router,
    pub logic: Arc<SharedLogic>,
    pub addresses: ClientAddress,
    pub announce: AnnounceOptions,
    pub limits: RequestLimits,
    pub timing: bool,
    pub stats: Arc<HttpStats>,
    pub post_phase: Arc<Semaphore>,
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn failure(message: &str) -> Response<Full<Bytes>> {
    let mut body = Vec::with_capacity(32 + message.len());
    BencodeWriter::failure(&mut body, message);
    reply(StatusCode::OK, body)
}

/// Answers one request.
async fn respond(
    shared: Arc<Shared>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = shared.timing.then(Instant::now);
    let mut params = Params::default();
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let parsed = params.parse_into(target.as_bytes());
    let Some(endpoint) = shared.router.route(req.uri().path(), &mut params) else {
        bump(&shared.stats.not_tracker_paths);
        return reply(StatusCode::NOT_FOUND, b"not found\n".to_vec());
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        bump(&shared.stats.not_tracker_paths);
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            b"method not allowed\n".to_vec(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let action = match endpoint {
        Endpoint::Announce => TimedAction::Announce,
        Endpoint::Scrape => TimedAction::Scrape,
    };
    // The client's address is the last thing read from the request: it is
    // released before anything waits.
    let client = shared.addresses.resolve(remote.ip(), req.headers());
    drop(req);
    let (response, ipv6, error) =
        match answer(&shared, endpoint, parsed.map(|()| params), remote, client).await {
            Ok((body, ipv6)) => (reply(StatusCode::OK, body), ipv6, false),
            Err((message, ipv6)) => (failure(&message), ipv6, true),
        };
    let took = started.map(|s| s.elapsed());
    shared.stats.requests.record(action, ipv6, error, took);
    response
}

/// The body of a tracker reply, or the failure reason; with whether the
/// client is on IPv6 (for timing labels).
async fn answer(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    params: Result<Params, bittorrent::ClientError>,
    remote: SocketAddr,
    client: Result<IpAddr, bittorrent::ClientError>,
) -> Result<(Vec<u8>, bool), (String, bool)> {
    let ipv6 = bittorrent::canonical_ip(remote.ip()).is_ipv6();
    let fail = |m: &str| (m.to_owned(), ipv6);
    let params = params.map_err(|e| fail(e.message()))?;
    let client = client.map_err(|e| fail(e.message()))?;
    let logic = shared.logic.load();
    let mut ctx = RequestContext::new();
    let mut body = Vec::with_capacity(256);
    match endpoint {
        Endpoint::Announce => {
            let request =
                parse::announce(params, client, &shared.announce).map_err(|e| fail(e.message()))?;
            let mut resp = AnnounceResponse::default();
            logic
                .handle_announce(&mut ctx, &request, &mut resp)
                .await
                .map_err(|e| fail(failure_text(&e, "http", TimedAction::Announce)))?;
            crate::response::write_announce(&mut body, &resp, request.peer.family(), client);
            let gate = ctx.take_reply_gate();
            let post = logic.has_post_work(&ctx).then_some(async move {
                logic.after_announce(&mut ctx, &request, &mut resp).await
            });
            release(shared, gate, post)
                .await
                .map_err(|e| fail(failure_text(&e, "http", TimedAction::Announce)))?;
        }
        Endpoint::Scrape => {
            let request =
                parse::scrape(params, client, &shared.limits).map_err(|e| fail(e.message()))?;
            let mut resp = ScrapeResponse::default();
            logic
                .handle_scrape(&mut ctx, &request, &mut resp)
                .await
                .map_err(|e| fail(failure_text(&e, "http", TimedAction::Scrape)))?;
            crate::response::write_scrape(&mut body, &mut resp.files);
            let gate = ctx.take_reply_gate();
            let post = logic
                .has_post_scrape_work()
                .then_some(async move { logic.after_scrape(&mut ctx, &request, &mut resp).await });
            release(shared, gate, post)
                .await
                .map_err(|e| fail(failure_text(&e, "http", TimedAction::Scrape)))?;
        }
    }
    Ok((body, bittorrent::canonical_ip(client).is_ipv6()))
}

/// Once the reply is built: waits for its gate, if a hook set one, holding
/// only the body and (when there is post work) the request's post phase,
/// then starts that phase. A gate's error is the reply instead, and the post
/// phase is dropped.
async fn release(
    shared: &Shared,
    gate: Option<ReplyGate>,
    post: Option<impl Future<Output = ()> + Send + 'static>,
) -> Result<(), tracker::TrackerError> {
    if let Some(gate) = gate {
        gate.await?;
    }
    if let Some(post) = post {
        after_reply(shared, post).await;
    }
    Ok(())
}

/// Runs a request's post-reply phase (post-hooks, a pending store write) as a
/// bounded background task, so the client gets its reply without waiting for
/// it; in place when [`POST_PHASE_TASKS`] are already running.
async fn after_reply(shared: &Shared, phase: impl Future<Output = ()> + Send + 'static) {
    match Arc::clone(&shared.post_phase).try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(async move {
                phase.await;
                drop(permit);
            });
        }
        Err(_) => phase.await,
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Settings of one listener.
pub(crate) struct Listener {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub timeouts: Timeouts,
    pub keep_alive: bool,
    /// One permit per open connection, [`MAX_CONNECTIONS`] in all.
    pub connections: Arc<Semaphore>,
}

/// Most simultaneous connections per listener; more wait in the kernel's
/// accept queue.
pub(crate) const MAX_CONNECTIONS: usize = 16_384;
/// Most bytes of a request head (request line and headers).
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most header lines.
pub(crate) const MAX_HEADERS: usize = 64;

/// Accepts connections until `stop`, then lets open ones finish (at most
/// `drain` long).
pub(crate) async fn serve(
    l: Listener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(l.keep_alive)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS)
        .header_read_timeout(None);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            p = Arc::clone(&l.connections).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = l.listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: log, back off, keep serving.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        bump(&shared.stats.connections);
        let conn = Connection {
            shared: Arc::clone(&shared),
            builder: Arc::clone(&builder),
            remote,
            stop: stop.clone(),
        };
        let tls = l.tls.clone();
        let timeouts = l.timeouts;
        tokio::spawn(async move {
            let counters = (
                Arc::clone(&conn.shared.stats.bytes_received),
                Arc::clone(&conn.shared.stats.bytes_sent),
            );
            let io = TimedIo::new(stream, timeouts, counters);
            match tls {
                None => conn.serve(io).await,
                // Boxed: inline, the TLS state would make every
                // connection's task 6.9 KB instead of 1.8 KB.
                Some(acceptor) => Box::pin(conn.serve_tls(acceptor, io)).await,
            }
            drop(permit);
        });
    }
    drop(l.listener);
    // Every permit back is every connection ended.
    let all = u32::try_from(MAX_CONNECTIONS).expect("MAX_CONNECTIONS fits a u32");
    if tokio::time::timeout(drain, l.connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after the stop deadline; closing them");
    }
}

/// What one connection's task needs besides its stream.
struct Connection {
    shared: Arc<Shared>,
    builder: Arc<http1::Builder>,
    remote: SocketAddr,
    /// Turns true at the frontend's stop: the request in flight is answered,
    /// then the connection closes.
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve_tls(self, acceptor: TlsAcceptor, io: TimedIo<TcpStream>) {
        match acceptor.accept(io).await {
            Ok(tls) => self.serve(tls).await,
            Err(e) => {
                bump(&self.shared.stats.connection_errors);
                tracing::debug!(remote = %self.remote, error = %e, "tls handshake failed");
            }
        }
    }

    /// Serves requests on `io` until the client or hyper ends the
    /// connection, or the frontend stops; a request hyper refuses itself is
    /// answered as [`refusal`] says.
    async fn serve<T>(mut self, io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let served = AtomicBool::new(false);
        let mut io = ServiceReplies::new(io, &served);
        let (shared, remote) = (&self.shared, self.remote);
        let service = service_fn(|req| {
            served.store(true, Ordering::Relaxed);
            let shared = Arc::clone(shared);
            async move { Ok::<_, Infallible>(respond(shared, remote, req).await) }
        });
        let result = {
            let mut conn = pin!(
                self.builder
                    .serve_connection(TokioIo::new(&mut io), service)
            );
            tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut self.stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        };
        let Err(e) = result else { return };
        bump(&self.shared.stats.connection_errors);
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
        if io.hyper_replied()
            && let Err(w) = refusal::refuse(&mut io.into_inner(), &e).await
        {
            tracing::debug!(%remote, error = %w, "http refusal not delivered");
        }
    }
}
