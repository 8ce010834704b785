//! What the store tells an operator's metrics: an [`Observer`] the
//! application hands to [`Config::observer`](crate::Config::observer),
//! called as things happen (no metrics library in the store), and the
//! [`Gauges`] read on demand.

use std::time::Duration;

/// Called by the store as things happen, from whatever thread does them;
/// each call must be quick and must not call back into the store. Every
/// method does nothing by default.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// A flush round (sled flush + fdatasync) succeeded: how long it took
    /// and how many writes it made durable.
    fn flush_round(&self, took: Duration, writes: u64) {
        let _ = (took, writes);
    }

    /// A storage failure was met (the store reopens its database).
    fn storage_error(&self) {}

    /// A keyed write stored a new idempotency record.
    fn idempotency_recorded(&self) {}

    /// Expired idempotency records were purged.
    fn idempotency_purged(&self, records: u64) {
        let _ = records;
    }

    /// Lease expiries were written.
    fn leases_expired(&self, leases: u64) {
        let _ = leases;
    }

    /// Presence events were appended to a feed.
    fn events_appended(&self, events: u64) {
        let _ = events;
    }

    /// Presence events older than the retention were purged.
    fn events_purged(&self, events: u64) {
        let _ = events;
    }
}

/// The observer of a store nobody observes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Levels read on demand ([`Store::gauges`](crate::Store::gauges)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gauges {
    /// Idempotency records kept (expired ones not yet purged included).
    pub idempotency_records: u64,
    /// Subscribers holding a presence lease (`None` with the feed off:
    /// the count is kept with the presence counts).
    pub leases: Option<u64>,
    /// Subscribers whose stored presence is online, over all environments
    /// (`None` with the feed off).
    pub online: Option<u64>,
    /// Subscribers, over all environments (`None` with the feed off).
    pub subscribers: Option<u64>,
    /// Flush rounds completed by the open database.
    pub flush_rounds: u64,
    /// Database connections in use (`None` without a connection pool).
    pub pool_in_use: Option<u64>,
    /// Requests waiting for a database connection (`None` without a pool).
    pub pool_waiting: Option<u64>,
}
