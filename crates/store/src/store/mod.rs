//! [`Store`]: the handle applications hold. Opening, the subscriber operations
//! and the one path every subscriber write takes (validate, lock the
//! subscriber's stripe, read, decide, commit, wait for durability).

mod connections;
mod feed;
mod idempotency;
mod leases;

pub use connections::Connection;
pub use feed::EventNotice;
mod tenancy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::clock::Timestamp;
use crate::command::Command;
use crate::config::{Config, Durability};
use crate::engine::{Engine, open_engine, probe, read, sync_engine};
use crate::error::{Entity, Error, Result};
use crate::idempotency::{Executed, Idempotency};
use crate::layout::{self};
use crate::precondition::Precondition;
use crate::presence::validate_ttl_seconds;
use crate::subscriber::{Subscriber, SubscriberInput, validate_subscriber_id};
use crate::tenancy::Tenant;
use crate::write::{Once, Prepared, Writes, write};

/// A handle to an open store. Cheap to clone; all clones share one database
/// and can be used from any number of threads. The database closes when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    core: Arc<StoreCore>,
}

#[derive(Debug)]
struct StoreCore {
    /// The open database, or why there is none.
    slot: RwLock<Slot>,
    /// Serialises attempts to reopen the database after a storage failure.
    recovery: Mutex<Recovery>,
    config: Config,
    /// The write path's clock, locks and purge mark: they outlive a reopen.
    writes: Writes,
    bootstrap: Mutex<()>,
    /// Set once the leases that were overdue at open are expired.
    started: std::sync::atomic::AtomicBool,
    /// The open connections of this store run (SPEC 13); its run id marks
    /// the connection leases it writes.
    connections: crate::connections::Connections,
    /// Declared last: dropped (stopped and joined) after everything else
    /// of the core is no longer in use.
    expiry: leases::ExpiryThread,
}

#[derive(Debug)]
enum Slot {
    Open(Arc<Engine>),
    /// Closed after a storage failure; the reason.
    Closed(String),
}

#[derive(Debug)]
struct Recovery {
    /// No reopen is tried before this.
    not_before: Option<Instant>,
    backoff: Duration,
}

/// A write committed in memory and visible to readers, on its way to the
/// disk: [`Durable::wait`] blocks until it is durable (at once in relaxed
/// mode), and it is also a [`Future`](std::future::Future) of the same
/// result, woken by the store's commit thread, for callers on an async
/// runtime (the store itself runs none).
///
/// # Errors
/// Waiting fails with [`Error::Storage`] when the flush that would have
/// covered the write failed: the write is visible but may not survive a
/// crash, and the store reopens its database.
#[derive(Debug)]
#[must_use = "a write is acknowledged only once it is durable: wait for it or await it"]
pub struct Durable<T> {
    value: Option<T>,
    pending: crate::durability::Pending,
    engine: Arc<Engine>,
}

impl<T> Durable<T> {
    pub(crate) fn new(value: T, pending: crate::durability::Pending, engine: Arc<Engine>) -> Self {
        Durable {
            value: Some(value),
            pending,
            engine,
        }
    }

    /// Blocks until the write is durable, then returns its result.
    ///
    /// # Errors
    /// As the type says.
    pub fn wait(mut self) -> Result<T> {
        let pending = std::mem::replace(&mut self.pending, crate::durability::Pending::Ready(None));
        let result = pending.wait();
        self.finish(result)
    }

    /// The same write, its value mapped (a failure of `f` drops it).
    pub(crate) fn try_map<U>(self, f: impl FnOnce(T) -> Result<U>) -> Result<Durable<U>> {
        let Durable {
            value,
            pending,
            engine,
        } = self;
        let value = value.map(f).transpose()?;
        Ok(Durable {
            value,
            pending,
            engine,
        })
    }

    fn finish(&mut self, result: Result<()>) -> Result<T> {
        self.engine.note(result)?;
        self.value
            .take()
            .ok_or_else(|| Error::Storage("a durable write was awaited twice".into()))
    }
}

impl<T: Unpin> std::future::Future for Durable<T> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        let this = &mut *self;
        match this.pending.poll(cx) {
            std::task::Poll::Ready(result) => std::task::Poll::Ready(this.finish(result)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Store {
    /// Opens (or creates) a store.
    ///
    /// ```
    /// use subscriber_store::{Config, Durability, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(Config::new(dir.path()).durability(Durability::Durable))?;
    /// assert!(store.environments()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Storage`] when the directory cannot be created, opened or
    /// locked (another process has it open); [`Error::Corrupt`] when sled
    /// finds its files damaged.
    pub fn open(config: Config) -> Result<Store> {
        validate_ttl_seconds(config.presence_ttl_secs)?;
        crate::command::validate_connection_lease(config.connection_lease_secs)?;
        // This run's mark on the connection leases it writes: the leases
        // of every earlier run are ended at open (deadlines.rs).
        let mut run = [0u8; 8];
        crate::id::fill_random(&mut run)?;
        let run = u64::from_le_bytes(run);
        let engine = open_engine(&config, run)?;
        let core = Arc::new(StoreCore {
            slot: RwLock::new(Slot::Open(Arc::new(engine))),
            recovery: Mutex::new(Recovery {
                not_before: None,
                backoff: FIRST_BACKOFF,
            }),
            writes: Writes::new(
                Arc::clone(&config.clock),
                config.idempotency_ttl,
                config.presence_ttl_secs,
            ),
            bootstrap: Mutex::new(()),
            started: std::sync::atomic::AtomicBool::new(!config.background_expiry),
            connections: crate::connections::Connections::new(
                run,
                config.connection_lease_secs,
                config.disconnect_grace,
            ),
            config,
            expiry: leases::ExpiryThread::new(),
        });
        // Leases that passed their deadline while no process ran are
        // written by the thread's first batch, at once; reads show them
        // expired meanwhile.
        if core.config.background_expiry {
            leases::ExpiryThread::start(&core)?;
        }
        Ok(Store { core })
    }

    /// Makes every write so far durable (sled flush and fdatasync), whatever
    /// the mode. Useful before a relaxed-mode store is closed.
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        let engine = self.engine()?;
        let result = self.sync_on(&engine);
        self.noted(&engine, result)
    }

    /// One flush of `engine`, whatever the mode.
    pub(crate) fn sync_on(&self, engine: &Engine) -> Result<()> {
        sync_engine(engine, &self.core.config)
    }

    /// Whether the store can write now. After a storage failure (disk full,
    /// too many open files, an I/O error) the store closes its database and
    /// reopens it in place on the next operation that finds the cause gone,
    /// trying at most every few seconds; this call is such an operation, so
    /// a health check that polls it also brings the store back.
    ///
    /// # Errors
    /// [`Error::Storage`] saying why the store cannot write.
    pub fn check_writable(&self) -> Result<()> {
        self.engine().map(drop)
    }

    /// The subscriber's current document.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist; [`Error::InvalidInput`] for a
    /// malformed id; [`Error::Storage`], [`Error::Corrupt`].
    pub fn get(&self, tenant: &Tenant, subscriber_id: &str) -> Result<Subscriber> {
        validate_subscriber_id(subscriber_id)?;
        let key = layout::subscriber_key(tenant.environment_id(), subscriber_id);
        let engine = self.engine()?;
        let result = read(&engine, &key);
        // A lease whose deadline has passed (by either clock, deadlines.rs)
        // reads as expired, written or not.
        let now = self.core.writes.clocks();
        self.noted(&engine, result)?
            .map(|doc| engine.deadlines.apply(&key, doc, now).as_of(now.wall))
            .ok_or(Error::NotFound(Entity::Subscriber))
    }

    /// Creates the subscriber, or sets the fields `input` gives if it exists.
    /// With `expected`, applies only if the document exists and satisfies it.
    ///
    /// # Errors
    /// As [`Store::execute`].
    pub fn upsert(
        &self,
        tenant: &Tenant,
        input: SubscriberInput,
        expected: Option<Precondition>,
    ) -> Result<Subscriber> {
        let command = Command::Upsert {
            input,
            fail_if_exists: false,
        };
        self.execute(tenant, command, expected)
    }

    /// Creates the subscriber; fails with [`Error::AlreadyExists`] if it exists.
    ///
    /// # Errors
    /// As [`Store::execute`].
    pub fn create(&self, tenant: &Tenant, input: SubscriberInput) -> Result<Subscriber> {
        let command = Command::Upsert {
            input,
            fail_if_exists: true,
        };
        self.execute(tenant, command, None)
    }

    /// The presence write (SPEC section 4): sets `isOnline`, stamps
    /// `lastOnlineAt` when going offline from anything but offline, moves
    /// `updatedAt`, raises `__v` by one, and returns the stored document.
    ///
    /// ```
    /// use subscriber_store::{Config, Store, SubscriberInput};
    ///
    /// let store = Store::open(Config::temporary())?;
    /// let org = store.create_organization("Acme")?;
    /// let tenant = store.create_environment(org.id, "Development")?.tenant();
    /// store.upsert(&tenant, SubscriberInput::new("user-1"), None)?;
    ///
    /// let doc = store.set_online(&tenant, "user-1", false, None)?;
    /// assert_eq!(doc.is_online, Some(false));
    /// assert_eq!(doc.version.0, 1);
    /// assert!(doc.last_online_at.is_some());
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Store::execute`].
    pub fn set_online(
        &self,
        tenant: &Tenant,
        subscriber_id: &str,
        online: bool,
        expected: Option<Precondition>,
    ) -> Result<Subscriber> {
        let command = Command::SetOnline {
            subscriber_id: subscriber_id.to_owned(),
            online,
        };
        self.execute(tenant, command, expected)
    }

    /// Deletes the subscriber and returns its last document.
    ///
    /// # Errors
    /// As [`Store::execute`].
    pub fn delete(
        &self,
        tenant: &Tenant,
        subscriber_id: &str,
        expected: Option<Precondition>,
    ) -> Result<Subscriber> {
        let command = Command::Delete {
            subscriber_id: subscriber_id.to_owned(),
        };
        self.execute(tenant, command, expected)
    }

    /// Applies one write. Returns the document as stored after it (for a
    /// delete, as it was before). Failed writes change nothing. In durable
    /// mode it returns only once the write is on disk.
    ///
    /// Checks run in the SPEC's order: input, then existence (a presence
    /// write or delete of a missing subscriber is `NotFound`), then `expected`
    /// (`VersionConflict`), then `fail_if_exists` (`AlreadyExists`).
    ///
    /// The write's time is read under the subscriber's lock and is never
    /// earlier than the times already in the document, so `updatedAt` and
    /// `lastOnlineAt` never go backwards along its versions, whatever the
    /// wall clock does.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::NotFound`],
    /// [`Error::VersionConflict`], [`Error::AlreadyExists`],
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn execute(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
    ) -> Result<Subscriber> {
        self.commit(tenant, command, expected)?.wait()
    }

    /// As [`Store::execute`], returning once the write is committed in
    /// memory: wait for or await the [`Durable`] before reporting it done.
    ///
    /// # Errors
    /// As [`Store::execute`], for everything but the flush.
    pub fn commit(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
    ) -> Result<Durable<Subscriber>> {
        // A plain write's outcome is its document: rejections come back as
        // the error of `submit`.
        self.submit(tenant, command, expected, None)?
            .try_map(|executed| executed.outcome)
    }

    /// Any write, with or without an idempotency key: the one call an
    /// application server makes per request. Returns once the write (or the
    /// replay's record) is committed in memory; wait for or await the
    /// [`Durable`] before reporting it done.
    ///
    /// Without a key, a write that executes to `NotFound`, a version
    /// conflict or `AlreadyExists` fails with that error; with one, that
    /// outcome is recorded and returned in [`Executed::outcome`] (see
    /// [`Store::execute_once`]).
    ///
    /// # Errors
    /// As [`Store::execute`] and [`Store::execute_once`], for everything but
    /// the flush.
    pub fn submit(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Durable<Executed>> {
        let prepared = self.prepare(tenant, &command)?;
        let once = match idempotency {
            Some(idempotency) => Some(Once {
                record_key: layout::idempotency_record_key(
                    tenant.environment_id(),
                    idempotency.key().as_str(),
                ),
                fingerprint: idempotency.fingerprint_of(&command, expected.as_ref())?,
                annotation: idempotency.annotation(),
            }),
            None => None,
        };
        let engine = self.engine()?;
        let result = write(
            &self.core.writes,
            &engine,
            tenant,
            command,
            expected.as_ref(),
            &prepared,
            once,
        );
        let (executed, pending) = self.noted(&engine, result)?;
        Ok(Durable::new(executed, pending, engine))
    }

    /// Validates a command and computes what its write needs before any
    /// lock is taken: the document's key and an id for a create.
    pub(crate) fn prepare(&self, tenant: &Tenant, command: &Command) -> Result<Prepared> {
        let fresh_id = crate::rules::prepare(command, self.now())?;
        let doc_key = layout::subscriber_key(tenant.environment_id(), command.subscriber_id());
        Ok(Prepared { doc_key, fresh_id })
    }

    /// Whether a write waits for the disk before it returns (durable mode on
    /// a persistent store). Callers on an async runtime use
    /// [`Store::submit`] or [`Store::commit`] and await the [`Durable`]
    /// instead of blocking a worker.
    pub fn waits_for_disk(&self) -> bool {
        self.core.config.path.is_some() && self.core.config.durability == Durability::Durable
    }

    /// Completed group-commit rounds of the open database: each is one sled
    /// flush plus one fdatasync. 0 in relaxed mode and for temporary stores.
    pub fn flush_rounds(&self) -> u64 {
        match &*self.core.slot.read() {
            Slot::Open(engine) => engine.barrier.rounds(),
            Slot::Closed(_) => 0,
        }
    }

    /// Whether the store has finished starting: the database was recovered
    /// when [`Store::open`] returned; this turns true once the expiry thread
    /// has written every lease that was overdue at open (at once without
    /// the thread). A readiness check waits for it.
    pub fn started(&self) -> bool {
        self.core.started.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Levels for an operator's metrics, read now without touching the
    /// disk: idempotency records kept, leases, online and all subscribers
    /// (the last three kept with the presence counts: `None` with the
    /// feed off), flush rounds. All zero while the database is closed after
    /// a storage failure.
    pub fn gauges(&self) -> crate::observer::Gauges {
        let Slot::Open(engine) = &*self.core.slot.read() else {
            return crate::observer::Gauges::default();
        };
        let records = engine.records.load(std::sync::atomic::Ordering::Relaxed);
        let mut gauges = crate::observer::Gauges {
            idempotency_records: u64::try_from(records).unwrap_or(0),
            flush_rounds: engine.barrier.rounds(),
            ..Default::default()
        };
        if let Some(feeds) = &engine.feeds {
            let (mut leases, mut online, mut subscribers) = (0, 0, 0);
            for feed in feeds.all() {
                let (subs, flagged) = feed.counts();
                subscribers += subs;
                online += flagged;
                leases += feed.leased();
            }
            gauges.leases = Some(leases);
            gauges.online = Some(online);
            gauges.subscribers = Some(subscribers);
        }
        gauges
    }

    /// The open database, reopened first if a storage failure closed it
    /// (at most one attempt per back-off interval; others fail fast).
    pub(crate) fn engine(&self) -> Result<Arc<Engine>> {
        if let Slot::Open(engine) = &*self.core.slot.read() {
            if engine.failure.get().is_none() {
                return Ok(Arc::clone(engine));
            }
        }
        self.recover()
    }

    /// Records a storage failure seen by an operation on `engine`: the
    /// next operation reopens the database.
    pub(crate) fn noted<T>(&self, engine: &Engine, result: Result<T>) -> Result<T> {
        engine.note(result)
    }

    fn recover(&self) -> Result<Arc<Engine>> {
        let unavailable = |why: &str| Error::Storage(format!("the store cannot write: {why}"));
        // One thread reopens; the others fail fast meanwhile.
        let Some(mut recovery) = self.core.recovery.try_lock() else {
            return Err(unavailable("the database is being reopened"));
        };
        let reason = match &*self.core.slot.read() {
            Slot::Open(engine) => match engine.failure.get().cloned() {
                None => return Ok(Arc::clone(engine)),
                Some(reason) => reason,
            },
            Slot::Closed(reason) => reason.clone(),
        };
        if self.core.config.path.is_none() {
            // A temporary database cannot be reopened without losing it.
            return Err(unavailable(&reason));
        }
        if recovery.not_before.is_some_and(|t| Instant::now() < t) {
            return Err(unavailable(&reason));
        }
        let backoff = |recovery: &mut Recovery| {
            recovery.not_before = Some(Instant::now() + recovery.backoff);
            recovery.backoff = (recovery.backoff * 2).min(MAX_BACKOFF);
        };
        let old = std::mem::replace(&mut *self.core.slot.write(), Slot::Closed(reason.clone()));
        if let Slot::Open(old) = old {
            // Operations still running on the old database finish first
            // (they fail fast once it has failed): sled's directory lock is
            // released only when its last handle is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 {
                if Instant::now() > deadline {
                    *self.core.slot.write() = Slot::Open(old);
                    backoff(&mut recovery);
                    return Err(unavailable(&reason));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        match open_engine(&self.core.config, self.core.connections.run).and_then(|engine| {
            probe(&engine, &self.core.config)?;
            Ok(engine)
        }) {
            Ok(engine) => {
                let engine = Arc::new(engine);
                *self.core.slot.write() = Slot::Open(Arc::clone(&engine));
                recovery.not_before = None;
                recovery.backoff = FIRST_BACKOFF;
                Ok(engine)
            }
            Err(e) => {
                let why = e.to_string();
                *self.core.slot.write() = Slot::Closed(why.clone());
                backoff(&mut recovery);
                Err(unavailable(&why))
            }
        }
    }

    /// The current time by the store's clock (the one its timestamps use).
    pub fn now(&self) -> Timestamp {
        self.core.writes.now()
    }

    pub(crate) fn writes(&self) -> &Writes {
        &self.core.writes
    }

    /// The server key the store was opened with, if any.
    pub(crate) fn server_key(&self) -> Option<&crate::server_key::ServerKey> {
        self.core.config.server_key.as_ref()
    }

    pub(crate) fn bootstrap_lock(&self) -> MutexGuard<'_, ()> {
        self.core.bootstrap.lock()
    }
}
