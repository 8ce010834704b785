//! What one write does beside its document, as one object: the lease
//! table (deadlines.rs), the presence feed's events (feed.rs), the online
//! indexes (presence_index.rs) and the counts. Every writer of a document
//! (write.rs, and the lease expiry in expiry.rs) calls it twice, under the
//! subscriber's lock:
//! - [`PresenceChange::begin`] before the document change: reserves the
//!   events' seqs and appends them (an event on disk without its change is
//!   removed at open; feed.rs);
//! - [`PresenceChange::finish`] after it: the indexes, the counts and the
//!   lease table follow the stored change, the write takes its durability
//!   ticket, and the feed is handed that ticket (its events become
//!   readable once it is durable).
//!
//! Only memory changes in `finish`, so a write that fails between the two
//! leaves the indexes as they were and the feed stopped at its reservation
//! (the engine is reopened on a storage failure).

use crate::clock::Now;
use crate::durability::Ticket;
use crate::engine::Engine;
use crate::error::Result;
use crate::event::EventRecord;
use crate::feed::FeedChange;
use crate::id::ObjectId;
use crate::presence_index::Presence;
use crate::subscriber::{Lease, Subscriber};

/// The side effects of one write, between `begin` and `finish`.
#[derive(Debug)]
#[must_use = "a begun change is finished with the write's ticket"]
pub(crate) struct PresenceChange<'a> {
    doc_key: &'a [u8],
    /// The lease the write found (as this process applies it) and the one
    /// it stored; `None` for a write that stores nothing.
    lease: Option<(Option<Lease>, Option<Lease>)>,
    feed: Option<FeedChange<'a>>,
    now: Now,
}

impl<'a> PresenceChange<'a> {
    /// Before the change of the document at `doc_key` in environment `env`
    /// from `before` (as stored) and `seen` (the lease as applied) to
    /// `after` (`None`: removed), emitting `events`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin(
        engine: &Engine,
        env: ObjectId,
        doc_key: &'a [u8],
        before: Presence,
        seen: Option<Lease>,
        after: Option<&Subscriber>,
        events: &[EventRecord],
        now: Now,
    ) -> Result<PresenceChange<'a>> {
        let feed = match &engine.feeds {
            Some(feeds) => Some(FeedChange::begin(
                feeds.env(env)?,
                &engine.trees,
                doc_key,
                before,
                Presence::of(after),
                events,
            )?),
            None => None,
        };
        Ok(PresenceChange {
            doc_key,
            lease: Some((seen, after.and_then(|doc| doc.lease))),
            feed,
            now,
        })
    }

    /// A write that stores nothing (a keyed write recording a refusal).
    pub(crate) fn none(doc_key: &'a [u8], now: Now) -> PresenceChange<'a> {
        PresenceChange {
            doc_key,
            lease: None,
            feed: None,
            now,
        }
    }

    /// After the document change, still under the subscriber's lock:
    /// indexes, counts and lease table, then the write's ticket (returned),
    /// handed to the feed.
    pub(crate) fn finish(self, engine: &Engine) -> Ticket {
        if let Some((seen, after)) = self.lease {
            engine.deadlines.track(self.doc_key, seen, after, self.now);
        }
        if let Some(feed) = &self.feed {
            feed.end();
        }
        // Taken before the locks are released: a replay that finds the
        // write's record, and a reader that finds its document, wait for
        // this ticket too.
        let ticket = engine.barrier.ticket();
        if let Some(feed) = self.feed {
            feed.commit(
                &engine.trees,
                &engine.barrier,
                ticket,
                engine.observer.as_ref(),
            );
        }
        ticket
    }
}
