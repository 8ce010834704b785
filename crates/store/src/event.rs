//! Presence events and queries (SPEC section 11), as values and rules: what
//! an event says, which changes emit one, and the ranges of the query
//! arguments. Appending, ordering and reading them is `feed.rs`'s business.

use crate::clock::Timestamp;
use crate::error::{Error, Field, InputProblem, Result};
use crate::id::ObjectId;
use crate::layout;
use crate::precondition::Version;
use crate::subscriber::Subscriber;

/// The most events or subscribers one page holds.
pub const MAX_PAGE: u32 = 1000;

/// The default page size of the feed and the online query.
pub const DEFAULT_PAGE: u32 = 100;

/// The longest `within` window of the online query, in seconds (30 days).
pub const MAX_WITHIN_SECONDS: u32 = 2_592_000;

/// Why an event was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub enum EventCause {
    /// A presence write flipped `isOnline` or set it for the first time.
    Write,
    /// A lease ran out.
    Expired,
    /// A subscriber that was online was deleted.
    Deleted,
    /// A connection opened (SPEC 13): the subscriber's first.
    Connected,
    /// The subscriber's last connection closed (and its grace passed).
    Disconnected,
}

impl EventCause {
    /// The wire name: `write`, `expired`, `deleted`, `connected` or
    /// `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventCause::Write => "write",
            EventCause::Expired => "expired",
            EventCause::Deleted => "deleted",
            EventCause::Connected => "connected",
            EventCause::Disconnected => "disconnected",
        }
    }
}

/// One committed change of a subscriber's presence, as the feed holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Its place in the environment's feed: strictly increasing, gaps allowed.
    pub seq: u64,
    /// Whose presence changed.
    pub subscriber_id: String,
    /// The presence after the change.
    pub is_online: bool,
    /// `lastOnlineAt` after the change.
    pub last_online_at: Option<Timestamp>,
    /// The document's version after the change (the last version, for a delete).
    pub version: Version,
    /// When the change took effect (a lease's deadline for an expiry).
    pub at: Timestamp,
    /// What made it.
    pub cause: EventCause,
}

/// A page of the feed: events in `seq` order and the cursor after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// At most the page size, oldest first.
    pub events: Vec<PresenceEvent>,
    /// The last event's seq, else the cursor given, else the last purged
    /// seq (0 while nothing was purged): where the next page starts, never
    /// a cursor the feed refuses for a reader that missed nothing.
    pub next: u64,
}

/// The online query (SPEC section 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineQuery {
    /// Start after this subscriber id (ids are listed in byte order).
    pub after: Option<String>,
    /// The page size, 1 to [`MAX_PAGE`].
    pub limit: u32,
    /// Also list subscribers whose `lastOnlineAt` is at most this many
    /// seconds ago (1 to [`MAX_WITHIN_SECONDS`]).
    pub within_seconds: Option<u32>,
}

impl Default for OnlineQuery {
    fn default() -> Self {
        OnlineQuery {
            after: None,
            limit: DEFAULT_PAGE,
            within_seconds: None,
        }
    }
}

/// A page of the online query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlinePage {
    /// The documents, as [`Store::get`](crate::Store::get) reads them, in
    /// subscriber id order.
    pub subscribers: Vec<Subscriber>,
    /// The cursor of the next page, `None` when this is the last.
    pub next: Option<String>,
}

/// Exact presence counts of one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceStats {
    /// Subscribers online now (a passed lease counts as offline).
    pub online: u64,
    /// Subscribers in the environment.
    pub subscribers: u64,
}

/// The page size rule: 1 to [`MAX_PAGE`].
///
/// # Errors
/// [`InputProblem::NotInRange`]; the store reports it naming [`Field::Limit`].
pub fn check_page_limit(limit: u64) -> std::result::Result<u32, InputProblem> {
    u32::try_from(limit)
        .ok()
        .filter(|limit| (1..=MAX_PAGE).contains(limit))
        .ok_or(InputProblem::NotInRange {
            min: 1,
            max: u64::from(MAX_PAGE),
        })
}

/// The window rule: 1 to [`MAX_WITHIN_SECONDS`].
///
/// # Errors
/// [`InputProblem::NotInRange`]; the store reports it naming [`Field::Within`].
pub fn check_within_seconds(within: u64) -> std::result::Result<u32, InputProblem> {
    u32::try_from(within)
        .ok()
        .filter(|within| (1..=MAX_WITHIN_SECONDS).contains(within))
        .ok_or(InputProblem::NotInRange {
            min: 1,
            max: u64::from(MAX_WITHIN_SECONDS),
        })
}

pub(crate) fn validate_limit(limit: u32) -> Result<usize> {
    check_page_limit(u64::from(limit))
        .map(|l| l as usize)
        .map_err(|p| Error::invalid(Field::Limit, p))
}

pub(crate) fn validate_query(query: &OnlineQuery) -> Result<()> {
    validate_limit(query.limit)?;
    if let Some(within) = query.within_seconds {
        check_within_seconds(u64::from(within)).map_err(|p| Error::invalid(Field::Within, p))?;
    }
    if let Some(after) = &query.after {
        crate::subscriber::check_subscriber_id(after)
            .map_err(|p| Error::invalid(Field::After, p))?;
    }
    Ok(())
}

/// An event as stored in tree `events` (its seq is in the key). It also
/// names the document (`doc_id`), so recovery can tell whether the change
/// it announces was written.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct EventRecord {
    pub doc_id: ObjectId,
    pub subscriber_id: String,
    pub is_online: bool,
    pub last_online_at: Option<Timestamp>,
    pub version: Version,
    pub at: Timestamp,
    pub cause: EventCause,
    /// When it was appended, by the store's clock: retention counts from here.
    pub appended_at: Timestamp,
}

impl EventRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<EventRecord> {
        layout::decode(bytes)
    }

    pub(crate) fn into_event(self, seq: u64) -> PresenceEvent {
        PresenceEvent {
            seq,
            subscriber_id: self.subscriber_id,
            is_online: self.is_online,
            last_online_at: self.last_online_at,
            version: self.version,
            at: self.at,
            cause: self.cause,
        }
    }

    fn of(doc: &Subscriber, at: Timestamp, cause: EventCause, now: Timestamp) -> EventRecord {
        EventRecord {
            doc_id: doc.id,
            subscriber_id: doc.subscriber_id.clone(),
            is_online: doc.is_online == Some(true),
            last_online_at: doc.last_online_at,
            version: doc.version,
            at,
            cause,
            appended_at: now,
        }
    }

    /// Whether the change this event announces is in the store, given the
    /// document now under its key (recovery: sled keeps a prefix of its
    /// log, the event is written before its change, and later writes to
    /// the same document come later in the log).
    pub(crate) fn change_written(&self, current: Option<&Subscriber>) -> bool {
        match (self.cause, current) {
            // Gone: deleted after this change (presence writes and
            // expiries need the document), or this delete.
            (_, None) => true,
            // Deleted and created again: the delete came after.
            (_, Some(doc)) if doc.id != self.doc_id => true,
            (EventCause::Deleted, Some(_)) => false,
            (_, Some(doc)) => doc.version >= self.version,
        }
    }
}

/// The event a write's own change emits (SPEC section 11), given the
/// presence it saw (after a passed lease expired) and the document it
/// wrote (`removed`: the document it deleted): a presence write that flips
/// `isOnline` or sets it for the first time, or the delete of a subscriber
/// that was online. Heartbeats that keep it online, repeated offline
/// writes and upserts (they never touch presence) emit none. A flip's
/// event carries `cause`: the command's (`write`, or a connection's).
pub(crate) fn event_of_change(
    seen_online: Option<bool>,
    doc: &Subscriber,
    removed: bool,
    now: Timestamp,
    cause: EventCause,
) -> Option<EventRecord> {
    if removed {
        return (seen_online == Some(true)).then(|| {
            let mut event = EventRecord::of(doc, now, EventCause::Deleted, now);
            event.is_online = false;
            event.last_online_at = Some(now);
            event
        });
    }
    (doc.is_online.is_some() && doc.is_online != seen_online)
        .then(|| EventRecord::of(doc, now, cause, now))
}

/// The event of a lease expiry (written by the expiry thread, or seen by a
/// write that comes after the deadline).
pub(crate) fn event_of_expiry(
    expired: &Subscriber,
    deadline: Timestamp,
    now: Timestamp,
) -> EventRecord {
    EventRecord::of(expired, deadline, EventCause::Expired, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_windows_have_their_ranges() {
        assert_eq!(check_page_limit(1), Ok(1));
        assert_eq!(check_page_limit(1000), Ok(1000));
        assert!(check_page_limit(0).is_err());
        assert!(check_page_limit(1001).is_err());
        assert!(check_page_limit(u64::MAX).is_err());
        assert_eq!(check_within_seconds(2_592_000), Ok(2_592_000));
        assert!(check_within_seconds(0).is_err());
        assert!(check_within_seconds(2_592_001).is_err());
    }
}
