//! karuta's PostgreSQL: a pool built from a libpq connection string, and
//! karuta's schema as versioned migrations.
//!
//! - [`PgOptions`] is the `postgres:` section every PostgreSQL user of karuta
//!   shares (the privtrak handler, the site's passkeys and torrents): `url`
//!   (a URL or `key=value` string, `sslmode` as libpq understands it,
//!   [`conninfo`] and [`tls`]), `pool_size`, `statement_timeout`,
//!   `connect_timeout`, `schema`, `create_schema`.
//! - [`Database`] is the pool; building it connects to nothing, so a
//!   configuration can be checked and a tracker can start while the database
//!   is down where its user allows that.
//! - [`migrate`] creates the schema: every migration runs once, in order, in
//!   one transaction under an advisory lock, so instances starting together
//!   are safe and a failed migration leaves nothing half done.
//!
//! Passwords never appear in errors or logs: messages name the host, port,
//! database and user only.

#![forbid(unsafe_code)]

pub mod conninfo;
mod listen;
mod migrate;
pub mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Deserialize;
use tracker::ConfigError;
use tracker::config::ConfigDuration;

pub use deadpool_postgres;
pub use listen::{Listener, Notice};
pub use migrate::{MIGRATIONS, Migration, migrate};
pub use tokio_postgres;

/// The `postgres:` options.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct PgOptions {
    /// `postgresql://user:password@host:port/dbname?sslmode=...` or
    /// `host=... user=... sslmode=...` (use `${PGPASSWORD}` for the password).
    pub url: String,
    /// Most connections open at once.
    pub pool_size: usize,
    /// The longest one statement may run (PostgreSQL cancels it after).
    pub statement_timeout: ConfigDuration,
    /// The longest connecting may take.
    pub connect_timeout: ConfigDuration,
    /// Where karuta's tables live.
    pub schema: String,
    /// Run karuta's migrations at start (`karuta migrate` runs them alone).
    pub create_schema: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            url: String::new(),
            pool_size: 4,
            statement_timeout: ConfigDuration(Duration::from_secs(30)),
            connect_timeout: ConfigDuration(Duration::from_secs(5)),
            schema: "karuta".into(),
            create_schema: true,
        }
    }
}

/// Why the database cannot be used. The text never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{target}: {message}")]
    Unavailable { target: String, message: String },
    #[error("{target}: {message}")]
    Query { target: String, message: String },
}

impl DbError {
    /// Whether retrying the same work later may succeed (a lost connection,
    /// a restart, a serialization failure or deadlock).
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unavailable { .. })
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// A parsed `url`: what tokio-postgres connects with and how to talk TLS.
#[derive(Clone)]
struct Target {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// `user@host:port/dbname`, for messages.
    name: String,
}

impl PgOptions {
    fn target(&self) -> Result<Target, ConfigError> {
        if self.url.trim().is_empty() {
            return Err(ConfigError::new(
                "url",
                "must be set (a postgresql:// URL or key=value string)",
            ));
        }
        let parsed =
            conninfo::parse(&self.url).map_err(|e| ConfigError::new("url", e.to_string()))?;
        let mut config: tokio_postgres::Config =
            parsed.rest.parse().map_err(|e: tokio_postgres::Error| {
                ConfigError::new("url", format!("not a PostgreSQL connection string: {e}"))
            })?;
        config.ssl_mode(match parsed.sslmode {
            conninfo::SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            conninfo::SslMode::Allow | conninfo::SslMode::Prefer => {
                tokio_postgres::config::SslMode::Prefer
            }
            _ => tokio_postgres::config::SslMode::Require,
        });
        config.connect_timeout(self.connect_timeout.0);
        let ms = self.statement_timeout.0.as_millis();
        let mut options = config.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c statement_timeout={ms}"));
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("karuta");
        }
        let tls = tls::client_config(parsed.sslmode, parsed.sslrootcert.as_deref())
            .map_err(|e| ConfigError::new("url", e.to_string()))?;
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let name = format!(
            "postgresql {}@{host}:{port}/{}",
            config.get_user().unwrap_or("?"),
            config.get_dbname().or(config.get_user()).unwrap_or("?"),
        );
        Ok(Target {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            name,
        })
    }

    /// Checks the options without connecting (keys relative to the section).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.target()?;
        if !is_identifier(&self.schema) {
            return Err(ConfigError::new(
                "schema",
                "must be a lower-case SQL identifier (letters, digits, _)",
            ));
        }
        if !(1..=256).contains(&self.pool_size) {
            return Err(ConfigError::new("pool_size", "must be between 1 and 256"));
        }
        for (key, d) in [
            ("statement_timeout", self.statement_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be more than 0"));
            }
        }
        Ok(())
    }
}

/// A pool of connections to one database, and karuta's schema in it.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    schema: String,
    target: String,
    /// For connections of their own (LISTEN), outside the pool.
    pub(crate) connect: tokio_postgres::Config,
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .finish()
    }
}

impl Database {
    /// Builds the pool; connects to nothing yet.
    pub fn new(options: &PgOptions) -> Result<Self, ConfigError> {
        options.validate()?;
        let target = options.target()?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(
                options.connect_timeout.0 + options.statement_timeout.0,
            ))
            .create_timeout(Some(options.connect_timeout.0))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| ConfigError::new("pool_size", e.to_string()))?;
        Ok(Database {
            pool,
            schema: options.schema.clone(),
            target: target.name,
            connect: target.config,
            tls: target.tls,
        })
    }

    /// `user@host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// `template` with `{schema}` replaced by the schema's name (checked to
    /// be an identifier, so this is no injection).
    pub fn sql(&self, template: &str) -> String {
        template.replace("{schema}", &self.schema)
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(|e| DbError::Unavailable {
            target: self.target.clone(),
            message: pool_error(&e),
        })
    }

    /// Answers when the database does (`SELECT 1`).
    pub async fn check(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.error(&e))?;
        Ok(())
    }

    /// Classifies a query error: connection trouble, serialization
    /// failures and deadlocks are transient; the rest is a query's fault.
    pub fn error(&self, e: &tokio_postgres::Error) -> DbError {
        use tokio_postgres::error::SqlState;
        let transient = e.is_closed()
            || e.code().is_none()
            || e.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::QUERY_CANCELED
                    || c.code().starts_with("08")
            });
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        if transient {
            DbError::Unavailable {
                target: self.target.clone(),
                message,
            }
        } else {
            DbError::Query {
                target: self.target.clone(),
                message,
            }
        }
    }
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        },
        deadpool_postgres::PoolError::Timeout(_) => "timed out waiting for a connection".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> PgOptions {
        PgOptions {
            url: url.into(),
            ..PgOptions::default()
        }
    }

    #[test]
    fn options_are_checked_without_connecting() {
        assert!(
            options("postgresql://karuta:pw@127.0.0.1:1/site")
                .validate()
                .is_ok()
        );
        assert!(
            options("host=127.0.0.1 port=1 user=karuta sslmode=verify-full")
                .validate()
                .is_ok()
        );
        for (o, key) in [
            (options(""), "url"),
            (options("postgresql://h/db?sslmode=maybe"), "url"),
            (options("host=h port=notaport"), "url"),
            (
                PgOptions {
                    schema: "Robert'); DROP TABLE".into(),
                    ..options("host=h")
                },
                "schema",
            ),
            (
                PgOptions {
                    pool_size: 0,
                    ..options("host=h")
                },
                "pool_size",
            ),
            (
                PgOptions {
                    statement_timeout: ConfigDuration(Duration::ZERO),
                    ..options("host=h")
                },
                "statement_timeout",
            ),
            (
                options("host=h sslmode=verify-ca sslrootcert=/nonexistent/ca.pem"),
                "url",
            ),
        ] {
            let e = o.validate().unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn errors_and_names_hold_no_password() {
        let db = Database::new(&options("postgresql://karuta:hunter2@127.0.0.1:1/site")).unwrap();
        assert_eq!(db.target(), "postgresql karuta@127.0.0.1:1/site");
        assert!(!format!("{db:?}").contains("hunter2"));
        let e = options("postgresql://karuta:hunter2@h:99999999/db")
            .validate()
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transient_error_naming_it() {
        let db = Database::new(&PgOptions {
            connect_timeout: ConfigDuration(Duration::from_millis(500)),
            ..options("postgresql://karuta:hunter2@127.0.0.1:1/site?sslmode=disable")
        })
        .unwrap();
        let e = db.check().await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("postgresql karuta@127.0.0.1:1/site: "),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
    }
}
