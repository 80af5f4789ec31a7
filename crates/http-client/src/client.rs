//! The client: one GET on a fresh connection (`Connection: close`), HTTP/1.1
//! through `hyper::client::conn::http1`, over TCP or rustls.
//!
//! A fresh connection per request because the callers ask rarely (a JWK set
//! every few minutes, a dozen requests of a check run) and a pool would be
//! state to reason about for nothing. The connection is driven inside the
//! request's own future, not a spawned task, so the deadline's expiry drops
//! everything at once and nothing outlives the call.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use crate::{Error, SetupError, Url};

/// The deadline of a request unless the builder sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body accepted unless the builder sets another.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// Options of a [`Client`]; [`Builder::build`] reads the CA files.
#[derive(Clone, Debug)]
pub struct Builder {
    timeout: Duration,
    max_body: usize,
    headers: HeaderMap,
    ca_files: Vec<PathBuf>,
}

impl Builder {
    /// The deadline of a whole request: resolving, connecting, TLS, sending,
    /// and reading the whole body.
    pub fn timeout(mut self, timeout: Duration) -> Builder {
        self.timeout = timeout;
        self
    }

    /// The largest body accepted; a larger one is [`Error::TooLarge`].
    pub fn max_body(mut self, bytes: usize) -> Builder {
        self.max_body = bytes;
        self
    }

    /// A header sent with every request (e.g. `User-Agent`, `Accept`).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Builder {
        self.headers.insert(name, value);
        self
    }

    /// A PEM file of CA certificates trusted besides the Mozilla roots (for a
    /// private PKI).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.ca_files.push(path.into());
        self
    }

    pub fn build(self) -> Result<Client, SetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in &self.ca_files {
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|source| SetupError::CaFileUnusable {
                        path: path.clone(),
                        source,
                    })?;
            }
        }
        // Our own provider, so nothing process-wide is installed or needed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(SetupError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            timeout: self.timeout,
            max_body: self.max_body,
            headers: self.headers,
        })
    }
}

/// The certificates of a PEM file; none is an error.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|source| SetupError::CaFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(SetupError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// An HTTP/1.1 client for `http://` and `https://` GETs. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    timeout: Duration,
    max_body: usize,
    headers: HeaderMap,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// A whole response: status, headers, and the body read to its end.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: StatusCode,
    /// The reason phrase the server sent (hyper keeps only uncommon ones;
    /// otherwise the status code's standard one).
    pub reason: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The response if its status is 200 OK, else [`Error::Status`].
    pub fn require_ok(self) -> Result<Response, Error> {
        if self.status == StatusCode::OK {
            return Ok(self);
        }
        Err(Error::Status {
            status: self.status,
            body: self.body_snippet(),
            reason: self.reason,
        })
    }

    /// The body's start for a message: one line of at most 120 printable
    /// characters.
    pub fn body_snippet(&self) -> String {
        let text: String = String::from_utf8_lossy(&self.body)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(120)
            .collect();
        text.trim().to_owned()
    }
}

impl Client {
    /// Defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_BODY`], no extra header,
    /// the Mozilla roots only.
    pub fn builder() -> Builder {
        Builder {
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            headers: HeaderMap::new(),
            ca_files: Vec::new(),
        }
    }

    /// GETs `url`, within the client's deadline. Any status is a response;
    /// see [`Response::require_ok`].
    pub async fn get(&self, url: &Url) -> Result<Response, Error> {
        match tokio::time::timeout(self.timeout, self.exchange(url)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                host_port: url.host_port(),
                after: self.timeout,
            }),
        }
    }

    async fn exchange(&self, url: &Url) -> Result<Response, Error> {
        let tcp = connect(url).await?;
        if !url.is_https() {
            return self.request(TokioIo::new(tcp), url).await;
        }
        let tls_error = |source| Error::Tls {
            host: url.host().to_owned(),
            source,
        };
        let name = rustls_pki_types::ServerName::try_from(url.host().to_owned()).map_err(|e| {
            tls_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a TLS server name: {e}"),
            ))
        })?;
        let tls = self.tls.connect(name, tcp).await.map_err(tls_error)?;
        self.request(TokioIo::new(tls), url).await
    }

    async fn request<S>(&self, io: S, url: &Url) -> Result<Response, Error>
    where
        S: hyper::rt::Read + hyper::rt::Write + Unpin,
    {
        let host_port = url.host_port();
        let hyper_error = |e: hyper::Error| Error::from_hyper(&host_port, &e);
        let mut request = Request::get(url.path_and_query())
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::Reply {
                host_port: host_port.clone(),
                message: format!("cannot build the request: {e}"),
            })?;
        let headers = request.headers_mut();
        headers.extend(self.headers.clone());
        if let Ok(host) = HeaderValue::from_str(url.authority()) {
            headers.insert(header::HOST, host);
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));

        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(hyper_error)?;
        let mut connection = pin!(connection);
        let mut response = pin!(async {
            let response = sender.send_request(request).await.map_err(hyper_error)?;
            self.read(response, &hyper_error).await
        });
        // The connection does the reading and writing; it must be polled
        // while the response is awaited. When it ends cleanly first, what is
        // left of the body is already buffered.
        tokio::select! {
            biased;
            r = &mut response => r,
            c = &mut connection => match c {
                Ok(()) => response.await,
                Err(e) => Err(hyper_error(e)),
            },
        }
    }

    async fn read(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
        hyper_error: &impl Fn(hyper::Error) -> Error,
    ) -> Result<Response, Error> {
        let (parts, mut incoming) = response.into_parts();
        let too_large = Error::TooLarge {
            limit: self.max_body,
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame.map_err(hyper_error)?.into_data() {
                if body.len() + data.len() > self.max_body {
                    return Err(too_large);
                }
                body.extend_from_slice(&data);
            }
        }
        let reason = match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
            None => parts.status.canonical_reason().unwrap_or("").to_owned(),
        };
        Ok(Response {
            status: parts.status,
            reason,
            headers: parts.headers,
            body: Bytes::from(body),
        })
    }
}

/// A TCP connection to the first address of the host that accepts.
async fn connect(url: &Url) -> Result<TcpStream, Error> {
    let host = url.host();
    let addrs: Vec<_> = tokio::net::lookup_host((host, url.port()))
        .await
        .map_err(|source| Error::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(source) => last = Some(Error::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| Error::NoAddress {
        host: host.to_owned(),
    }))
}
