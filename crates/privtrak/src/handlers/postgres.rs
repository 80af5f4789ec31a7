//! `postgres`: deltas into a site's PostgreSQL, one transaction per batch.
//!
//! A batch is applied in transactions that also record it in
//! `{schema}.batches` (journal id, part, first and last position): the
//! positions recorded for a journal are what this handler has applied, so a
//! batch retried after a lost COMMIT reply, or replayed after a crash, is
//! acknowledged without being applied again, and one that straddles it is
//! applied from the next position on.
//!
//! A batch is applied in one transaction (`writers: 1`, the default), so a
//! site sees all of it or none of it. Its deltas still fall into [`PARTS`]
//! parts by user, each with its own recorded position: with `writers: 2` or
//! `4` the parts are applied in that many transactions at once, each on its
//! own connection (one PostgreSQL backend is one core), and what the handler
//! has applied is the least position of the parts, so a crash between two
//! writers' commits replays only what is missing — whatever `writers` the
//! next start uses.
//!
//! In a transaction the deltas are first summed per (user, torrent) —
//! `transfers` rows grow by the sums — and per peer — `peers` rows take each
//! peer's last baseline, or go when its last delta closed it — and the rows
//! are written sorted by key with array parameters (`unnest`), a statement
//! per table, so two writers (two trackers on one database) take row locks
//! in the same order and cannot deadlock each other. Serialization failures
//! and deadlocks are retried here a few times; anything else fails the batch
//! and privtrak retries it later, unchanged.
//!
//! Credit: `credited_uploaded`/`credited_downloaded` grow by each delta's
//! bytes times the factors it was reported under (the user's times the
//! torrent's, download 0 under freeleech); `uploaded`/`downloaded` stay raw.
//! `user_id` is the site's id when `passkey approval` named the user.
//!
//! The baselines in `peers` are what a start restores from when privtrak has
//! no snapshot of its own (a new machine). When such a start could not reach
//! the database, privtrak journals the peers it did not know with
//! [`Delta::baseline_unknown`]; the transaction that applies one credits it
//! against the baseline `peers` held (see [`credit_against`]), so bytes a
//! client reported while the database was away count all the same.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bittorrent::{InfoHash, PeerId};
use database::tokio_postgres::Statement;
use database::tokio_postgres::types::ToSql;
use database::{Database, PgOptions};
use futures_util::future::{try_join, try_join3};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tracker::ConfigError;

use crate::UserId;
use crate::delta::{Baseline, Delta, DeltaEvent, credit_against};
use crate::handler::{BaselineSink, Batch, DeltaHandler, HandlerError, HandlerFuture};
use crate::journal::JournalId;
use crate::privtrak::whole_secs;
use crate::records::PeerRecord;

/// The handler's options: the database's, and whether a start may go on
/// without it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct PostgresConfig {
    #[serde(flatten)]
    pub database: PgOptions,
    /// Start even when the database cannot be reached: announces are served
    /// and journaled, and handed over once it answers.
    pub start_without_database: bool,
    /// How many transactions a batch is applied in, at once, each on its
    /// own connection: 1 (the default) applies a batch atomically; 2 or 4
    /// split it by user, each transaction atomic for its users, for a
    /// database where one backend (one core) is the limit.
    pub writers: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            database: PgOptions::default(),
            start_without_database: false,
            writers: 1,
        }
    }
}

impl PostgresConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        if self.writers == 0 || !PARTS.is_multiple_of(self.writers) {
            return Err(ConfigError::new(
                "writers",
                format!("must be 1, 2 or 4, not {}", self.writers),
            ));
        }
        if self.writers > self.database.pool_size {
            return Err(ConfigError::new(
                "writers",
                format!(
                    "{} writers need at least as many connections, and pool_size is {}",
                    self.writers, self.database.pool_size
                ),
            ));
        }
        Ok(())
    }
}

/// How many times a batch is retried here on a serialization failure or a
/// deadlock before privtrak's own (slower) retry takes over.
const CONFLICT_RETRIES: u32 = 5;
/// Batch ids are kept this long (the newest of each journal always).
const KEEP_BATCHES: &str = "7 days";
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub struct PostgresHandler {
    db: Database,
    sql: Sql,
    create_schema: bool,
    /// Set once the migrations have run (at build, or at the first call that
    /// reaches the database when it was down at start).
    schema: OnceCell<()>,
    pruned: Mutex<Option<Instant>>,
    writers: usize,
    /// privtrak's `peer_lifetime` (seconds): caps the time credited to a
    /// delta of [`Delta::baseline_unknown`].
    peer_lifetime: u32,
}

fn i64_of(n: u64) -> i64 {
    // A counter past 2^63 bytes (8 EiB) is a broken client; keep the row.
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn err(db: &Database, e: &database::tokio_postgres::Error) -> HandlerError {
    HandlerError::new(db.error(e))
}

/// A batch summed per (user, torrent): the `transfers` rows to add.
#[derive(Default)]
struct Transfer {
    uploaded: u64,
    downloaded: u64,
    credited_uploaded: u64,
    credited_downloaded: u64,
    /// The site's user id, when a delta named it (the latest wins).
    user_id: Option<i64>,
    seed_seconds: u64,
    leech_seconds: u64,
    snatched_at: Option<SystemTime>,
    announces: u64,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
}

type TransferKey = (UserId, InfoHash);
type PeerKey = (UserId, InfoHash, PeerId);

/// How many parts a batch is applied in, at once: deltas go to a part by
/// user, so parts touch disjoint rows and a peer's deltas stay in order in
/// one part. Fixed: each part's position is recorded apart, and a delta must
/// find its part at every start.
pub const PARTS: usize = 4;

/// The part a user's deltas go to.
pub fn part_of(user: &UserId) -> usize {
    // The last byte: sequential site ids spread, and passkeys are random.
    usize::from(user.0[15]) % PARTS
}

/// The deltas summed per (user, torrent), and each peer's last delta (its
/// state after them), both sorted by key.
fn sum<'a>(
    deltas: impl Iterator<Item = &'a Delta>,
) -> (
    BTreeMap<TransferKey, Transfer>,
    BTreeMap<PeerKey, &'a Delta>,
) {
    let mut transfers: BTreeMap<TransferKey, Transfer> = BTreeMap::new();
    let mut peers: BTreeMap<PeerKey, &Delta> = BTreeMap::new();
    for d in deltas {
        peers.insert((d.user, d.info_hash, d.peer_id), d);
        // An expiry is the tracker's, not an announce: it changes no totals.
        if d.event == DeltaEvent::Expired {
            continue;
        }
        let t = transfers.entry((d.user, d.info_hash)).or_default();
        t.uploaded += d.uploaded;
        t.downloaded += d.downloaded;
        let (credited_up, credited_down) = d.credited();
        t.credited_uploaded += credited_up;
        t.credited_downloaded += credited_down;
        t.user_id = d.site_user.or(t.user_id);
        t.seed_seconds += u64::from(d.seed_seconds);
        t.leech_seconds += u64::from(d.leech_seconds);
        t.announces += 1;
        if d.event == DeltaEvent::Completed && t.snatched_at.is_none() {
            t.snatched_at = Some(d.reported_at);
        }
        t.first = Some(t.first.map_or(d.reported_at, |f| f.min(d.reported_at)));
        t.last = Some(t.last.map_or(d.reported_at, |l| l.max(d.reported_at)));
    }
    (transfers, peers)
}

/// The statements a batch is applied with (`{schema}` replaced at open).
struct Sql {
    lock: String,
    positions: String,
    transfers: String,
    gone: String,
    peers: String,
    record: String,
    stored: String,
}

impl Sql {
    fn new(db: &Database) -> Sql {
        Sql {
            lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, p))
                   FROM unnest($2::int2[]) WITH ORDINALITY AS u(p, n) ORDER BY n"
                .to_owned(),
            positions: db.sql(
                "SELECT p, (SELECT coalesce(max(last_seq), 0) FROM {schema}.batches
                            WHERE journal = $1 AND part = p)
                 FROM unnest($2::int2[]) AS u(p)",
            ),
            transfers: db.sql(
                "INSERT INTO {schema}.transfers AS t
                     (user_key, info_hash, uploaded, downloaded, seed_seconds, leech_seconds,
                      snatched_at, announces, first_announce, last_announce, user_id,
                      credited_uploaded, credited_downloaded)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int8[], $5::int8[],
                          $6::int8[], $7::timestamptz[], $8::int8[], $9::timestamptz[],
                          $10::timestamptz[], $11::int8[], $12::int8[], $13::int8[])
                 ON CONFLICT (user_key, info_hash) DO UPDATE SET
                     uploaded = t.uploaded + EXCLUDED.uploaded,
                     downloaded = t.downloaded + EXCLUDED.downloaded,
                     credited_uploaded = t.credited_uploaded + EXCLUDED.credited_uploaded,
                     credited_downloaded = t.credited_downloaded + EXCLUDED.credited_downloaded,
                     user_id = coalesce(EXCLUDED.user_id, t.user_id),
                     seed_seconds = t.seed_seconds + EXCLUDED.seed_seconds,
                     leech_seconds = t.leech_seconds + EXCLUDED.leech_seconds,
                     snatched_at = coalesce(t.snatched_at, EXCLUDED.snatched_at),
                     announces = t.announces + EXCLUDED.announces,
                     first_announce = least(t.first_announce, EXCLUDED.first_announce),
                     last_announce = greatest(t.last_announce, EXCLUDED.last_announce)",
            ),
            gone: db.sql(
                "DELETE FROM {schema}.peers AS p
                 USING unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS g(user_key, info_hash, peer_id)
                 WHERE p.user_key = g.user_key AND p.info_hash = g.info_hash AND p.peer_id = g.peer_id",
            ),
            peers: db.sql(
                "INSERT INTO {schema}.peers AS p
                     (user_key, info_hash, peer_id, uploaded, downloaded, bytes_left, ip, port,
                      seeding, last_announce)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::int8[], $5::int8[],
                          $6::int8[], $7::inet[], $8::int4[], $9::bool[],
                          $10::timestamptz[])
                 ON CONFLICT (user_key, info_hash, peer_id) DO UPDATE SET
                     uploaded = EXCLUDED.uploaded, downloaded = EXCLUDED.downloaded,
                     bytes_left = EXCLUDED.bytes_left, ip = EXCLUDED.ip, port = EXCLUDED.port,
                     seeding = EXCLUDED.seeding, last_announce = EXCLUDED.last_announce",
            ),
            record: db.sql(
                "INSERT INTO {schema}.batches (journal, part, first_seq, last_seq, deltas)
                 SELECT $1, p, f, $4, d FROM unnest($2::int2[], $3::int8[], $5::int4[]) AS u(p, f, d)",
            ),
            stored: db.sql(&format!(
                "SELECT {PEER_COLUMNS} FROM {{schema}}.peers
                 JOIN unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS k(user_key, info_hash, peer_id)
                 USING (user_key, info_hash, peer_id)"
            )),
        }
    }
}

impl PostgresHandler {
    /// Builds the pool and, unless `start_without_database`, checks the
    /// database answers and runs the migrations (errors name `url`).
    pub async fn open(config: &PostgresConfig) -> Result<Self, ConfigError> {
        let db = Database::new(&config.database)?;
        let handler = PostgresHandler {
            sql: Sql::new(&db),
            db,
            create_schema: config.database.create_schema,
            schema: OnceCell::new(),
            pruned: Mutex::new(None),
            writers: config.writers.clamp(1, PARTS),
            peer_lifetime: whole_secs(crate::PrivtrakConfig::default().peer_lifetime.0),
        };
        match handler.ready().await {
            Ok(()) => {}
            Err(e) if config.start_without_database => {
                tracing::warn!(error = %e, "privtrak: PostgreSQL is unreachable; starting without it (start_without_database)");
            }
            Err(e) => {
                return Err(ConfigError::new(
                    "url",
                    format!("cannot use the database: {e}"),
                ));
            }
        }
        Ok(handler)
    }

    /// Runs the migrations once (or checks the connection when karuta does
    /// not create the schema).
    async fn ready(&self) -> Result<(), HandlerError> {
        self.schema
            .get_or_try_init(|| async {
                if self.create_schema {
                    database::migrate(&self.db)
                        .await
                        .map_err(HandlerError::new)?;
                } else {
                    self.db.check().await.map_err(HandlerError::new)?;
                }
                Ok::<(), HandlerError>(())
            })
            .await
            .map(|_| ())
    }

    /// Sets privtrak's `peer_lifetime` (the default is privtrak's default).
    pub fn with_peer_lifetime(mut self, lifetime: Duration) -> Self {
        self.peer_lifetime = whole_secs(lifetime);
        self
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Applies one batch: its deltas split by user into [`PARTS`] parts,
    /// the parts grouped into `writers` transactions applied at once on
    /// separate connections (one transaction, the whole batch, by default).
    /// `Ok(false)` when a transaction met a conflict worth retrying.
    async fn apply(&self, batch: &Batch) -> Result<bool, HandlerError> {
        let mut parts: Vec<Vec<&Delta>> = vec![Vec::new(); PARTS];
        for d in &batch.deltas {
            parts[part_of(&d.user)].push(d);
        }
        let writers = self.writers;
        let results = futures_util::future::join_all((0..writers).map(|w| {
            let group: Vec<(i16, &[&Delta])> = (w..PARTS)
                .step_by(writers)
                .map(|p| (p as i16, parts[p].as_slice()))
                .collect();
            self.apply_group(batch, group)
        }))
        .await;
        let mut done = true;
        for r in results {
            done &= r?;
        }
        Ok(done)
    }

    /// Some parts of a batch in one transaction, which also records the
    /// batch for each of them (so a part's position moves on even when it
    /// had no delta). `group` is sorted by part.
    async fn apply_group(
        &self,
        batch: &Batch,
        group: Vec<(i16, &[&Delta])>,
    ) -> Result<bool, HandlerError> {
        let db = &self.db;
        let sql = &self.sql;
        let mut client = db.client().await.map_err(HandlerError::new)?;
        let tx = client.transaction().await.map_err(|e| err(db, &e))?;
        let journal = batch.id.journal.to_string();
        let part_ids: Vec<i16> = group.iter().map(|(p, _)| *p).collect();
        // Statements are prepared once per connection (the first time all at
        // once, in one round trip); the ones sent together below go out in
        // one round trip too, and PostgreSQL runs them in order.
        let ((lock, position, upsert), (gone, baselines, record)) = try_join(
            try_join3(
                tx.prepare_cached(&sql.lock),
                tx.prepare_cached(&sql.positions),
                tx.prepare_cached(&sql.transfers),
            ),
            try_join3(
                tx.prepare_cached(&sql.gone),
                tx.prepare_cached(&sql.peers),
                tx.prepare_cached(&sql.record),
            ),
        )
        .await
        .map_err(|e| err(db, &e))?;
        // One writer per part of a journal at a time (a second process on
        // one journal would be a mistake; this keeps it from counting
        // twice). Taken in the order of the parts: two writers cannot
        // deadlock on them. The positions are read once the locks are held.
        let (_, positions) = try_join(
            tx.execute(&lock, &[&journal, &part_ids]),
            tx.query(&position, &[&journal, &part_ids]),
        )
        .await
        .map_err(|e| err(db, &e))?;
        let applied = |part: i16| -> u64 {
            positions
                .iter()
                .find(|r| r.get::<_, i16>(0) == part)
                .map_or(0, |r| r.get::<_, i64>(1).max(0) as u64)
        };
        // Each part goes on from its own position: a batch replayed after a
        // crash between two writers' commits applies only what is missing.
        let mut todo: Vec<&Delta> = Vec::new();
        let (mut rec_parts, mut rec_first, mut rec_deltas) = (Vec::new(), Vec::new(), Vec::new());
        for (part, deltas) in &group {
            let from = applied(*part);
            if from >= batch.id.last {
                continue;
            }
            let before = todo.len();
            todo.extend(deltas.iter().copied().filter(|d| d.seq > from));
            rec_parts.push(*part);
            rec_first.push(i64_of(batch.id.first.max(from + 1)));
            rec_deltas.push((todo.len() - before) as i32);
        }
        if rec_parts.is_empty() {
            tx.rollback().await.map_err(|e| err(db, &e))?;
            return Ok(true);
        }
        let credited = match self.credit_unknown(&tx, &todo).await {
            Ok(credited) => credited,
            Err(e) if is_conflict(&e) => return Ok(false),
            Err(e) => return Err(err(db, &e)),
        };
        let mut todo: Vec<&Delta> = todo;
        for (i, d) in &credited {
            todo[*i] = d;
        }
        let (transfers, peers) = sum(todo.iter().copied());
        let result = async {
            try_join3(
                self.write_transfers(&tx, &upsert, &transfers),
                self.write_peers(&tx, &gone, &baselines, &peers),
                tx.execute(
                    &record,
                    &[
                        &journal,
                        &rec_parts,
                        &rec_first,
                        &i64_of(batch.id.last),
                        &rec_deltas,
                    ],
                ),
            )
            .await
            .map(|_| ())
        }
        .await;
        match result {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => return Ok(false),
            Err(e) => return Err(err(db, &e)),
        }
        match tx.commit().await {
            Ok(()) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(err(db, &e)),
        }
    }

    /// The deltas of `todo` with [`Delta::baseline_unknown`] whose peer has
    /// a baseline here, credited against it: (index in `todo`, the credited
    /// delta). Only a peer's first delta in `todo` is looked up: a later one
    /// follows a delta that replaced or removed the stored baseline.
    async fn credit_unknown(
        &self,
        tx: &database::deadpool_postgres::Transaction<'_>,
        todo: &[&Delta],
    ) -> Result<Vec<(usize, Delta)>, database::tokio_postgres::Error> {
        if !todo.iter().any(|d| d.baseline_unknown) {
            return Ok(Vec::new());
        }
        let mut seen = std::collections::HashSet::new();
        let unknown: Vec<usize> = (0..todo.len())
            .filter(|&i| {
                let d = todo[i];
                seen.insert((d.user, d.info_hash, d.peer_id)) && d.baseline_unknown
            })
            .collect();
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let keys = |f: fn(&Delta) -> &[u8]| -> Vec<&[u8]> {
            unknown.iter().map(|&i| f(todo[i])).collect()
        };
        let (users, hashes, peers) = (
            keys(|d| &d.user.0),
            keys(|d| &d.info_hash.0),
            keys(|d| &d.peer_id.0),
        );
        let stored = tx.prepare_cached(&self.sql.stored).await?;
        let rows = tx.query(&stored, &[&users, &hashes, &peers]).await?;
        let mut baselines = std::collections::HashMap::with_capacity(rows.len());
        for r in rows.iter().filter_map(stored_record) {
            baselines.insert((r.user, r.info_hash, r.peer_id), r.baseline);
        }
        Ok(unknown
            .into_iter()
            .filter_map(|i| {
                let d = todo[i];
                let stored = baselines.get(&(d.user, d.info_hash, d.peer_id))?;
                Some((i, credit_against(d, stored, self.peer_lifetime)))
            })
            .collect())
    }

    async fn write_transfers(
        &self,
        tx: &database::deadpool_postgres::Transaction<'_>,
        upsert: &Statement,
        transfers: &BTreeMap<TransferKey, Transfer>,
    ) -> Result<(), database::tokio_postgres::Error> {
        if transfers.is_empty() {
            return Ok(());
        }
        let n = transfers.len();
        let (mut users, mut hashes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut up, mut down, mut seed, mut leech, mut ann) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut snatched, mut first, mut last) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut site, mut cup, mut cdown) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((user, ih), t) in transfers {
            users.push(&user.0[..]);
            hashes.push(&ih.0[..]);
            up.push(i64_of(t.uploaded));
            down.push(i64_of(t.downloaded));
            seed.push(i64_of(t.seed_seconds));
            leech.push(i64_of(t.leech_seconds));
            ann.push(i64_of(t.announces));
            snatched.push(t.snatched_at);
            first.push(t.first.unwrap_or(SystemTime::UNIX_EPOCH));
            last.push(t.last.unwrap_or(SystemTime::UNIX_EPOCH));
            site.push(t.user_id);
            cup.push(i64_of(t.credited_uploaded));
            cdown.push(i64_of(t.credited_downloaded));
        }
        let params: [&(dyn ToSql + Sync); 13] = [
            &users, &hashes, &up, &down, &seed, &leech, &snatched, &ann, &first, &last, &site,
            &cup, &cdown,
        ];
        tx.execute(upsert, &params).await?;
        Ok(())
    }

    async fn write_peers(
        &self,
        tx: &database::deadpool_postgres::Transaction<'_>,
        gone: &Statement,
        baselines: &Statement,
        peers: &BTreeMap<PeerKey, &Delta>,
    ) -> Result<(), database::tokio_postgres::Error> {
        let (mut gone_u, mut gone_i, mut gone_p) = (Vec::new(), Vec::new(), Vec::new());
        let (mut u, mut i, mut p) = (Vec::new(), Vec::new(), Vec::new());
        let (mut up, mut down, mut left, mut ip, mut port, mut seeding, mut at) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((user, ih, peer), d) in peers {
            if d.event.closes() {
                gone_u.push(&user.0[..]);
                gone_i.push(&ih.0[..]);
                gone_p.push(&peer.0[..]);
                continue;
            }
            u.push(&user.0[..]);
            i.push(&ih.0[..]);
            p.push(&peer.0[..]);
            up.push(i64_of(d.total_uploaded));
            down.push(i64_of(d.total_downloaded));
            left.push(i64_of(d.left));
            ip.push(d.addr.map(|a| a.ip()));
            port.push(d.addr.map(|a| i32::from(a.port())));
            seeding.push(d.left == 0);
            at.push(d.reported_at);
        }
        let ip: Vec<Option<IpAddr>> = ip;
        let params: [&(dyn ToSql + Sync); 10] =
            [&u, &i, &p, &up, &down, &left, &ip, &port, &seeding, &at];
        // The peers that closed go, the others take their new baselines (a
        // peer is in one list only): both statements go out at once.
        try_join(
            async {
                if gone_u.is_empty() {
                    return Ok(0);
                }
                tx.execute(gone, &[&gone_u, &gone_i, &gone_p]).await
            },
            async {
                if u.is_empty() {
                    return Ok(0);
                }
                tx.execute(baselines, &params).await
            },
        )
        .await?;
        Ok(())
    }

    /// Deletes batch ids older than a week, keeping each journal's newest.
    async fn prune(&self) {
        {
            let mut pruned = self
                .pruned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *pruned = Some(Instant::now());
        }
        let db = &self.db;
        let Ok(client) = db.client().await else {
            return;
        };
        let sql = db.sql(&format!(
            "DELETE FROM {{schema}}.batches AS b
             WHERE applied_at < now() - interval '{KEEP_BATCHES}'
               AND last_seq < (SELECT max(last_seq) FROM {{schema}}.batches WHERE journal = b.journal AND part = b.part)"
        ));
        if let Err(e) = client.execute(&sql, &[]).await {
            tracing::debug!(error = %db.error(&e), "privtrak: pruning old batch ids failed");
        }
    }
}

/// The `peers` columns [`stored_record`] reads, in its order.
const PEER_COLUMNS: &str =
    "user_key, info_hash, peer_id, uploaded, downloaded, seeding, last_announce";

/// A `peers` row selected as [`PEER_COLUMNS`]; `None` for keys of the wrong
/// length.
fn stored_record(row: &database::tokio_postgres::Row) -> Option<PeerRecord> {
    let (user, ih, peer): (&[u8], &[u8], &[u8]) = (row.get(0), row.get(1), row.get(2));
    let at: SystemTime = row.get(6);
    Some(PeerRecord {
        user: UserId(user.try_into().ok()?),
        info_hash: InfoHash(ih.try_into().ok()?),
        peer_id: PeerId(peer.try_into().ok()?),
        baseline: Baseline {
            uploaded: row.get::<_, i64>(3).max(0) as u64,
            downloaded: row.get::<_, i64>(4).max(0) as u64,
            seeding: row.get(5),
            last_seen: crate::privtrak::unix_secs(at),
        },
    })
}

fn is_conflict(e: &database::tokio_postgres::Error) -> bool {
    use database::tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

impl DeltaHandler for PostgresHandler {
    fn applied_through<'a>(&'a self, journal: JournalId) -> HandlerFuture<'a, u64> {
        Box::pin(async move {
            self.ready().await?;
            let client = self.db.client().await.map_err(HandlerError::new)?;
            // Every part has applied up to its own position; the batch is
            // applied up to the least of them (a part that never recorded
            // one has applied nothing).
            let applied: i64 = client
                .query_one(
                    &self.db.sql(
                        "SELECT coalesce(min(m), 0) FROM (
                             SELECT (SELECT coalesce(max(last_seq), 0) FROM {schema}.batches
                                     WHERE journal = $1 AND part = p) AS m
                             FROM generate_series(0, $2 - 1) AS p
                         ) AS parts",
                    ),
                    &[&journal.to_string(), &(PARTS as i32)],
                )
                .await
                .map_err(|e| err(&self.db, &e))?
                .get(0);
            Ok(applied.max(0) as u64)
        })
    }

    fn handle<'a>(&'a self, batch: &'a Batch) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            self.ready().await?;
            let mut backoff = Duration::from_millis(10);
            for _ in 0..CONFLICT_RETRIES {
                if self.apply(batch).await? {
                    self.prune().await;
                    return Ok(());
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(HandlerError::new(format!(
                "batch {}: still conflicting after {CONFLICT_RETRIES} attempts",
                batch.id
            )))
        })
    }

    fn keeps_baselines(&self) -> bool {
        true
    }

    fn load_baselines<'a>(
        &'a self,
        _journal: JournalId,
        sink: &'a mut BaselineSink<'a>,
    ) -> HandlerFuture<'a, u64> {
        Box::pin(async move {
            use futures_util::TryStreamExt;
            self.ready().await?;
            let db = &self.db;
            let client = db.client().await.map_err(HandlerError::new)?;
            let rows = client
                .query_raw(
                    &db.sql(&format!("SELECT {PEER_COLUMNS} FROM {{schema}}.peers")),
                    std::iter::empty::<&(dyn ToSql + Sync)>(),
                )
                .await
                .map_err(|e| err(db, &e))?;
            futures_util::pin_mut!(rows);
            let mut count = 0u64;
            while let Some(row) = rows.try_next().await.map_err(|e| err(db, &e))? {
                if let Some(r) = stored_record(&row) {
                    sink(r);
                    count += 1;
                }
            }
            Ok(count)
        })
    }
}
