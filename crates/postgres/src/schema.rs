//! The tables, as numbered migrations. `subscriberd migrate` and every
//! start apply the ones a database lacks, one transaction each, under an
//! advisory lock (many servers may start at once). A database at a newer
//! version than this build is refused, never written.

use tokio_postgres::Client;

use crate::error::{StartError, describe};

/// Held while migrating, so concurrent starts take turns.
const MIGRATION_LOCK: i64 = 0x7375_6273_6372_6962; // "subscrib"

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE organizations (
    id bytea PRIMARY KEY,
    name text NOT NULL,
    created_at bigint NOT NULL
);
CREATE TABLE environments (
    id bytea PRIMARY KEY,
    organization_id bytea NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    created_at bigint NOT NULL
);
CREATE UNIQUE INDEX environments_by_name ON environments (name);
CREATE TABLE api_keys (
    digest bytea PRIMARY KEY,
    id bytea NOT NULL UNIQUE,
    organization_id bytea NOT NULL,
    environment_id bytea NOT NULL REFERENCES environments (id),
    hint text NOT NULL,
    created_at bigint NOT NULL
);
-- The document is the store's own encoding; the columns beside it are what
-- the queries select on. last_online_at is the lastOnlineAt the document
-- shows once its lease (if any) has run out.
CREATE TABLE subscribers (
    environment_id bytea NOT NULL,
    subscriber_id text NOT NULL,
    document bytea NOT NULL,
    version bigint NOT NULL,
    is_online boolean NOT NULL,
    last_online_at bigint,
    lease_deadline bigint,
    PRIMARY KEY (environment_id, subscriber_id)
);
CREATE INDEX subscribers_leases ON subscribers (lease_deadline)
    WHERE lease_deadline IS NOT NULL;
CREATE INDEX subscribers_online ON subscribers (environment_id, subscriber_id)
    WHERE is_online;
CREATE INDEX subscribers_recent ON subscribers (environment_id, last_online_at)
    WHERE last_online_at IS NOT NULL;
-- Written only by the holder of the key's advisory lock (write.rs).
CREATE TABLE idempotency_records (
    environment_id bytea NOT NULL,
    key text NOT NULL,
    record bytea NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (environment_id, key)
);
CREATE INDEX idempotency_expiry ON idempotency_records (expires_at);
-- Events as writes commit them, in the order each subscriber's writes
-- take (id is drawn under the subscriber's advisory lock); the sequencer
-- moves them to events with their seq.
CREATE TABLE event_outbox (
    id bigserial PRIMARY KEY,
    environment_id bytea NOT NULL,
    subscriber_id text NOT NULL,
    is_online boolean NOT NULL,
    last_online_at bigint,
    version bigint NOT NULL,
    at bigint NOT NULL,
    cause smallint NOT NULL,
    appended_at bigint NOT NULL
);
CREATE INDEX event_outbox_by_environment ON event_outbox (environment_id, id);
-- One row per environment: the last seq handed out (its row lock makes one
-- sequencer at a time) and the purge mark.
CREATE TABLE feeds (
    environment_id bytea PRIMARY KEY,
    last_seq bigint NOT NULL,
    purged_through bigint NOT NULL DEFAULT 0
);
CREATE TABLE events (
    environment_id bytea NOT NULL,
    seq bigint NOT NULL,
    subscriber_id text NOT NULL,
    is_online boolean NOT NULL,
    last_online_at bigint,
    version bigint NOT NULL,
    at bigint NOT NULL,
    cause smallint NOT NULL,
    appended_at bigint NOT NULL,
    PRIMARY KEY (environment_id, seq)
);
",
    r"
-- SPEC 13: each environment's public application identifier. Those made
-- before get the one the store's rules::legacy_identifier derives from
-- the id (each of SHA-256's first 12 bytes, its low six bits, as a
-- character of the URL-safe alphabet), as the sled store does.
ALTER TABLE environments ADD COLUMN identifier text;
UPDATE environments AS e SET identifier = (
    SELECT string_agg(
        substr('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
               (get_byte(h.hash, i) & 63) + 1, 1), '' ORDER BY i)
    FROM (SELECT sha256('subscriberd environment identifier v1'::bytea || e.id) AS hash) AS h,
         generate_series(0, 11) AS i
);
ALTER TABLE environments ALTER COLUMN identifier SET NOT NULL;
CREATE UNIQUE INDEX environments_by_identifier ON environments (identifier);
-- The key's secret sealed under the server key (never in the clear), for
-- HMAC verification; NULL for keys made without one until they next
-- authenticate.
ALTER TABLE api_keys ADD COLUMN sealed_secret bytea;
",
];

/// The schema version this build writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The version a database is at (0: none of ours).
///
/// # Errors
/// [`StartError::Query`].
pub async fn version(client: &Client) -> Result<i32, StartError> {
    let exists = client
        .query_one("SELECT to_regclass('subscriberd_schema') IS NOT NULL", &[])
        .await
        .map_err(query)?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM subscriberd_schema",
            &[],
        )
        .await
        .map_err(query)?;
    Ok(row.get(0))
}

/// Applies the migrations the database lacks; returns the versions applied.
///
/// # Errors
/// [`StartError::UnknownSchema`] for a newer database; [`StartError::Query`].
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, StartError> {
    migrate_to(client, VERSION).await
}

/// Applies the migrations the database lacks up to `target` (for tests of
/// a migration on data of the version before it); returns those applied.
///
/// # Errors
/// As [`migrate`].
pub async fn migrate_to(client: &mut Client, target: i32) -> Result<Vec<i32>, StartError> {
    let tx = client.transaction().await.map_err(query)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(query)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS subscriberd_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(query)?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM subscriberd_schema",
            &[],
        )
        .await
        .map_err(query)?
        .get(0);
    if found > VERSION {
        return Err(StartError::UnknownSchema {
            found,
            known: VERSION,
        });
    }
    let mut applied = Vec::new();
    let wanted = usize::try_from(target.clamp(0, VERSION)).unwrap_or(0);
    for (at, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(wanted)
        .skip(found as usize)
    {
        let version = at as i32 + 1;
        tx.batch_execute(sql).await.map_err(query)?;
        tx.execute(
            "INSERT INTO subscriberd_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(query)?;
        applied.push(version);
    }
    tx.commit().await.map_err(query)?;
    Ok(applied)
}

fn query(e: tokio_postgres::Error) -> StartError {
    StartError::Query(describe(&e))
}
