//! Exactly-once writes (SPEC section 6): a write that carries an idempotency
//! key executes once; later uses of the key with the same request replay the
//! recorded outcome, with another request are refused. The record and the
//! write it describes are never one without the other after a crash (the
//! redo journal, `journal.rs`).

use std::collections::BTreeSet;

use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::command::Command;
pub use crate::error::KeyProblem;
use crate::error::{Entity, Error, Result};
use crate::layout::{self, Trees};
use crate::precondition::Precondition;
use crate::subscriber::{self, Subscriber, Version};

/// The longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// An idempotency key: 1 to 255 visible ASCII characters (`!` to `~`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

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

    /// The request is identified by what the caller names: its `parts`
    /// (an HTTP facade would give method, route, subscriber id and query) and a
    /// JSON body, which counts by its canonical form (object keys sorted at
    /// every depth), so `{"a":1,"b":2}` and `{"b":2,"a":1}` are one request.
    pub fn for_request(key: IdempotencyKey, parts: &[&str], body: &serde_json::Value) -> Self {
        Idempotency {
            key,
            fingerprint: Some(layout::request_fingerprint(parts, body)),
            annotation: Vec::new(),
        }
    }

    /// What [`Idempotency::with_annotation`] was given.
    pub fn annotation(&self) -> &[u8] {
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
        layout::command_fingerprint(&(command, expected))
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
pub(crate) enum RecordedOutcome<D = Subscriber> {
    Document(D),
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
pub(crate) struct IdempotencyRecord<D = Subscriber> {
    pub fingerprint: [u8; 32],
    pub executed_at: Timestamp,
    pub expires_at: Timestamp,
    pub annotation: Vec<u8>,
    pub outcome: RecordedOutcome<D>,
}

/// The format version of idempotency records written by this build (format
/// 2 held documents of format 1, without a lease; format 3 documents of
/// format 2, whose lease had no holder).
pub(crate) const RECORD_FORMAT: u8 = 4;

impl<D: Into<Subscriber>> IdempotencyRecord<D> {
    fn upgrade(self) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: self.fingerprint,
            executed_at: self.executed_at,
            expires_at: self.expires_at,
            annotation: self.annotation,
            outcome: match self.outcome {
                RecordedOutcome::Document(doc) => RecordedOutcome::Document(doc.into()),
                RecordedOutcome::SubscriberNotFound => RecordedOutcome::SubscriberNotFound,
                RecordedOutcome::VersionConflict { expected, current } => {
                    RecordedOutcome::VersionConflict { expected, current }
                }
                RecordedOutcome::AlreadyExists { current } => {
                    RecordedOutcome::AlreadyExists { current }
                }
            },
        }
    }
}

impl IdempotencyRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode_as(RECORD_FORMAT, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<IdempotencyRecord> {
        match layout::split_format(bytes)? {
            (RECORD_FORMAT, body) => layout::decode_body(body),
            (3, body) => layout::decode_body::<IdempotencyRecord<subscriber::v2::Subscriber>>(body)
                .map(IdempotencyRecord::upgrade),
            (2, body) => layout::decode_body::<IdempotencyRecord<subscriber::v1::Subscriber>>(body)
                .map(IdempotencyRecord::upgrade),
            (1, body) => layout::decode_body::<v1::Record>(body).map(v1::Record::upgrade),
            (version, _) => Err(layout::unsupported(version)),
        }
    }
}

/// Idempotency records as format 1 wrote them.
mod v1 {
    use super::{IdempotencyRecord, Precondition, RecordedOutcome, Timestamp, Version};
    use crate::subscriber::v1::Subscriber;

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
                    Outcome::Document(doc) => RecordedOutcome::Document(doc.into()),
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

/// When the record `bytes` expires, read from its first fields: every
/// format starts with the fingerprint, `executed_at` and `expires_at`.
pub(crate) fn expiry_of(bytes: &[u8]) -> Result<Timestamp> {
    match layout::split_format(bytes)? {
        (1..=RECORD_FORMAT, body) => {
            let (_, _, expires_at): ([u8; 32], Timestamp, Timestamp) = layout::decode_prefix(body)?;
            Ok(expires_at)
        }
        (version, _) => Err(layout::unsupported(version)),
    }
}

/// The records' expiry order, in memory: `(expires_at, record key)`,
/// added to by every keyed write and rebuilt from the records at open
/// (one scan of `idempotency`). A key rewritten after its record expired
/// has two entries; the purge reads the record and keeps a fresh one.
/// Beside it, a count per hash of the record keys stored, so a key with no
/// record (every fresh idempotency key) is answered without reading sled;
/// a count is never below the records its hash has, so it can only send a
/// lookup to sled for nothing, never miss a record.
/// Memory: about 60 bytes plus twice the record key's length, and 16 for
/// its hash, per record.
#[derive(Debug, Default)]
pub(crate) struct RecordExpiry {
    state: Mutex<ExpiryState>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Debug, Default)]
struct ExpiryState {
    order: BTreeSet<(Timestamp, Vec<u8>)>,
    stored: std::collections::HashMap<u64, u32>,
}

impl RecordExpiry {
    /// Builds the order from every record; returns it and how many records
    /// there are (a record that does not decode is counted, and never
    /// purged).
    pub(crate) fn load(trees: &Trees) -> Result<(RecordExpiry, usize)> {
        let expiry = RecordExpiry::default();
        let mut order = Vec::new();
        let mut stored = std::collections::HashMap::new();
        let mut records = 0;
        for entry in trees.idempotency.iter() {
            let (key, value) = entry?;
            records += 1;
            *stored.entry(expiry.hash(&key)).or_insert(0u32) += 1;
            if let Ok(expires_at) = expiry_of(&value) {
                order.push((expires_at, key.to_vec()));
            }
        }
        *expiry.state.lock() = ExpiryState {
            order: order.into_iter().collect(),
            stored,
        };
        Ok((expiry, records))
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// A record under `key` that expires at `expires_at` was written.
    pub(crate) fn add(&self, expires_at: Timestamp, key: &[u8]) {
        let hash = self.hash(key);
        let mut state = self.state.lock();
        state.order.insert((expires_at, key.to_vec()));
        *state.stored.entry(hash).or_insert(0) += 1;
    }

    /// Whether a record may be stored under `key` (`false`: there is none).
    pub(crate) fn may_hold(&self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        self.state.lock().stored.contains_key(&hash)
    }

    /// The record under `key` was removed.
    fn removed(&self, key: &[u8]) {
        let hash = self.hash(key);
        let mut state = self.state.lock();
        if let Some(count) = state.stored.get_mut(&hash) {
            *count -= 1;
            if *count == 0 {
                state.stored.remove(&hash);
            }
        }
    }

    /// Takes out up to `limit` entries expired at `now`, oldest first, and
    /// the expiry of the first one left (`u64::MAX` if none).
    fn take_expired(&self, now: Timestamp, limit: usize) -> (Vec<Vec<u8>>, u64) {
        let mut state = self.state.lock();
        let order = &mut state.order;
        let mut taken = Vec::new();
        while taken.len() < limit {
            match order.first() {
                Some((expires_at, _)) if *expires_at <= now => {
                    if let Some((_, key)) = order.pop_first() {
                        taken.push(key);
                    }
                }
                _ => break,
            }
        }
        let next = match order.first() {
            // Stopped by the limit: the rest may have expired already.
            Some((expires_at, _)) if *expires_at <= now => now.as_millis(),
            Some((expires_at, _)) => expires_at.as_millis(),
            None => u64::MAX,
        };
        (taken, next)
    }
}

/// Removes up to `limit` expired records, oldest expiry first. Returns how
/// many went and the time (ms) before which nothing else can expire:
/// `u64::MAX` when nothing is left to read (the next record to expire is
/// one written from now on).
pub(crate) fn purge_expired(
    trees: &Trees,
    expiry: &RecordExpiry,
    now: Timestamp,
    limit: usize,
) -> Result<(usize, u64)> {
    let (taken, next) = expiry.take_expired(now, limit);
    let mut removed = 0;
    for record_key in taken {
        if let Some(bytes) = trees.idempotency.get(&record_key)? {
            // A newer record under the same key has its own entry;
            // compare-and-swap keeps a concurrent rewrite from being lost.
            if expiry_of(&bytes).is_ok_and(|expires_at| expires_at <= now)
                && trees
                    .idempotency
                    .compare_and_swap(&record_key, Some(bytes), None::<&[u8]>)?
                    .is_ok()
            {
                expiry.removed(&record_key);
                removed += 1;
            }
        }
    }
    Ok((removed, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use crate::subscriber::Subscriber;

    /// What a record costs for a presence write on a small document: the
    /// record itself plus its key (its expiry order is in memory).
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
            lease: None,
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
        let keys = layout::idempotency_record_key(ObjectId::from_bytes([2; 12]), key).len();
        eprintln!("document {doc_bytes} B; record {record_bytes} B + keys {keys} B");
        // fingerprint, two varint timestamps of 9 bytes, an empty
        // annotation's length, the outcome tag
        assert_eq!(record_bytes, doc_bytes + 32 + 2 * 9 + 1 + 1);
        assert!(record_bytes + keys < 300);
        // The expiry order reads only the record's first fields.
        let later = Timestamp::from_millis(now.as_millis() + 86_400_000);
        let bytes = IdempotencyRecord {
            expires_at: later,
            ..record
        }
        .encode()
        .expect("record");
        assert_eq!(expiry_of(&bytes).expect("expiry"), later);
        assert!(expiry_of(&[9, 1, 2]).is_err(), "an unknown format");
    }

    #[test]
    fn the_expiry_order_knows_which_keys_hold_no_record() {
        let expiry = RecordExpiry::default();
        let t = |ms| Timestamp::from_millis(ms);
        assert!(!expiry.may_hold(b"k1"));
        expiry.add(t(10), b"k1");
        expiry.add(t(20), b"k2");
        // Rewritten after it expired: two entries, one record.
        expiry.add(t(30), b"k1");
        assert!(expiry.may_hold(b"k1") && expiry.may_hold(b"k2"));
        let (taken, next) = expiry.take_expired(t(15), 10);
        assert_eq!((taken, next), (vec![b"k1".to_vec()], 20));
        // The purge found the fresh record and kept it: still held.
        assert!(expiry.may_hold(b"k1"));
        expiry.removed(b"k2");
        assert!(!expiry.may_hold(b"k2"));
        expiry.removed(b"k1");
        assert!(expiry.may_hold(b"k1"), "one removal of two writes");
        expiry.removed(b"k1");
        assert!(!expiry.may_hold(b"k1"));
    }
}
