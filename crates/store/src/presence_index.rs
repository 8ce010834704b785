//! The indexes behind the online query (SPEC section 11): tree `online`
//! (who is flagged online) and tree `recent` (when each was last online),
//! kept with every presence change, and the query that reads them. The
//! counts of `feed.rs` are rebuilt here at open.
//!
//! An entry is inserted before the document change that needs it and
//! removed after the change that ends it, so after a crash an index may
//! hold an entry too many, never one too few; the query reads each
//! candidate's document and keeps it only if the document qualifies.

use std::collections::{BTreeSet, HashMap};

use crate::clock::{Now, Timestamp};
use crate::engine::{Engine, read};
use crate::error::Result;
use crate::event::{OnlinePage, OnlineQuery};
use crate::feed::Feeds;
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

/// Index entries a change from `before` to `after` needs before the
/// document is written.
pub(crate) fn before_change(
    trees: &Trees,
    doc_key: &[u8],
    before: Presence,
    after: Presence,
) -> Result<()> {
    if after.flagged && !before.flagged {
        trees.online.insert(doc_key, &[][..])?;
    }
    if let Some(at) = after.last_online_at.filter(|_| after.exists) {
        if before.last_online_at != Some(at) {
            trees.recent.insert(recent_key(doc_key, at), &[][..])?;
        }
    }
    Ok(())
}

/// Index entries the change from `before` to `after` ended, removed after
/// the document was written.
pub(crate) fn after_change(
    trees: &Trees,
    doc_key: &[u8],
    before: Presence,
    after: Presence,
) -> Result<()> {
    if before.flagged && !after.flagged {
        trees.online.remove(doc_key)?;
    }
    if let Some(at) = before.last_online_at {
        if !after.exists || after.last_online_at != Some(at) {
            trees.recent.remove(recent_key(doc_key, at))?;
        }
    }
    Ok(())
}

/// The `recent` key of a document key (environment ++ id) at `at`.
fn recent_key(doc_key: &[u8], at: Timestamp) -> Vec<u8> {
    let (env, id) = doc_key.split_at(12.min(doc_key.len()));
    let mut key = Vec::with_capacity(20 + id.len());
    key.extend_from_slice(env);
    key.extend_from_slice(&at.as_millis().to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// One page of the online query (validated by the caller).
pub(crate) fn online_page(
    engine: &Engine,
    env: ObjectId,
    query: &OnlineQuery,
    clocks: Now,
) -> Result<OnlinePage> {
    let now = clocks.wall;
    let trees = &engine.trees;
    let limit = query.limit as usize;
    let after = query.after.as_deref().unwrap_or("");
    let window_start = query
        .within_seconds
        .map(|within| now.saturating_sub(std::time::Duration::from_secs(u64::from(within))));
    // The window's subscribers: everyone whose lastOnlineAt is in it.
    let mut recent: BTreeSet<Vec<u8>> = BTreeSet::new();
    if let Some(start) = window_start {
        let from = layout::recent_key(env, start, "");
        let to = layout::prefix_end(env.as_bytes());
        let entries = match to {
            Some(to) => trees.recent.range(from..to),
            None => trees.recent.range(from..),
        };
        for entry in entries {
            let (key, _) = entry?;
            if let Some((_, id)) = layout::split_recent_key(&key) {
                if id > after.as_bytes() {
                    recent.insert(id.to_vec());
                }
            }
        }
    }
    let prefix_len = env.as_bytes().len();
    let start = layout::subscriber_key(env, after);
    let in_env = match layout::prefix_end(env.as_bytes()) {
        Some(end) => trees.online.range(start..end),
        None => trees.online.range(start..),
    };
    let mut online = in_env.peekable();
    let mut subscribers = Vec::new();
    let mut more = false;
    loop {
        // The next candidate in id order from either source.
        let from_online = match online.peek() {
            Some(Ok((key, _))) => Some(key[prefix_len..].to_vec()),
            Some(Err(_)) => match online.next() {
                Some(Err(e)) => return Err(e.into()),
                _ => continue,
            },
            None => None,
        };
        let from_recent = recent.first().cloned();
        let candidate = match (from_online, from_recent) {
            (None, None) => break,
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
        };
        if online
            .peek()
            .is_some_and(|e| matches!(e, Ok((key, _)) if key[prefix_len..] == candidate[..]))
        {
            online.next();
        }
        recent.remove(&candidate);
        if candidate.as_slice() <= after.as_bytes() {
            continue;
        }
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
    let now = clocks.wall;
    let run_out = |doc_key: &[u8], deadline: Timestamp| -> Result<bool> {
        Ok(read(engine, doc_key)?.is_some_and(|doc| {
            doc.is_online == Some(true)
                && doc.online_expires_at() == Some(deadline)
                && engine
                    .deadlines
                    .apply(doc_key, doc, clocks)
                    .lease_expired(now)
        }))
    };
    let mut count = 0;
    for entry in engine.trees.leases.iter() {
        let (key, _) = entry?;
        let Some((deadline, doc_key)) = layout::split_expiry_key(&key) else {
            continue;
        };
        if deadline > now {
            break;
        }
        if doc_key.starts_with(env.as_bytes()) && run_out(doc_key, deadline)? {
            count += 1;
        }
    }
    // Due by the monotonic clock, their stored deadline still ahead.
    for (doc_key, deadline) in engine.deadlines.due_ahead_of_wall(env.as_bytes(), clocks) {
        if run_out(&doc_key, deadline)? {
            count += 1;
        }
    }
    Ok(count)
}

/// At open, with the feed on: counts every environment's subscribers, and
/// rebuilds `online` and `recent` unless they are known complete.
pub(crate) fn open(trees: &Trees, feeds: &Feeds) -> Result<()> {
    let complete = trees.meta.get(layout::PRESENCE_INDEXES_KEY)?.is_some();
    if !complete {
        trees.online.clear()?;
        trees.recent.clear()?;
    }
    let mut counts: HashMap<ObjectId, [i64; 3]> = HashMap::new();
    for entry in trees.subscribers.iter() {
        let (key, value) = entry?;
        let Some(env) = key.first_chunk::<12>() else {
            continue;
        };
        // A document that does not decode is still a subscriber (its reads
        // and writes fail with `Corrupt`), but not one online.
        let doc = Subscriber::decode(&value).ok();
        let presence = match &doc {
            Some(doc) => Presence::of(Some(doc)),
            None => Presence {
                exists: true,
                ..Presence::default()
            },
        };
        let count = counts.entry(ObjectId::from_bytes(*env)).or_default();
        count[0] += 1;
        count[1] += i64::from(presence.flagged);
        count[2] += i64::from(presence.leased);
        if !complete {
            before_change(trees, &key, Presence::default(), presence)?;
        }
    }
    for (env, counts) in counts {
        feeds.set_counts(env, counts)?;
    }
    if !complete {
        trees
            .meta
            .insert(layout::PRESENCE_INDEXES_KEY, &[1u8][..])?;
    }
    Ok(())
}

/// At open, with the feed off: the indexes will miss changes from now on.
pub(crate) fn mark_incomplete(trees: &Trees) -> Result<()> {
    trees.meta.remove(layout::PRESENCE_INDEXES_KEY)?;
    Ok(())
}
