//! The store's rules for another backend (the PostgreSQL one): the same
//! validation, decision, idempotency record, encodings and key digest the
//! sled write path uses, so every backend answers a request alike. A
//! backend brings its own locking and storage; what a write *does* is
//! decided here, and only here.

pub use crate::clock::Now;
use crate::clock::Timestamp;
use crate::command::{self, Change, Command};
pub use crate::deadlines::Deadlines;
use crate::error::{Error, Field, InputProblem, Result};
use crate::event::{EventRecord, PresenceEvent, event_of_expiry};
use crate::id::{self, ObjectId};
use crate::idempotency::{Executed, Idempotency, IdempotencyRecord, RecordedOutcome};
use crate::layout;
use crate::precondition::Precondition;
use crate::subscriber::Subscriber;
use crate::tenancy::{Tenant, validate_name};

/// What a write decided: the document after it (for a delete, the one
/// removed) and the presence events it emits, in order, unnumbered (`seq`
/// 0: the backend numbers them as it appends them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The document as written, or as it was when removed.
    pub document: Subscriber,
    /// Whether the write removes the document.
    pub removed: bool,
    /// The events the change emits (SPEC section 11).
    pub events: Vec<Appended>,
}

/// An event as a backend appends it: the wire event (`seq` 0) and when it
/// was appended (retention counts from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The event; its `seq` is the backend's to set.
    pub event: PresenceEvent,
    /// When it was appended, by the writer's clock.
    pub appended_at: Timestamp,
}

impl From<EventRecord> for Appended {
    fn from(record: EventRecord) -> Appended {
        let appended_at = record.appended_at;
        Appended {
            event: record.into_event(0),
            appended_at,
        }
    }
}

/// Checks a command and returns the id a create would give its document.
///
/// # Errors
/// [`Error::InvalidInput`] for a broken command; [`Error::Storage`] if the
/// random source fails.
pub fn prepare(command: &Command, now: Timestamp) -> Result<ObjectId> {
    command.validate()?;
    match command {
        Command::Upsert { .. } => ObjectId::generate(now),
        _ => Ok(ObjectId::from_bytes([0; 12])),
    }
}

/// The subscriber id a command writes.
pub fn subscriber_id(command: &Command) -> &str {
    command.subscriber_id()
}

/// What `command` does to `current` (as stored, a passed lease not yet
/// expired) at `now`: the same rule as the sled write path (a passed
/// lease expires first, with its own event; existence, the expected
/// version, the presence rule, merge). `default_ttl` is the lease an
/// online `SetOnline` takes.
///
/// # Errors
/// The error the write executes to: `NotFound`, `VersionConflict`,
/// `AlreadyExists` (recordable, see [`record`]), or a rejection.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    command: Command,
    current: Option<Subscriber>,
    expected: Option<&Precondition>,
    tenant: &Tenant,
    now: Timestamp,
    fresh_id: ObjectId,
    default_ttl: u32,
) -> Result<Decision> {
    let (document, change, events) = command::decide(
        command,
        current,
        expected,
        tenant,
        now,
        fresh_id,
        default_ttl,
        true,
    )?;
    Ok(Decision {
        document,
        removed: matches!(change, Change::Remove),
        events: events.into_iter().map(Appended::from).collect(),
    })
}

/// The expiry of a lease due at `now` (SPEC section 10): the document
/// taken offline (`__v` + 1) and its event, or `None` if `doc` holds no
/// lease that has run out.
pub fn expire(mut doc: Subscriber, now: Timestamp) -> Option<(Subscriber, Appended)> {
    let deadline = doc.online_expires_at()?;
    if !doc.lease_expired(now) {
        return None;
    }
    doc.expire();
    let event = event_of_expiry(&doc, deadline, now).into();
    Some((doc, event))
}

/// The fingerprint an idempotency record keeps for this call.
///
/// # Errors
/// [`Error::Storage`] if the command cannot be encoded.
pub fn fingerprint(
    idempotency: &Idempotency,
    command: &Command,
    expected: Option<&Precondition>,
) -> Result<[u8; 32]> {
    idempotency.fingerprint_of(command, expected)
}

/// The bytes of the idempotency record of a write that executed to
/// `outcome`, or the outcome's error back when it is not recordable (a
/// rejection or a failure: the write is then answered, not recorded).
///
/// # Errors
/// The unrecordable error; [`Error::Storage`] if encoding fails.
pub fn record(
    outcome: Result<Subscriber>,
    fingerprint: [u8; 32],
    executed_at: Timestamp,
    expires_at: Timestamp,
    annotation: &[u8],
) -> Result<Vec<u8>> {
    let outcome = match outcome {
        Ok(doc) => RecordedOutcome::Document(doc),
        Err(e) => RecordedOutcome::from_error(e)?,
    };
    IdempotencyRecord {
        fingerprint,
        executed_at,
        expires_at,
        annotation: annotation.to_vec(),
        outcome,
    }
    .encode()
}

/// A stored record read back: its fingerprint, its expiry, and the call's
/// answer as a replay.
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not a record.
pub fn replay(bytes: &[u8]) -> Result<([u8; 32], Timestamp, Executed)> {
    let record = IdempotencyRecord::decode(bytes)?;
    let executed = Executed {
        outcome: record.outcome.into_result(),
        replayed: true,
        executed_at: record.executed_at,
        annotation: record.annotation,
    };
    Ok((record.fingerprint, record.expires_at, executed))
}

/// The stored bytes of a document (the same pinned encoding as sled's).
///
/// # Errors
/// [`Error::Storage`] if it cannot be encoded (or is too large).
pub fn encode_document(doc: &Subscriber) -> Result<Vec<u8>> {
    doc.encode()
}

/// A document from its stored bytes.
///
/// # Errors
/// [`Error::Corrupt`].
pub fn decode_document(bytes: &[u8]) -> Result<Subscriber> {
    Subscriber::decode(bytes)
}

/// What an API key is stored as: the SHA-256 of its secret.
pub fn key_digest(secret: &str) -> [u8; 32] {
    layout::api_key_key(secret)
}

/// `secret` (an API key) sealed under the server key, as both backends
/// keep it beside its digest for HMAC verification.
///
/// # Errors
/// [`Error::Storage`] if the random source fails.
pub fn seal_secret(server_key: &crate::ServerKey, secret: &str) -> Result<Vec<u8>> {
    server_key.seal(&key_digest(secret), secret)
}

/// Whether `hash` is the HMAC-SHA256 of `subscriber_id` keyed with one of
/// the sealed secrets (each with its key's digest), compared in constant
/// time; secrets that do not open under `server_key` are skipped.
pub fn subscriber_hash_matches(
    server_key: &crate::ServerKey,
    sealed: &[([u8; 32], Vec<u8>)],
    subscriber_id: &str,
    hash: &[u8],
) -> bool {
    server_key.hash_matches(sealed, subscriber_id, hash)
}

/// A new random application identifier (12 URL-safe characters).
///
/// # Errors
/// [`Error::Storage`] if the random source fails.
pub fn new_identifier() -> Result<String> {
    crate::tenancy::new_identifier()
}

/// The identifier an environment made before identifiers gets (derived
/// from its id; the PostgreSQL migration computes the same in SQL).
pub fn legacy_identifier(id: ObjectId) -> String {
    crate::tenancy::legacy_identifier(id)
}

/// Whether `text` could be an application identifier at all (else it is
/// unknown without a lookup).
pub fn plausible_identifier(text: &str) -> bool {
    crate::tenancy::plausible_identifier(text)
}

/// Checks an operator's secret (16 to 255 visible ASCII characters).
///
/// # Errors
/// [`Error::InvalidInput`] naming the API key.
pub fn check_secret(secret: &str) -> Result<()> {
    if !(16..=255).contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(Field::ApiKey, InputProblem::BadSecret));
    }
    Ok(())
}

/// A new random secret, as `issue_key` makes them (64 hex characters).
///
/// # Errors
/// [`Error::Storage`] if the random source fails.
pub fn new_secret() -> Result<String> {
    let mut raw = [0u8; 32];
    id::fill_random(&mut raw)?;
    Ok(id::hex(&raw))
}

/// The public facts of a new key of `env` for `secret` (its id, its hint:
/// the last 4 characters), as every backend stores them beside the digest.
///
/// # Errors
/// [`Error::Storage`] if the random source fails.
pub fn key_info(
    env: &crate::tenancy::Environment,
    secret: &str,
    now: Timestamp,
) -> Result<crate::tenancy::ApiKeyInfo> {
    Ok(crate::tenancy::ApiKeyInfo {
        id: ObjectId::generate(now)?,
        organization_id: env.organization_id,
        environment_id: env.id,
        hint: secret[secret.len().saturating_sub(4)..].to_owned(),
        created_at: now,
    })
}

/// A new id stamped with `now`.
///
/// # Errors
/// [`Error::Storage`] if the random source fails.
pub fn new_id(now: Timestamp) -> Result<ObjectId> {
    ObjectId::generate(now)
}

/// An id from its 12 stored bytes.
pub fn id_from_bytes(bytes: [u8; 12]) -> ObjectId {
    ObjectId::from_bytes(bytes)
}

/// Checks an organization's or environment's name.
///
/// # Errors
/// [`Error::InvalidInput`] naming the name.
pub fn check_name(name: &str) -> Result<()> {
    validate_name(name)
}

/// The tenant of an environment, from its ids.
pub fn tenant(organization: ObjectId, environment: ObjectId) -> Tenant {
    Tenant {
        organization,
        environment,
    }
}

/// Checks a page size and returns it as a count.
///
/// # Errors
/// [`Error::InvalidInput`] naming `limit`.
pub fn check_limit(limit: u32) -> Result<usize> {
    crate::event::validate_limit(limit)
}

/// Checks an online query's parameters.
///
/// # Errors
/// [`Error::InvalidInput`] naming the parameter.
pub fn check_online_query(query: &crate::event::OnlineQuery) -> Result<()> {
    crate::event::validate_query(query)
}

/// Checks a subscriber id (the path id's rule).
///
/// # Errors
/// [`Error::InvalidInput`] naming the subscriber id.
pub fn check_subscriber_id(id: &str) -> Result<()> {
    crate::subscriber::validate_subscriber_id(id)
}
