//! What can go wrong: building a client ([`SetupError`]) and one request
//! ([`Error`]). Each message says what failed and where, so a caller can show
//! it as it is (behind its own context, e.g. the option that named the URL).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::StatusCode;

/// Why a [`Client`](crate::Client) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {path:?}: {source}")]
    CaFileUnreadable {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {path:?}")]
    CaFileEmpty { path: PathBuf },
    #[error("unusable certificate in {path:?}: {source}")]
    CaFileUnusable {
        path: PathBuf,
        source: tokio_rustls::rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(tokio_rustls::rustls::Error),
}

/// Why a request got no usable response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} has no address")]
    NoAddress { host: String },
    /// Every address of the host refused or failed; the last one's error.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Includes an untrusted or mismatched certificate.
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    /// The whole exchange (resolving, connecting, the handshake, the request
    /// and the whole body) did not finish within the client's deadline.
    #[error("no whole reply from {host_port} within {after:?}")]
    Timeout { host_port: String, after: Duration },
    /// The connection failed while the request or the reply was on its way.
    #[error("{host_port}: {message}")]
    Io { host_port: String, message: String },
    /// The reply is not HTTP/1.x, or it was cut short.
    #[error("bad HTTP reply from {host_port}: {message}")]
    Reply { host_port: String, message: String },
    /// From [`Response::require_ok`](crate::Response::require_ok): the body's
    /// start, printable, for the reason.
    #[error("HTTP {} {reason} (body: {body:?})", status.as_u16())]
    Status {
        status: StatusCode,
        reason: String,
        body: String,
    },
    #[error("the reply is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl Error {
    /// Whether the request never reached a server that answered: resolving,
    /// connecting, TLS, the deadline or the connection failed. `false` when a
    /// server replied, but not as it should.
    pub fn is_transport(&self) -> bool {
        match self {
            Error::Resolve { .. }
            | Error::NoAddress { .. }
            | Error::Connect { .. }
            | Error::Tls { .. }
            | Error::Timeout { .. }
            | Error::Io { .. } => true,
            Error::Reply { .. } | Error::Status { .. } | Error::TooLarge { .. } => false,
        }
    }

    /// Sorts a hyper error on the connection to `host_port`: an i/o failure
    /// underneath is [`Error::Io`], anything else (parse errors, a reply cut
    /// short by a close) is [`Error::Reply`]. The message carries the causes too, since
    /// hyper's own text is only the outermost.
    pub(crate) fn from_hyper(host_port: &str, e: &hyper::Error) -> Error {
        let mut message = e.to_string();
        let mut io = false;
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            // hyper reports a close before the reply's end and a malformed
            // chunk as i/o errors of these kinds; they are the reply's fault.
            io |= c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                !matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::InvalidInput
                )
            });
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        let host_port = host_port.to_owned();
        if io && !e.is_incomplete_message() {
            Error::Io { host_port, message }
        } else {
            Error::Reply { host_port, message }
        }
    }
}
