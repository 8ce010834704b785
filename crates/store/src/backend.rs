//! [`Backend`]: the seam between the HTTP facade and where subscribers are
//! kept. [`Store`] (sled, in process) is one; the PostgreSQL crate is
//! another. Every call returns a std future, so a backend that talks to a
//! database awaits it while the sled store answers at once: the trait
//! needs no async runtime, and this crate still has none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::command::Command;
use crate::error::Result;
use crate::event::{EventPage, OnlinePage, OnlineQuery, PresenceStats};
use crate::id::ObjectId;
use crate::idempotency::{Executed, Idempotency};
use crate::observer::Gauges;
use crate::precondition::Precondition;
use crate::store::{Connection, Store};
use crate::subscriber::Subscriber;
use crate::tenancy::{Environment, Tenant};

/// A boxed future a backend returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An open connection a backend counts (SPEC 13): dropping it is the close.
pub trait ConnectionGuard: Send + Sync + std::fmt::Debug {}

impl ConnectionGuard for Connection {}

/// What the HTTP facade asks of a backend: one call per request. Every
/// backend applies the same rules ([`crate::rules`]) and holds the same
/// guarantees (SPEC.md): `__v` consecutive per subscriber, exactly once per
/// idempotency key, an event per presence change readable in `seq` order,
/// an acknowledged write durable.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The current time by the backend's clock.
    fn now(&self) -> Timestamp;

    /// The tenant an API key's secret belongs to.
    fn resolve_key<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Tenant>>;

    /// The environment a tenant scopes.
    fn environment<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<Environment>>;

    /// The environment with this application identifier (`NotFound` for
    /// an unknown one).
    fn environment_by_identifier<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Environment>>;

    /// Whether `hash` is the HMAC-SHA256 of `subscriber_id` keyed with one
    /// of `environment`'s API keys (as [`Store::subscriber_hash_matches`]).
    fn subscriber_hash_matches<'a>(
        &'a self,
        environment: ObjectId,
        subscriber_id: &'a str,
        hash: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>>;

    /// One subscriber, as of now (a passed lease reads as expired).
    fn get<'a>(
        &'a self,
        tenant: &'a Tenant,
        subscriber_id: &'a str,
    ) -> BoxFuture<'a, Result<Subscriber>>;

    /// Any write, with or without an idempotency key (as
    /// [`Store::submit`]); resolves once it is durable.
    fn submit<'a>(
        &'a self,
        tenant: &'a Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: Option<&'a Idempotency>,
    ) -> BoxFuture<'a, Result<Executed>>;

    /// A page of the presence feed after `after` (as [`Store::events`]).
    fn events<'a>(
        &'a self,
        tenant: &'a Tenant,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'a, Result<EventPage>>;

    /// The newest readable event's seq, 0 if none.
    fn last_event<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<u64>>;

    /// Resolves once an event after `after` may be readable (it may also
    /// resolve early: the caller reads and asks again). It borrows nothing,
    /// so a stream can hold it.
    fn event_after(&self, tenant: &Tenant, after: u64) -> Result<BoxFuture<'static, ()>>;

    /// Subscribers online now (as [`Store::online`]).
    fn online<'a>(
        &'a self,
        tenant: &'a Tenant,
        query: &'a OnlineQuery,
    ) -> BoxFuture<'a, Result<OnlinePage>>;

    /// Exact counts of an environment (as [`Store::presence_stats`]).
    fn presence_stats<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<PresenceStats>>;

    /// Whether the backend can write now. May block (the sled store may
    /// reopen its database): call it where blocking is allowed.
    ///
    /// # Errors
    /// Why it cannot.
    fn check_writable(&self) -> Result<()>;

    /// Whether start-up work is done (leases overdue at start expired).
    fn started(&self) -> bool;

    /// Levels for the metrics, read now.
    fn gauges(&self) -> Gauges;

    /// Opens a connection of `subscriber_id` (SPEC 13, as
    /// [`Store::connect`]): resolves once its presence is durable, to a
    /// guard whose drop is the close. The default, for a backend without
    /// connection presence (the PostgreSQL one, for now), is
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn connect<'a>(
        &'a self,
        tenant: &'a Tenant,
        subscriber_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ConnectionGuard>>> {
        let _ = (tenant, subscriber_id);
        Box::pin(std::future::ready(Err(crate::error::Error::Unsupported(
            "connection presence",
        ))))
    }

    /// Makes everything acknowledged durable before the process exits.
    ///
    /// # Errors
    /// A storage failure.
    fn close(&self) -> Result<()>;
}

impl Backend for Store {
    fn now(&self) -> Timestamp {
        Store::now(self)
    }

    fn resolve_key<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Tenant>> {
        Box::pin(std::future::ready(Store::resolve_key(self, secret)))
    }

    fn environment<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<Environment>> {
        Box::pin(std::future::ready(Store::environment(
            self,
            tenant.environment_id(),
        )))
    }

    fn environment_by_identifier<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Environment>> {
        Box::pin(std::future::ready(Store::environment_by_identifier(
            self, identifier,
        )))
    }

    fn subscriber_hash_matches<'a>(
        &'a self,
        environment: ObjectId,
        subscriber_id: &'a str,
        hash: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(std::future::ready(Store::subscriber_hash_matches(
            self,
            environment,
            subscriber_id,
            hash,
        )))
    }

    fn get<'a>(
        &'a self,
        tenant: &'a Tenant,
        subscriber_id: &'a str,
    ) -> BoxFuture<'a, Result<Subscriber>> {
        Box::pin(std::future::ready(Store::get(self, tenant, subscriber_id)))
    }

    fn submit<'a>(
        &'a self,
        tenant: &'a Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: Option<&'a Idempotency>,
    ) -> BoxFuture<'a, Result<Executed>> {
        // The write commits in memory here, on the caller's task; the
        // future only awaits its flush round.
        let submitted = Store::submit(self, tenant, command, expected, idempotency);
        Box::pin(async move { submitted?.await })
    }

    fn events<'a>(
        &'a self,
        tenant: &'a Tenant,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'a, Result<EventPage>> {
        Box::pin(std::future::ready(Store::events(
            self, tenant, after, limit,
        )))
    }

    fn last_event<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<u64>> {
        Box::pin(std::future::ready(Store::last_event(self, tenant)))
    }

    fn event_after(&self, tenant: &Tenant, after: u64) -> Result<BoxFuture<'static, ()>> {
        Ok(Box::pin(Store::event_after(self, tenant, after)?))
    }

    fn online<'a>(
        &'a self,
        tenant: &'a Tenant,
        query: &'a OnlineQuery,
    ) -> BoxFuture<'a, Result<OnlinePage>> {
        Box::pin(std::future::ready(Store::online(self, tenant, query)))
    }

    fn presence_stats<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<PresenceStats>> {
        Box::pin(std::future::ready(Store::presence_stats(self, tenant)))
    }

    fn check_writable(&self) -> Result<()> {
        Store::check_writable(self)
    }

    fn started(&self) -> bool {
        Store::started(self)
    }

    fn gauges(&self) -> Gauges {
        Store::gauges(self)
    }

    fn connect<'a>(
        &'a self,
        tenant: &'a Tenant,
        subscriber_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ConnectionGuard>>> {
        // The online write commits here, on the caller's task; the future
        // only awaits its flush round.
        let committed = Store::commit_connect(self, tenant, subscriber_id);
        Box::pin(async move {
            let connection = committed?.await?;
            Ok(Box::new(connection) as Box<dyn ConnectionGuard>)
        })
    }

    fn close(&self) -> Result<()> {
        Store::flush(self)
    }
}

impl From<Store> for Arc<dyn Backend> {
    fn from(store: Store) -> Arc<dyn Backend> {
        Arc::new(store)
    }
}
