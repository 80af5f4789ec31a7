-- karuta's accounting: what privtrak's PostgreSQL handler writes.
-- `{schema}` is replaced by the configured schema (default: karuta).

-- One row per (user, torrent): what the user has done on it, in raw bytes
-- as the clients reported them.
CREATE TABLE {schema}.transfers (
    user_key       bytea       NOT NULL CHECK (length(user_key) = 16),
    info_hash      bytea       NOT NULL CHECK (length(info_hash) = 20),
    uploaded       bigint      NOT NULL DEFAULT 0,
    downloaded     bigint      NOT NULL DEFAULT 0,
    seed_seconds   bigint      NOT NULL DEFAULT 0,
    leech_seconds  bigint      NOT NULL DEFAULT 0,
    -- The first `completed` (a snatch).
    snatched_at    timestamptz,
    announces      bigint      NOT NULL DEFAULT 0,
    first_announce timestamptz NOT NULL,
    last_announce  timestamptz NOT NULL,
    PRIMARY KEY (user_key, info_hash)
-- Room in each page, so a row's update stays in its page (a HOT update, no
-- index change): every batch updates rows here.
) WITH (fillfactor = 75);
CREATE INDEX transfers_info_hash ON {schema}.transfers (info_hash);

-- The baselines: each active peer's counters as it last reported them.
-- A row goes when the peer stops or expires. karuta restores from here
-- when it starts without its local snapshot.
CREATE TABLE {schema}.peers (
    user_key      bytea       NOT NULL,
    info_hash     bytea       NOT NULL,
    peer_id       bytea       NOT NULL CHECK (length(peer_id) = 20),
    uploaded      bigint      NOT NULL,
    downloaded    bigint      NOT NULL,
    bytes_left    bigint      NOT NULL,
    ip            inet,
    port          integer,
    seeding       boolean     NOT NULL,
    last_announce timestamptz NOT NULL,
    PRIMARY KEY (user_key, info_hash, peer_id)
) WITH (fillfactor = 75);

-- Every batch applied, by the journal positions it covered: the last
-- position of a journal is what makes a retried or replayed batch harmless.
-- A batch is applied in parts (by user) at once, each with its row.
-- Old rows are pruned; the newest of each journal and part is always kept.
CREATE TABLE {schema}.batches (
    journal    text        NOT NULL,
    part       smallint    NOT NULL,
    first_seq  bigint      NOT NULL,
    last_seq   bigint      NOT NULL,
    deltas     integer     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journal, part, last_seq)
);

-- A user's ratio in one query.
CREATE VIEW {schema}.user_totals AS
SELECT user_key,
       sum(uploaded)::bigint      AS uploaded,
       sum(downloaded)::bigint    AS downloaded,
       sum(seed_seconds)::bigint  AS seed_seconds,
       sum(leech_seconds)::bigint AS leech_seconds,
       count(*)                   AS torrents,
       count(snatched_at)         AS snatches,
       max(last_announce)         AS last_announce
FROM {schema}.transfers
GROUP BY user_key;
