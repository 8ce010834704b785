//! Lease expiry (SPEC section 10): the writes that take subscribers whose
//! lease deadline has passed offline. Due leases are found through the
//! in-memory deadlines (deadlines.rs: both clocks' orders), never by
//! scanning subscribers. Each
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
use crate::presence_change::PresenceChange;
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

/// Writes the expiry of up to `limit` due leases (by either clock,
/// deadlines.rs) and waits until they are durable.
pub(crate) fn expire_due(writes: &Writes, engine: &Engine, limit: usize) -> Result<Expired> {
    let now = writes.clocks();
    let mut expired = 0;
    let mut last_ticket = None;
    let due = engine.deadlines.due(now, limit);
    let more = limit > 0 && due.len() == limit;
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
    let after = writes.clocks();
    let next = if more {
        Some(after.wall)
    } else {
        engine.deadlines.earliest()
    };
    Ok(Expired {
        expired,
        next,
        next_due: engine.deadlines.next_due(after),
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
    let seen = doc.lease;
    doc.expire();
    // The expiry's side effects around the document change, as every
    // write's (write.rs).
    let event = event_of_expiry(&doc, applied, now.wall);
    let presence = PresenceChange::begin(
        engine,
        doc.environment_id,
        doc_key,
        before,
        seen,
        Some(&doc),
        &[event],
        now,
    )?;
    engine.trees.subscribers.insert(doc_key, doc.encode()?)?;
    let ticket = presence.finish(engine);
    Ok(Some(ticket))
}

/// The earliest deadline of a running lease, by the wall clock.
pub(crate) fn earliest_deadline(engine: &Engine) -> Result<Option<Timestamp>> {
    Ok(engine.deadlines.earliest())
}
