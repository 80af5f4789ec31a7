//! karuta's schema, one versioned migration at a time.
//!
//! The applied versions are recorded in `{schema}.schema_migrations`. All
//! pending migrations run in one transaction holding an advisory lock, so
//! two karuta instances starting at once do not race, and a migration that
//! fails leaves the database as it was.

use crate::{Database, DbError};

/// One step of the schema.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    /// SQL with `{schema}` for the schema's name.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "accounting: transfers, peers, batches, user_totals",
        sql: include_str!("../migrations/0001_accounting.sql"),
    },
    Migration {
        version: 2,
        description: "site: users, torrents, their NOTIFY triggers, credited bytes",
        sql: include_str!("../migrations/0002_site.sql"),
    },
];

/// An advisory lock key that only karuta's migrations take ("karuta" in ASCII).
const LOCK: i64 = 0x6b61_7275_7461;

/// Applies the migrations `db` lacks; the versions applied now.
pub async fn migrate(db: &Database) -> Result<Vec<i32>, DbError> {
    let mut client = db.client().await?;
    let err = |e: tokio_postgres::Error| db.error(&e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(&db.sql(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version     integer     PRIMARY KEY,
             description text        NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );",
    ))
    .await
    .map_err(err)?;
    let done: Vec<i32> = tx
        .query(
            &db.sql("SELECT version FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(&db.sql(m.sql)).await.map_err(err)?;
        tx.execute(
            &db.sql(
                "INSERT INTO {schema}.schema_migrations (version, description) VALUES ($1, $2)",
            ),
            &[&m.version, &m.description],
        )
        .await
        .map_err(err)?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(err)?;
    if !applied.is_empty() {
        tracing::info!(database = %db.target(), schema = db.schema(), versions = ?applied, "database migrated");
    }
    Ok(applied)
}
