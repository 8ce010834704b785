//! The only file that knows sled tree names, the byte layout of keys, and the
//! record envelope: one format-version byte, then the bincode 2 encoding of
//! the record type. Changing any stored type's fields means a new version here.

use bincode::config::{Configuration, standard};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// The format version written in front of every record.
pub(crate) const FORMAT_VERSION: u8 = 1;

const BINCODE: Configuration = standard();

/// The largest encoded record the store accepts (512 KiB): room for a
/// document with large `data`, and small enough that sled keeps a lone record inline in its log (see
/// `SEGMENT_SIZE`) rather than in a blob file.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// sled's segment size (a power of two): a quarter of it, minus a header, is
/// the largest value sled keeps inline in its log.
pub(crate) const SEGMENT_SIZE: usize = 4 * 1024 * 1024;
const _: () = assert!(SEGMENT_SIZE / 4 > MAX_RECORD_BYTES + 4096);

/// The name of sled's log file inside the data directory: the file the
/// durable mode fdatasyncs.
pub(crate) const SLED_LOG_FILE: &str = "db";

/// Where sled 0.34.7 keeps values and nodes too large for its log.
pub(crate) const SLED_BLOBS_DIR: &str = "blobs";

/// A file beside sled's, naming the store its database holds. A database
/// that opens without that name (sled reads a wholly damaged log as an empty
/// database) is refused instead of being served as empty.
pub(crate) const IDENTITY_FILE: &str = "subscriberd-store-id";

/// Key of the store's identity in the `meta` tree.
pub(crate) const STORE_ID_KEY: &[u8] = b"store_id";

/// Key of the journal's low-watermark in the `meta` tree: every write with
/// a lower sequence number had made all its changes when it was written.
pub(crate) const JOURNAL_MARK_KEY: &[u8] = b"journal_mark";

/// Key of a journal entry.
pub(crate) fn journal_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of a journal key (or of the watermark's value).
pub(crate) fn journal_seq(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt(format!("journal key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Key in the `meta` tree written to prove a reopened database can write.
pub(crate) const PROBE_KEY: &[u8] = b"write_probe";

/// The value of that probe: the time it was written, 8 bytes big-endian.
pub(crate) fn probe_value(at: Timestamp) -> [u8; 8] {
    at.as_millis().to_be_bytes()
}

/// The trees of the store.
#[derive(Debug, Clone)]
pub(crate) struct Trees {
    /// environment id (12 bytes) ++ subscriberId (UTF-8) -> `Subscriber`
    pub subscribers: sled::Tree,
    /// organization id -> `Organization`
    pub organizations: sled::Tree,
    /// environment id -> `Environment` (format 2; format 1, without the
    /// identifier, is upgraded at open)
    pub environments: sled::Tree,
    /// application identifier (UTF-8) -> environment id (12 bytes),
    /// written before its environment's record
    pub environment_identifiers: sled::Tree,
    /// SHA-256 of the secret (32 bytes) -> `StoredKey` (format 2: the
    /// `ApiKeyInfo` and the sealed secret, if any; format 1: the bare
    /// `ApiKeyInfo`)
    pub api_keys: sled::Tree,
    /// environment id (12 bytes) ++ idempotency key (ASCII) -> `IdempotencyRecord`
    pub idempotency: sled::Tree,
    /// no longer written: the record expiry index of earlier formats (now
    /// in memory, `idempotency::RecordExpiry`), emptied at open
    pub idempotency_expiry: sled::Tree,
    /// write sequence number (8 bytes, big-endian) -> `JournalEntry`: what
    /// an idempotent write or a delete is about to change, written before
    /// the change and removed once the low-watermark has passed it (see
    /// journal.rs)
    pub journal: sled::Tree,
    /// no longer written: the lease deadline index of earlier formats (now
    /// in memory, deadlines.rs, built from the documents), emptied at open
    pub leases: sled::Tree,
    /// environment id (12 bytes) ++ seq (8 bytes, big-endian) ->
    /// `EventRecord`: the presence feed (SPEC section 11), written before
    /// the change it announces; seq 0 holds the purge mark (8 bytes BE:
    /// every event up to it was purged)
    pub events: sled::Tree,
    /// no longer written: the online index of earlier formats (now in
    /// memory, presence_index.rs), emptied at open
    pub online: sled::Tree,
    /// no longer written: the `within` window's index of earlier formats,
    /// emptied at open
    pub recent: sled::Tree,
    /// `store_id` -> 16 random bytes, also in `IDENTITY_FILE`;
    /// `journal_mark` -> the journal's low-watermark (8 bytes, big-endian)
    pub meta: sled::Tree,
}

impl Trees {
    pub(crate) fn open(db: &sled::Db) -> Result<Trees> {
        Ok(Trees {
            subscribers: db.open_tree("subscribers")?,
            organizations: db.open_tree("organizations")?,
            environments: db.open_tree("environments")?,
            environment_identifiers: db.open_tree("environment_identifiers")?,
            api_keys: db.open_tree("api_keys")?,
            idempotency: db.open_tree("idempotency")?,
            idempotency_expiry: db.open_tree("idempotency_expiry")?,
            journal: db.open_tree("journal")?,
            leases: db.open_tree("leases")?,
            events: db.open_tree("events")?,
            online: db.open_tree("online")?,
            recent: db.open_tree("recent")?,
            meta: db.open_tree("meta")?,
        })
    }
}

/// Key of an organization in `organizations`.
pub(crate) fn organization_key(id: ObjectId) -> [u8; 12] {
    *id.as_bytes()
}

/// Key of an environment in `environments`.
pub(crate) fn environment_key(id: ObjectId) -> [u8; 12] {
    *id.as_bytes()
}

/// Key of an environment in `environment_identifiers`: its identifier.
pub(crate) fn identifier_key(identifier: &str) -> &[u8] {
    identifier.as_bytes()
}

/// Key of an API key in `api_keys`: the SHA-256 of its secret (the secret
/// itself is never stored).
pub(crate) fn api_key_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The one definition of a request's fingerprint: SHA-256 over each of
/// `parts` followed by a NUL byte, then `rest`. Stored in idempotency
/// records, so its bytes are pinned like a record's.
pub(crate) fn fingerprint(parts: &[&[u8]], rest: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
        h.update([0]);
    }
    h.update(rest);
    h.finalize().into()
}

/// The fingerprint of a request as a store call makes it (when the caller
/// names no request): a tag, then the bincode encoding of `value` (the
/// command and its precondition).
pub(crate) fn command_fingerprint<T: bincode::Encode>(value: &T) -> Result<[u8; 32]> {
    let bytes = bincode::encode_to_vec(value, BINCODE)
        .map_err(|e| Error::Storage(format!("cannot encode command: {e}")))?;
    Ok(fingerprint(&[b"subscriber-store command v2"], &bytes))
}

/// The fingerprint of a request a caller names by its parts (for HTTP:
/// method, route, subscriber id, query) and a JSON body, which counts by
/// its canonical form: object keys sorted at every depth, no whitespace.
pub(crate) fn request_fingerprint(parts: &[&str], body: &serde_json::Value) -> [u8; 32] {
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    fingerprint(&parts, canonical_json(body).to_string().as_bytes())
}

/// `value` with object keys sorted at every depth.
fn canonical_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

/// Key of a subscriber in `subscribers`.
pub(crate) fn subscriber_key(environment: ObjectId, subscriber_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(12 + subscriber_id.len());
    key.extend_from_slice(environment.as_bytes());
    key.extend_from_slice(subscriber_id.as_bytes());
    key
}

/// Key of an idempotency record in `idempotency`.
pub(crate) fn idempotency_record_key(environment: ObjectId, key: &str) -> Vec<u8> {
    subscriber_key(environment, key)
}

/// Key of an event in `events` (seq 0: the purge mark).
pub(crate) fn event_key(environment: ObjectId, seq: u64) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..12].copy_from_slice(environment.as_bytes());
    key[12..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The environment and seq of an `events` key.
pub(crate) fn split_event_key(key: &[u8]) -> Result<(ObjectId, u64)> {
    let (env, seq) = key
        .split_first_chunk::<12>()
        .ok_or_else(|| Error::Corrupt("short event key".into()))?;
    Ok((ObjectId::from_bytes(*env), read_u64(seq)?))
}

/// The seq of an `events` key.
pub(crate) fn event_seq(key: &[u8]) -> Result<u64> {
    split_event_key(key).map(|(_, seq)| seq)
}

/// An 8-byte big-endian number.
pub(crate) fn read_u64(bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("a number is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Key in `meta` of an environment's feed mark: every event up to it was
/// readable (durable, with its change) when it was written.
pub(crate) fn feed_mark_key(environment: ObjectId) -> Vec<u8> {
    let mut key = b"feed_mark".to_vec();
    key.extend_from_slice(environment.as_bytes());
    key
}

/// Key in `meta` that formats before the in-memory indexes kept while
/// `online` and `recent` were complete; removed at open.
pub(crate) const PRESENCE_INDEXES_KEY: &[u8] = b"presence_indexes";

/// The first key after every key that starts with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Encodes a record with its envelope.
pub(crate) fn encode<T: bincode::Encode>(record: &T) -> Result<Vec<u8>> {
    encode_as(FORMAT_VERSION, record)
}

/// Encodes a record with its envelope, under a format version of its own
/// (a record type whose layout changed carries a later version).
pub(crate) fn encode_as<T: bincode::Encode>(format: u8, record: &T) -> Result<Vec<u8>> {
    let mut out = vec![format];
    bincode::encode_into_std_write(record, &mut out, BINCODE)
        .map_err(|e| Error::Storage(format!("cannot encode record: {e}")))?;
    if out.len() > MAX_RECORD_BYTES {
        return Err(Error::TooLarge {
            bytes: out.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(out)
}

/// Decodes a record written by [`encode`]; never panics on any input.
pub(crate) fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T> {
    match split_format(bytes)? {
        (FORMAT_VERSION, body) => decode_body(body),
        (version, _) => Err(unsupported(version)),
    }
}

/// The format version of a record and the bytes after it.
pub(crate) fn split_format(bytes: &[u8]) -> Result<(u8, &[u8])> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| Error::Corrupt("empty record".into()))?;
    Ok((version, body))
}

/// The error for a record of a format this build does not read.
pub(crate) fn unsupported(version: u8) -> Error {
    Error::Corrupt(format!(
        "record format version {version} is not supported by this build"
    ))
}

/// Decodes the bincode body of a record (after its format byte).
pub(crate) fn decode_body<T: bincode::Decode<()>>(body: &[u8]) -> Result<T> {
    let (record, used) = bincode::decode_from_slice(body, BINCODE)
        .map_err(|e| Error::Corrupt(format!("cannot decode record: {e}")))?;
    if used != body.len() {
        return Err(Error::Corrupt(format!(
            "record has {} trailing bytes",
            body.len() - used
        )));
    }
    Ok(record)
}

/// Decodes the first fields of a record's bincode body (after its format
/// byte), whatever follows them.
pub(crate) fn decode_prefix<T: bincode::Decode<()>>(body: &[u8]) -> Result<T> {
    bincode::decode_from_slice(body, BINCODE)
        .map(|(prefix, _)| prefix)
        .map_err(|e| Error::Corrupt(format!("cannot decode record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriber::{Data, Subscriber, Version};

    pub(super) fn sample() -> Subscriber {
        Subscriber {
            id: ObjectId::from_bytes([1; 12]),
            subscriber_id: "u1".into(),
            first_name: Some("Ada".into()),
            last_name: None,
            email: Some(None),
            phone: None,
            avatar: None,
            locale: None,
            channels: vec![],
            is_online: Some(false),
            last_online_at: Some(Timestamp::from_millis(5)),
            lease: None,
            organization_id: ObjectId::from_bytes([2; 12]),
            environment_id: ObjectId::from_bytes([3; 12]),
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(5),
            version: Version(7),
            data: Some(Data::parse("{\"k\":1}").expect("json")),
            timezone: None,
        }
    }

    /// The format-1 document bytes (before leases), as the first version
    /// wrote them.
    pub(super) fn format_1_bytes() -> Vec<u8> {
        [
            &[1u8][..],
            &[1; 12],
            &[2, b'u', b'1'],
            &[1, 3, b'A', b'd', b'a'],
            &[0],
            &[1, 0],
            &[0, 0, 0],
            &[0],
            &[1, 0],
            &[1, 5],
            &[2; 12],
            &[3; 12],
            &[1, 5, 7],
            &[1, 7, b'{', b'"', b'k', b'"', b':', b'1', b'}'],
            &[0],
        ]
        .concat()
    }

    /// `sample()` online with a lease from 5 to 250 ms held by `holder`.
    pub(super) fn leased_sample(holder: Option<u64>) -> Subscriber {
        let mut leased = sample();
        leased.is_online = Some(true);
        leased.lease = Some(crate::subscriber::Lease {
            heard_at: Timestamp::from_millis(5),
            expires_at: Timestamp::from_millis(250),
            holder,
        });
        leased
    }

    /// `leased_sample` as format 2 wrote it (format 1 plus the lease after
    /// `last_online_at`, without a holder).
    pub(super) fn format_2_leased_bytes() -> Vec<u8> {
        [
            &[2u8][..],
            &[1; 12],
            &[2, b'u', b'1'],
            &[1, 3, b'A', b'd', b'a'],
            &[0],
            &[1, 0],
            &[0, 0, 0],
            &[0],
            &[1, 1],
            &[1, 5],
            &[1, 5, 250],
            &[2; 12],
            &[3; 12],
            &[1, 5, 7],
            &[1, 7, b'{', b'"', b'k', b'"', b':', b'1', b'}'],
            &[0],
        ]
        .concat()
    }

    /// Pins document format 3 (format 2 plus the lease's holder: a
    /// connection lease's store run, or none for a heartbeat's) and that
    /// formats 1 and 2 are still read: if this fails, the layout changed
    /// and needs a new format with a reader for the old.
    #[test]
    fn document_formats_are_stable() {
        let v1 = format_1_bytes();
        assert_eq!(Subscriber::decode(&v1).expect("format 1 decodes"), sample());
        let v2 = format_2_leased_bytes();
        assert_eq!(
            Subscriber::decode(&v2).expect("format 2 decodes"),
            leased_sample(None)
        );
        let held = leased_sample(Some(0x0102));
        let bytes = held.encode().expect("encodes");
        let expected: Vec<u8> = [
            &[3u8][..],
            &[1; 12],
            &[2, b'u', b'1'],
            &[1, 3, b'A', b'd', b'a'],
            &[0],
            &[1, 0],
            &[0, 0, 0],
            &[0],
            &[1, 1],
            &[1, 5],
            // heard_at, expires_at, then the holder: Some(258) as a varint.
            &[1, 5, 250, 1, 251, 2, 1],
            &[2; 12],
            &[3; 12],
            &[1, 5, 7],
            &[1, 7, b'{', b'"', b'k', b'"', b':', b'1', b'}'],
            &[0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(Subscriber::decode(&bytes).expect("decodes"), held);
        // A heartbeat's lease: the holder's `None` is one byte.
        let heartbeat = leased_sample(None).encode().expect("encodes");
        assert_eq!(heartbeat[..1], [3]);
        assert_eq!(heartbeat.len(), v2.len() + 1);
    }

    #[test]
    fn unknown_version_and_garbage_are_errors() {
        let mut bytes = sample().encode().expect("encodes");
        bytes[0] = 9;
        assert!(
            matches!(Subscriber::decode(&bytes), Err(Error::Corrupt(m)) if m.contains("version 9"))
        );
        assert!(Subscriber::decode(&[]).is_err());
        let formats = [
            sample().encode().expect("encodes"),
            leased_sample(Some(7)).encode().expect("encodes"),
            format_2_leased_bytes(),
            format_1_bytes(),
        ];
        for good in formats {
            for cut in 0..good.len() {
                assert!(Subscriber::decode(&good[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = good.clone();
            long.push(0);
            assert!(Subscriber::decode(&long).is_err());
        }
    }
}

/// Pinned bytes of every stored type but `Subscriber` (pinned above) and
/// `JournalEntry` (pinned in journal.rs): if one fails, that layout changed
/// and needs a new format version with a reader for the old one.
#[cfg(test)]
mod pinned {
    use super::*;
    use crate::command::Command;
    use crate::idempotency::{IdempotencyRecord, RecordedOutcome};
    use crate::precondition::{Precondition, Version};
    use crate::tenancy::{ApiKeyInfo, Environment, Organization, StoredKey};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn tenancy_records() {
        let org = Organization {
            id: ObjectId::from_bytes([1; 12]),
            name: "Acme".into(),
            created_at: Timestamp::from_millis(300),
        };
        let env = Environment {
            id: ObjectId::from_bytes([2; 12]),
            organization_id: ObjectId::from_bytes([1; 12]),
            name: "Dev".into(),
            created_at: Timestamp::from_millis(5),
            identifier: "Ab-_09xyzXYZ".into(),
        };
        let key = ApiKeyInfo {
            id: ObjectId::from_bytes([3; 12]),
            organization_id: ObjectId::from_bytes([1; 12]),
            environment_id: ObjectId::from_bytes([2; 12]),
            hint: "abcd".into(),
            created_at: Timestamp::from_millis(7),
        };
        let stored = StoredKey {
            info: key.clone(),
            sealed: Some(vec![9, 8]),
        };
        let got = [
            hex(&encode(&org).expect("org")),
            hex(&env.encode().expect("env")),
            hex(&encode(&key).expect("key")),
            hex(&api_key_key("secret")),
            hex(&stored.encode().expect("stored key")),
        ];
        assert_eq!(got, PINNED_TENANCY);
        assert_eq!(
            decode::<Organization>(&encode(&org).expect("org")).expect("decodes"),
            org
        );
        assert_eq!(
            Environment::decode(&env.encode().expect("env")).expect("decodes"),
            env
        );
        assert_eq!(
            StoredKey::decode(&stored.encode().expect("key")).expect("decodes"),
            stored
        );
    }

    /// Environments and keys of format 1 (before identifiers and sealed
    /// secrets) are still read: the environment with the identifier
    /// derived from its id, the key with nothing sealed.
    #[test]
    fn tenancy_records_of_format_1_are_still_read() {
        let env_v1 = unhex(PINNED_TENANCY_V1[0]);
        let env = Environment::decode(&env_v1).expect("format 1 decodes");
        assert_eq!(env.name, "Dev");
        assert_eq!(env.id, ObjectId::from_bytes([2; 12]));
        assert_eq!(
            env.identifier,
            crate::tenancy::legacy_identifier(ObjectId::from_bytes([2; 12]))
        );
        // Pinned: the PostgreSQL migration derives the same identifiers.
        assert_eq!(env.identifier, PINNED_LEGACY_IDENTIFIER);
        let key_v1 = unhex(PINNED_TENANCY_V1[1]);
        let stored = StoredKey::decode(&key_v1).expect("format 1 decodes");
        assert_eq!(stored.info.hint, "abcd");
        assert_eq!(stored.sealed, None);
        for bad in [&env_v1[..env_v1.len() - 1], &[7u8, 1][..]] {
            assert!(Environment::decode(bad).is_err());
            assert!(StoredKey::decode(bad).is_err());
        }
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn idempotency_record_and_fingerprint() {
        let record = IdempotencyRecord {
            fingerprint: [9; 32],
            executed_at: Timestamp::from_millis(10),
            expires_at: Timestamp::from_millis(20),
            annotation: b"/p".to_vec(),
            outcome: RecordedOutcome::VersionConflict {
                expected: Precondition::AnyOf(vec![Version(1), Version(2)]),
                current: Some(Version(3)),
            },
        };
        let command = Command::SetOnline {
            subscriber_id: "u1".into(),
            online: true,
        };
        let expected = Some(Precondition::Version(Version(4)));
        let got = [
            hex(&record.encode().expect("record")),
            hex(&command_fingerprint(&(&command, expected.as_ref())).expect("fingerprint")),
        ];
        assert_eq!(got, PINNED_IDEMPOTENCY);
        assert_eq!(
            IdempotencyRecord::decode(&record.encode().expect("record")).expect("decodes"),
            record
        );
    }

    #[test]
    fn request_fingerprint_sorts_keys_at_every_depth() {
        let body = serde_json::json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": 2}});
        assert_eq!(
            canonical_json(&body).to_string(),
            r#"{"a":{"c":2,"d":[{"y":2,"z":1}]},"b":1}"#
        );
        let parts = [
            "PATCH",
            "/v1/subscribers/{subscriberId}/online-status",
            "u1",
            "",
        ];
        // SHA-256 of "PATCH\0<route>\0u1\0\0" and the sorted body: the
        // bytes records written by the first version hold.
        assert_eq!(
            hex(&request_fingerprint(&parts, &body)),
            "8a6fc9fe3b4e596dfaba2dcd97bdea84790d0cc93366169907100cca27e60d08"
        );
        let reordered = serde_json::json!({"a": {"c": 2, "d": [ {"y": 2, "z": 1} ]}, "b": 1});
        assert_eq!(
            request_fingerprint(&parts, &reordered),
            request_fingerprint(&parts, &body)
        );
    }

    /// Records of format 2 held a document of format 1 (no lease): still
    /// read, the document with no lease.
    #[test]
    fn idempotency_records_of_format_2_are_still_read() {
        let conflict = PINNED_IDEMPOTENCY[0].replacen("04", "02", 1);
        let bytes: Vec<u8> = (0..conflict.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&conflict[i..i + 2], 16).expect("hex"))
            .collect();
        let record = IdempotencyRecord::decode(&bytes).expect("format 2 decodes");
        assert_eq!(record.annotation, b"/p");
        let header = bincode::encode_to_vec(
            (
                [9u8; 32],
                Timestamp::from_millis(10),
                Timestamp::from_millis(20),
                b"/p".to_vec(),
            ),
            BINCODE,
        )
        .expect("header");
        let document_v1 = &super::tests::format_1_bytes()[1..];
        let bytes = [&[2u8][..], &header, &[0], document_v1].concat();
        let record = IdempotencyRecord::decode(&bytes).expect("format 2 with a document decodes");
        assert_eq!(
            record.outcome,
            RecordedOutcome::Document(super::tests::sample())
        );
    }

    /// Records of format 3 held a document of format 2 (a lease without a
    /// holder): still read, the lease a heartbeat's.
    #[test]
    fn idempotency_records_of_format_3_are_still_read() {
        let header = bincode::encode_to_vec(
            (
                [9u8; 32],
                Timestamp::from_millis(10),
                Timestamp::from_millis(20),
                b"/p".to_vec(),
            ),
            BINCODE,
        )
        .expect("header");
        let document_v2 = &super::tests::format_2_leased_bytes()[1..];
        let bytes = [&[3u8][..], &header, &[0], document_v2].concat();
        let record = IdempotencyRecord::decode(&bytes).expect("format 3 with a document decodes");
        assert_eq!(
            record.outcome,
            RecordedOutcome::Document(super::tests::leased_sample(None))
        );
    }

    const PINNED_TENANCY: [&str; 5] = [
        "010101010101010101010101010441636d65fb2c01",
        "0202020202020202020202020201010101010101010101010103446576050c41622d5f303978797a58595a",
        "01030303030303030303030303010101010101010101010101020202020202020202020202046162636407",
        // SHA-256("secret"): the key an API key is stored under.
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
        "0203030303030303030303030301010101010101010101010102020202020202020202020204616263640701020908",
    ];
    /// What format 1 wrote: the environment and the key above, as the
    /// first version stored them.
    const PINNED_TENANCY_V1: [&str; 2] = [
        "010202020202020202020202020101010101010101010101010344657605",
        "01030303030303030303030303010101010101010101010101020202020202020202020202046162636407",
    ];
    const PINNED_LEGACY_IDENTIFIER: &str = "la9O93PLYE5b";
    const PINNED_IDEMPOTENCY: [&str; 2] = [
        "0409090909090909090909090909090909090909090909090909090909090909090a14022f7002010201020103",
        "950167a9e17ee912765d0eef7887496708da00c8ebf6db6399232353a7df65b0",
    ];
}
