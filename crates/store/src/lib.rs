//! An embeddable store of Novu-compatible subscriber documents and their
//! presence, on sled. No network layer, no async runtime.
//!
//! A [`Store`] holds organizations, environments and API keys (a [`Tenant`]
//! scopes every subscriber operation) and subscriber documents whose
//! version (`__v`) rises by one on every committed change. In the default
//! [`Durability::Durable`] mode a write returns only once it is on disk.
//!
//! ```
//! use subscriber_store::{Config, Store, SubscriberInput, Version};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(Config::new(dir.path()))?;
//! let (environment, _created) = store.ensure_environment("Development")?;
//! let tenant = environment.tenant();
//! store.upsert(&tenant, SubscriberInput::new("user-42"), None)?;
//! store.set_online(&tenant, "user-42", true, None)?;
//!
//! let doc = store.get(&tenant, "user-42")?;
//! assert_eq!((doc.is_online, doc.version), (Some(true), Version(1)));
//! # Ok::<(), subscriber_store::Error>(())
//! ```
//!
//! # Map
//! From the ground up; a module imports only from the lines above its own.
//! - Ground: `clock` (time, injectable), `id` (ObjectIds), `config`,
//!   `server_key` ([`ServerKey`]: sealing API keys, the Inbox's HMAC check,
//!   derived keys),
//!   `observer` (what an operator's metrics are told, and the gauges),
//!   `precondition` ([`Version`], [`Precondition`]: the version a write
//!   expects), `error` (the crate's one [`Error`] and the typed problems it carries).
//! - `layout`: every key and record byte the store writes, and the
//!   fingerprint of a request; pinned by tests.
//! - Records and rules: `subscriber` (the document, what a create may set,
//!   the subscriber id and channel rules), `presence` (the presence rule),
//!   `event` (presence events, which change emits one, the queries' types),
//!   `tenancy`, `command` ([`Command`]: what a write may do, decided
//!   against the current document), `idempotency` (keys and records).
//! - Machinery: `journal` (the redo journal that makes a document change
//!   and its idempotency record atomic), `durability` (flush rounds, group
//!   commit, the relaxed background flush), `feed` (the presence feed:
//!   seqs, readable once durable, waits, counts, retention),
//!   `presence_index` (the online indexes and query), `connections` (the
//!   open connections of this store run, SPEC 13), `engine` (the open
//!   sled database, recovered at open).
//! - `write`: the one write path, for plain and keyed writes.
//! - `store`: the public handle, [`Store`], [`Durable`], the future or
//!   blocking wait of a committed write, and [`Connection`], an open
//!   connection's presence ([`Store::connect`]).
#![deny(missing_docs)]

mod backend;
mod clock;
mod command;
mod config;
mod connections;
mod deadlines;
mod durability;
mod engine;
mod error;
mod event;
mod expiry;
mod feed;
mod id;
mod idempotency;
mod journal;
mod layout;
mod observer;
mod precondition;
mod presence;
mod presence_change;
mod presence_index;
pub mod rules;
mod server_key;
mod store;
mod subscriber;
mod tenancy;
mod write;

pub use backend::{Backend, BoxFuture, ConnectionGuard};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use command::{Command, ConnectionWrite};
pub use config::{Config, Durability};
pub use error::{Entity, Error, Field, InputProblem, Result};
pub use event::{
    DEFAULT_PAGE, EventCause, EventPage, MAX_PAGE, MAX_WITHIN_SECONDS, OnlinePage, OnlineQuery,
    PresenceEvent, PresenceStats, check_page_limit, check_within_seconds,
};
pub use id::ObjectId;
pub use idempotency::{Executed, Idempotency, IdempotencyKey, KeyProblem, MAX_IDEMPOTENCY_KEY_LEN};
pub use layout::MAX_RECORD_BYTES;
pub use observer::{Gauges, NoObserver, Observer};
pub use precondition::Precondition;
pub use presence::{MAX_TTL_SECONDS, check_ttl_seconds};
pub use server_key::{SERVER_KEY_BYTES, ServerKey};
pub use store::{Connection, Durable, EventNotice, Store};
pub use subscriber::{
    Channel, ChannelSettings, Credentials, Data, Lease, MAX_SUBSCRIBER_ID_BYTES, PROVIDER_IDS,
    Subscriber, SubscriberInput, Version, check_provider_id, check_subscriber_id,
};
pub use tenancy::{ApiKeyInfo, Environment, IssuedKey, Organization, Tenant};

/// The failpoints a durable keyed write ([`Store::execute_once`]) passes, in
/// order: before its journal entry, after it, after its record, after its
/// document change (the in-memory commit), the flush round's start, after
/// sled's flush, after the log's fdatasync, and once durable. They
/// compile to nothing unless the `failpoints` feature is on; the crash and
/// power-cut tests stop the store at each in turn.
pub const WRITE_PATH_FAILPOINTS: &[&str] = &[
    "execute_once::before_commit",
    "execute_once::after_journal",
    "execute_once::after_record",
    "execute_once::before_durable",
    "durability::sync",
    "durability::after_flush",
    "durability::after_log_sync",
    "execute_once::after_durable",
];

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
