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
            let read = |e: ConfigError| ConfigFileError::with_key(&config.source, e);
            let section = |key: &str| format!("{}.{key}", options.path());
            let options = options.clone().without_warnings();
            match name.as_str() {
                "privtrak" => {
                    let p: privtrak::PrivtrakConfig = options.deserialize().map_err(read)?;
                    if let privtrak::handlers::HandlerConfig::Postgres(pg) = p.handler {
                        found.push((section("handler.options"), pg.database));
                    }
                }
                middleware::passkey_approval::NAME => {
                    let c: middleware::passkey_approval::Config =
                        options.deserialize().map_err(read)?;
                    found.extend(c.postgres.map(|pg| (section("postgres"), pg)));
                }
                middleware::torrent_approval::NAME => {
                    let c: middleware::torrent_approval::Config =
                        options.deserialize().map_err(read)?;
                    found.extend(c.postgres.map(|pg| (section("postgres"), pg)));
                }
                _ => {}
            }
        }
    }
    // One database named by several hooks is migrated once.
    let mut seen = Vec::new();
    found.retain(|(_, pg)| {
        let target = (pg.url.clone(), pg.schema.clone());
        let first = !seen.contains(&target);
        seen.push(target);
        first
    });
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
