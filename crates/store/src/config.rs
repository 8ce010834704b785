//! How a store is opened: where, how durable, with which clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::observer::{NoObserver, Observer};
use crate::server_key::ServerKey;

/// When a write is acknowledged (SPEC section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A write returns only after it is on disk: sled `flush()` plus
    /// `fdatasync` of its log, shared by concurrent writers (group commit).
    #[default]
    Durable,
    /// A write returns after the in-memory commit; a background thread
    /// flushes and fdatasyncs every [`Config::flush_interval`], which (plus
    /// the flush's own time) is the window of acknowledged writes a crash or
    /// power loss can take.
    Relaxed,
}

/// Options for [`Store::open`](crate::Store::open).
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) path: Option<PathBuf>,
    pub(crate) durability: Durability,
    pub(crate) flush_interval: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cache_bytes: u64,
    pub(crate) idempotency_ttl: Duration,
    pub(crate) presence_ttl_secs: u32,
    pub(crate) background_expiry: bool,
    pub(crate) presence_feed: bool,
    pub(crate) event_retention: Duration,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) server_key: Option<ServerKey>,
    pub(crate) connection_lease_secs: u32,
    pub(crate) disconnect_grace: Duration,
}

impl Config {
    /// A store kept in the directory `path` (created if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config {
            path: Some(path.into()),
            ..Config::temporary()
        }
    }

    /// A store that lives in a temporary directory removed when it closes.
    /// Nothing is synced to disk, whatever the durability mode says.
    pub fn temporary() -> Self {
        Config {
            path: None,
            durability: Durability::Durable,
            flush_interval: Duration::from_millis(500),
            clock: Arc::new(SystemClock),
            cache_bytes: 256 * 1024 * 1024,
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            presence_ttl_secs: 0,
            background_expiry: true,
            presence_feed: true,
            event_retention: Duration::from_secs(24 * 60 * 60),
            observer: Arc::new(NoObserver),
            server_key: None,
            connection_lease_secs: 30,
            disconnect_grace: Duration::ZERO,
        }
    }

    /// Sets the durability mode (default [`Durability::Durable`]).
    pub fn durability(mut self, mode: Durability) -> Self {
        self.durability = mode;
        self
    }

    /// How often relaxed mode flushes in the background (default 500 ms,
    /// rounded to whole milliseconds, at least 1).
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every;
        self
    }

    /// The clock timestamps and expiry are read from (default: system time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long an idempotency record is kept (default 24 hours, measured
    /// with the store's clock). An expired record is as if absent.
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    /// The presence lease an online [`Command::SetOnline`](crate::Command::SetOnline)
    /// starts, in seconds (SPEC section 10): the subscriber goes offline by
    /// itself this long after its last online write. 0 (the default, Novu's
    /// behaviour): no lease. At most [`MAX_TTL_SECONDS`](crate::MAX_TTL_SECONDS);
    /// [`Store::open`](crate::Store::open) refuses more.
    pub fn presence_ttl_secs(mut self, seconds: u32) -> Self {
        self.presence_ttl_secs = seconds;
        self
    }

    /// The lease of a subscriber's open connections, in seconds (SPEC 13;
    /// default 30): the store renews it every third of that while a
    /// [`Connection`](crate::Connection) is open, so a process that dies
    /// with connections open leaves its subscribers online at most this
    /// long. 1 to [`MAX_TTL_SECONDS`](crate::MAX_TTL_SECONDS);
    /// [`Store::open`](crate::Store::open) refuses anything else.
    pub fn connection_lease_secs(mut self, seconds: u32) -> Self {
        self.connection_lease_secs = seconds;
        self
    }

    /// How long after a subscriber's last connection closes it goes
    /// offline, if no connection opens meanwhile (SPEC 13; default 0: at
    /// the close). A reconnect within it changes nothing.
    pub fn disconnect_grace(mut self, grace: Duration) -> Self {
        self.disconnect_grace = grace;
        self
    }

    /// Whether a thread of the store writes lease expiries as they fall due
    /// (default `true`). Off, nothing is written until the application calls
    /// [`Store::expire_due`](crate::Store::expire_due); reads still show a
    /// passed lease as expired. For tests that drive expiry step by step.
    pub fn background_expiry(mut self, on: bool) -> Self {
        self.background_expiry = on;
        self
    }

    /// Whether the store keeps the presence event feed, the online index and
    /// the presence counts (SPEC section 11; default `true`). Off, a
    /// presence write costs a few sled inserts less and the feed calls fail
    /// with [`Error::FeedOff`](crate::Error::FeedOff); turned on again, the
    /// indexes are rebuilt at open (the feed has no events for the time it
    /// was off).
    pub fn presence_feed(mut self, on: bool) -> Self {
        self.presence_feed = on;
        self
    }

    /// How long presence events are kept (default 24 hours, by the store's
    /// clock, from when each was appended). Older events are purged, oldest
    /// first, and a cursor before them is [`Error::CursorExpired`](crate::Error::CursorExpired).
    pub fn event_retention(mut self, keep: Duration) -> Self {
        self.event_retention = keep;
        self
    }

    /// Who is told about flush rounds, storage failures, purges, expiries
    /// and appended events as they happen (default: nobody), for metrics.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The server key (SPEC 13; default none): with it, every API key the
    /// store issues or is given, and every older key when it next
    /// authenticates, is also kept sealed under it, so
    /// [`Store::subscriber_hash_matches`](crate::Store::subscriber_hash_matches)
    /// can check an Inbox `subscriberHash`. Keep it apart from the data
    /// directory: the directory alone then reveals no key.
    pub fn server_key(mut self, key: ServerKey) -> Self {
        self.server_key = Some(key);
        self
    }

    /// The size of sled's page cache in bytes (default 256 MiB).
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }
}
