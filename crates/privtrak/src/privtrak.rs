//! [`Privtrak`]: the accounting state of one tracker process — records,
//! journal, handler — and its life: open (restore), record announces, stop.
//!
//! It outlives configuration reloads: the hook the registry builds at each
//! reload is a thin handle on the same `Privtrak` (see [`crate::register`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bittorrent::{AnnounceRequest, ClientError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::PrivtrakConfig;
use crate::delta::{Credit, Delta, DeltaEvent, Report, account as credit_of};
use crate::handler::{DeltaHandler, HandlerError, baseline_after};
use crate::journal::snapshot;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::records::Records;
use crate::{UserId, drain, upkeep};

/// What announces are refused with while the handler is behind and the
/// journal is full.
pub const BUSY: ClientError = ClientError::new("tracker busy, try again later");

/// Why privtrak could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("journal_path: {0}")]
    Journal(#[from] JournalError),
    #[error("handler: {0}")]
    Handler(String),
    #[error(
        "journal_path: the journal {journal} ends at entry {last} but the handler has applied up to {applied}: the journal was replaced or cut; move it away to start a new one"
    )]
    Behind {
        journal: String,
        last: u64,
        applied: u64,
    },
}

/// Options that may change while running (a reload applies them).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub gc_interval: Duration,
    pub peer_lifetime: u32,
    pub reporting_interval: Duration,
    pub journal_max_bytes: u64,
    pub max_wait: Duration,
    pub shutdown_timeout: Duration,
    pub snapshot_interval: Duration,
    pub freeleech: bool,
    pub max_peers_per_user_torrent: usize,
}

impl Settings {
    fn of(c: &PrivtrakConfig) -> Self {
        Settings {
            batch_size: c.batch_size,
            flush_interval: c.flush_interval.0,
            gc_interval: c.gc_interval.0,
            peer_lifetime: whole_secs(c.peer_lifetime.0),
            reporting_interval: c.prometheus_reporting_interval.0,
            journal_max_bytes: c.journal_max_bytes.0,
            max_wait: c.max_wait.0,
            shutdown_timeout: c.shutdown_timeout.0,
            snapshot_interval: c.snapshot_interval.0,
            freeleech: c.freeleech,
            max_peers_per_user_torrent: c.max_peers_per_user_torrent,
        }
    }
}

/// What recording an announce needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing to deliver: answer now.
    Nothing,
    /// The delta is journal entry `seq`: answer once it is durable.
    Pending(u64),
}

/// Why an announce was not recorded.
#[derive(Debug)]
pub enum NotRecorded {
    /// The journal holds `journal_max_bytes` the handler has not taken.
    Full,
    /// The journal failed (a disk error): nothing can be recorded.
    Failed(JournalError),
    /// A new peer of a user who has `max_peers_per_user_torrent` active
    /// peers on the torrent already.
    TooManyPeers,
}

/// What announces beyond `max_peers_per_user_torrent` are refused with.
pub const TOO_MANY_PEERS: ClientError = ClientError::new("too many peers for this torrent");

/// Whom an announce is credited to, and at what rates: the user's and the
/// torrent's factors multiplied (download 0 under the global freeleech).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Account {
    pub user: UserId,
    /// The site's user id, when `passkey approval` named the user.
    pub site_user: Option<i64>,
    pub upload_factor: f32,
    pub download_factor: f32,
}

impl From<UserId> for Account {
    /// A user credited at the raw bytes.
    fn from(user: UserId) -> Self {
        Account {
            user,
            site_user: None,
            upload_factor: 1.0,
            download_factor: 1.0,
        }
    }
}

/// Whole seconds of `d`, at most `u32::MAX`.
pub(crate) fn whole_secs(d: Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
}

pub(crate) fn unix_secs(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
}

/// The accounting of one tracker process.
pub struct Privtrak {
    pub(crate) settings: ArcSwap<Settings>,
    pub(crate) records: Records,
    pub(crate) journal: Journal,
    pub(crate) handler: Arc<dyn DeltaHandler>,
    pub(crate) metrics: Metrics,
    /// The first journal entry at open (what the drain acknowledges at
    /// once when it learns the handler's position late).
    pub(crate) first_seq: u64,
    /// Every entry up to this is covered by the snapshot on disk.
    pub(crate) snapshot_through: AtomicU64,
    /// Every entry up to this is applied by the handler.
    pub(crate) acked_through: AtomicU64,
    /// When this process started (unix seconds): restored records are not
    /// expired for a peer lifetime after it, since their peers could not
    /// announce while the tracker was down.
    pub(crate) started_at: u32,
    /// Set while the handler keeps baselines that are not merged in yet: it
    /// did not answer at open and there was no local snapshot. New peers are
    /// then journaled with [`Delta::baseline_unknown`], closes are
    /// remembered, and no snapshot is written (it would lack those
    /// baselines); the drain merges them when the handler answers.
    pub(crate) baselines_pending: AtomicBool,
    pub(crate) stop: watch::Sender<bool>,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The configuration it was opened with (what a reload cannot change).
    fixed: PrivtrakConfig,
}

impl std::fmt::Debug for Privtrak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privtrak")
            .field("journal", &self.journal.dir())
            .finish_non_exhaustive()
    }
}

impl Privtrak {
    /// Opens the journal, restores the baselines (from the handler when it
    /// keeps them, else from the snapshot) and the journal after them, and
    /// starts handing the handler what it has not applied. Must run inside a
    /// tokio runtime, which the background work is spawned on.
    pub async fn open(
        config: &PrivtrakConfig,
        handler: Arc<dyn DeltaHandler>,
    ) -> Result<Arc<Self>, OpenError> {
        let started = Instant::now();
        let opened = Journal::open(
            &config.journal_path,
            config.journal_sync_interval.0,
            config.journal_segment_bytes.0,
        )?;
        let journal = opened.journal;
        let id = journal.id();
        let applied = match handler.applied_through(id).await {
            Ok(applied) => Some(applied),
            Err(e) => {
                tracing::warn!(error = %e, "privtrak: the handler cannot say what it has applied; starting from the local snapshot and journal, handing over once it answers");
                None
            }
        };
        if let Some(applied) = applied
            && applied > opened.last_seq
        {
            return Err(OpenError::Behind {
                journal: journal.dir().display().to_string(),
                last: opened.last_seq,
                applied,
            });
        }
        let records = Records::new(config.shard_count);
        let put = |r: crate::records::PeerRecord| {
            records.update(r.user, &r.info_hash, &r.peer_id, |_, _| {
                (Some(r.baseline), ())
            });
        };
        // Baselines: the local snapshot; else the handler's, when it keeps
        // them; else none (the whole journal is replayed). Start-up blocks
        // on the files: the start is waiting for them anyway.
        let mut restored = 0u64;
        let mut snapshot_through = 0;
        let header = snapshot::load(journal.dir(), id, |r| {
            restored += 1;
            put(r)
        })?;
        let baselines_pending = handler.keeps_baselines() && applied.is_none() && header.is_none();
        if baselines_pending {
            records.track_closed();
        }
        let replay_from = match (header, applied) {
            (Some(h), _) => {
                snapshot_through = h.through;
                h.through + 1
            }
            (None, Some(applied)) if handler.keeps_baselines() => {
                let mut sink = |r: crate::records::PeerRecord| {
                    restored += 1;
                    put(r)
                };
                handler
                    .load_baselines(id, &mut sink)
                    .await
                    .map_err(|e| OpenError::Handler(e.to_string()))?;
                applied + 1
            }
            (None, _) => opened.first_seq,
        };
        if replay_from < opened.first_seq {
            tracing::warn!(
                from = replay_from,
                first = opened.first_seq,
                "privtrak: journal entries the baselines need are gone; their peers start from their next announce"
            );
        }
        // Replay the journal over the baselines, and count what the handler
        // still has to take (all of it when the handler did not say).
        let counted_from = applied.map_or(opened.first_seq, |a| a + 1);
        let mut reader = journal.reader(replay_from.min(counted_from).max(opened.first_seq));
        let mut replayed = 0u64;
        let mut unacked_bytes = 0u64;
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            let (n, _) = reader.read(4096, &mut buf)?;
            if n == 0 {
                break;
            }
            for d in &buf {
                if d.seq >= counted_from {
                    unacked_bytes += crate::journal::RECORD_LEN as u64;
                }
                if d.seq >= replay_from {
                    replayed += 1;
                    records.update_journaled(d.user, &d.info_hash, &d.peer_id, |_, _| {
                        (baseline_after(d), d.event.closes(), ())
                    });
                }
            }
        }
        journal.count_unacknowledged(unacked_bytes);
        let (records_held, users, memory) = records.stats();
        tracing::info!(
            journal = %journal.dir().display(),
            id = %id,
            restored,
            replayed,
            records = records_held,
            users,
            unacknowledged = opened.last_seq + 1 - counted_from.min(opened.last_seq + 1),
            truncated_bytes = opened.truncated,
            took_ms = started.elapsed().as_millis() as u64,
            "privtrak restored"
        );
        let (stop, _) = watch::channel(false);
        let privtrak = Arc::new(Privtrak {
            settings: ArcSwap::from_pointee(Settings::of(config)),
            records,
            journal,
            handler,
            metrics: Metrics::default(),
            snapshot_through: AtomicU64::new(snapshot_through),
            acked_through: AtomicU64::new(applied.unwrap_or(0)),
            first_seq: opened.first_seq,
            started_at: unix_secs(SystemTime::now()),
            baselines_pending: AtomicBool::new(baselines_pending),
            stop,
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            fixed: config.clone(),
        });
        privtrak.metrics.set_counts(records_held, users, memory);
        let tasks = vec![
            // Subscribed here, before anything can stop them: a receiver made
            // after the stop would never see it.
            tokio::spawn(drain::run(
                Arc::clone(&privtrak),
                applied,
                privtrak.stop.subscribe(),
            )),
            tokio::spawn(upkeep::run(
                Arc::clone(&privtrak),
                privtrak.stop.subscribe(),
            )),
        ];
        *privtrak
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = tasks;
        Ok(privtrak)
    }

    /// Merges the handler's baselines in, for a start that could not load
    /// them (see `baselines_pending`): each peer privtrak has no record of
    /// and has not seen close gets its stored baseline. Called by the drain
    /// when the handler first answers, before it hands anything over, so the
    /// stored baselines are those of the position it answered.
    pub(crate) async fn merge_handler_baselines(&self) -> Result<(), HandlerError> {
        let started = Instant::now();
        let (mut loaded, mut added) = (0u64, 0u64);
        let mut sink = |r: crate::records::PeerRecord| {
            loaded += 1;
            added += u64::from(self.records.insert_absent(&r));
        };
        self.handler
            .load_baselines(self.journal.id(), &mut sink)
            .await?;
        self.baselines_pending.store(false, Ordering::Release);
        self.records.untrack_closed();
        tracing::info!(
            loaded,
            added,
            took_ms = started.elapsed().as_millis() as u64,
            "privtrak: the handler's baselines restored (it was unreachable at start)"
        );
        Ok(())
    }

    /// Whether the handler's baselines are still to be merged in.
    pub fn baselines_pending(&self) -> bool {
        self.baselines_pending.load(Ordering::Acquire)
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Applies the options a running tracker can change; warns about the
    /// others (they take effect at the next start).
    pub fn reconfigure(&self, config: &PrivtrakConfig) {
        if config.fixed() != self.fixed.fixed() {
            tracing::warn!(
                "privtrak: shard_count, journal_path, journal_segment_bytes and handler take effect at the next start; the running ones stay"
            );
        }
        self.journal
            .set_sync_interval(config.journal_sync_interval.0);
        self.settings.store(Arc::new(Settings::of(config)));
    }

    /// Records one announce of `user`: updates the peer's baseline and, when
    /// there is something to deliver, appends the delta to the journal.
    pub fn record(
        &self,
        account: impl Into<Account>,
        req: &AnnounceRequest,
        now: SystemTime,
    ) -> Result<Recorded, NotRecorded> {
        let account = account.into();
        let user = account.user;
        let settings = self.settings();
        if self.journal.unacknowledged_bytes() >= settings.journal_max_bytes {
            return Err(NotRecorded::Full);
        }
        let report = Report {
            event: req.event.into(),
            uploaded: req.uploaded,
            downloaded: req.downloaded,
            left: req.left,
            now: unix_secs(now),
        };
        let peer = req.peer;
        let limit = settings.max_peers_per_user_torrent;
        let download_factor = if settings.freeleech {
            0.0
        } else {
            account.download_factor
        };
        self.records
            .update_journaled(user, &req.info_hash, &peer.id, |prev, on_torrent| {
                // A stopped announce of an unknown peer records nothing anyway.
                if prev.is_none()
                    && limit > 0
                    && on_torrent >= limit
                    && report.event != DeltaEvent::Stopped
                {
                    return (None, false, Err(NotRecorded::TooManyPeers));
                }
                // The handler may hold a baseline privtrak has not merged in:
                // it credits this one (a stop of such a peer too, and its
                // stored baseline goes).
                let unknown = prev.is_none() && self.baselines_pending.load(Ordering::Acquire);
                let outcome = credit_of(prev, &report, settings.peer_lifetime);
                let credit = match outcome.credit {
                    Some(credit) => credit,
                    None if unknown && report.event == DeltaEvent::Stopped => Credit::default(),
                    None => return (outcome.next, false, Ok(Recorded::Nothing)),
                };
                let mut delta = Delta {
                    seq: 0,
                    user,
                    info_hash: req.info_hash,
                    peer_id: peer.id,
                    addr: Some(peer.addr()),
                    event: report.event,
                    uploaded: credit.uploaded,
                    downloaded: credit.downloaded,
                    left: req.left,
                    seed_seconds: credit.seed_seconds,
                    leech_seconds: credit.leech_seconds,
                    reported_at: now,
                    total_uploaded: req.uploaded,
                    total_downloaded: req.downloaded,
                    site_user: account.site_user,
                    upload_factor: account.upload_factor,
                    download_factor,
                    baseline_unknown: unknown,
                };
                match self.journal.append(&mut delta) {
                    Ok(seq) => (
                        outcome.next,
                        report.event.closes(),
                        Ok(Recorded::Pending(seq)),
                    ),
                    // Not journaled: the baseline must not move.
                    Err(e) => (prev.copied(), false, Err(NotRecorded::Failed(e))),
                }
            })
    }

    /// Records an announce and waits until its delta is durable, waiting up
    /// to `max_wait` for room in the journal. The error is the client's.
    pub async fn announce(
        &self,
        account: impl Into<Account>,
        req: &AnnounceRequest,
    ) -> Result<(), tracker::TrackerError> {
        let account = account.into();
        let deadline = Instant::now() + self.settings().max_wait;
        loop {
            match self.record(account, req, SystemTime::now()) {
                Ok(Recorded::Nothing) => return Ok(()),
                Ok(Recorded::Pending(seq)) => return self.durable(seq).await,
                Err(NotRecorded::Full) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.metrics.busy.fetch_add(1, Ordering::Relaxed);
                        return Err(BUSY.into());
                    }
                    let _ = tokio::time::timeout(left, self.journal.acknowledged()).await;
                }
                Err(NotRecorded::Failed(e)) => return Err(unavailable(&e)),
                Err(NotRecorded::TooManyPeers) => return Err(TOO_MANY_PEERS.into()),
            }
        }
    }

    /// Waits until journal entry `seq` is durable.
    pub async fn durable(&self, seq: u64) -> Result<(), tracker::TrackerError> {
        self.journal.durable(seq).await.map_err(|e| unavailable(&e))
    }

    /// How many records one user has on one torrent.
    pub fn peers_of(&self, user: UserId, info_hash: &bittorrent::InfoHash) -> usize {
        self.records.peers_of(user, info_hash)
    }

    /// The baseline of a peer, if privtrak has a record of it.
    pub fn baseline(
        &self,
        user: UserId,
        info_hash: &bittorrent::InfoHash,
        peer_id: &bittorrent::PeerId,
    ) -> Option<crate::Baseline> {
        self.records.get(user, info_hash, peer_id)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Entries the handler has applied.
    pub fn acked_through(&self) -> u64 {
        self.acked_through.load(Ordering::Acquire)
    }

    /// Entries appended that the handler has not applied yet.
    pub fn pending(&self) -> u64 {
        self.journal.last_seq().saturating_sub(self.acked_through())
    }

    /// Heap bytes of the records (capacities, the torrent table included).
    pub fn heap_bytes(&self) -> usize {
        self.records.stats().2
    }

    /// Records held and users with one.
    pub fn counts(&self) -> (usize, usize) {
        self.records.counts()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops: hands the handler everything pending (waiting at most
    /// `shutdown_timeout`; what it has not taken stays in the journal for the
    /// next start), writes a snapshot where restarts use one, closes the
    /// journal and the handler. Announces must have stopped. Runs once.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = self.settings().shutdown_timeout;
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = Instant::now() + timeout;
        for mut task in tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    pending = self.pending(),
                    "privtrak: the handler did not take everything within shutdown_timeout; the rest stays in the journal for the next start"
                );
            }
        }
        if self.baselines_pending() {
            tracing::warn!(
                "privtrak: no snapshot at stop: the handler's baselines were never merged in (it did not answer); the next start restores them from it"
            );
        } else {
            match upkeep::snapshot(self).await {
                Ok(count) => tracing::info!(records = count, "privtrak snapshot written"),
                Err(e) => {
                    tracing::error!(error = %e, "privtrak: the snapshot at stop failed; the next start replays the journal")
                }
            }
        }
        let pending = self.pending();
        self.journal.close();
        if let Err(e) = self.handler.close().await {
            tracing::warn!(error = %e, "privtrak: closing the handler failed");
        }
        tracing::info!(pending, applied = self.acked_through(), "privtrak stopped");
    }
}

impl Privtrak {
    /// Stops as a killed process would (for tests): background work is
    /// aborted, nothing more is handed over, no snapshot is written; only
    /// what is in the journal's files survives.
    #[cfg(feature = "testing")]
    pub async fn crash(&self) {
        self.closed.store(true, Ordering::Release);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        self.journal.close();
    }
}

fn unavailable(e: &JournalError) -> tracker::TrackerError {
    tracker::TrackerError::Store(tracker::StoreError::Unavailable(format!(
        "privtrak journal: {e}"
    )))
}
