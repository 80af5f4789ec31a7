//! karuta's one client for outgoing HTTP: a GET of an `http://` or `https://`
//! URL with a total deadline and a bound on the body, giving back the status,
//! headers and body. The `jwt` hook fetches its JWK set with it, and
//! `karuta e2e` talks to the HTTP frontend through it.
//!
//! Built on hyper's HTTP/1.1 client connection over a Tokio `TcpStream`, and
//! rustls (ring) for `https://`, trusting the Mozilla roots (`webpki-roots`)
//! plus any PEM CA files given. URLs are parsed by `http::Uri` and checked in
//! [`Url`]. Nothing process-wide is touched: the rustls config carries its own
//! crypto provider.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let client = http_client::Client::builder()
//!     .timeout(Duration::from_secs(5))
//!     .max_body(64 * 1024)
//!     .build()?;
//! let url = http_client::Url::parse("https://issuer.example/.well-known/jwks.json")?;
//! let body = client.get(&url).await?.require_ok()?.body;
//! # let _ = body; Ok(()) }
//! ```

mod client;
mod error;
mod url;

pub use client::{Builder, Client, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, Response};
pub use error::{Error, SetupError};
pub use hyper::StatusCode;
pub use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
pub use url::{Url, UrlError, endpoint};
