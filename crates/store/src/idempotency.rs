//! Exactly-once writes (SPEC section 6): a write that carries an idempotency
//! key executes once; later uses of the key with the same request replay the
//! recorded outcome, with another request are refused. The record commits in
//! the same sled transaction as the write it describes.

use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Entity, Error, Result};
use crate::layout;
use crate::precondition::Precondition;
use crate::store::{Command, Durable, Engine, Store};
use crate::subscriber::{Subscriber, Version};
use crate::tenancy::Tenant;
use crate::write::live_record;

/// The longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// An idempotency key: 1 to 255 visible ASCII characters (`!` to `~`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a string is not an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// It is empty.
    Empty,
    /// It is longer than [`MAX_IDEMPOTENCY_KEY_LEN`].
    TooLong,
    /// It holds a character outside visible ASCII (space and controls included).
    NotVisibleAscii,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProblem::Empty => "it is empty",
            KeyProblem::TooLong => "it is longer than 255 characters",
            KeyProblem::NotVisibleAscii => "it holds characters other than visible ASCII",
        })
    }
}

impl IdempotencyKey {
    /// Checks and wraps a key.
    ///
    /// # Errors
    /// [`Error::InvalidIdempotencyKey`] saying what is wrong.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let problem = if key.is_empty() {
            Some(KeyProblem::Empty)
        } else if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            Some(KeyProblem::TooLong)
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            Some(KeyProblem::NotVisibleAscii)
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Error::InvalidIdempotencyKey(problem)),
            None => Ok(IdempotencyKey(key)),
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes a write idempotent: its key, and what identifies the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    key: IdempotencyKey,
    fingerprint: Option<[u8; 32]>,
    annotation: Vec<u8>,
}

impl Idempotency {
    /// The request is identified by the command and expected version
    /// themselves: the same key with another command is refused.
    pub fn new(key: IdempotencyKey) -> Self {
        Idempotency {
            key,
            fingerprint: None,
            annotation: Vec::new(),
        }
    }

    /// The request is identified by a caller's fingerprint (the HTTP facade
    /// hashes method, route, subscriber id, query and canonical body).
    pub fn with_fingerprint(key: IdempotencyKey, fingerprint: [u8; 32]) -> Self {
        Idempotency {
            key,
            fingerprint: Some(fingerprint),
            annotation: Vec::new(),
        }
    }

    pub(crate) fn annotation(&self) -> &[u8] {
        &self.annotation
    }

    /// Bytes of the caller's own kept with the record and handed back with
    /// every replay ([`Executed::annotation`]), so a replay can be rendered
    /// exactly as the first answer was (the HTTP facade keeps the request
    /// path its error bodies quote). Not part of the request's identity.
    pub fn with_annotation(mut self, annotation: impl Into<Vec<u8>>) -> Self {
        self.annotation = annotation.into();
        self
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    pub(crate) fn fingerprint_of(
        &self,
        command: &Command,
        expected: Option<&Precondition>,
    ) -> Result<[u8; 32]> {
        if let Some(given) = self.fingerprint {
            return Ok(given);
        }
        let config = bincode::config::standard();
        let mut h = Sha256::new();
        h.update(b"subscriber-store command v2\0");
        let bytes = bincode::encode_to_vec((command, expected), config)
            .map_err(|e| Error::Storage(format!("cannot encode command: {e}")))?;
        h.update(bytes);
        Ok(h.finalize().into())
    }
}

/// The outcome of an idempotent write, fresh or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The document the write returned, or the error it executed to
    /// (`NotFound`, `VersionConflict` or `AlreadyExists`).
    pub outcome: Result<Subscriber>,
    /// `true` if this is the recorded outcome of an earlier call.
    pub replayed: bool,
    /// When the write executed (for a replay, the original time).
    pub executed_at: Timestamp,
    /// What the first call gave [`Idempotency::with_annotation`].
    pub annotation: Vec<u8>,
}

/// The outcome as recorded.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
// Built once per write and encoded straight away; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RecordedOutcome {
    Document(Subscriber),
    SubscriberNotFound,
    VersionConflict {
        expected: Precondition,
        current: Option<Version>,
    },
    AlreadyExists {
        current: Version,
    },
}

impl RecordedOutcome {
    /// The recordable form of an error a write executed to; rejections (such
    /// as an oversized document) and failures are returned, not recorded.
    pub(crate) fn from_error(error: Error) -> Result<RecordedOutcome> {
        match error {
            Error::NotFound(Entity::Subscriber) => Ok(RecordedOutcome::SubscriberNotFound),
            Error::VersionConflict { expected, current } => {
                Ok(RecordedOutcome::VersionConflict { expected, current })
            }
            Error::AlreadyExists { current } => Ok(RecordedOutcome::AlreadyExists { current }),
            other => Err(other),
        }
    }

    pub(crate) fn into_result(self) -> Result<Subscriber> {
        match self {
            RecordedOutcome::Document(doc) => Ok(doc),
            RecordedOutcome::SubscriberNotFound => Err(Error::NotFound(Entity::Subscriber)),
            RecordedOutcome::VersionConflict { expected, current } => {
                Err(Error::VersionConflict { expected, current })
            }
            RecordedOutcome::AlreadyExists { current } => Err(Error::AlreadyExists { current }),
        }
    }
}

/// An idempotency record: the request's fingerprint, what it executed to,
/// and the caller's annotation. Stored under format version
/// [`RECORD_FORMAT`]; records of format 1 (no annotation, a single expected
/// version) are still read.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct IdempotencyRecord {
    pub fingerprint: [u8; 32],
    pub executed_at: Timestamp,
    pub expires_at: Timestamp,
    pub annotation: Vec<u8>,
    pub outcome: RecordedOutcome,
}

/// The format version of idempotency records written by this build.
pub(crate) const RECORD_FORMAT: u8 = 2;

impl IdempotencyRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode_as(RECORD_FORMAT, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<IdempotencyRecord> {
        match layout::split_format(bytes)? {
            (RECORD_FORMAT, body) => layout::decode_body(body),
            (1, body) => layout::decode_body::<v1::Record>(body).map(v1::Record::upgrade),
            (version, _) => Err(layout::unsupported(version)),
        }
    }
}

/// Idempotency records as format 1 wrote them.
mod v1 {
    use super::{IdempotencyRecord, Precondition, RecordedOutcome, Subscriber, Timestamp, Version};

    #[derive(bincode::Decode)]
    pub(super) struct Record {
        fingerprint: [u8; 32],
        executed_at: Timestamp,
        expires_at: Timestamp,
        outcome: Outcome,
    }

    #[derive(bincode::Decode)]
    #[allow(clippy::large_enum_variant)]
    enum Outcome {
        Document(Subscriber),
        SubscriberNotFound,
        VersionConflict {
            expected: Version,
            current: Option<Version>,
        },
        AlreadyExists {
            current: Version,
        },
    }

    impl Record {
        pub(super) fn upgrade(self) -> IdempotencyRecord {
            IdempotencyRecord {
                fingerprint: self.fingerprint,
                executed_at: self.executed_at,
                expires_at: self.expires_at,
                annotation: Vec::new(),
                outcome: match self.outcome {
                    Outcome::Document(doc) => RecordedOutcome::Document(doc),
                    Outcome::SubscriberNotFound => RecordedOutcome::SubscriberNotFound,
                    Outcome::VersionConflict { expected, current } => {
                        RecordedOutcome::VersionConflict {
                            expected: Precondition::Version(expected),
                            current,
                        }
                    }
                    Outcome::AlreadyExists { current } => {
                        RecordedOutcome::AlreadyExists { current }
                    }
                },
            }
        }
    }
}

impl Store {
    /// Applies a write at most once per idempotency key (SPEC section 6).
    ///
    /// - First use of the key (or after its record expired): executes like
    ///   [`Store::execute`] and records the outcome (the document, or the
    ///   `NotFound`/`VersionConflict`/`AlreadyExists` it executed to) in the
    ///   same sled transaction as the write.
    /// - Same key, same request: returns the recorded outcome with
    ///   `replayed: true`; nothing is written. In durable mode it returns
    ///   only once the record is on disk.
    /// - Concurrent calls with one key are serialised: the later ones wait
    ///   and replay; a write never executes twice.
    ///
    /// Keys are scoped by the tenant's environment.
    ///
    /// ```
    /// use subscriber_store::{Command, Config, Idempotency, IdempotencyKey, Store, SubscriberInput};
    ///
    /// let store = Store::open(Config::temporary())?;
    /// let org = store.create_organization("Acme")?;
    /// let tenant = store.create_environment(org.id, "Development")?.tenant();
    /// store.upsert(&tenant, SubscriberInput::new("u1"), None)?;
    ///
    /// let once = Idempotency::new(IdempotencyKey::new("req-1")?);
    /// let online = || Command::SetOnline { subscriber_id: "u1".into(), online: true };
    /// let first = store.execute_once(&tenant, online(), None, &once)?;
    /// let again = store.execute_once(&tenant, online(), None, &once)?;
    /// assert!(!first.replayed && again.replayed);
    /// assert_eq!(first.outcome, again.outcome);
    /// assert_eq!(store.get(&tenant, "u1")?.version.0, 1);
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// Rejections, not recorded: [`Error::InvalidInput`],
    /// [`Error::IdempotencyKeyReused`] (same key, other request; nothing
    /// written). Failures: [`Error::Storage`], [`Error::Corrupt`].
    pub fn execute_once(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: &Idempotency,
    ) -> Result<Executed> {
        let executed = self
            .commit_once(tenant, command, expected, idempotency)?
            .wait()?;
        fail::fail_point!("execute_once::after_durable");
        Ok(executed)
    }

    /// As [`Store::execute_once`], returning once the write (or the replay's
    /// record) is committed in memory: wait for or await the [`Durable`]
    /// before reporting it done. A replay's `Durable` waits for everything
    /// committed before it, so it never reports a write still on its way
    /// to the disk.
    ///
    /// # Errors
    /// As [`Store::execute_once`], for everything but the flush.
    pub fn commit_once(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: &Idempotency,
    ) -> Result<Durable<Executed>> {
        self.submit(tenant, command, expected, Some(idempotency))
    }

    /// The live (unexpired) outcome recorded for a key, without executing
    /// anything: `None` if the key is unused or expired.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn recorded(&self, tenant: &Tenant, key: &IdempotencyKey) -> Result<Option<Executed>> {
        let record_key = layout::idempotency_key(tenant.environment_id(), key.as_str());
        let engine = self.engine()?;
        let result = live_record(&engine, &record_key, self.now());
        Ok(self.noted(&engine, result)?.map(|record| Executed {
            outcome: record.outcome.into_result(),
            replayed: true,
            executed_at: record.executed_at,
            annotation: record.annotation,
        }))
    }

    /// Removes up to `limit` expired idempotency records, oldest expiry
    /// first, and returns how many it removed. Idempotent writes call it
    /// with a small limit, so the records stay bounded without a thread.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn purge_expired(&self, limit: usize) -> Result<usize> {
        let engine = self.engine()?;
        let result = self.purge_expired_on(&engine, limit);
        self.noted(&engine, result)
    }

    pub(crate) fn purge_expired_on(&self, engine: &Engine, limit: usize) -> Result<usize> {
        let now = self.now();
        let trees = &engine.trees;
        let observed = self.next_expiry().load(Ordering::Relaxed);
        let mut removed = 0;
        // Nothing left to read means the next record to expire is one written
        // from now on, which lowers the mark itself when it commits.
        let mut next = u64::MAX;
        for entry in trees.idempotency_expiry.iter().take(limit) {
            let (key, _) = entry?;
            let Some((expires_at, record_key)) = layout::split_expiry_key(&key) else {
                trees.idempotency_expiry.remove(&key)?;
                continue;
            };
            if expires_at > now {
                next = expires_at.as_millis();
                break;
            }
            // Stopped by the limit: the rest may have expired already.
            next = now.as_millis();
            if let Some(bytes) = trees.idempotency.get(record_key)? {
                let record = IdempotencyRecord::decode(&bytes)?;
                // A newer record under the same key has its own expiry entry;
                // compare-and-swap keeps a concurrent rewrite from being lost.
                if record.expires_at <= now
                    && trees
                        .idempotency
                        .compare_and_swap(record_key, Some(bytes), None::<&[u8]>)?
                        .is_ok()
                {
                    removed += 1;
                }
            }
            trees.idempotency_expiry.remove(&key)?;
        }
        // Only raise the mark from what was read before the scan: a write
        // that lowered it meanwhile keeps its lower mark. The mark is a time
        // by the clock, not an age, so a clock that steps back lowers it
        // with the next write and never stalls the purge.
        let _ = self.next_expiry().compare_exchange(
            observed,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Ok(removed)
    }

    /// Number of idempotency records held, expired or not (O(n): for tests
    /// and operators, not hot paths).
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read.
    pub fn idempotency_record_count(&self) -> Result<usize> {
        Ok(self.engine()?.trees.idempotency.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use crate::subscriber::Subscriber;

    /// What a record costs for a presence write on a small document: the
    /// record itself plus its two keys (the record key and the expiry entry).
    #[test]
    fn record_cost_for_a_typical_presence_write() {
        let now = Timestamp::from_millis(1_795_687_200_000);
        let doc = Subscriber {
            id: ObjectId::from_bytes([7; 12]),
            subscriber_id: "user-000042".into(),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            email: Some(Some("ada@example.com".into())),
            phone: None,
            avatar: None,
            locale: None,
            channels: vec![],
            is_online: Some(true),
            last_online_at: Some(now),
            organization_id: ObjectId::from_bytes([1; 12]),
            environment_id: ObjectId::from_bytes([2; 12]),
            created_at: now,
            updated_at: now,
            version: Version(12),
            data: None,
            timezone: None,
        };
        let doc_bytes = layout::encode(&doc).expect("doc").len();
        let record = IdempotencyRecord {
            fingerprint: [9; 32],
            executed_at: now,
            expires_at: now,
            annotation: Vec::new(),
            outcome: RecordedOutcome::Document(doc),
        };
        let record_bytes = record.encode().expect("record").len();
        let key = "0f8fad5b-d9cb-469f-a165-70867728950e"; // a UUID, as SDKs send
        let keys = layout::idempotency_key(ObjectId::from_bytes([2; 12]), key).len() * 2 + 8;
        eprintln!("document {doc_bytes} B; record {record_bytes} B + keys {keys} B");
        // fingerprint, two varint timestamps of 9 bytes, an empty
        // annotation's length, the outcome tag
        assert_eq!(record_bytes, doc_bytes + 32 + 2 * 9 + 1 + 1);
        assert!(record_bytes + keys < 300);
    }
}
