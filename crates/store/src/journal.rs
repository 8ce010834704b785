//! The redo journal: how an idempotent write (and a delete) stays atomic
//! without a sled transaction. A sled 0.34 transaction writes out sled's log
//! buffer twice when it commits (`pin_log` rolls the buffer before and after
//! its reservation: a `pwrite` plus `sync_file_range` each), which made every
//! keyed write cost two disk writes whatever the durability mode.
//!
//! Instead, under the key's and the subscriber's locks, a write inserts:
//! 1. `journal[seq]`: the intent (which document, which record, what
//!    change), `seq` taken from a counter under the subscriber's lock;
//! 2. the idempotency record (which holds the resulting document);
//! 3. the document change itself.
//!
//! These are plain single-key inserts, and sled recovers a prefix of its log
//! after a crash: it replays its log in order and stops at the first torn
//! message (sled 0.34.7, `pagecache/iterator.rs`, `LogIter::next`: "found a
//! tear"); the tests in `tests/power_cut.rs` cut the power between each of
//! these steps. So after a crash a record is never there without its
//! journal entry, nor a document change without its record; the one
//! incomplete case is an entry (and maybe its record) whose later steps are
//! missing. On open, [`recover`] redoes the entries at or after the
//! low-watermark (`meta[journal_mark]`, written now and then: every write
//! below it had made all its changes before it was written), in order:
//! a record's change is applied unless the document already holds it or a
//! later state of it. A change that is redone was never acknowledged (it
//! was not yet durable), and its record now matches it, so a retry replays
//! it.
//!
//! The journal is a ring of [`RING`] slots, overwritten in turn: an entry
//! below the low-watermark is no longer needed, and a slot is reused only
//! once its previous entry is below a watermark already written.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::layout::{self, Trees};
use crate::subscriber::Subscriber;

/// What a journalled write does to its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) enum Step {
    /// Nothing (a recorded `NotFound`, conflict or `AlreadyExists`).
    Nothing,
    /// The document becomes the one in the record.
    Put,
    /// The document with this `_id` is removed.
    Remove(ObjectId),
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct JournalEntry {
    /// The write's sequence number (its slot is this modulo [`RING`]).
    pub seq: u64,
    pub step: Step,
    pub doc_key: Vec<u8>,
    /// Empty for a delete without an idempotency key.
    pub record_key: Vec<u8>,
    /// The record's `executed_at`, which tells its record from a later one
    /// under the same key.
    pub executed_at: Timestamp,
    /// When the record expires (kept in the entry's format; the redo reads
    /// the record itself).
    pub expires_at: Timestamp,
}

impl JournalEntry {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<JournalEntry> {
        layout::decode(bytes)
    }
}

/// Every this many writes, one writes the low-watermark.
const MARK_EVERY: u64 = 256;

/// The journal is a ring of this many slots: write `seq` overwrites slot
/// `seq % RING` (an overwrite costs sled about a quarter of a new key, and
/// nothing has to be removed), once the write that held the slot is below a
/// watermark already written: after a crash, a recovered overwrite implies
/// a recovered watermark that no longer needs what it overwrote.
pub(crate) const RING: u64 = 65_536;

/// The journal's in-memory side: the next sequence number, the writes still
/// making their changes, and the last watermark written.
#[derive(Debug)]
pub(crate) struct Journal {
    next: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
    ended: AtomicU64,
    /// The last watermark inserted into `meta` (every write below it had
    /// made all its changes before that insert).
    written_mark: AtomicU64,
    /// Serialises the watermark writes.
    marking: Mutex<()>,
}

/// A write's place in the journal; [`Journal::end`] it once all its changes
/// are made (dropping it unended leaves the watermark behind it, which only
/// costs a longer redo on the next open).
#[derive(Debug)]
#[must_use]
pub(crate) struct Seq(u64);

impl Seq {
    /// Its slot's key in the `journal` tree.
    pub(crate) fn key(&self) -> [u8; 8] {
        layout::journal_key(self.0 % RING)
    }

    pub(crate) fn number(&self) -> u64 {
        self.0
    }
}

impl Journal {
    fn starting_at(next: u64) -> Journal {
        Journal {
            next: AtomicU64::new(next),
            in_flight: Mutex::new(BTreeSet::new()),
            ended: AtomicU64::new(0),
            written_mark: AtomicU64::new(next),
            marking: Mutex::new(()),
        }
    }

    /// Call under the document's lock: sequence numbers of one document
    /// follow the order of its writes. Waits (writing the watermark) in the
    /// rare case the slot's previous write is not yet below a written one.
    pub(crate) fn begin(&self, trees: &Trees) -> Result<Seq> {
        let seq = {
            let mut in_flight = self.in_flight.lock();
            let seq = self.next.fetch_add(1, Ordering::SeqCst);
            in_flight.insert(seq);
            seq
        };
        let mut deadline = None;
        while seq
            >= self
                .written_mark
                .load(Ordering::SeqCst)
                .saturating_add(RING)
        {
            self.write_mark(trees)?;
            if seq
                < self
                    .written_mark
                    .load(Ordering::SeqCst)
                    .saturating_add(RING)
            {
                break;
            }
            // A write a whole ring behind is still making its changes, or
            // failed half-way (a storage error, which reopens the engine):
            // give it a moment, then fail this write too.
            let limit = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
            if Instant::now() > limit {
                self.in_flight.lock().remove(&seq);
                return Err(Error::Storage(
                    "the journal cannot move on: a write a whole ring back never finished".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Seq(seq))
    }

    /// The write made all its changes (call it once its locks are
    /// released). Every [`MARK_EVERY`] writes, the low-watermark is written
    /// to `meta` (an overwrite of one key). That is housekeeping: if it
    /// fails, the next one retries it, and the storage trouble shows on the
    /// next operation that needs the disk.
    pub(crate) fn end(&self, seq: Seq, trees: &Trees) {
        self.in_flight.lock().remove(&seq.0);
        if self.ended.fetch_add(1, Ordering::Relaxed) % MARK_EVERY == MARK_EVERY - 1 {
            let _ = self.write_mark(trees);
        }
    }

    /// Writes the low-watermark to `meta`.
    fn write_mark(&self, trees: &Trees) -> Result<()> {
        let _one = self.marking.lock();
        let mark = self.low_watermark();
        if mark <= self.written_mark.load(Ordering::SeqCst) {
            return Ok(());
        }
        trees
            .meta
            .insert(layout::JOURNAL_MARK_KEY, &layout::journal_key(mark)[..])?;
        self.written_mark.store(mark, Ordering::SeqCst);
        Ok(())
    }

    /// Every write below this has made all its changes.
    pub(crate) fn low_watermark(&self) -> u64 {
        let in_flight = self.in_flight.lock();
        match in_flight.first() {
            Some(&seq) => seq,
            None => self.next.load(Ordering::SeqCst),
        }
    }
}

/// Redoes the journal entries at or after the durable low-watermark (see
/// the module's docs) and returns the journal, ready to continue.
pub(crate) fn recover(trees: &Trees) -> Result<Journal> {
    let mark = match trees.meta.get(layout::JOURNAL_MARK_KEY)? {
        Some(bytes) => layout::journal_seq(&bytes)?,
        None => 0,
    };
    let mut next = mark;
    let mut pending = Vec::new();
    for item in trees.journal.iter() {
        let entry = JournalEntry::decode(&item?.1)?;
        next = next.max(entry.seq.saturating_add(1));
        if entry.seq >= mark {
            pending.push(entry);
        }
    }
    pending.sort_by_key(|entry| entry.seq);
    for entry in &pending {
        redo(trees, entry)?;
    }
    // Every entry is redone or below the mark.
    trees
        .meta
        .insert(layout::JOURNAL_MARK_KEY, &layout::journal_key(next)[..])?;
    Ok(Journal::starting_at(next))
}

fn redo(trees: &Trees, entry: &JournalEntry) -> Result<()> {
    let current: Option<Subscriber> = match trees.subscribers.get(&entry.doc_key)? {
        Some(bytes) => Some(Subscriber::decode(&bytes)?),
        None => None,
    };
    match entry.step {
        Step::Nothing => Ok(()),
        Step::Remove(id) => {
            // Only that incarnation: a later create has another `_id`.
            if current.is_some_and(|doc| doc.id == id) {
                trees.subscribers.remove(&entry.doc_key)?;
            }
            Ok(())
        }
        Step::Put => {
            let Some(doc) = recorded_document(trees, entry)? else {
                // The record never made it: neither did the change.
                return Ok(());
            };
            let missing = match &current {
                None => true,
                Some(cur) => cur.id == doc.id && cur.version < doc.version,
            };
            if missing {
                trees.subscribers.insert(&entry.doc_key, doc.encode()?)?;
            }
            Ok(())
        }
    }
}

/// The document the entry's record holds, if that record is there.
fn recorded_document(trees: &Trees, entry: &JournalEntry) -> Result<Option<Subscriber>> {
    let Some(bytes) = trees.idempotency.get(&entry.record_key)? else {
        return Ok(None);
    };
    let record = crate::idempotency::IdempotencyRecord::decode(&bytes)?;
    if record.executed_at != entry.executed_at {
        return Ok(None);
    }
    match record.outcome {
        crate::idempotency::RecordedOutcome::Document(doc) => Ok(Some(doc)),
        _ => Err(Error::Corrupt(
            "a journal entry that puts a document names a record without one".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{IdempotencyRecord, RecordedOutcome};
    use crate::subscriber::Version;

    fn trees() -> Trees {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        Trees::open(&db).expect("trees")
    }

    fn doc(id: u8, version: u64) -> Subscriber {
        Subscriber {
            id: ObjectId::from_bytes([id; 12]),
            subscriber_id: "u".into(),
            first_name: None,
            last_name: None,
            email: None,
            phone: None,
            avatar: None,
            locale: None,
            channels: vec![],
            is_online: Some(true),
            last_online_at: None,
            lease: None,
            organization_id: ObjectId::from_bytes([1; 12]),
            environment_id: ObjectId::from_bytes([2; 12]),
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(1),
            version: Version(version),
            data: None,
            timezone: None,
        }
    }

    /// Writes entry `seq` and (for a put) its record, as the write path does.
    fn journalled_put(trees: &Trees, seq: u64, record_key: &[u8], doc: &Subscriber) {
        let at = Timestamp::from_millis(seq);
        let entry = JournalEntry {
            seq,
            step: Step::Put,
            doc_key: b"u".to_vec(),
            record_key: record_key.to_vec(),
            executed_at: at,
            expires_at: at,
        };
        trees
            .journal
            .insert(
                layout::journal_key(seq % RING),
                entry.encode().expect("entry"),
            )
            .expect("journal");
        let record = IdempotencyRecord {
            fingerprint: [0; 32],
            executed_at: at,
            expires_at: at,
            annotation: Vec::new(),
            outcome: RecordedOutcome::Document(doc.clone()),
        };
        trees
            .idempotency
            .insert(record_key, record.encode().expect("record"))
            .expect("record");
    }

    fn current(trees: &Trees) -> Option<Subscriber> {
        trees
            .subscribers
            .get(b"u")
            .expect("get")
            .map(|b| Subscriber::decode(&b).expect("doc"))
    }

    #[test]
    fn a_record_whose_change_was_cut_off_gets_it_on_open() {
        let trees = trees();
        let v1 = doc(9, 1);
        trees
            .subscribers
            .insert(b"u", (doc(9, 0)).encode().expect("doc"))
            .expect("put");
        journalled_put(&trees, 0, b"k1", &v1); // the crash came before the change
        let journal = recover(&trees).expect("recover");
        assert_eq!(current(&trees), Some(v1));
        assert_eq!(
            journal.low_watermark(),
            1,
            "numbering goes on after the redone entry"
        );
    }

    #[test]
    fn redo_never_undoes_a_later_state_nor_revives_a_deleted_subscriber() {
        // A later plain write moved the document past the record's version.
        let trees = trees();
        journalled_put(&trees, 0, b"k1", &doc(9, 1));
        trees
            .subscribers
            .insert(b"u", (doc(9, 2)).encode().expect("doc"))
            .expect("put");
        recover(&trees).expect("recover");
        assert_eq!(current(&trees).map(|d| d.version), Some(Version(2)));

        // Deleted after the recorded put (a journalled delete without a
        // key), then created again with another `_id`.
        let trees = trees_with_delete(true);
        recover(&trees).expect("recover");
        assert_eq!(
            current(&trees).map(|d| d.id),
            Some(ObjectId::from_bytes([8; 12]))
        );
        // Deleted and not created again: stays deleted.
        let trees = trees_with_delete(false);
        recover(&trees).expect("recover");
        assert_eq!(current(&trees), None);
    }

    #[test]
    fn the_ring_wraps_once_the_watermark_passes_and_a_stuck_write_fails_the_next_lap() {
        let trees = trees();
        let journal = recover(&trees).expect("recover");
        // Three laps of writes that end: slots are reused without waiting.
        for _ in 0..3 * RING {
            let seq = journal.begin(&trees).expect("begin");
            journal.end(seq, &trees);
        }
        assert!(journal.written_mark.load(Ordering::SeqCst) >= 3 * RING - MARK_EVERY);
        // One write never ends: a lap later, its slot cannot be taken.
        let stuck = journal.begin(&trees).expect("begin");
        for _ in 1..RING {
            let seq = journal.begin(&trees).expect("begin");
            journal.end(seq, &trees);
        }
        let started = std::time::Instant::now();
        assert!(matches!(journal.begin(&trees), Err(Error::Storage(_))));
        assert!(started.elapsed() >= Duration::from_secs(5));
        journal.end(stuck, &trees);
        let seq = journal
            .begin(&trees)
            .expect("the stuck write ended: the ring moves on");
        journal.end(seq, &trees);
    }

    fn trees_with_delete(recreate: bool) -> Trees {
        let trees = trees();
        journalled_put(&trees, 0, b"k1", &doc(9, 1));
        let delete = JournalEntry {
            seq: 1,
            step: Step::Remove(ObjectId::from_bytes([9; 12])),
            doc_key: b"u".to_vec(),
            record_key: Vec::new(),
            executed_at: Timestamp::from_millis(1),
            expires_at: Timestamp::from_millis(1),
        };
        trees
            .journal
            .insert(layout::journal_key(1), delete.encode().expect("entry"))
            .expect("journal");
        if recreate {
            trees
                .subscribers
                .insert(b"u", (doc(8, 0)).encode().expect("doc"))
                .expect("put");
        }
        trees
    }

    /// Pins the entry's bytes: a change needs a new format version.
    #[test]
    fn journal_entry_format_1_is_stable() {
        let entry = JournalEntry {
            seq: 300,
            step: Step::Remove(ObjectId::from_bytes([4; 12])),
            doc_key: b"dk".to_vec(),
            record_key: b"rk".to_vec(),
            executed_at: Timestamp::from_millis(5),
            expires_at: Timestamp::from_millis(7),
        };
        let bytes = entry.encode().expect("encodes");
        let expected: Vec<u8> = [
            &[1u8, 251, 44, 1, 2][..],
            &[4; 12],
            &[2, b'd', b'k'],
            &[2, b'r', b'k'],
            &[5, 7],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(JournalEntry::decode(&bytes).expect("decodes"), entry);
        assert!(JournalEntry::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
