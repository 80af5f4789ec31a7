//! `torrent approval`: admits announces and scrapes by info hash, by
//! whitelist or by blacklist.
//!
//! Beyond chihaya (#375, #79), the list may also come from a file
//! (`whitelist_file` / `blacklist_file`: one hash per line, `#` comments),
//! which is read when the hook is built (at start and at every SIGUSR1) and
//! re-read when it changes, checked every `file_check_interval`. A file that
//! fails to read or parse keeps the list in use and is logged. Hashes are 40
//! hex digits (v1), or 64 (a BEP 52 v2 hash, which announces truncate to its
//! first 20 bytes).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bittorrent::{
    AnnounceRequest, AnnounceResponse, ClientError, InfoHash, ScrapeRequest, ScrapeResponse,
};
use serde::Deserialize;
use tracker::config::ConfigDuration;
use tracker::{ConfigError, DriverConfig, HookFuture, ReadyOrBoxed, RequestContext};

use crate::file_watch::{self, FileWatch};
use crate::site::postgres::{PgSource, Sources};
use crate::site::torrents::Torrents;
use database::PgOptions;

pub const NAME: &str = "torrent approval";

const UNAPPROVED: ClientError = ClientError::new("unapproved torrent");
pub const UNREGISTERED: ClientError = ClientError::new("unregistered torrent");

/// chihaya's options and karuta's file and registry keys.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub whitelist: Vec<String>,
    pub blacklist: Vec<String>,
    /// karuta: a file of hashes to admit, one per line.
    pub whitelist_file: String,
    /// karuta: a file of hashes to refuse, one per line.
    pub blacklist_file: String,
    /// karuta: how often the file is checked for changes.
    pub file_check_interval: ConfigDuration,
    /// karuta: the site's registry of torrents.
    pub postgres: Option<PgOptions>,
    /// karuta: how often the registry is read in full besides its live
    /// changes.
    pub reload_interval: ConfigDuration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            whitelist: Vec::new(),
            blacklist: Vec::new(),
            whitelist_file: String::new(),
            blacklist_file: String::new(),
            file_check_interval: ConfigDuration(Duration::from_secs(5)),
            postgres: None,
            reload_interval: ConfigDuration(Duration::from_secs(5 * 60)),
        }
    }
}

/// A v1 hash (40 hex digits) or a v2 hash (64), as announces carry it.
pub fn parse_hash(s: &str) -> Result<InfoHash, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a 40- or 64-digit hexadecimal info hash");
    match s.len() {
        40 => s.parse().map_err(|_| bad()),
        64 if s.bytes().all(|b| b.is_ascii_hexdigit()) => s[..40].parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn hashes(list: &[String], key: &str) -> Result<HashSet<InfoHash>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, h)| parse_hash(h).map_err(|m| ConfigError::new(format!("{key}[{i}]"), m)))
        .collect()
}

/// Reads a list file: one hash per line, blank lines and `#` comments allowed.
pub fn read_list(path: &Path) -> Result<HashSet<InfoHash>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_list(&text, &path.display().to_string())
}

/// A list file's text; errors name `origin` and the line.
pub fn parse_list(text: &str, origin: &str) -> Result<HashSet<InfoHash>, String> {
    let mut set = HashSet::new();
    for (n, line) in crate::file_watch::entries(text) {
        set.insert(parse_hash(line).map_err(|m| format!("{origin}:{n}: {m}"))?);
    }
    Ok(set)
}

impl Config {
    fn is_whitelist(&self) -> bool {
        !self.whitelist.is_empty() || !self.whitelist_file.is_empty()
    }

    fn is_blacklist(&self) -> bool {
        !self.blacklist.is_empty() || !self.blacklist_file.is_empty()
    }

    fn file(&self) -> Option<(PathBuf, &'static str)> {
        if !self.whitelist_file.is_empty() {
            Some((PathBuf::from(&self.whitelist_file), "whitelist_file"))
        } else if !self.blacklist_file.is_empty() {
            Some((PathBuf::from(&self.blacklist_file), "blacklist_file"))
        } else {
            None
        }
    }
}

impl DriverConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.is_whitelist() && self.is_blacklist() {
            return Err(ConfigError::new(
                "",
                format!("{NAME:?} takes a whitelist or a blacklist, not both"),
            ));
        }
        if let Some(pg) = &self.postgres {
            if self.is_whitelist() || self.is_blacklist() {
                return Err(ConfigError::new(
                    "postgres",
                    "a registry replaces the lists: leave whitelist and blacklist out",
                ));
            }
            pg.validate().map_err(|e| e.within("postgres"))?;
            if self.reload_interval.0.is_zero() {
                return Err(ConfigError::new(
                    "reload_interval",
                    "must be greater than zero",
                ));
            }
        }
        hashes(&self.whitelist, "whitelist")?;
        hashes(&self.blacklist, "blacklist")?;
        // Read here too: a configuration that passes check-config starts.
        if let Some((path, key)) = self.file() {
            read_list(&path).map_err(|m| ConfigError::new(key, m))?;
        }
        if self.file_check_interval.0.is_zero() {
            return Err(ConfigError::new(
                "file_check_interval",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// The hook. The list is swapped atomically when its file changes.
pub struct TorrentApproval {
    whitelist: bool,
    inline: HashSet<InfoHash>,
    from_file: Arc<ArcSwap<HashSet<InfoHash>>>,
    stop_watching: Option<FileWatch>,
    registry: Option<Arc<PgSource<Torrents>>>,
}

impl TorrentApproval {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let whitelist = config.is_whitelist();
        let inline = if whitelist {
            hashes(&config.whitelist, "whitelist")?
        } else {
            hashes(&config.blacklist, "blacklist")?
        };
        let from_file = Arc::new(ArcSwap::from_pointee(HashSet::new()));
        let mut stop_watching = None;
        if let Some((path, key)) = config.file() {
            // Stamped before reading: a change made while reading is seen next time.
            let seen = file_watch::stamp(&path);
            let list = read_list(&path).map_err(|m| ConfigError::new(key, m))?;
            tracing::info!(file = %path.display(), entries = list.len(), "torrent approval list loaded");
            from_file.store(Arc::new(list));
            let target = Arc::clone(&from_file);
            let reread = move |path: &Path| match read_list(path) {
                Ok(list) => {
                    tracing::info!(file = %path.display(), entries = list.len(), "torrent approval list reloaded");
                    target.store(Arc::new(list));
                }
                Err(e) => {
                    tracing::error!(error = %e, "torrent approval list not reloaded; the previous list stays")
                }
            };
            let watch = FileWatch::start(
                "torrent-approval-watch",
                path,
                seen,
                config.file_check_interval.0,
                reread,
            )
            .map_err(|e| ConfigError::new(key, format!("cannot watch the file: {e}")))?;
            stop_watching = Some(watch);
        }
        Ok(TorrentApproval {
            whitelist,
            inline,
            from_file,
            stop_watching,
            registry: None,
        })
    }

    /// The hook on a site's registry (`postgres:`).
    pub fn with_registry(registry: Arc<PgSource<Torrents>>) -> Self {
        TorrentApproval {
            whitelist: true,
            inline: HashSet::new(),
            from_file: Arc::new(ArcSwap::from_pointee(HashSet::new())),
            stop_watching: None,
            registry: Some(registry),
        }
    }

    /// Starts (or shares, across reloads) the registry `config` names.
    pub async fn build(config: Config, sources: &Sources<Torrents>) -> Result<Self, ConfigError> {
        config.validate()?;
        let Some(pg) = &config.postgres else {
            return Self::new(config);
        };
        let key = format!("{pg:?} {:?}", config.reload_interval);
        let every = config.reload_interval.0;
        let source = sources
            .get(key, PgSource::start(Torrents, pg, every))
            .await
            .map_err(|e| e.within("postgres"))?;
        Ok(Self::with_registry(source))
    }

    pub fn approves(&self, ih: &InfoHash) -> bool {
        if let Some(registry) = &self.registry {
            return registry.table.get(ih).is_some();
        }
        let listed = self.inline.contains(ih) || self.from_file.load().contains(ih);
        listed == self.whitelist
    }
}

impl tracker::Hook for TorrentApproval {
    fn handle_announce<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        req: &'a AnnounceRequest,
        _resp: &'a mut AnnounceResponse,
    ) -> HookFuture<'a> {
        if let Some(registry) = &self.registry {
            return ReadyOrBoxed::ready(match registry.table.get(&req.info_hash) {
                Some(factors) => {
                    ctx.extensions.insert(factors);
                    Ok(())
                }
                None => Err(UNREGISTERED.into()),
            });
        }
        ReadyOrBoxed::ready(if self.approves(&req.info_hash) {
            Ok(())
        } else {
            Err(UNAPPROVED.into())
        })
    }

    fn handle_scrape<'a>(
        &'a self,
        _ctx: &'a mut RequestContext,
        req: &'a ScrapeRequest,
        _resp: &'a mut ScrapeResponse,
    ) -> HookFuture<'a> {
        let all = req.info_hashes.iter().all(|ih| self.approves(ih));
        let refusal = if self.registry.is_some() {
            UNREGISTERED
        } else {
            UNAPPROVED
        };
        ReadyOrBoxed::ready(if all { Ok(()) } else { Err(refusal.into()) })
    }

    fn metrics(&self, out: &mut Vec<tracker::telemetry::MetricSample>) {
        if let Some(registry) = &self.registry {
            registry.metrics(out);
        }
    }

    fn health(&self) -> tracker::telemetry::Health {
        self.registry
            .as_ref()
            .map_or(tracker::telemetry::Health::Ok, |r| r.health(NAME))
    }

    fn stop(&self, _reason: tracker::StopReason) -> ReadyOrBoxed<'_, ()> {
        if let Some(watch) = &self.stop_watching {
            watch.stop();
        }
        ReadyOrBoxed::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5a1b2c3d4e5";
    const B: &str = "e1d2c3b4a5e1b2c3b4a5e1d2c3b4e5e1d2c3b4a5";

    #[test]
    fn inline_lists() {
        let w = TorrentApproval::new(Config {
            whitelist: vec![A.into()],
            ..Config::default()
        })
        .unwrap();
        assert!(w.approves(&A.parse().unwrap()));
        assert!(!w.approves(&B.parse().unwrap()));
        let b = TorrentApproval::new(Config {
            blacklist: vec![B.into()],
            ..Config::default()
        })
        .unwrap();
        assert!(b.approves(&A.parse().unwrap()));
        assert!(!b.approves(&B.parse().unwrap()));
    }

    #[test]
    fn v2_hashes_are_truncated() {
        let v2 = format!("{A}{}", "0".repeat(24));
        assert_eq!(parse_hash(&v2).unwrap(), A.parse().unwrap());
        assert!(parse_hash("abc").is_err());
        assert!(parse_hash(&"z".repeat(64)).is_err());
    }

    #[test]
    fn bad_options() {
        let both = Config {
            whitelist: vec![A.into()],
            blacklist_file: "/x".into(),
            ..Config::default()
        };
        assert!(both.validate().unwrap_err().message.contains("not both"));
        let bad = Config {
            blacklist: vec![A.into(), "nope".into()],
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "blacklist[1]");
        let missing = Config {
            whitelist_file: "/nonexistent/list".into(),
            ..Config::default()
        };
        assert_eq!(
            TorrentApproval::new(missing).err().unwrap().key,
            "whitelist_file"
        );
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_one_ignored() {
        let dir = std::env::temp_dir().join(format!("karuta-approval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("list.txt");
        std::fs::write(&path, format!("# approved\n{A}\n")).unwrap();
        let hook = TorrentApproval::new(Config {
            whitelist_file: path.display().to_string(),
            file_check_interval: ConfigDuration(Duration::from_millis(50)),
            ..Config::default()
        })
        .unwrap();
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        assert!(hook.approves(&a) && !hook.approves(&b));
        let wait_for = |cond: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !cond() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            cond()
        };
        std::fs::write(&path, format!("{A}\n{B}  # added\n")).unwrap();
        assert!(
            wait_for(&|| hook.approves(&b)),
            "the new entry is picked up"
        );
        std::fs::write(&path, "not a hash at all\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            hook.approves(&a) && hook.approves(&b),
            "a bad file keeps the previous list"
        );
        tracker::Hook::stop(&hook, tracker::StopReason::Shutdown);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
