//! `karuta migrate --config FILE`: creates or updates karuta's schema in
//! every PostgreSQL database the configuration names, then exits — for sites
//! that run schema changes apart from starts (`create_schema: false`).

use tracker::ConfigError;

use crate::config::{ConfigFileError, HookPhase, LoadedConfig};

/// Every PostgreSQL section of the configuration, with its key.
pub fn databases(
    config: &LoadedConfig,
) -> Result<Vec<(String, database::PgOptions)>, ConfigFileError> {
    let mut found = Vec::new();
    for phase in [HookPhase::Pre, HookPhase::Post] {
        for (name, _, options) in config.hooks(phase) {
            if name != "privtrak" {
                continue;
            }
            let p: privtrak::PrivtrakConfig = options
                .clone()
                .without_warnings()
                .deserialize()
                .map_err(|e| ConfigFileError::with_key(&config.source, e))?;
            if let privtrak::handlers::HandlerConfig::Postgres(pg) = p.handler {
                found.push((format!("{}.handler.options", options.path()), pg.database));
            }
        }
    }
    Ok(found)
}

/// Runs the migrations of every database; what it did, a line per database.
pub async fn run(config: &LoadedConfig) -> Result<Vec<String>, ConfigFileError> {
    let mut report = Vec::new();
    for (key, options) in databases(config)? {
        let fail = |e: ConfigError| ConfigFileError::with_key(&config.source, e.within(&key));
        let db = database::Database::new(&options).map_err(fail)?;
        let applied = database::migrate(&db)
            .await
            .map_err(|e| fail(ConfigError::new("url", e.to_string())))?;
        report.push(if applied.is_empty() {
            format!("{}: schema {} is up to date", db.target(), db.schema())
        } else {
            format!(
                "{}: schema {}: applied migrations {applied:?}",
                db.target(),
                db.schema()
            )
        });
    }
    if report.is_empty() {
        report.push("no PostgreSQL database in this configuration".into());
    }
    Ok(report)
}
