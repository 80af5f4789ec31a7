//! A table fed live from the site's PostgreSQL: read in full at start,
//! kept current by NOTIFY (karuta's triggers announce every row change),
//! read in full again every `reload_interval`, at SIGUSR1 and whenever the
//! LISTEN connection comes back after a loss. While the database is away the
//! last good table is served as it is; a failed read never empties it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use database::tokio_postgres::Row;
use database::{Database, Listener, Notice, PgOptions};
use futures_util::{StreamExt, pin_mut};
use tokio::sync::{Notify, mpsc};
use tracker::ConfigError;
use tracker::telemetry::{Health, MetricSample};

use super::table::{Change, Key, LiveTable, Table};

/// One entry of a kind's table.
pub type Entry<T> = (<T as Kind>::Key, <T as Kind>::Value);
/// What one notification changes in a kind's table.
pub type Changes<T> = Vec<Change<<T as Kind>::Key, <T as Kind>::Value>>;

/// What one kind of table reads and hears.
pub trait Kind: Send + Sync + 'static {
    type Key: Key;
    type Value: Copy + Send + Sync + 'static;
    /// `users`, `torrents`: the metrics' label and the channel's suffix.
    const TABLE: &'static str;
    /// The full read; its rows go through [`Kind::row`].
    fn load_sql(&self, db: &Database) -> String;
    /// One row of the full read (`None`: a row to skip).
    fn row(row: &Row) -> Result<Option<Entry<Self>>, String>;
    /// One notification's payload.
    fn notice(payload: &str) -> Result<Changes<Self>, String>;
}

/// How the source is doing, for metrics and `/health`.
#[derive(Default)]
pub struct Status {
    listening: AtomicBool,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    notifications: AtomicU64,
    bad_notifications: AtomicU64,
    last_reload_unix: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn error(&self, why: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }
}

/// The live table and the task that keeps it; dropped, the task stops.
pub struct PgSource<T: Kind> {
    pub table: Arc<LiveTable<T::Key, T::Value>>,
    status: Arc<Status>,
    reload: Arc<Notify>,
    target: String,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Kind> Drop for PgSource<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How soon a failed full read is tried again.
const RETRY: Duration = Duration::from_secs(5);

impl<T: Kind> PgSource<T> {
    /// Connects, LISTENs, reads the table in full and starts keeping it.
    /// Fails (naming `url`) when any of that fails: a start with no table
    /// would refuse everyone.
    pub async fn start(
        kind: T,
        options: &PgOptions,
        reload_interval: Duration,
    ) -> Result<Arc<Self>, ConfigError> {
        let db = Database::new(options)?;
        let unreachable = |why: String| ConfigError::new("url", why);
        if options.create_schema {
            database::migrate(&db)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        }
        let (tx, mut notices) = mpsc::unbounded_channel();
        let channel = format!("{}_{}", db.schema(), T::TABLE);
        let listener = Listener::start(&db, &[channel], tx);
        // LISTEN first, then the full read: no change falls between them.
        match notices.recv().await {
            Some(Notice::Subscribed) => {}
            Some(Notice::Lost(why)) => return Err(unreachable(why)),
            other => return Err(unreachable(format!("unexpected {other:?}"))),
        }
        let started = Instant::now();
        let table = load(&kind, &db).await.map_err(unreachable)?;
        let (entries, bytes) = table.stats();
        tracing::info!(
            table = T::TABLE,
            database = db.target(),
            entries,
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "site table loaded"
        );
        let status = Arc::new(Status::default());
        status.listening.store(true, Ordering::Relaxed);
        status.reloads.store(1, Ordering::Relaxed);
        status.last_reload_unix.store(unix_now(), Ordering::Relaxed);
        let table = Arc::new(LiveTable::new(table));
        let reload = Arc::new(Notify::new());
        let keeper = Keeper {
            kind,
            db: db.clone(),
            table: Arc::clone(&table),
            status: Arc::clone(&status),
        };
        let task =
            tokio::spawn(keeper.run(listener, notices, Arc::clone(&reload), reload_interval));
        Ok(Arc::new(PgSource {
            table,
            status,
            reload,
            target: db.target().to_owned(),
            task,
        }))
    }

    /// Asks for a full read (SIGUSR1); the current table serves meanwhile.
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    pub fn metrics(&self, out: &mut Vec<MetricSample>) {
        let s = &self.status;
        let (entries, bytes) = self.table.stats();
        let label = |m: MetricSample| m.label("table", T::TABLE);
        out.push(label(MetricSample::gauge(
            "karuta_site_entries",
            "Entries of a site table held in memory.",
            entries as f64,
        )));
        out.push(label(MetricSample::gauge(
            "karuta_site_memory_bytes",
            "Bytes a site table's maps hold.",
            bytes as f64,
        )));
        out.push(label(MetricSample::gauge(
            "karuta_site_listening",
            "1 while the LISTEN connection to the site's database is up.",
            f64::from(u8::from(s.listening.load(Ordering::Relaxed))),
        )));
        out.push(label(MetricSample::counter(
            "karuta_site_reloads_total",
            "Full reads of a site table.",
            s.reloads.load(Ordering::Relaxed),
        )));
        out.push(label(MetricSample::counter(
            "karuta_site_reload_failures_total",
            "Full reads of a site table that failed (the previous table stayed).",
            s.reload_failures.load(Ordering::Relaxed),
        )));
        out.push(label(MetricSample::counter(
            "karuta_site_notifications_total",
            "Row changes heard through NOTIFY.",
            s.notifications.load(Ordering::Relaxed),
        )));
        out.push(label(MetricSample::counter(
            "karuta_site_bad_notifications_total",
            "Notifications that could not be read (logged, ignored).",
            s.bad_notifications.load(Ordering::Relaxed),
        )));
        out.push(label(MetricSample::gauge(
            "karuta_site_last_reload_timestamp_seconds",
            "Unix time of the last full read that succeeded.",
            s.last_reload_unix.load(Ordering::Relaxed) as f64,
        )));
    }

    /// Degraded (still serving) while the database is away.
    pub fn health(&self, hook: &str) -> Health {
        if self.status.listening.load(Ordering::Relaxed) {
            return Health::Ok;
        }
        let why = self
            .status
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Health::Degraded(format!(
            "{hook}: lost {} ({why}); serving the {} {} read at {}",
            self.target,
            self.table.stats().0,
            T::TABLE,
            self.status.last_reload_unix.load(Ordering::Relaxed)
        ))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn load<T: Kind>(kind: &T, db: &Database) -> Result<Table<T::Key, T::Value>, String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    let rows = client
        .query_raw(&kind.load_sql(db), std::iter::empty::<&str>())
        .await
        .map_err(|e| db.error(&e).to_string())?;
    pin_mut!(rows);
    let table = Table::default();
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| db.error(&e).to_string())?;
        if let Some((k, v)) = T::row(&row)? {
            table.insert(k, v);
        }
    }
    Ok(table)
}

struct Keeper<T: Kind> {
    kind: T,
    db: Database,
    table: Arc<LiveTable<T::Key, T::Value>>,
    status: Arc<Status>,
}

impl<T: Kind> Keeper<T> {
    async fn run(
        self,
        _listener: Listener,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        reload: Arc<Notify>,
        every: Duration,
    ) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut retry: Option<tokio::time::Instant> = None;
        loop {
            let retry_at = retry.unwrap_or_else(|| tokio::time::Instant::now() + every * 2);
            let full = tokio::select! {
                notice = notices.recv() => match notice {
                    None => return,
                    Some(notice) => self.heard(notice),
                },
                _ = ticker.tick() => true,
                _ = reload.notified() => true,
                _ = tokio::time::sleep_until(retry_at), if retry.is_some() => true,
            };
            if full {
                retry = self
                    .reload()
                    .await
                    .then_some(tokio::time::Instant::now() + RETRY);
            }
        }
    }

    /// Applies a notice; `true` when the table must be read in full.
    fn heard(&self, notice: Notice) -> bool {
        match notice {
            Notice::Subscribed => {
                self.status.listening.store(true, Ordering::Relaxed);
                tracing::info!(
                    table = T::TABLE,
                    database = self.db.target(),
                    "listening again; reading the table in full"
                );
                true
            }
            Notice::Lost(why) => {
                if self.status.listening.swap(false, Ordering::Relaxed) {
                    tracing::warn!(table = T::TABLE, error = %why, "lost the site's database; serving the last table read");
                }
                self.status.error(why);
                false
            }
            Notice::Notification { payload, .. } => match T::notice(&payload) {
                Ok(changes) => {
                    self.status.notifications.fetch_add(1, Ordering::Relaxed);
                    let mut full = false;
                    for change in changes {
                        full |= !self.table.apply(change);
                    }
                    full
                }
                Err(why) => {
                    self.status
                        .bad_notifications
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(table = T::TABLE, error = %why, payload, "a notification could not be read");
                    false
                }
            },
        }
    }

    /// A full read; `true` when it failed (the table stays as it was).
    async fn reload(&self) -> bool {
        let started = Instant::now();
        match load(&self.kind, &self.db).await {
            Ok(table) => {
                let (entries, _) = table.stats();
                self.table.replace(table);
                self.status.reloads.fetch_add(1, Ordering::Relaxed);
                self.status
                    .last_reload_unix
                    .store(unix_now(), Ordering::Relaxed);
                tracing::info!(
                    table = T::TABLE,
                    entries,
                    took_ms = started.elapsed().as_millis() as u64,
                    "site table read in full"
                );
                false
            }
            Err(why) => {
                self.status.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table = T::TABLE, error = %why, "site table not read; the previous one stays");
                self.status.error(why);
                true
            }
        }
    }
}

/// Sources shared by the hooks a reload builds: a reload with the same
/// options keeps the running source (and asks it for a full read) instead
/// of connecting and reading again from nothing.
pub struct Sources<T: Kind> {
    running: tokio::sync::Mutex<Vec<(String, Weak<PgSource<T>>)>>,
}

impl<T: Kind> Default for Sources<T> {
    fn default() -> Self {
        Sources {
            running: tokio::sync::Mutex::default(),
        }
    }
}

impl<T: Kind> Sources<T> {
    /// The running source for `key` (told to read in full), else a new one.
    pub async fn get(
        &self,
        key: String,
        start: impl std::future::Future<Output = Result<Arc<PgSource<T>>, ConfigError>>,
    ) -> Result<Arc<PgSource<T>>, ConfigError> {
        let mut running = self.running.lock().await;
        running.retain(|(_, s)| s.strong_count() > 0);
        if let Some(source) = running
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, s)| s.upgrade())
        {
            source.reload();
            return Ok(source);
        }
        let source = start.await?;
        running.push((key, Arc::downgrade(&source)));
        Ok(source)
    }
}
