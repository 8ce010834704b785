//! A write to one subscriber ([`Command`]) and its rule: [`decide`] what
//! the document becomes, given the current one.

use crate::clock::Timestamp;
use crate::error::{Entity, Error, Result};
use crate::id::ObjectId;
use crate::layout;
use crate::precondition::Precondition;
use crate::subscriber::{Subscriber, SubscriberInput, validate_subscriber_id};
use crate::tenancy::Tenant;

/// A write to one subscriber, as [`Store::execute`] takes it.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode)]
// Built once per write and moved into `execute`: boxing the input would cost
// an allocation per write for no gain.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Create the subscriber, or set the given fields if it exists.
    Upsert {
        /// What to set.
        input: SubscriberInput,
        /// Fail with [`Error::AlreadyExists`] instead of updating.
        fail_if_exists: bool,
    },
    /// The presence write: set `isOnline`.
    SetOnline {
        /// Which subscriber.
        subscriber_id: String,
        /// The new presence.
        online: bool,
    },
    /// Remove the subscriber; a later create starts over at version 0.
    Delete {
        /// Which subscriber.
        subscriber_id: String,
    },
}

impl Command {
    pub(crate) fn subscriber_id(&self) -> &str {
        match self {
            Command::Upsert { input, .. } => &input.subscriber_id,
            Command::SetOnline { subscriber_id, .. } | Command::Delete { subscriber_id } => {
                subscriber_id
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Command::Upsert { input, .. } => input.validate(),
            Command::SetOnline { subscriber_id, .. } | Command::Delete { subscriber_id } => {
                validate_subscriber_id(subscriber_id)
            }
        }
    }
}

/// What a decided command does to the stored document.
#[derive(Debug)]
pub(crate) enum Change {
    Put(Vec<u8>),
    Remove,
}

/// The pure part of a write: what the document becomes and what to store.
/// `now` is raised to the latest time already in the document, so a write
/// never moves its times backwards.
pub(crate) fn decide(
    command: Command,
    current: Option<Subscriber>,
    expected: Option<&Precondition>,
    tenant: &Tenant,
    now: Timestamp,
    fresh_id: ObjectId,
) -> Result<(Subscriber, Change)> {
    let now = current.as_ref().map_or(now, |doc| doc.write_time(now));
    let current_version = current.as_ref().map(|d| d.version);
    let check_version = || match expected {
        Some(expected) if !expected.holds(current_version) => Err(Error::VersionConflict {
            expected: expected.clone(),
            current: current_version,
        }),
        _ => Ok(()),
    };
    match command {
        Command::Upsert {
            input,
            fail_if_exists,
        } => {
            check_version()?;
            if let (true, Some(current)) = (fail_if_exists, current_version) {
                return Err(Error::AlreadyExists { current });
            }
            let doc = input.apply(current, tenant, now, fresh_id);
            let bytes = layout::encode(&doc)?;
            Ok((doc, Change::Put(bytes)))
        }
        Command::SetOnline { online, .. } => {
            let mut doc = current.ok_or(Error::NotFound(Entity::Subscriber))?;
            check_version()?;
            doc.set_online(online, now);
            let bytes = layout::encode(&doc)?;
            Ok((doc, Change::Put(bytes)))
        }
        Command::Delete { .. } => {
            let doc = current.ok_or(Error::NotFound(Entity::Subscriber))?;
            check_version()?;
            Ok((doc, Change::Remove))
        }
    }
}
