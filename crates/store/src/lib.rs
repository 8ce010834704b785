//! An embeddable store of Novu-compatible subscriber documents and their
//! presence, on sled. No network layer, no async runtime.
//!
//! A [`Store`] holds organizations, environments and API keys ([`Tenant`]
//! scopes every subscriber operation), and subscriber documents whose
//! version (`__v`) rises by one on every committed change. In the default
//! [`Durability::Durable`] mode a write returns only once it is on disk.
//!
//! ```
//! use subscriber_store::{Config, Store, SubscriberInput, Version};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(Config::new(dir.path()))?;
//! let org = store.create_organization("Acme")?;
//! let env = store.create_environment(org.id, "Development")?;
//! let key = store.issue_key(env.id)?; // key.secret is shown only here
//!
//! let tenant = store.resolve_key(&key.secret)?;
//! let mut input = SubscriberInput::new("user-42");
//! input.first_name = Some(Some("Ada".into()));
//! let created = store.upsert(&tenant, input, None)?;
//! assert_eq!(created.version, Version(0));
//!
//! let online = store.set_online(&tenant, "user-42", true, Some(Version(0).into()))?;
//! assert_eq!(online.is_online, Some(true));
//! assert_eq!(online.version, Version(1));
//!
//! // A stale expected version changes nothing.
//! let stale = store.set_online(&tenant, "user-42", false, Some(Version(0).into()));
//! assert!(matches!(stale, Err(subscriber_store::Error::VersionConflict { .. })));
//! assert_eq!(store.get(&tenant, "user-42")?.version, Version(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod clock;
mod command;
mod config;
mod durability;
mod engine;
mod error;
mod id;
mod idempotency;
mod journal;
mod layout;
mod precondition;
mod presence;
mod store;
mod subscriber;
mod tenancy;
mod write;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use command::Command;
pub use config::{Config, Durability};
pub use error::{Entity, Error, Result};
pub use id::ObjectId;
pub use idempotency::{Executed, Idempotency, IdempotencyKey, KeyProblem, MAX_IDEMPOTENCY_KEY_LEN};
pub use precondition::Precondition;
pub use store::{Durable, Store};
pub use subscriber::{
    Channel, ChannelSettings, Credentials, Data, MAX_SUBSCRIBER_ID_BYTES, PROVIDER_IDS, Subscriber,
    SubscriberInput, Version, validate_subscriber_id,
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
