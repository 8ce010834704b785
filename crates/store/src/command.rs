//! A write to one subscriber ([`Command`]) and its rule: [`decide`] what
//! the document becomes, given the current one.

use crate::clock::Timestamp;
use crate::error::{Entity, Error, Result};
use crate::event::{EventCause, EventRecord, event_of_change, event_of_expiry};
use crate::id::ObjectId;
use crate::precondition::Precondition;
use crate::presence::validate_ttl_seconds;
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
    /// The presence write: set `isOnline`. Going online starts or moves a
    /// lease of the store's default TTL ([`Config::presence_ttl_secs`](crate::Config::presence_ttl_secs);
    /// none when it is 0); going offline ends any lease.
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
    /// A heartbeat: the presence write going online with a lease of its
    /// own length (SPEC section 10): the subscriber goes offline by itself
    /// `ttl_seconds` after this write unless another online write comes.
    /// 0 means no lease (and ends a running one).
    Heartbeat {
        /// Which subscriber.
        subscriber_id: String,
        /// The lease's length, 0 to [`MAX_TTL_SECONDS`](crate::MAX_TTL_SECONDS).
        ttl_seconds: u32,
    },
    /// A write of connection presence (SPEC 13), made by
    /// [`Store::connect`](crate::Store::connect) and the
    /// [`Connection`](crate::Connection) guards it returns, which keep the
    /// count of open connections it follows: it has no public constructor.
    Connection(ConnectionWrite),
}

/// A connection presence write: what happened to a subscriber's
/// connections. Built only by the store (see [`Command::Connection`]).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode)]
pub struct ConnectionWrite {
    pub(crate) subscriber_id: String,
    pub(crate) kind: ConnectionKind,
}

/// What a [`ConnectionWrite`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode)]
pub(crate) enum ConnectionKind {
    /// A connection opened: online with a connection lease of `run`,
    /// unless that lease already holds the presence (then nothing).
    Opened { run: u64, lease_secs: u32 },
    /// The store run's periodic renewal: moves the connection lease of
    /// `run` if it still holds the presence (an explicit presence write
    /// since wins: then nothing).
    Renewed { run: u64, lease_secs: u32 },
    /// The last connection closed at `at` and no other opened within the
    /// grace: offline with `lastOnlineAt` = `at`, unless already offline.
    Closed { at: Timestamp },
}

impl ConnectionWrite {
    /// The command of a `kind` write of `subscriber_id`'s connections.
    pub(crate) fn command(subscriber_id: &str, kind: ConnectionKind) -> Command {
        Command::Connection(ConnectionWrite {
            subscriber_id: subscriber_id.to_owned(),
            kind,
        })
    }
}

impl Command {
    pub(crate) fn subscriber_id(&self) -> &str {
        match self {
            Command::Upsert { input, .. } => &input.subscriber_id,
            Command::SetOnline { subscriber_id, .. }
            | Command::Delete { subscriber_id }
            | Command::Heartbeat { subscriber_id, .. }
            | Command::Connection(ConnectionWrite { subscriber_id, .. }) => subscriber_id,
        }
    }

    /// The cause of the event this command's own flip emits.
    fn cause(&self) -> EventCause {
        match self {
            Command::Connection(ConnectionWrite {
                kind: ConnectionKind::Closed { .. },
                ..
            }) => EventCause::Disconnected,
            Command::Connection(_) => EventCause::Connected,
            _ => EventCause::Write,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Command::Upsert { input, .. } => input.validate(),
            Command::SetOnline { subscriber_id, .. } | Command::Delete { subscriber_id } => {
                validate_subscriber_id(subscriber_id)
            }
            Command::Heartbeat {
                subscriber_id,
                ttl_seconds,
            } => {
                validate_subscriber_id(subscriber_id)?;
                validate_ttl_seconds(*ttl_seconds).map(drop)
            }
            Command::Connection(ConnectionWrite {
                subscriber_id,
                kind,
            }) => {
                validate_subscriber_id(subscriber_id)?;
                match kind {
                    ConnectionKind::Opened { lease_secs, .. }
                    | ConnectionKind::Renewed { lease_secs, .. } => {
                        validate_connection_lease(*lease_secs)
                    }
                    ConnectionKind::Closed { .. } => Ok(()),
                }
            }
        }
    }
}

/// A connection lease's length: 1 to [`MAX_TTL_SECONDS`](crate::MAX_TTL_SECONDS)
/// (0 would be no lease, and a connection's presence always has one).
pub(crate) fn validate_connection_lease(lease_secs: u32) -> Result<()> {
    if lease_secs == 0 {
        return Err(Error::invalid(
            crate::error::Field::TtlSeconds,
            crate::error::InputProblem::NotInRange {
                min: 1,
                max: u64::from(crate::presence::MAX_TTL_SECONDS),
            },
        ));
    }
    validate_ttl_seconds(lease_secs).map(drop)
}

/// What a decided command does to the stored document.
#[derive(Debug)]
pub(crate) enum Change {
    Put(Vec<u8>),
    Remove,
    /// Nothing to store: the document already is what the command asks
    /// (a connection write the presence already reflects, or one an
    /// explicit presence write overrules).
    Keep,
}

/// The pure part of a write: what the document becomes and what to store.
/// `now` is raised to the latest time already in the document, so a write
/// never moves its times backwards. A lease whose deadline has passed
/// expires first (its own version), and the write applies on top.
/// `default_ttl` is the lease an online [`Command::SetOnline`] takes.
/// With `feed`, also the presence events the write emits (SPEC section 11).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(
    command: Command,
    current: Option<Subscriber>,
    expected: Option<&Precondition>,
    tenant: &Tenant,
    now: Timestamp,
    fresh_id: ObjectId,
    default_ttl: u32,
    feed: bool,
) -> Result<(Subscriber, Change, Vec<EventRecord>)> {
    // Leases are judged by the clock itself; stamps never go back.
    let clock = now;
    let now = current.as_ref().map_or(now, |doc| doc.write_time(now));
    let mut events = Vec::new();
    let current = current.map(|doc| match doc.online_expires_at() {
        Some(deadline) if feed && doc.lease_expired(clock) => {
            // The write sees the lease run out: an expiry of its own.
            let seen = doc.as_of(clock);
            events.push(event_of_expiry(&seen, deadline, now));
            seen
        }
        _ => doc.as_of(clock),
    });
    let seen_online = current.as_ref().and_then(|doc| doc.is_online);
    let cause = command.cause();
    let (doc, mut change) = decide_change(
        command,
        current,
        expected,
        tenant,
        [clock, now],
        fresh_id,
        default_ttl,
    )?;
    if matches!(change, Change::Keep) {
        if !events.is_empty() {
            // The write saw a lease run out: that expiry is stored (the
            // document as seen), so the event never goes without its change.
            change = Change::Put(doc.encode()?);
        }
        return Ok((doc, change, events));
    }
    if feed {
        let removed = matches!(change, Change::Remove);
        events.extend(event_of_change(seen_online, &doc, removed, now, cause));
    }
    Ok((doc, change, events))
}

/// [`decide`] without the feed: the document and what to store. `clock`
/// is the clock's reading (a lease starts from it), `now` the write's
/// stamp (the reading, or a later time the document holds).
#[allow(clippy::too_many_arguments)]
fn decide_change(
    command: Command,
    current: Option<Subscriber>,
    expected: Option<&Precondition>,
    tenant: &Tenant,
    [clock, now]: [Timestamp; 2],
    fresh_id: ObjectId,
    default_ttl: u32,
) -> Result<(Subscriber, Change)> {
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
            let bytes = doc.encode()?;
            Ok((doc, Change::Put(bytes)))
        }
        Command::SetOnline { online, .. } => {
            let mut doc = current.ok_or(Error::NotFound(Entity::Subscriber))?;
            check_version()?;
            doc.set_online(online, default_ttl, clock);
            let bytes = doc.encode()?;
            Ok((doc, Change::Put(bytes)))
        }
        Command::Heartbeat { ttl_seconds, .. } => {
            let mut doc = current.ok_or(Error::NotFound(Entity::Subscriber))?;
            check_version()?;
            doc.set_online(true, ttl_seconds, clock);
            let bytes = doc.encode()?;
            Ok((doc, Change::Put(bytes)))
        }
        Command::Delete { .. } => {
            let doc = current.ok_or(Error::NotFound(Entity::Subscriber))?;
            check_version()?;
            Ok((doc, Change::Remove))
        }
        Command::Connection(ConnectionWrite { kind, .. }) => {
            let mut doc = current.ok_or(Error::NotFound(Entity::Subscriber))?;
            check_version()?;
            let acts = match kind {
                ConnectionKind::Opened { run, .. } => !doc.held_by(run),
                ConnectionKind::Renewed { run, .. } => doc.held_by(run),
                ConnectionKind::Closed { .. } => doc.is_online == Some(true),
            };
            if !acts {
                return Ok((doc, Change::Keep));
            }
            match kind {
                ConnectionKind::Opened { run, lease_secs }
                | ConnectionKind::Renewed { run, lease_secs } => {
                    doc.connect(run, lease_secs, clock);
                }
                ConnectionKind::Closed { at } => doc.disconnect(at, clock),
            }
            let bytes = doc.encode()?;
            Ok((doc, Change::Put(bytes)))
        }
    }
}
