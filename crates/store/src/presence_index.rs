//! The indexes behind the online query (SPEC section 11), in memory per
//! environment: who is flagged online, and when each subscriber was last
//! online; kept with every stored presence change and rebuilt from the
//! documents at open (with the counts of `feed.rs`), so they are exact and
//! cost no disk write. The query reads each candidate's document and keeps
//! it only if it qualifies now (a lease may have run out).

use std::collections::BTreeSet;
use std::ops::Bound;

use parking_lot::Mutex;

use crate::clock::{Now, Timestamp};
use crate::engine::{Engine, read};
use crate::error::Result;
use crate::event::{OnlinePage, OnlineQuery};
use crate::feed::EnvFeed;
use crate::id::ObjectId;
use crate::layout::{self, Trees};
use crate::subscriber::Subscriber;

/// What the indexes and counts follow of one stored document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Presence {
    pub exists: bool,
    /// The stored `isOnline` is `true` (lease or no lease).
    pub flagged: bool,
    pub last_online_at: Option<Timestamp>,
    /// A lease runs (or ran out and is not yet expired in storage).
    pub leased: bool,
}

impl Presence {
    pub(crate) fn of(doc: Option<&Subscriber>) -> Presence {
        doc.map_or_else(Presence::default, |doc| Presence {
            exists: true,
            flagged: doc.is_online == Some(true),
            last_online_at: doc.last_online_at,
            leased: doc.lease.is_some(),
        })
    }
}

/// One environment's presence indexes, in memory: who is flagged online,
/// and when each subscriber was last online (the `within` window). Exact:
/// changed under the subscriber's lock with every stored change, and
/// rebuilt from the documents at open. Memory: about 2 x (id length + 48)
/// bytes per subscriber with a `lastOnlineAt` (the `recent` set) and as
/// much again for each one flagged online.
#[derive(Debug, Default)]
pub(crate) struct Index {
    sets: Mutex<Sets>,
}

#[derive(Debug, Default)]
struct Sets {
    /// Subscriber ids whose stored document says `isOnline: true`.
    online: BTreeSet<Box<[u8]>>,
    /// `(lastOnlineAt, subscriber id)` of every document that has one.
    recent: BTreeSet<(Timestamp, Box<[u8]>)>,
}

/// An environment's indexes as the scan at open finds them, built at once.
#[derive(Debug, Default)]
pub(crate) struct Sorted {
    online: Vec<Box<[u8]>>,
    recent: Vec<(Timestamp, Box<[u8]>)>,
}

impl Sorted {
    /// The stored document of subscriber `id` is `presence`.
    pub(crate) fn add(&mut self, id: &[u8], presence: Presence) {
        if presence.exists && presence.flagged {
            self.online.push(id.into());
        }
        if let Some(t) = presence.last_online_at.filter(|_| presence.exists) {
            self.recent.push((t, id.into()));
        }
    }
}

/// How many online candidates the query copies out per look at the index.
const CANDIDATES: usize = 256;

impl Index {
    /// A stored document of subscriber `id` changed from `before` to `after`.
    pub(crate) fn change(&self, id: &[u8], before: Presence, after: Presence) {
        let flagged = |p: Presence| p.exists && p.flagged;
        let last = |p: Presence| p.last_online_at.filter(|_| p.exists);
        let (was, is) = (flagged(before), flagged(after));
        let (then, now) = (last(before), last(after));
        if was == is && then == now {
            return;
        }
        let mut sets = self.sets.lock();
        if was && !is {
            sets.online.remove(id);
        }
        if is && !was {
            sets.online.insert(id.into());
        }
        if then != now {
            if let Some(t) = then {
                sets.recent.remove(&(t, Box::<[u8]>::from(id)));
            }
            if let Some(t) = now {
                sets.recent.insert((t, id.into()));
            }
        }
    }

    /// Replaces the indexes with what the scan at open found.
    pub(crate) fn fill(&self, sorted: Sorted) {
        let mut sets = self.sets.lock();
        sets.online = sorted.online.into_iter().collect();
        sets.recent = sorted.recent.into_iter().collect();
    }

    /// Up to [`CANDIDATES`] ids flagged online after `after`, in id order.
    fn online_after(&self, after: &[u8]) -> Vec<Box<[u8]>> {
        let sets = self.sets.lock();
        sets.online
            .range::<[u8], _>((Bound::Excluded(after), Bound::Unbounded))
            .take(CANDIDATES)
            .cloned()
            .collect()
    }

    /// The ids last online at or after `start`, after `after` in id order.
    fn window(&self, start: Timestamp, after: &[u8]) -> BTreeSet<Box<[u8]>> {
        let sets = self.sets.lock();
        sets.recent
            .range((start, Box::<[u8]>::from(&[][..]))..)
            .filter(|(_, id)| **id > *after)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// One page of the online query (validated by the caller): the online
/// set from the cursor merged with the window's ids, each candidate's
/// document read `as_of` now (lease-aware) and kept if it qualifies. Cost:
/// the page, the candidates whose lease ran out, and the window.
pub(crate) fn online_page(
    engine: &Engine,
    feed: &EnvFeed,
    query: &OnlineQuery,
    clocks: Now,
) -> Result<OnlinePage> {
    let now = clocks.wall;
    let env = feed.env_id();
    let limit = query.limit as usize;
    let mut cursor: Box<[u8]> = query.after.as_deref().unwrap_or("").as_bytes().into();
    let window_start = query
        .within_seconds
        .map(|within| now.saturating_sub(std::time::Duration::from_secs(u64::from(within))));
    let mut recent = match window_start {
        Some(start) => feed.index.window(start, &cursor),
        None => BTreeSet::new(),
    };
    let batch = feed.index.online_after(&cursor);
    let mut online_done = batch.len() < CANDIDATES;
    let mut online = batch.into_iter().peekable();
    let mut subscribers = Vec::new();
    let mut more = false;
    loop {
        if online.peek().is_none() && !online_done {
            // The batch is used up, the cursor at its last id.
            let batch = feed.index.online_after(&cursor);
            online_done = batch.len() < CANDIDATES;
            online = batch.into_iter().peekable();
        }
        // The next candidate in id order from either source.
        let candidate = match (online.peek(), recent.first()) {
            (None, None) => break,
            (Some(a), Some(b)) => a.min(b).clone(),
            (Some(a), None) => a.clone(),
            (None, Some(b)) => b.clone(),
        };
        if online.peek() == Some(&candidate) {
            online.next();
        }
        recent.remove(&candidate);
        cursor = candidate.clone();
        let Ok(id) = std::str::from_utf8(&candidate) else {
            continue;
        };
        let doc_key = layout::subscriber_key(env, id);
        let Some(doc) = read(engine, &doc_key)? else {
            continue;
        };
        let doc = engine.deadlines.apply(&doc_key, doc, clocks).as_of(now);
        let qualifies = doc.is_online == Some(true)
            || window_start.is_some_and(|start| doc.last_online_at.is_some_and(|t| t >= start));
        if !qualifies {
            continue;
        }
        if subscribers.len() == limit {
            more = true;
            break;
        }
        subscribers.push(doc);
    }
    let next = if more {
        subscribers.last().map(|doc| doc.subscriber_id.clone())
    } else {
        None
    };
    Ok(OnlinePage { subscribers, next })
}

/// Subscribers of `env` whose stored document is online with a lease
/// that has run out (by either clock, deadlines.rs) and is not yet expired
/// in storage.
pub(crate) fn overdue(engine: &Engine, env: ObjectId, clocks: Now) -> Result<u64> {
    let mut count = 0;
    for (doc_key, deadline) in engine.deadlines.due_under(env.as_bytes(), clocks) {
        let run_out = read(engine, &doc_key)?.is_some_and(|doc| {
            doc.is_online == Some(true)
                && doc.online_expires_at() == Some(deadline)
                && engine
                    .deadlines
                    .apply(&doc_key, doc, clocks)
                    .lease_expired(clocks.wall)
        });
        count += u64::from(run_out);
    }
    Ok(count)
}

/// At open: empties the trees earlier formats kept for what is now in
/// memory (`online`, `recent`, `leases`, `idempotency_expiry`), built by
/// the engine's scans at open.
pub(crate) fn drop_old_trees(trees: &Trees) -> Result<()> {
    if !trees.online.is_empty() || !trees.recent.is_empty() {
        trees.online.clear()?;
        trees.recent.clear()?;
    }
    if !trees.leases.is_empty() {
        trees.leases.clear()?;
    }
    if !trees.idempotency_expiry.is_empty() {
        trees.idempotency_expiry.clear()?;
    }
    let _ = trees.meta.remove(layout::PRESENCE_INDEXES_KEY)?;
    Ok(())
}
