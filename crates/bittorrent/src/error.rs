//! The only text a BitTorrent client ever sees from karuta.

use std::borrow::Cow;
use std::fmt;

/// An error whose message is meant for the client: it goes out as an HTTP
/// `failure reason` or a BEP 15 error packet, verbatim.
///
/// Anything that is not a `ClientError` (a store outage, a bug) is reported to
/// the client as a generic message and logged for the operator instead, so
/// internal detail never leaks. The text is usually a `&'static str`, so
/// rejecting a request allocates nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientError(Cow<'static, str>);

impl ClientError {
    /// A client error with fixed text (no allocation).
    pub const fn new(message: &'static str) -> Self {
        ClientError(Cow::Borrowed(message))
    }

    /// A client error whose text is built at run time.
    pub fn owned(message: String) -> Self {
        ClientError(Cow::Owned(message))
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientError({:?})", self.0)
    }
}

impl std::error::Error for ClientError {}

impl From<&'static str> for ClientError {
    fn from(message: &'static str) -> Self {
        ClientError::new(message)
    }
}
