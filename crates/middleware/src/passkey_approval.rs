//! `passkey approval`: only the site's users announce. The passkey (the
//! route parameter, query parameter or BEP 41 path segment named by
//! `passkey`, as privtrak reads it) must belong to a user of the site, held
//! in memory from its PostgreSQL (`{schema}.users`, or the site's own
//! `query`) and kept current live (see [`crate::site::postgres`]), or from a
//! file of `passkey user_id` lines re-read when it changes.
//!
//! Refusals: `missing passkey`, `unregistered passkey`, and for a user whose
//! `can_leech` is false, `downloading is disabled for this account` on any
//! announce but a seeder's (`left` 0) or a stop. An approved announce carries
//! the user ([`SiteUser`]) on to later hooks: `privtrak`, after it, counts
//! the user by the site's id (a new passkey keeps the user's history) and
//! credits by the user's factors. Scrapes need a registered passkey too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bittorrent::{
    AnnounceRequest, AnnounceResponse, ClientError, Event, Params, ScrapeRequest, ScrapeResponse,
};
use database::PgOptions;
use serde::Deserialize;
use tracker::config::ConfigDuration;
use tracker::site::SiteUser;
use tracker::telemetry::{Health, MetricSample};
use tracker::{ConfigError, DriverConfig, HookFuture, ReadyOrBoxed, RequestContext};

use crate::file_watch::{self, FileWatch};
use crate::site::postgres::{PgSource, Sources};
use crate::site::table::{LiveTable, Table};
use crate::site::users::{User, Users, passkey_key, read_file};

pub const NAME: &str = "passkey approval";

pub const MISSING: ClientError = ClientError::new("missing passkey");
pub const UNREGISTERED: ClientError = ClientError::new("unregistered passkey");
pub const NO_LEECHING: ClientError = ClientError::new("downloading is disabled for this account");

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// The route or query parameter holding the passkey.
    pub passkey: String,
    /// The site's database.
    pub postgres: Option<PgOptions>,
    /// The site's own query for its users, instead of `{schema}.users`:
    /// columns user_id, passkey, can_leech, upload_factor, download_factor.
    pub query: String,
    /// Instead of a database: `passkey user_id` per line.
    pub file: String,
    pub file_check_interval: ConfigDuration,
    /// How often the users are read in full besides their live changes.
    pub reload_interval: ConfigDuration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            passkey: "passkey".into(),
            postgres: None,
            query: String::new(),
            file: String::new(),
            file_check_interval: ConfigDuration(Duration::from_secs(5)),
            reload_interval: ConfigDuration(Duration::from_secs(5 * 60)),
        }
    }
}

impl DriverConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.passkey.is_empty() {
            return Err(ConfigError::new("passkey", "must name a parameter"));
        }
        match (&self.postgres, self.file.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::new(
                    "",
                    format!("{NAME:?} takes its users from postgres or from a file, not both"),
                ));
            }
            (None, true) => {
                return Err(ConfigError::new(
                    "",
                    format!("{NAME:?} needs its users: set postgres (the site's database) or file"),
                ));
            }
            (Some(pg), true) => pg.validate().map_err(|e| e.within("postgres"))?,
            (None, false) if !self.query.is_empty() => {
                return Err(ConfigError::new("query", "a query needs postgres"));
            }
            // Read here too: a configuration that passes check-config starts.
            (None, false) => {
                read_file(Path::new(&self.file)).map_err(|m| ConfigError::new("file", m))?;
            }
        }
        for (key, d) in [
            ("reload_interval", self.reload_interval),
            ("file_check_interval", self.file_check_interval),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

enum Source {
    Postgres(Arc<PgSource<Users>>),
    File {
        table: Arc<LiveTable<[u8; 16], User>>,
        watch: FileWatch,
    },
}

/// The hook.
pub struct PasskeyApproval {
    param: String,
    source: Source,
}

fn table_of(users: Vec<([u8; 16], User)>) -> Table<[u8; 16], User> {
    let table = Table::default();
    for (k, u) in users {
        table.insert(k, u);
    }
    table
}

impl PasskeyApproval {
    /// Builds the hook; a database source is shared with the hooks of
    /// earlier reloads when the options are the same (and read in full).
    pub async fn build(config: Config, sources: &Sources<Users>) -> Result<Self, ConfigError> {
        config.validate()?;
        let source = match &config.postgres {
            Some(pg) => {
                let key = format!("{pg:?} {} {:?}", config.query, config.reload_interval);
                let users = Users {
                    query: config.query.clone(),
                };
                let source = sources
                    .get(key, PgSource::start(users, pg, config.reload_interval.0))
                    .await
                    .map_err(|e| e.within("postgres"))?;
                Source::Postgres(source)
            }
            None => Self::file_source(&config)?,
        };
        Ok(PasskeyApproval {
            param: config.passkey.to_ascii_lowercase(),
            source,
        })
    }

    fn file_source(config: &Config) -> Result<Source, ConfigError> {
        let path = PathBuf::from(&config.file);
        let seen = file_watch::stamp(&path);
        let users = read_file(&path).map_err(|m| ConfigError::new("file", m))?;
        tracing::info!(file = %path.display(), users = users.len(), "passkey file loaded");
        let table = Arc::new(LiveTable::new(table_of(users)));
        let target = Arc::clone(&table);
        let reread = move |path: &Path| match read_file(path) {
            Ok(users) => {
                tracing::info!(file = %path.display(), users = users.len(), "passkey file reloaded");
                target.replace(table_of(users));
            }
            Err(e) => {
                tracing::error!(error = %e, "passkey file not reloaded; the previous users stay")
            }
        };
        let every = config.file_check_interval.0;
        let watch = FileWatch::start("passkey-file-watch", path, seen, every, reread)
            .map_err(|e| ConfigError::new("file", format!("cannot watch the file: {e}")))?;
        Ok(Source::File { table, watch })
    }

    fn table(&self) -> &LiveTable<[u8; 16], User> {
        match &self.source {
            Source::Postgres(s) => &s.table,
            Source::File { table, .. } => table,
        }
    }

    /// The user a request's passkey belongs to.
    pub fn user(&self, params: &Params) -> Result<User, ClientError> {
        let passkey = tracker::site::passkey_in(params, &self.param)
            .filter(|p| !p.is_empty())
            .ok_or(MISSING)?;
        self.table().get(&passkey_key(passkey)).ok_or(UNREGISTERED)
    }
}

impl tracker::Hook for PasskeyApproval {
    fn handle_announce<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        let user = match self.user(&req.params) {
            Ok(user) => user,
            Err(e) => return ReadyOrBoxed::ready(Err(e.into())),
        };
        if !user.can_leech && req.left > 0 && req.event != Event::Stopped {
            return ReadyOrBoxed::ready(Err(NO_LEECHING.into()));
        }
        ctx.extensions.insert(SiteUser {
            user_id: user.user_id,
            upload_factor: user.upload_factor,
            download_factor: user.download_factor,
        });
        ReadyOrBoxed::ready(Ok(()))
    }

    fn handle_scrape<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a ScrapeRequest,
        _resp: &'a mut ScrapeResponse,
    ) -> HookFuture<'a> {
        ReadyOrBoxed::ready(self.user(&req.params).map(|_| ()).map_err(Into::into))
    }

    fn metrics(&self, out: &mut Vec<MetricSample>) {
        match &self.source {
            Source::Postgres(s) => s.metrics(out),
            Source::File { table, .. } => {
                let (entries, bytes) = table.stats();
                out.push(
                    MetricSample::gauge(
                        "karuta_site_entries",
                        "Entries of a site table held in memory.",
                        entries as f64,
                    )
                    .label("table", "users"),
                );
                out.push(
                    MetricSample::gauge(
                        "karuta_site_memory_bytes",
                        "Bytes a site table's maps hold.",
                        bytes as f64,
                    )
                    .label("table", "users"),
                );
            }
        }
    }

    fn health(&self) -> Health {
        match &self.source {
            Source::Postgres(s) => s.health(NAME),
            Source::File { .. } => Health::Ok,
        }
    }

    fn stop(&self, _reason: tracker::StopReason) -> ReadyOrBoxed<'_, ()> {
        if let Source::File { watch, .. } = &self.source {
            watch.stop();
        }
        ReadyOrBoxed::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracker::Hook;

    fn announce(url: &str, left: u64, event: Event) -> AnnounceRequest {
        AnnounceRequest {
            params: Params::parse(url.as_bytes()).unwrap(),
            left,
            event,
            ..AnnounceRequest::default()
        }
    }

    #[tokio::test]
    async fn a_file_of_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passkeys");
        std::fs::write(&path, "alice 1\n00112233445566778899aabbccddeeff 2\n").unwrap();
        let config = Config {
            file: path.display().to_string(),
            file_check_interval: ConfigDuration(Duration::from_millis(20)),
            ..Config::default()
        };
        let hook = PasskeyApproval::build(config, &Sources::default())
            .await
            .unwrap();
        let run = |url: &str| {
            let mut ctx = RequestContext::new();
            let req = announce(url, 10, Event::Started);
            let mut resp = AnnounceResponse::default();
            let out = futures_util::FutureExt::now_or_never(
                hook.handle_announce(&mut ctx, &req, &mut resp),
            )
            .expect("ready");
            out.map(|()| ctx.extensions.get::<SiteUser>().unwrap().user_id)
                .map_err(|e| e.to_string())
        };
        assert_eq!(run("/announce?passkey=alice"), Ok(1));
        assert_eq!(run("/00112233445566778899aabbccddeeff/announce"), Ok(2));
        // Passkeys are compared exactly, as the database's unique key does.
        assert_eq!(
            run("/00112233445566778899AABBCCDDEEFF/announce"),
            Err("unregistered passkey".into())
        );
        assert_eq!(
            run("/announce?passkey=mallory"),
            Err("unregistered passkey".into())
        );
        assert_eq!(run("/announce"), Err("missing passkey".into()));
        // The file changes: bob comes, alice goes.
        std::fs::write(&path, "bob 3\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while run("/announce?passkey=bob").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the file was not re-read"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            run("/announce?passkey=alice"),
            Err("unregistered passkey".into())
        );
        // A broken file keeps the users.
        std::fs::write(&path, "bob\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(run("/announce?passkey=bob"), Ok(3));
        hook.stop(tracker::StopReason::Shutdown);
    }

    #[test]
    fn options() {
        let neither = Config::default();
        assert!(
            neither
                .validate()
                .unwrap_err()
                .message
                .contains("needs its users")
        );
        let both = Config {
            file: "/x".into(),
            postgres: Some(PgOptions {
                url: "postgresql://localhost/site".into(),
                ..PgOptions::default()
            }),
            ..Config::default()
        };
        assert!(both.validate().unwrap_err().message.contains("not both"));
        let no_url = Config {
            postgres: Some(PgOptions::default()),
            ..Config::default()
        };
        assert!(no_url.validate().unwrap_err().key.starts_with("postgres."));
        let query_without_db = Config {
            file: "/x".into(),
            query: "SELECT 1".into(),
            ..Config::default()
        };
        assert_eq!(query_without_db.validate().unwrap_err().key, "query");
    }
}
