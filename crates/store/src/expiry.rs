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

use crate::clock::Timestamp;
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
}

/// Writes the expiry of up to `limit` due lease entries, in deadline order,
/// and waits until they are durable. Stale entries (the document moved its
/// deadline, went offline or was deleted) are dropped on the way.
pub(crate) fn expire_due(writes: &Writes, engine: &Engine, limit: usize) -> Result<Expired> {
    let trees = &engine.trees;
    let now = writes.now();
    let mut expired = 0;
    let mut next = None;
    let mut last_ticket = None;
    for (examined, entry) in trees.leases.iter().enumerate() {
        let (key, _) = entry?;
        let Some((deadline, doc_key)) = layout::split_expiry_key(&key) else {
            trees.leases.remove(&key)?;
            continue;
        };
        if deadline > now {
            next = Some(deadline);
            break;
        }
        if examined == limit {
            next = Some(now);
            break;
        }
        let lock = writes.lock_stripe(doc_key);
        if let Some(mut doc) = read(engine, doc_key)? {
            if doc.online_expires_at() == Some(deadline) {
                let before = Presence::of(Some(&doc));
                doc.expire();
                // The expiry's event and index entries around the document
                // change, as every write's (write.rs).
                let feed = match &engine.feeds {
                    Some(feeds) => {
                        let feed = feeds.env(doc.environment_id)?;
                        let after = Presence::of(Some(&doc));
                        let event = event_of_expiry(&doc, deadline, now);
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
                expired += 1;
                // Taken under the lock, as every write's ticket is.
                let ticket = engine.barrier.ticket();
                if let Some(feed) = feed {
                    feed.commit(trees, &engine.barrier, ticket, engine.observer.as_ref());
                }
                last_ticket = Some(ticket);
            }
        }
        drop(lock);
        // After the document: an entry is never gone while its document
        // still holds the deadline (sled recovers a prefix of its log).
        trees.leases.remove(&key)?;
    }
    if let Some(ticket) = last_ticket {
        engine.barrier.wait_until_durable(ticket)?;
        engine.observer.leases_expired(expired as u64);
    }
    Ok(Expired { expired, next })
}

/// The first deadline in the `leases` index.
pub(crate) fn earliest_deadline(engine: &Engine) -> Result<Option<Timestamp>> {
    Ok(match engine.trees.leases.first()? {
        Some((key, _)) => layout::split_expiry_key(&key).map(|(deadline, _)| deadline),
        None => None,
    })
}
