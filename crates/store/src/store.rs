//! [`Store`]: the handle applications hold. Opening, the subscriber operations
//! and the one path every subscriber write takes (validate, lock the
//! subscriber's stripe, read, decide, commit, wait for durability).

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::config::{Config, Durability};
use crate::durability::{Syncer, WriteBarrier};
use crate::error::{Entity, Error, Result};
use crate::id::ObjectId;
use crate::layout::{self, Trees};
use crate::presence;
use crate::subscriber::{Subscriber, SubscriberInput, Version, validate_subscriber_id};
use crate::tenancy::Tenant;

/// Writes to one subscriber are serialised by one of these locks, chosen by
/// hashing its key; sled itself only sees single-key get/insert.
const STRIPES: usize = 1024;

/// A handle to an open store. Cheap to clone; all clones share one database
/// and can be used from any number of threads. The database closes when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    barrier: WriteBarrier,
    batcher: Batcher,
    trees: Trees,
    db: sled::Db,
    /// `None` for a temporary store.
    data_dir: Option<std::path::PathBuf>,
    clock: Arc<dyn Clock>,
    stripes: Box<[Mutex<()>]>,
    idempotency_stripes: Box<[Mutex<()>]>,
    idempotency_ttl: std::time::Duration,
    /// No idempotency record expires before this (ms); 0 until a purge has
    /// looked. Lets writes skip the purge scan until something can expire.
    next_expiry: std::sync::atomic::AtomicU64,
    stripe_hasher: std::collections::hash_map::RandomState,
    bootstrap: Mutex<()>,
}

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
    fn subscriber_id(&self) -> &str {
        match self {
            Command::Upsert { input, .. } => &input.subscriber_id,
            Command::SetOnline { subscriber_id, .. } | Command::Delete { subscriber_id } => {
                subscriber_id
            }
        }
    }

    fn validate(&self) -> Result<()> {
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
        let mut sled_config = sled::Config::new()
            .segment_size(layout::SEGMENT_SIZE)
            .cache_capacity(config.cache_bytes);
        sled_config = match &config.path {
            Some(path) => sled_config.path(path),
            None => sled_config.temporary(true),
        };
        let relaxed = config.durability == Durability::Relaxed;
        let interval_ms = u64::try_from(config.flush_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        sled_config = sled_config.flush_every_ms(relaxed.then_some(interval_ms));
        let db = open_waiting_for_lock(&sled_config)?;
        let trees = Trees::open(&db)?;
        if let Some(path) = &config.path {
            check_identity(&db, &trees.meta, path)?;
        }
        let barrier = match &config.path {
            Some(path) if !relaxed => {
                let syncer = Syncer::new(db.clone(), path)?;
                // Whatever an earlier process left in the page cache is made
                // durable before anything is read and reported as done; the
                // directory entries sled may have just created too.
                syncer.sync()?;
                File::open(path)?.sync_all()?;
                WriteBarrier::group_commit(syncer)
            }
            _ => WriteBarrier::Immediate,
        };
        Ok(Store {
            shared: Arc::new(Shared {
                barrier,
                batcher: Batcher::default(),
                trees,
                db,
                data_dir: config.path,
                clock: config.clock,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                idempotency_stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                idempotency_ttl: config.idempotency_ttl,
                next_expiry: std::sync::atomic::AtomicU64::new(0),
                stripe_hasher: Default::default(),
                bootstrap: Mutex::new(()),
            }),
        })
    }

    /// Makes every write so far durable (sled flush and fdatasync), whatever
    /// the mode. Useful before a relaxed-mode store is closed.
    ///
    /// # Errors
    /// [`Error::Storage`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        match &self.shared.data_dir {
            Some(path) => Syncer::new(self.shared.db.clone(), path)?.sync(),
            None => Ok(()),
        }
    }

    /// The subscriber's current document.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist; [`Error::InvalidInput`] for a
    /// malformed id; [`Error::Storage`], [`Error::Corrupt`].
    pub fn get(&self, tenant: &Tenant, subscriber_id: &str) -> Result<Subscriber> {
        validate_subscriber_id(subscriber_id)?;
        let key = layout::subscriber_key(tenant.environment_id(), subscriber_id);
        self.read(&key)?.ok_or(Error::NotFound(Entity::Subscriber))
    }

    /// Creates the subscriber, or sets the fields `input` gives if it exists.
    /// With `expected`, applies only if the document exists at that version.
    ///
    /// # Errors
    /// As [`Store::execute`].
    pub fn upsert(
        &self,
        tenant: &Tenant,
        input: SubscriberInput,
        expected: Option<Version>,
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
        expected: Option<Version>,
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
        expected: Option<Version>,
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
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::NotFound`],
    /// [`Error::VersionConflict`], [`Error::AlreadyExists`],
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn execute(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Version>,
    ) -> Result<Subscriber> {
        let (key, now, fresh_id) = self.prepare(tenant, &command)?;
        let doc = {
            let _stripe = self.lock_stripe(&key);
            let current = self.read(&key)?;
            let (doc, change) = decide(command, current, expected, tenant, now, fresh_id)?;
            let tree = &self.shared.trees.subscribers;
            match change {
                Change::Put(bytes) => tree.insert(&key, bytes)?,
                Change::Remove => tree.remove(&key)?,
            };
            doc
        };
        self.barrier().wait_committed()?;
        Ok(doc)
    }

    /// Validates a command and computes what its write needs before any
    /// lock is taken: the document's key, the time, and an id for a create.
    pub(crate) fn prepare(
        &self,
        tenant: &Tenant,
        command: &Command,
    ) -> Result<(Vec<u8>, Timestamp, ObjectId)> {
        command.validate()?;
        let now = self.now();
        let fresh_id = match command {
            Command::Upsert { .. } => ObjectId::generate(now)?,
            _ => ObjectId::from_bytes([0; 12]),
        };
        let key = layout::subscriber_key(tenant.environment_id(), command.subscriber_id());
        Ok((key, now, fresh_id))
    }

    /// Whether a write waits for the disk before it returns (durable mode on
    /// a persistent store): callers on an async runtime should then run
    /// writes where blocking is allowed.
    pub fn waits_for_disk(&self) -> bool {
        matches!(self.shared.barrier, WriteBarrier::GroupCommit(_))
    }

    /// Completed group-commit rounds since open: each is one sled flush plus
    /// one fdatasync. 0 in relaxed mode and for temporary stores.
    pub fn flush_rounds(&self) -> u64 {
        self.shared.barrier.rounds()
    }

    pub(crate) fn read(&self, key: &[u8]) -> Result<Option<Subscriber>> {
        match self.shared.trees.subscribers.get(key)? {
            Some(bytes) => layout::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The lock that serialises writes to the subscriber stored at `key`.
    pub(crate) fn lock_stripe(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.shared.stripes[self.stripe_index(key)].lock()
    }

    /// The lock that serialises uses of the idempotency key stored at `key`.
    /// Always taken before, never while holding, a subscriber stripe.
    pub(crate) fn lock_idempotency_stripe(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.shared.idempotency_stripes[self.stripe_index(key)].lock()
    }

    fn stripe_index(&self, key: &[u8]) -> usize {
        let mut h = self.shared.stripe_hasher.build_hasher();
        h.write(key);
        (h.finish() % STRIPES as u64) as usize
    }

    /// The current time by the store's clock (the one its timestamps use).
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    pub(crate) fn trees(&self) -> &Trees {
        &self.shared.trees
    }

    pub(crate) fn idempotency_ttl(&self) -> std::time::Duration {
        self.shared.idempotency_ttl
    }

    pub(crate) fn next_expiry(&self) -> Timestamp {
        let millis = self
            .shared
            .next_expiry
            .load(std::sync::atomic::Ordering::Relaxed);
        Timestamp::from_millis(millis)
    }

    pub(crate) fn set_next_expiry(&self, at: Timestamp) {
        self.shared
            .next_expiry
            .store(at.as_millis(), std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn batcher(&self) -> &Batcher {
        &self.shared.batcher
    }

    pub(crate) fn barrier(&self) -> &WriteBarrier {
        &self.shared.barrier
    }

    pub(crate) fn bootstrap_lock(&self) -> MutexGuard<'_, ()> {
        self.shared.bootstrap.lock()
    }
}

/// Refuses a database that lost the identity its directory says it holds;
/// gives a new store its identity (in sled first, durably, then the file).
fn check_identity(db: &sled::Db, meta: &sled::Tree, dir: &std::path::Path) -> Result<()> {
    let marker = dir.join(layout::IDENTITY_FILE);
    let in_db = meta.get(layout::STORE_ID_KEY)?;
    let in_file = match std::fs::read(&marker) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    match (in_db, in_file) {
        (Some(id), Some(named)) if *id == *named => Ok(()),
        (Some(_), Some(_)) => Err(Error::Corrupt(format!(
            "the database in {} is not the store {} names",
            dir.display(),
            marker.display()
        ))),
        (None, Some(_)) => Err(Error::Corrupt(format!(
            "the database in {} is damaged or missing: it opened empty, but {} shows it held a store; \
             restore the directory from a backup, or move it away to start afresh",
            dir.display(),
            marker.display()
        ))),
        (Some(id), None) => write_durably(dir, &marker, &id),
        (None, None) => {
            let mut id = [0u8; 16];
            crate::id::fill_random(&mut id)?;
            meta.insert(layout::STORE_ID_KEY, &id[..])?;
            Syncer::new(db.clone(), dir)?.sync()?;
            write_durably(dir, &marker, &id)
        }
    }
}

/// Writes a small file so that it is either absent or whole after a crash.
fn write_durably(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// sled releases its directory lock only when its last background I/O task
/// ends, a moment after the last handle is dropped; reopening in the same
/// process can race that, so a held lock is retried for up to two seconds.
fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            // sled reports a held lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(Error::from),
        }
    }
}

/// The pure part of a write: what the document becomes and what to store.
pub(crate) fn decide(
    command: Command,
    current: Option<Subscriber>,
    expected: Option<Version>,
    tenant: &Tenant,
    now: Timestamp,
    fresh_id: ObjectId,
) -> Result<(Subscriber, Change)> {
    let current_version = current.as_ref().map(|d| d.version);
    let check_version = || match expected {
        Some(expected) if current_version != Some(expected) => Err(Error::VersionConflict {
            expected,
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
            presence::set_online(&mut doc, online, now);
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
