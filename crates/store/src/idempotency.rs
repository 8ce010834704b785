//! Exactly-once writes (SPEC section 6): a write that carries an idempotency
//! key executes once; later uses of the key with the same request replay the
//! recorded outcome, with another request are refused. The record commits in
//! the same sled transaction as the write it describes.

use sha2::{Digest, Sha256};

use crate::batch::Entry;
use crate::clock::Timestamp;
use crate::error::{Entity, Error, Result};
use crate::layout;
use crate::store::{Command, Store, decide};
use crate::subscriber::{Subscriber, Version};
use crate::tenancy::Tenant;

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
}

impl Idempotency {
    /// The request is identified by the command and expected version
    /// themselves: the same key with another command is refused.
    pub fn new(key: IdempotencyKey) -> Self {
        Idempotency {
            key,
            fingerprint: None,
        }
    }

    /// The request is identified by a caller's fingerprint (the HTTP facade
    /// hashes method, route, subscriber id, query and canonical body).
    pub fn with_fingerprint(key: IdempotencyKey, fingerprint: [u8; 32]) -> Self {
        Idempotency {
            key,
            fingerprint: Some(fingerprint),
        }
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    fn fingerprint_of(&self, command: &Command, expected: Option<Version>) -> Result<[u8; 32]> {
        if let Some(given) = self.fingerprint {
            return Ok(given);
        }
        let config = bincode::config::standard();
        let mut h = Sha256::new();
        h.update(b"subscriber-store command v1\0");
        let bytes = bincode::encode_to_vec((command, expected.map(|v| v.0)), config)
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
}

/// The outcome as recorded.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
// Built once per write and encoded straight away; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RecordedOutcome {
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

impl RecordedOutcome {
    /// The recordable form of an error a write executed to; rejections (such
    /// as an oversized document) and failures are returned, not recorded.
    fn from_error(error: Error) -> Result<RecordedOutcome> {
        match error {
            Error::NotFound(Entity::Subscriber) => Ok(RecordedOutcome::SubscriberNotFound),
            Error::VersionConflict { expected, current } => {
                Ok(RecordedOutcome::VersionConflict { expected, current })
            }
            Error::AlreadyExists { current } => Ok(RecordedOutcome::AlreadyExists { current }),
            other => Err(other),
        }
    }

    fn into_result(self) -> Result<Subscriber> {
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

/// An idempotency record: the request's fingerprint and what it executed to.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct IdempotencyRecord {
    pub fingerprint: [u8; 32],
    pub executed_at: Timestamp,
    pub expires_at: Timestamp,
    pub outcome: RecordedOutcome,
}

/// How many expired records an idempotent write purges on its way out.
const PURGE_BATCH: usize = 4;

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
        expected: Option<Version>,
        idempotency: &Idempotency,
    ) -> Result<Executed> {
        let (doc_key, now, fresh_id) = self.prepare(tenant, &command)?;
        let fingerprint = idempotency.fingerprint_of(&command, expected)?;
        let record_key = layout::idempotency_key(tenant.environment_id(), idempotency.key.as_str());

        let key_lock = self.lock_idempotency_stripe(&record_key);
        if let Some(record) = self.live_record(&record_key, now)? {
            drop(key_lock);
            if record.fingerprint != fingerprint {
                return Err(Error::IdempotencyKeyReused);
            }
            // The record may belong to a write still waiting for its flush.
            self.barrier().wait_all()?;
            return Ok(Executed {
                outcome: record.outcome.into_result(),
                replayed: true,
                executed_at: record.executed_at,
            });
        }

        let doc_lock = self.lock_stripe(&doc_key);
        let current = self.read(&doc_key)?;
        let (recorded, change) = match decide(command, current, expected, tenant, now, fresh_id) {
            Ok((doc, change)) => (RecordedOutcome::Document(doc), Some(change)),
            Err(e) => (RecordedOutcome::from_error(e)?, None),
        };
        let outcome = recorded.clone().into_result();
        let expires_at = now.saturating_add(self.idempotency_ttl());
        let record = IdempotencyRecord {
            fingerprint,
            executed_at: now,
            expires_at,
            outcome: recorded,
        };
        let record_bytes = layout::encode(&record)?;
        let expiry_key = layout::expiry_key(expires_at, &record_key);
        // The document change, the record and its expiry entry commit in one
        // sled transaction (shared with other writers waiting at the moment).
        self.batcher().commit(
            self.trees(),
            Entry {
                doc_key,
                change,
                record_key,
                record: record_bytes,
                expiry_key,
            },
        )?;
        drop(doc_lock);
        drop(key_lock);

        self.barrier().wait_committed()?;
        // Purging is housekeeping: its failure must not fail a committed write,
        // and the next write (or `purge_expired`) retries it.
        if now >= self.next_expiry() {
            let _ = self.purge_expired(PURGE_BATCH);
        }
        Ok(Executed {
            outcome,
            replayed: false,
            executed_at: now,
        })
    }

    /// The live (unexpired) outcome recorded for a key, without executing
    /// anything: `None` if the key is unused or expired.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn recorded(&self, tenant: &Tenant, key: &IdempotencyKey) -> Result<Option<Executed>> {
        let record_key = layout::idempotency_key(tenant.environment_id(), key.as_str());
        Ok(self
            .live_record(&record_key, self.now())?
            .map(|record| Executed {
                outcome: record.outcome.into_result(),
                replayed: true,
                executed_at: record.executed_at,
            }))
    }

    /// Removes up to `limit` expired idempotency records, oldest expiry
    /// first, and returns how many it removed. Idempotent writes call it
    /// with a small limit, so the records stay bounded without a thread.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn purge_expired(&self, limit: usize) -> Result<usize> {
        let now = self.now();
        let trees = self.trees();
        let mut removed = 0;
        // Nothing left to read means the next record to expire is one written
        // from now on, which expires a full TTL from now at the earliest.
        let mut next = now.saturating_add(self.idempotency_ttl());
        for entry in trees.idempotency_expiry.iter().take(limit) {
            let (key, _) = entry?;
            let Some((expires_at, record_key)) = layout::split_expiry_key(&key) else {
                trees.idempotency_expiry.remove(&key)?;
                continue;
            };
            if expires_at > now {
                next = expires_at;
                break;
            }
            // Stopped by the limit: the rest may have expired already.
            next = now;
            if let Some(bytes) = trees.idempotency.get(record_key)? {
                let record: IdempotencyRecord = layout::decode(&bytes)?;
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
        self.set_next_expiry(next);
        Ok(removed)
    }

    /// Number of idempotency records held, expired or not (O(n): for tests
    /// and operators, not hot paths).
    pub fn idempotency_record_count(&self) -> usize {
        self.trees().idempotency.len()
    }

    fn live_record(&self, record_key: &[u8], now: Timestamp) -> Result<Option<IdempotencyRecord>> {
        match self.trees().idempotency.get(record_key)? {
            Some(bytes) => {
                let record: IdempotencyRecord = layout::decode(&bytes)?;
                Ok((record.expires_at > now).then_some(record))
            }
            None => Ok(None),
        }
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
            outcome: RecordedOutcome::Document(doc),
        };
        let record_bytes = layout::encode(&record).expect("record").len();
        let key = "0f8fad5b-d9cb-469f-a165-70867728950e"; // a UUID, as SDKs send
        let keys = layout::idempotency_key(ObjectId::from_bytes([2; 12]), key).len() * 2 + 8;
        eprintln!("document {doc_bytes} B; record {record_bytes} B + keys {keys} B");
        // fingerprint, two varint timestamps of 9 bytes, the outcome tag
        assert_eq!(record_bytes, doc_bytes + 32 + 2 * 9 + 1);
        assert!(record_bytes + keys < 300);
    }
}
