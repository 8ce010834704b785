//! The presence feed's machinery (SPEC section 11): per environment, the
//! `seq` each event gets, when an event becomes readable, the exact counts,
//! the waits for the next event, retention, and recovery at open.
//!
//! Readable means durable, in `seq` order. A write reserves its events'
//! seqs under the subscriber's lock (so one subscriber's events follow its
//! versions), inserts them into tree `events` before its document change,
//! and, once it holds its durability ticket, hands the ticket to the feed.
//! Every successful flush round tells the feed its durable mark; the
//! environment's readable mark then moves past every reserved seq whose
//! ticket it covers, stopping at the first that is still in flight. So an
//! event is readable only once every smaller seq is durable (or was never
//! used), and a reader that resumes after the last seq it saw never misses
//! one and never sees one twice: an event that a crash takes away was
//! never readable. A reservation whose write failed stays in flight
//! forever: the feed stops there until the engine is reopened (a storage
//! failure reopens it; a reopened engine recovers the feed from disk).
//!
//! Recovery (`recover`, after the journal's redo): sled keeps a prefix of
//! its log, so an event may be there without its change; the events after
//! each environment's `feed_mark` (a readable mark written every
//! `MARK_EVERY` events) are checked against their documents and removed
//! when their change is not there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::clock::Timestamp;
use crate::error::Result;
use crate::event::{EventPage, EventRecord};
use crate::id::ObjectId;
use crate::layout::{self, Trees};
use crate::presence_index::Presence;
use crate::subscriber::Subscriber;

/// How many events may become readable before the readable mark is written
/// down again (the tail recovery checks).
const MARK_EVERY: u64 = 256;

/// The feeds of every environment of one engine.
#[derive(Debug)]
pub(crate) struct Feeds {
    envs: RwLock<HashMap<ObjectId, Arc<EnvFeed>>>,
    trees: Trees,
}

/// One environment's feed and counts.
#[derive(Debug)]
pub(crate) struct EnvFeed {
    env: ObjectId,
    state: Mutex<FeedState>,
    readable: Condvar,
    /// Subscribers in the environment.
    subscribers: AtomicI64,
    /// Subscribers whose stored document says `isOnline: true` (a lease
    /// that has run out but is not yet expired is still counted here).
    flagged_online: AtomicI64,
    /// Subscribers whose stored document holds a lease.
    leased: AtomicI64,
    /// The online query's indexes.
    pub(crate) index: crate::presence_index::Index,
}

#[derive(Debug)]
struct FeedState {
    /// The next seq to hand out.
    next: u64,
    /// Reserved seqs not yet readable, with their write's ticket once it
    /// has one.
    in_flight: BTreeMap<u64, Option<u64>>,
    /// Every event up to this is readable.
    readable: u64,
    /// The readable mark last written to `meta`.
    marked: u64,
    /// Futures waiting for the readable mark to move.
    wakers: Vec<Waker>,
}

/// Seqs reserved for one write's events: `first..first + count`.
#[derive(Debug)]
#[must_use = "a reservation is committed with its write's ticket, or blocks the feed"]
pub(crate) struct Reservation {
    pub first: u64,
    pub count: u64,
}

impl Feeds {
    pub(crate) fn new(trees: Trees) -> Feeds {
        Feeds {
            envs: RwLock::new(HashMap::new()),
            trees,
        }
    }

    /// The feed of `env`, loaded from disk on first use.
    pub(crate) fn env(&self, env: ObjectId) -> Result<Arc<EnvFeed>> {
        if let Some(feed) = self.envs.read().get(&env) {
            return Ok(Arc::clone(feed));
        }
        let mut envs = self.envs.write();
        if let Some(feed) = envs.get(&env) {
            return Ok(Arc::clone(feed));
        }
        let feed = Arc::new(EnvFeed::load(&self.trees, env)?);
        envs.insert(env, Arc::clone(&feed));
        Ok(feed)
    }

    /// A round made everything up to ticket `durable` durable.
    pub(crate) fn advance(&self, durable: u64) {
        let feeds: Vec<Arc<EnvFeed>> = self.envs.read().values().cloned().collect();
        for feed in feeds {
            feed.advance(&self.trees, durable);
        }
    }

    /// Every environment with a feed or counts.
    pub(crate) fn all(&self) -> Vec<Arc<EnvFeed>> {
        self.envs.read().values().cloned().collect()
    }

    /// Sets the counts found by the scan at open: subscribers, online, leased.
    pub(crate) fn set_counts(&self, env: ObjectId, counts: [i64; 3]) -> Result<()> {
        let feed = self.env(env)?;
        feed.subscribers.store(counts[0], Ordering::Relaxed);
        feed.flagged_online.store(counts[1], Ordering::Relaxed);
        feed.leased.store(counts[2], Ordering::Relaxed);
        Ok(())
    }
}

impl EnvFeed {
    fn load(trees: &Trees, env: ObjectId) -> Result<EnvFeed> {
        let newest = match trees.events.scan_prefix(env.as_bytes()).next_back() {
            Some(entry) => layout::event_seq(&entry?.0)?,
            None => 0,
        };
        // After a purge of every event only the purge mark (seq 0) is left:
        // seqs carry on above the last purged one, never reuse it.
        let last = newest.max(purged_through(trees, env)?);
        let marked = match trees.meta.get(layout::feed_mark_key(env))? {
            Some(bytes) => layout::read_u64(&bytes)?,
            None => 0,
        };
        Ok(EnvFeed {
            env,
            state: Mutex::new(FeedState {
                next: last + 1,
                in_flight: BTreeMap::new(),
                // Everything on disk at load was recovered and synced.
                readable: last,
                marked,
                wakers: Vec::new(),
            }),
            readable: Condvar::new(),
            subscribers: AtomicI64::new(0),
            flagged_online: AtomicI64::new(0),
            leased: AtomicI64::new(0),
            index: crate::presence_index::Index::default(),
        })
    }

    pub(crate) fn env_id(&self) -> ObjectId {
        self.env
    }

    /// Reserves `count` consecutive seqs (call under the subscriber's lock).
    pub(crate) fn reserve(&self, count: u64) -> Reservation {
        let mut state = self.state.lock();
        let first = state.next;
        state.next += count;
        for seq in first..first + count {
            state.in_flight.insert(seq, None);
        }
        Reservation { first, count }
    }

    /// The write holding `reservation` took `ticket`; `durable` is the
    /// barrier's durable mark now (the round that covers the ticket may
    /// already have run).
    pub(crate) fn commit(
        &self,
        trees: &Trees,
        reservation: Reservation,
        ticket: u64,
        durable: u64,
    ) {
        {
            let mut state = self.state.lock();
            for seq in reservation.first..reservation.first + reservation.count {
                state.in_flight.insert(seq, Some(ticket));
            }
        }
        self.advance(trees, durable);
    }

    fn advance(&self, trees: &Trees, durable: u64) {
        let mut state = self.state.lock();
        let before = state.readable;
        while let Some((&seq, &ticket)) = state.in_flight.first_key_value() {
            match ticket {
                Some(ticket) if ticket <= durable => {
                    state.in_flight.remove(&seq);
                }
                _ => break,
            }
        }
        state.readable = match state.in_flight.first_key_value() {
            Some((&seq, _)) => seq - 1,
            None => state.next - 1,
        };
        if state.readable == before {
            return;
        }
        if state.readable - state.marked >= MARK_EVERY {
            // Only an optimisation of recovery: a lost mark means a longer check.
            let mark = state.readable;
            if trees
                .meta
                .insert(layout::feed_mark_key(self.env), &mark.to_be_bytes()[..])
                .is_ok()
            {
                state.marked = mark;
            }
        }
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.readable.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Every event up to this seq is readable.
    pub(crate) fn readable(&self) -> u64 {
        self.state.lock().readable
    }

    /// Blocks until an event after `after` is readable or `timeout` passes.
    pub(crate) fn wait_after(&self, after: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.readable <= after {
            if self.readable.wait_until(&mut state, deadline).timed_out() {
                return state.readable > after;
            }
        }
        true
    }

    /// Whether an event after `after` is readable; else `waker` is woken
    /// when the readable mark next moves.
    pub(crate) fn ready_or_register(&self, after: u64, waker: &Waker) -> bool {
        let mut state = self.state.lock();
        if state.readable > after {
            return true;
        }
        if !state.wakers.iter().any(|w| w.will_wake(waker)) {
            state.wakers.push(waker.clone());
        }
        false
    }

    /// Counts a change of one document: `before` and `after` as stored.
    pub(crate) fn count(&self, before: Presence, after: Presence) {
        let delta = |b: bool| i64::from(b);
        let subs = delta(after.exists) - delta(before.exists);
        if subs != 0 {
            self.subscribers.fetch_add(subs, Ordering::Relaxed);
        }
        let leased = delta(after.leased) - delta(before.leased);
        if leased != 0 {
            self.leased.fetch_add(leased, Ordering::Relaxed);
        }
        let online = delta(after.flagged) - delta(before.flagged);
        if online != 0 {
            self.flagged_online.fetch_add(online, Ordering::Relaxed);
        }
    }

    /// (subscribers, flagged online).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (get(&self.subscribers), get(&self.flagged_online))
    }

    /// Subscribers holding a lease.
    pub(crate) fn leased(&self) -> u64 {
        get(&self.leased)
    }

    /// Up to `limit` readable events after `after` (from the oldest kept
    /// without it). `next` is the last event's seq, else `after`, else the
    /// last purged seq (0 while nothing was purged): the cursor of a reader
    /// that missed nothing, never below the purge mark.
    pub(crate) fn page(
        &self,
        trees: &Trees,
        after: Option<u64>,
        limit: usize,
    ) -> Result<EventPage> {
        let purged = purged_through(trees, self.env)?;
        if let Some(after) = after {
            if after < purged {
                return Err(crate::error::Error::CursorExpired {
                    after,
                    purged_through: purged,
                });
            }
        }
        let start = after.unwrap_or(purged).saturating_add(1);
        let end = self.readable();
        let mut events = Vec::new();
        if start <= end {
            let range = layout::event_key(self.env, start)..=layout::event_key(self.env, end);
            for entry in trees.events.range(range).take(limit) {
                let (key, value) = entry?;
                let seq = layout::event_seq(&key)?;
                events.push(EventRecord::decode(&value)?.into_event(seq));
            }
        }
        let next = events.last().map_or(after.unwrap_or(purged), |e| e.seq);
        Ok(EventPage { events, next })
    }

    /// Purges readable events appended at or before `cutoff`, oldest
    /// first, up to `limit`. The purge mark is written first, so a
    /// cursor before a purged event is refused even after a crash.
    pub(crate) fn purge(&self, trees: &Trees, cutoff: Timestamp, limit: usize) -> Result<usize> {
        let readable = self.readable();
        let start = layout::event_key(self.env, 1);
        let end = layout::event_key(self.env, readable);
        let mut doomed = Vec::new();
        if readable == 0 {
            return Ok(0);
        }
        for entry in trees.events.range(start..=end).take(limit) {
            let (key, value) = entry?;
            if EventRecord::decode(&value)?.appended_at > cutoff {
                break;
            }
            doomed.push(key);
        }
        let Some(last) = doomed.last() else {
            return Ok(0);
        };
        let through = layout::event_seq(last)?;
        trees
            .events
            .insert(layout::event_key(self.env, 0), &through.to_be_bytes()[..])?;
        for key in &doomed {
            trees.events.remove(key)?;
        }
        Ok(doomed.len())
    }
}

/// A count that is never negative, as a `u64`.
fn get(count: &AtomicI64) -> u64 {
    u64::try_from(count.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Every event of `env` up to this seq has been purged (0: none).
fn purged_through(trees: &Trees, env: ObjectId) -> Result<u64> {
    match trees.events.get(layout::event_key(env, 0))? {
        Some(bytes) => layout::read_u64(&bytes),
        None => Ok(0),
    }
}

/// At open, after the journal's redo: removes events whose change is not
/// in the store (see the module's docs). Reads only each environment's
/// events after its mark.
pub(crate) fn recover(trees: &Trees) -> Result<usize> {
    let mut removed = 0;
    let mut next_env = trees.events.first()?;
    while let Some((key, _)) = next_env {
        let (env, _) = layout::split_event_key(&key)?;
        let mark = match trees.meta.get(layout::feed_mark_key(env))? {
            Some(bytes) => layout::read_u64(&bytes)?,
            None => 0,
        };
        let tail = layout::event_key(env, mark.saturating_add(1).max(1))
            ..=layout::event_key(env, u64::MAX);
        for entry in trees.events.range(tail) {
            let (key, value) = entry?;
            let event = EventRecord::decode(&value)?;
            let doc_key = layout::subscriber_key(env, &event.subscriber_id);
            let current = match trees.subscribers.get(&doc_key)? {
                Some(bytes) => match Subscriber::decode(&bytes) {
                    Ok(doc) => Some(doc),
                    // Nothing to compare with: the event stays.
                    Err(_) => continue,
                },
                None => None,
            };
            if !event.change_written(current.as_ref()) {
                trees.events.remove(&key)?;
                removed += 1;
            }
        }
        next_env = match layout::prefix_end(env.as_bytes()) {
            Some(end) => trees.events.range(end..).next().transpose()?,
            None => None,
        };
    }
    Ok(removed)
}

/// What one write does to the feed, the online indexes and the counts, in
/// the write path's order: `begin` before the document change (the events
/// and new index entries), `end` after it (ended index entries, counts),
/// `commit` with the write's ticket.
#[derive(Debug)]
pub(crate) struct FeedChange<'a> {
    feed: Arc<EnvFeed>,
    doc_key: &'a [u8],
    before: Presence,
    after: Presence,
    reservation: Option<Reservation>,
}

impl<'a> FeedChange<'a> {
    /// Appends `events` and the index entries the change needs.
    pub(crate) fn begin(
        feed: Arc<EnvFeed>,
        trees: &Trees,
        doc_key: &'a [u8],
        before: Presence,
        after: Presence,
        events: &[EventRecord],
    ) -> Result<FeedChange<'a>> {
        let reservation = (!events.is_empty()).then(|| feed.reserve(events.len() as u64));
        if let Some(reservation) = &reservation {
            for (seq, event) in (reservation.first..).zip(events) {
                trees
                    .events
                    .insert(layout::event_key(feed.env, seq), event.encode()?)?;
            }
        }
        Ok(FeedChange {
            feed,
            doc_key,
            before,
            after,
            reservation,
        })
    }

    /// After the document change: the indexes and the counts.
    pub(crate) fn end(&self) {
        let id = self.doc_key.get(12..).unwrap_or_default();
        self.feed.index.change(id, self.before, self.after);
        self.feed.count(self.before, self.after);
    }

    /// The write took `ticket`: its events become readable once it is
    /// durable, with the round its waiter asks for (or, if nobody waits,
    /// the round its dropped `Pending` asks for).
    pub(crate) fn commit(
        self,
        trees: &Trees,
        barrier: &crate::durability::WriteBarrier,
        ticket: crate::durability::Ticket,
        observer: &dyn crate::observer::Observer,
    ) {
        if let Some(reservation) = self.reservation {
            observer.events_appended(reservation.count);
            self.feed
                .commit(trees, reservation, ticket.number(), barrier.durable_mark());
        }
    }
}
