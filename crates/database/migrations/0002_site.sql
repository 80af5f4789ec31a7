-- The site's users and torrents, which the `passkey approval` and
-- `torrent approval` hooks keep in memory, and the credit the site's
-- multipliers give. Every change to users and torrents is announced on a
-- NOTIFY channel (`{schema}_users`, `{schema}_torrents`) with the row as
-- JSON, so karuta hears of it at once.

CREATE TABLE {schema}.users (
    user_id         bigint  PRIMARY KEY,
    passkey         text    UNIQUE NOT NULL,
    can_leech       boolean NOT NULL DEFAULT true,
    upload_factor   real    NOT NULL DEFAULT 1,
    download_factor real    NOT NULL DEFAULT 1
);

CREATE TABLE {schema}.torrents (
    info_hash       bytea   PRIMARY KEY CHECK (length(info_hash) IN (20, 32)),
    upload_factor   real    NOT NULL DEFAULT 1,
    download_factor real    NOT NULL DEFAULT 1,
    deleted         boolean NOT NULL DEFAULT false
);

CREATE FUNCTION {schema}.notify_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{schema}_users', json_build_object(
            'op', 'delete', 'user_id', OLD.user_id, 'passkey', OLD.passkey)::text);
    ELSE
        PERFORM pg_notify('{schema}_users', json_build_object(
            'op', 'upsert', 'user_id', NEW.user_id, 'passkey', NEW.passkey,
            'can_leech', NEW.can_leech, 'upload_factor', NEW.upload_factor,
            'download_factor', NEW.download_factor,
            'old_passkey', CASE WHEN TG_OP = 'UPDATE' THEN OLD.passkey END)::text);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION {schema}.notify_torrent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{schema}_torrents', json_build_object(
            'op', 'delete', 'info_hash', encode(OLD.info_hash, 'hex'))::text);
    ELSE
        PERFORM pg_notify('{schema}_torrents', json_build_object(
            'op', 'upsert', 'info_hash', encode(NEW.info_hash, 'hex'),
            'upload_factor', NEW.upload_factor, 'download_factor', NEW.download_factor,
            'deleted', NEW.deleted,
            'old_info_hash', CASE WHEN TG_OP = 'UPDATE' THEN encode(OLD.info_hash, 'hex') END)::text);
    END IF;
    RETURN NULL;
END $$;

-- A whole-table change (TRUNCATE): everything is read again.
CREATE FUNCTION {schema}.notify_reload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '{"op":"reload"}');
    RETURN NULL;
END $$;

CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON {schema}.users
    FOR EACH ROW EXECUTE FUNCTION {schema}.notify_user();
CREATE TRIGGER users_truncate AFTER TRUNCATE ON {schema}.users
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_reload('{schema}_users');
CREATE TRIGGER torrents_notify AFTER INSERT OR UPDATE OR DELETE ON {schema}.torrents
    FOR EACH ROW EXECUTE FUNCTION {schema}.notify_torrent();
CREATE TRIGGER torrents_truncate AFTER TRUNCATE ON {schema}.torrents
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_reload('{schema}_torrents');

-- Credit: raw bytes × the torrent's factor × the user's factor (0 for
-- download under freeleech), as in force when the bytes were reported; and
-- the site's user id when `passkey approval` named the user.
ALTER TABLE {schema}.transfers
    ADD COLUMN user_id bigint,
    ADD COLUMN credited_uploaded bigint NOT NULL DEFAULT 0,
    ADD COLUMN credited_downloaded bigint NOT NULL DEFAULT 0;
-- Rows from before credit was kept were credited at factor 1.
UPDATE {schema}.transfers SET credited_uploaded = uploaded, credited_downloaded = downloaded;
CREATE INDEX transfers_user_id ON {schema}.transfers (user_id) WHERE user_id IS NOT NULL;

DROP VIEW {schema}.user_totals;
CREATE VIEW {schema}.user_totals AS
SELECT user_key,
       max(user_id)                     AS user_id,
       sum(uploaded)::bigint            AS uploaded,
       sum(downloaded)::bigint          AS downloaded,
       sum(credited_uploaded)::bigint   AS credited_uploaded,
       sum(credited_downloaded)::bigint AS credited_downloaded,
       sum(seed_seconds)::bigint        AS seed_seconds,
       sum(leech_seconds)::bigint       AS leech_seconds,
       count(*)                         AS torrents,
       count(snatched_at)               AS snatches,
       max(last_announce)               AS last_announce
FROM {schema}.transfers
GROUP BY user_key;
