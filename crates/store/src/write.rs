//! The write path: the one function every subscriber write takes, keyed or
//! not, in every mode. In order:
//! 1. with an idempotency key: the key's lock, then its record: a live
//!    record replays (or refuses another request under the same key);
//! 2. the subscriber's lock; the clock and the document read under it;
//! 3. `decide` (the rules: a passed lease expires first, existence, the
//!    expected version, the presence rule, merge);
//! 4. the change: a new lease deadline's index entry first; then a plain
//!    write inserts the document; a keyed write (and any
//!    delete) first its journal entry, then its record and expiry entry,
//!    then the document (journal.rs: why that is atomic after a crash);
//! 5. a durability ticket, taken before the locks are released;
//! 6. back to the caller with a `Pending` that becomes the `Durable` it
//!    waits for or awaits.

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
use crate::feed::FeedChange;
use crate::id::ObjectId;
use crate::idempotency::{Executed, IdempotencyRecord, RecordedOutcome, purge_expired};
use crate::journal::{JournalEntry, Step};
use crate::precondition::Precondition;
use crate::presence_index::Presence;
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
    store: &Writes,
    engine: &Engine,
    tenant: &Tenant,
    command: Command,
    expected: Option<&Precondition>,
    prepared: &Prepared,
    once: Option<Once<'_>>,
) -> Result<(Executed, Pending)> {
    let key_lock = once
        .as_ref()
        .map(|once| store.lock_idempotency_stripe(&once.record_key));
    if let Some(once) = &once {
        if let Some(record) = live_record(engine, &once.record_key, store.now())? {
            drop(key_lock);
            if record.fingerprint != once.fingerprint {
                return Err(crate::error::Error::IdempotencyKeyReused);
            }
            // The record may belong to a write still waiting for its flush:
            // that write took its ticket before it released the key's lock.
            let executed = Executed {
                outcome: record.outcome.into_result(),
                replayed: true,
                executed_at: record.executed_at,
                annotation: record.annotation,
            };
            return Ok((executed, engine.barrier.pending_all()));
        }
    }

    let doc_lock = store.lock_stripe(&prepared.doc_key);
    // Read under the subscriber's lock: writes to one document take their
    // times in the order they commit.
    let clocks = store.clocks();
    let now = clocks.wall;
    let current = read(engine, &prepared.doc_key)?;
    let before = Presence::of(current.as_ref());
    // The lease as this process measures it (deadlines.rs), then the rules.
    let current = current.map(|doc| engine.deadlines.apply(&prepared.doc_key, doc, clocks));
    let seen_lease = current.as_ref().and_then(|doc| doc.lease);
    let decided = decide(
        command,
        current,
        expected,
        tenant,
        now,
        prepared.fresh_id,
        store.presence_ttl_secs,
        engine.feeds.is_some(),
    );
    let lease_after = decided.as_ref().ok().map(|(doc, change, _)| match change {
        Change::Put(_) => doc.lease,
        Change::Remove => None,
    });
    let trees = &engine.trees;
    // The feed's events, before the change.
    let feed = match (&engine.feeds, &decided) {
        (Some(feeds), Ok((doc, change, events))) => {
            let after = match change {
                Change::Put(_) => Presence::of(Some(doc)),
                Change::Remove => Presence::default(),
            };
            let feed = feeds.env(tenant.environment)?;
            Some(FeedChange::begin(
                feed,
                trees,
                &prepared.doc_key,
                before,
                after,
                events,
            )?)
        }
        _ => None,
    };
    let Some(once) = once else {
        let (doc, change, _) = decided?;
        let mut ended = None;
        match change {
            Change::Put(bytes) => {
                trees.subscribers.insert(&prepared.doc_key, bytes)?;
            }
            Change::Remove => {
                // Journalled, so that redoing an earlier idempotent write
                // after a crash cannot bring the subscriber back.
                let seq = engine.journal.begin(trees)?;
                let entry = JournalEntry {
                    seq: seq.number(),
                    step: Step::Remove(doc.id),
                    doc_key: prepared.doc_key.clone(),
                    record_key: Vec::new(),
                    executed_at: now,
                    expires_at: now.saturating_add(store.idempotency_ttl),
                }
                .encode()?;
                trees.journal.insert(seq.key(), entry)?;
                trees.subscribers.remove(&prepared.doc_key)?;
                ended = Some(seq);
            }
        }
        if let Some(after) = lease_after {
            engine
                .deadlines
                .track(&prepared.doc_key, seen_lease, after, clocks);
        }
        if let Some(feed) = &feed {
            feed.end();
        }
        let ticket = engine.barrier.ticket();
        if let Some(feed) = feed {
            feed.commit(trees, &engine.barrier, ticket, engine.observer.as_ref());
        }
        drop(doc_lock);
        if let Some(seq) = ended {
            engine.journal.end(seq, trees);
        }
        let executed = Executed {
            outcome: Ok(doc),
            replayed: false,
            executed_at: now,
            annotation: Vec::new(),
        };
        return Ok((executed, engine.barrier.pending(ticket)));
    };

    let (recorded, change, step) = match decided {
        Ok((doc, change, _)) => {
            let step = match &change {
                Change::Put(_) => Step::Put,
                Change::Remove => Step::Remove(doc.id),
            };
            (RecordedOutcome::Document(doc), Some(change), step)
        }
        Err(e) => (RecordedOutcome::from_error(e)?, None, Step::Nothing),
    };
    let outcome = recorded.clone().into_result();
    let expires_at = now.saturating_add(store.idempotency_ttl);
    let record = IdempotencyRecord {
        fingerprint: once.fingerprint,
        executed_at: now,
        expires_at,
        annotation: once.annotation.to_vec(),
        outcome: recorded,
    };
    let record_bytes = record.encode()?;
    let seq = engine.journal.begin(trees)?;
    let entry = JournalEntry {
        seq: seq.number(),
        step,
        doc_key: prepared.doc_key.clone(),
        record_key: once.record_key.clone(),
        executed_at: now,
        expires_at,
    }
    .encode()?;
    // The intent, the record (and its expiry entry), the change: single-key
    // inserts in this order (journal.rs says why that is atomic after a
    // crash).
    fail::fail_point!("execute_once::before_commit");
    trees.journal.insert(seq.key(), entry)?;
    fail::fail_point!("execute_once::after_journal");
    if trees
        .idempotency
        .insert(&once.record_key, record_bytes)?
        .is_none()
    {
        engine.records.fetch_add(1, Ordering::Relaxed);
        engine.observer.idempotency_recorded();
    }
    engine.record_expiry.add(expires_at, &once.record_key);
    fail::fail_point!("execute_once::after_record");
    match change {
        Some(Change::Put(bytes)) => {
            trees.subscribers.insert(&prepared.doc_key, bytes)?;
        }
        Some(Change::Remove) => {
            trees.subscribers.remove(&prepared.doc_key)?;
        }
        None => {}
    }
    if let Some(after) = lease_after {
        engine
            .deadlines
            .track(&prepared.doc_key, seen_lease, after, clocks);
    }
    if let Some(feed) = &feed {
        feed.end();
    }
    // Taken before the locks are released: a replay that finds the record
    // waits for this ticket too.
    let ticket = engine.barrier.ticket();
    if let Some(feed) = feed {
        feed.commit(trees, &engine.barrier, ticket, engine.observer.as_ref());
    }
    store
        .next_expiry
        .fetch_min(expires_at.as_millis(), Ordering::Relaxed);
    drop(doc_lock);
    drop(key_lock);
    engine.journal.end(seq, trees);

    // Purging is housekeeping: its failure must not fail a committed write,
    // and the next write (or `purge_expired`) retries it.
    if now.as_millis() >= store.next_expiry.load(Ordering::Relaxed) {
        let _ = store.purge(engine, PURGE_BATCH);
    }
    fail::fail_point!("execute_once::before_durable");
    let executed = Executed {
        outcome,
        replayed: false,
        executed_at: now,
        annotation: record.annotation,
    };
    Ok((executed, engine.barrier.pending(ticket)))
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
