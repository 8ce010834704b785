//! Lease expiry (SPEC section 10): the writes that take subscribers whose
//! lease deadline has passed offline. Due leases are found through the
//! `leases` index (deadline order), never by scanning subscribers. Each
//! expiry is an ordinary committed change under the subscriber's lock
//! (`Subscriber::expire`: `__v` + 1), and a batch is made durable by one
//! flush round before it returns.
//!
//! Reads never wait for this: [`Subscriber::as_of`] shows a passed lease as
//! expired, and a write to such a subscriber applies the expiry first (in
//! `command::decide`), so this only makes durable what every reader already sees.

use crate::clock::{Now, Timestamp};
use crate::durability::Ticket;
use crate::engine::{Engine, read};
use crate::error::Result;
use crate::event::event_of_expiry;
use crate::feed::FeedChange;
use crate::layout;
use crate::presence_index::Presence;
use crate::write::Writes;

/// What one batch of expiries did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired {
    /// Subscribers taken offline.
    pub expired: usize,
    /// The next deadline in the index: `Some(now)` when the batch stopped
    /// at its limit with due leases left; `None` when the index is empty.
    pub next: Option<Timestamp>,
    /// How long until the next lease falls due by the monotonic clock.
    pub next_due: Option<std::time::Duration>,
}

/// Writes the expiry of up to `limit` due leases and waits until they are
/// durable: first those the `leases` index shows run out by the wall
/// clock, in deadline order, dropping stale entries (the document moved
/// its deadline, went offline or was deleted) on the way; then those due
/// by the monotonic clock (deadlines.rs: a wall clock stepped back).
pub(crate) fn expire_due(writes: &Writes, engine: &Engine, limit: usize) -> Result<Expired> {
    let trees = &engine.trees;
    let now = writes.clocks();
    let mut expired = 0;
    let mut next = None;
    let mut last_ticket = None;
    for (examined, entry) in trees.leases.iter().enumerate() {
        let (key, _) = entry?;
        let Some((deadline, doc_key)) = layout::split_expiry_key(&key) else {
            trees.leases.remove(&key)?;
            continue;
        };
        if deadline > now.wall {
            next = Some(deadline);
            break;
        }
        if examined == limit {
            next = Some(now.wall);
            break;
        }
        if let Some(ticket) = expire_one(writes, engine, doc_key, deadline, now)? {
            expired += 1;
            last_ticket = Some(ticket);
        }
        // After the document: an entry is never gone while its document
        // still holds the deadline (sled recovers a prefix of its log).
        trees.leases.remove(&key)?;
    }
    let room = limit.saturating_sub(expired);
    let due = engine.deadlines.due(now, room);
    if room > 0 && due.len() == room {
        next = Some(now.wall);
    }
    for (doc_key, deadline) in due {
        if let Some(ticket) = expire_one(writes, engine, &doc_key, deadline, now)? {
            expired += 1;
            last_ticket = Some(ticket);
        }
    }
    if let Some(ticket) = last_ticket {
        engine.barrier.wait_until_durable(ticket)?;
        engine.observer.leases_expired(expired as u64);
    }
    let next_due = engine.deadlines.next_due(writes.clocks());
    Ok(Expired {
        expired,
        next,
        next_due,
    })
}

/// Under the subscriber's lock: if the document at `doc_key` still holds
/// the lease stored with `deadline` and it is due at `now` (by either
/// clock), writes its expiry and returns the write's ticket.
fn expire_one(
    writes: &Writes,
    engine: &Engine,
    doc_key: &[u8],
    deadline: Timestamp,
    now: Now,
) -> Result<Option<Ticket>> {
    let trees = &engine.trees;
    let _lock = writes.lock_stripe(doc_key);
    let doc = read(engine, doc_key)?;
    let Some(doc) = doc.filter(|doc| doc.online_expires_at() == Some(deadline)) else {
        // Stale: the lease moved or ended (a write that failed half-way
        // can leave the process's entry behind).
        engine.deadlines.forget(doc_key, deadline);
        return Ok(None);
    };
    let before = Presence::of(Some(&doc));
    let mut doc = engine.deadlines.apply(doc_key, doc, now);
    let Some(applied) = doc
        .online_expires_at()
        .filter(|_| doc.lease_expired(now.wall))
    else {
        // Due by the monotonic clock within a step's margin: the wall
        // clock's deadline comes first (deadlines.rs).
        return Ok(None);
    };
    doc.expire();
    // The expiry's event and index entries around the document change, as
    // every write's (write.rs).
    let feed = match &engine.feeds {
        Some(feeds) => {
            let feed = feeds.env(doc.environment_id)?;
            let after = Presence::of(Some(&doc));
            let event = event_of_expiry(&doc, applied, now.wall);
            Some(FeedChange::begin(
                feed,
                trees,
                doc_key,
                before,
                after,
                &[event],
            )?)
        }
        None => None,
    };
    trees.subscribers.insert(doc_key, doc.encode()?)?;
    if let Some(feed) = &feed {
        feed.end(trees)?;
    }
    engine.deadlines.ended(doc_key);
    // Taken under the lock, as every write's ticket is.
    let ticket = engine.barrier.ticket();
    if let Some(feed) = feed {
        feed.commit(trees, &engine.barrier, ticket, engine.observer.as_ref());
    }
    Ok(Some(ticket))
}

/// The first deadline in the `leases` index.
pub(crate) fn earliest_deadline(engine: &Engine) -> Result<Option<Timestamp>> {
    Ok(match engine.trees.leases.first()? {
        Some((key, _)) => layout::split_expiry_key(&key).map(|(deadline, _)| deadline),
        None => None,
    })
}
