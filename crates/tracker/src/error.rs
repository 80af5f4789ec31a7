//! Errors of the core: what a store can fail with, and what a request can fail with.

use bittorrent::ClientError;

/// A peer store's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The swarm or peer asked for is not there (chihaya's `ErrResourceDoesNotExist`).
    #[error("resource does not exist")]
    ResourceDoesNotExist,
    /// The backing service cannot be reached or timed out; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with detail for the operator's log.
    #[error("storage error: {0}")]
    Other(String),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// Rejected with text meant for the client (a hook said no, bad input).
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an unexpected condition; detail goes to the log, not the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl TrackerError {
    /// The text the client is shown. Only [`TrackerError::Client`] passes its
    /// own text through; everything else gets a fixed message so no internal
    /// detail leaks.
    pub fn client_message(&self) -> &str {
        match self {
            TrackerError::Client(e) => e.message(),
            TrackerError::Store(StoreError::Unavailable(_)) => {
                "tracker storage is unavailable, try again later"
            }
            TrackerError::Store(_) | TrackerError::Internal(_) => "internal server error",
        }
    }

    pub fn is_client_error(&self) -> bool {
        matches!(self, TrackerError::Client(_))
    }
}
