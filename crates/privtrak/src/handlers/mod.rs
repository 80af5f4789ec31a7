//! The built-in delta handlers and the `handler:` section that picks one.
//!
//! A handler of one's own is any [`DeltaHandler`](crate::DeltaHandler):
//! build a [`Privtrak`](crate::Privtrak) with it (see the crate example).

pub mod jsonl;
pub mod memory;
pub mod postgres;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tracker::ConfigError;

use crate::handler::DeltaHandler;

/// `handler: {name: ..., options: {...}}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "name", content = "options", deny_unknown_fields)]
pub enum HandlerConfig {
    /// One JSON object per delta, appended to a file.
    #[serde(rename = "jsonl")]
    Jsonl(jsonl::JsonlConfig),
    /// One transaction per batch into PostgreSQL.
    #[serde(rename = "postgres")]
    Postgres(postgres::PostgresConfig),
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig::Jsonl(jsonl::JsonlConfig {
            path: PathBuf::from("/var/lib/karuta/deltas.jsonl"),
        })
    }
}

impl HandlerConfig {
    pub fn name(&self) -> &'static str {
        match self {
            HandlerConfig::Jsonl(_) => "jsonl",
            HandlerConfig::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            HandlerConfig::Jsonl(c) => c.validate().map_err(|e| e.within("options")),
            HandlerConfig::Postgres(c) => c.validate().map_err(|e| e.within("options")),
        }
    }

    /// Opens the handler (files, connections). `peer_lifetime` is privtrak's
    /// (a handler that keeps baselines credits by the same rules).
    pub async fn build(
        &self,
        peer_lifetime: std::time::Duration,
    ) -> Result<Arc<dyn DeltaHandler>, ConfigError> {
        match self {
            HandlerConfig::Jsonl(c) => {
                let handler = jsonl::JsonlHandler::open(&c.path)
                    .map_err(|e| ConfigError::new("options.path", e.to_string()))?;
                Ok(Arc::new(handler))
            }
            HandlerConfig::Postgres(c) => {
                let handler = postgres::PostgresHandler::open(c)
                    .await
                    .map_err(|e| e.within("options"))?
                    .with_peer_lifetime(peer_lifetime);
                Ok(Arc::new(handler))
            }
        }
    }
}
