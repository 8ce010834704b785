//! The write path: the one function every subscriber write takes, keyed or
//! not, in every mode, in four steps:
//! 1. replay: with an idempotency key, the key's lock, then its record: a
//!    live record replays (or refuses another request under the same key);
//! 2. decide: the subscriber's lock; the clocks and the document read under
//!    it; `command::decide` (a passed lease expires first, existence, the
//!    expected version, the presence rule, merge);
//! 3. apply: the presence side effects begin (presence_change.rs: the
//!    events), then the write's own keys (`apply`): a keyed write (and any
//!    delete) its journal entry, a keyed write its record, then the
//!    document (journal.rs: why that is atomic after a crash);
//! 4. finish: the side effects end (indexes, counts, lease table) and the
//!    durability ticket is taken, both before the locks are released; the
//!    journal entry is closed, expired records purged, and the caller gets
//!    a `Pending` that becomes the `Durable` it waits for or awaits.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::clock::{Clock, Now, Timestamp};
use crate::command::{Change, Command, decide};
use crate::durability::Pending;
use crate::engine::{Engine, read};
use crate::error::Result;
use crate::id::ObjectId;
use crate::idempotency::{Executed, IdempotencyRecord, RecordedOutcome, purge_expired};
use crate::journal::{JournalEntry, Seq, Step};
use crate::precondition::Precondition;
use crate::presence_change::PresenceChange;
use crate::presence_index::Presence;
use crate::subscriber::Subscriber;
use crate::tenancy::Tenant;

/// How many expired records an idempotent write purges on its way out.
const PURGE_BATCH: usize = 4;

/// Writes to one subscriber are serialised by one of these locks, chosen by
/// hashing its key; sled itself only sees single-key get/insert.
const STRIPES: usize = 1024;

/// What the write path needs besides the database: the clock, the record
/// TTL, the locks that serialise writes, and the purge mark. The store holds
/// one for its whole life: it outlives a reopened database.
#[derive(Debug)]
pub(crate) struct Writes {
    clock: Arc<dyn Clock>,
    idempotency_ttl: Duration,
    /// The lease an online `SetOnline` starts (0: none).
    presence_ttl_secs: u32,
    stripes: Box<[Mutex<()>]>,
    /// Taken before, never while holding, a subscriber stripe.
    idempotency_stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
    /// No idempotency record expires before this (ms): every keyed write
    /// lowers it to its record's expiry, a purge raises it to the first
    /// unexpired entry. Lets writes skip the purge scan until something can
    /// expire.
    next_expiry: AtomicU64,
}

impl Writes {
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        idempotency_ttl: Duration,
        presence_ttl_secs: u32,
    ) -> Writes {
        Writes {
            clock,
            idempotency_ttl,
            presence_ttl_secs,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            idempotency_stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            next_expiry: AtomicU64::new(0),
        }
    }

    /// The current time by the store's clock (the one its timestamps use).
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The wall and the monotonic clock, read together (what leases need).
    pub(crate) fn clocks(&self) -> Now {
        Now::of(self.clock.as_ref())
    }

    fn stripe(&self, key: &[u8]) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        (h.finish() % STRIPES as u64) as usize
    }

    pub(crate) fn lock_stripe(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe(key)].lock()
    }

    fn lock_idempotency_stripe(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.idempotency_stripes[self.stripe(key)].lock()
    }

    /// Removes up to `limit` expired idempotency records and moves the
    /// purge mark.
    pub(crate) fn purge(&self, engine: &Engine, limit: usize) -> Result<usize> {
        let observed = self.next_expiry.load(Ordering::Relaxed);
        let (removed, next) =
            purge_expired(&engine.trees, &engine.record_expiry, self.now(), limit)?;
        if removed > 0 {
            let removed = removed as u64;
            engine.records.fetch_sub(
                i64::try_from(removed).unwrap_or(i64::MAX),
                Ordering::Relaxed,
            );
            engine.observer.idempotency_purged(removed);
        }
        // Only raise the mark from what was read before the scan: a write
        // that lowered it meanwhile keeps its lower mark. The mark is a time
        // by the clock, not an age, so a clock that steps back lowers it
        // with the next write and never stalls the purge.
        let _ =
            self.next_expiry
                .compare_exchange(observed, next, Ordering::Relaxed, Ordering::Relaxed);
        Ok(removed)
    }
}

/// What a write needs before it takes any lock.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub doc_key: Vec<u8>,
    pub fresh_id: ObjectId,
}

/// The identity of one idempotent call, as the write path needs it.
#[derive(Debug)]
pub(crate) struct Once<'a> {
    pub record_key: Vec<u8>,
    pub fingerprint: [u8; 32],
    pub annotation: &'a [u8],
}

/// Runs one write on `engine` (see the module's docs). A plain write's
/// outcome is always its document (a `NotFound`, conflict or
/// `AlreadyExists` is returned as the error); a keyed write records those
/// and returns them as its outcome.
pub(crate) fn write(
    writes: &Writes,
    engine: &Engine,
    tenant: &Tenant,
    command: Command,
    expected: Option<&Precondition>,
    prepared: &Prepared,
    once: Option<Once<'_>>,
) -> Result<(Executed, Pending)> {
    // 1. Replay: a live record answers for its key.
    let key_lock = once
        .as_ref()
        .map(|once| writes.lock_idempotency_stripe(&once.record_key));
    if let Some(once) = &once {
        if let Some(replayed) = replay(engine, once, writes.now())? {
            return Ok(replayed);
        }
    }

    // 2. Decide, under the subscriber's lock: writes to one document take
    // their times in the order they commit.
    let doc_key = prepared.doc_key.as_slice();
    let doc_lock = writes.lock_stripe(doc_key);
    let clocks = writes.clocks();
    let current = read(engine, doc_key)?;
    let before = Presence::of(current.as_ref());
    // The lease as this process measures it (deadlines.rs), then the rules.
    let current = current.map(|doc| engine.deadlines.apply(doc_key, doc, clocks));
    let seen = current.as_ref().and_then(|doc| doc.lease);
    let decided = decide(
        command,
        current,
        expected,
        tenant,
        clocks.wall,
        prepared.fresh_id,
        writes.presence_ttl_secs,
        engine.feeds.is_some(),
    );
    let decided = match (decided, &once) {
        // A plain write returns a refusal; a keyed one records it.
        (Err(e), None) => return Err(e),
        (decided, _) => decided,
    };

    // 3. Apply: the events, the write's own keys, the document.
    let presence = match &decided {
        // Nothing stored (a connection write the document already
        // reflects): no side effect either.
        Ok((_, Change::Keep, _)) | Err(_) => PresenceChange::none(doc_key, clocks),
        Ok((doc, change, events)) => PresenceChange::begin(
            engine,
            tenant.environment,
            doc_key,
            before,
            seen,
            matches!(change, Change::Put(_)).then_some(doc),
            events,
            clocks,
        )?,
    };
    let applied = apply(writes, engine, doc_key, once.as_ref(), decided, clocks.wall)?;

    // 4. Finish: the side effects and the ticket under the locks, then
    // release them, close the journal entry, purge, and wait.
    let ticket = presence.finish(engine);
    if let Some(expires_at) = applied.record_expires {
        writes
            .next_expiry
            .fetch_min(expires_at.as_millis(), Ordering::Relaxed);
    }
    drop(doc_lock);
    drop(key_lock);
    if let Some(seq) = applied.journal {
        engine.journal.end(seq, &engine.trees);
    }
    // Purging is housekeeping: its failure must not fail a committed write,
    // and the next write (or `purge_expired`) retries it.
    if applied.record_expires.is_some()
        && clocks.wall.as_millis() >= writes.next_expiry.load(Ordering::Relaxed)
    {
        let _ = writes.purge(engine, PURGE_BATCH);
    }
    if once.is_some() {
        fail::fail_point!("execute_once::before_durable");
    }
    Ok((applied.executed, engine.barrier.pending(ticket)))
}

/// The answer of a live record under `once`'s key, if there is one.
fn replay(engine: &Engine, once: &Once<'_>, now: Timestamp) -> Result<Option<(Executed, Pending)>> {
    let Some(record) = live_record(engine, &once.record_key, now)? else {
        return Ok(None);
    };
    if record.fingerprint != once.fingerprint {
        return Err(crate::error::Error::IdempotencyKeyReused);
    }
    let executed = Executed {
        outcome: record.outcome.into_result(),
        replayed: true,
        executed_at: record.executed_at,
        annotation: record.annotation,
    };
    // The record may belong to a write still waiting for its flush: that
    // write took its ticket before it released the key's lock.
    Ok(Some((executed, engine.barrier.pending_all())))
}

/// What [`apply`] leaves the tail to do.
struct Applied {
    executed: Executed,
    /// The journal entry to close once the locks are released.
    journal: Option<Seq>,
    /// When the write's idempotency record expires (keyed writes).
    record_expires: Option<Timestamp>,
}

/// The write's keys, single-key inserts in this order: the journal entry
/// (a keyed write, and any delete, so that redoing an earlier keyed write
/// after a crash cannot bring the subscriber back), the record, the
/// document change (journal.rs says why that is atomic after a crash).
fn apply(
    writes: &Writes,
    engine: &Engine,
    doc_key: &[u8],
    once: Option<&Once<'_>>,
    decided: Result<(Subscriber, Change, Vec<crate::event::EventRecord>)>,
    now: Timestamp,
) -> Result<Applied> {
    let trees = &engine.trees;
    let expires_at = now.saturating_add(writes.idempotency_ttl);
    let (outcome, change, step) = match decided {
        Ok((doc, change, _)) => {
            let step = match &change {
                Change::Put(_) => Step::Put,
                Change::Remove => Step::Remove(doc.id),
                Change::Keep => Step::Nothing,
            };
            (Ok(doc), Some(change), step)
        }
        Err(e) => (Err(e), None, Step::Nothing),
    };
    let journalled = once.is_some() || matches!(change, Some(Change::Remove));
    let journal = if journalled {
        let seq = engine.journal.begin(trees)?;
        let entry = JournalEntry {
            seq: seq.number(),
            step,
            doc_key: doc_key.to_vec(),
            record_key: once.map(|once| once.record_key.clone()).unwrap_or_default(),
            executed_at: now,
            expires_at,
        }
        .encode()?;
        if once.is_some() {
            fail::fail_point!("execute_once::before_commit");
        }
        trees.journal.insert(seq.key(), entry)?;
        Some(seq)
    } else {
        None
    };
    let (outcome, annotation) = match once {
        Some(once) => {
            fail::fail_point!("execute_once::after_journal");
            let recorded = match outcome {
                Ok(doc) => RecordedOutcome::Document(doc),
                Err(e) => RecordedOutcome::from_error(e)?,
            };
            let outcome = recorded.clone().into_result();
            let record = IdempotencyRecord {
                fingerprint: once.fingerprint,
                executed_at: now,
                expires_at,
                annotation: once.annotation.to_vec(),
                outcome: recorded,
            };
            if trees
                .idempotency
                .insert(&once.record_key, record.encode()?)?
                .is_none()
            {
                engine.records.fetch_add(1, Ordering::Relaxed);
                engine.observer.idempotency_recorded();
            }
            engine.record_expiry.add(expires_at, &once.record_key);
            fail::fail_point!("execute_once::after_record");
            (outcome, record.annotation)
        }
        None => (outcome, Vec::new()),
    };
    match change {
        Some(Change::Put(bytes)) => {
            trees.subscribers.insert(doc_key, bytes)?;
        }
        Some(Change::Remove) => {
            trees.subscribers.remove(doc_key)?;
        }
        Some(Change::Keep) | None => {}
    }
    Ok(Applied {
        executed: Executed {
            outcome,
            replayed: false,
            executed_at: now,
            annotation,
        },
        journal,
        record_expires: once.map(|_| expires_at),
    })
}

/// The record under `record_key`, unless it has expired.
pub(crate) fn live_record(
    engine: &Engine,
    record_key: &[u8],
    now: Timestamp,
) -> Result<Option<IdempotencyRecord>> {
    // Every fresh key: no record, known without reading sled.
    if !engine.record_expiry.may_hold(record_key) {
        return Ok(None);
    }
    match engine.trees.idempotency.get(record_key)? {
        Some(bytes) => {
            let record = IdempotencyRecord::decode(&bytes)?;
            Ok((record.expires_at > now).then_some(record))
        }
        None => Ok(None),
    }
}
