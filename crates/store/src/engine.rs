//! [`Engine`]: one open sled database and what writes to it (its trees,
//! durability barrier and journal), opened, checked and recovered as a
//! whole, and replaced as a whole when the store reopens after a storage
//! failure.

use std::time::Duration;

use crate::config::{Config, Durability};
use crate::durability::{Syncer, WriteBarrier, write_durably};
use crate::error::{Error, Result};
use crate::layout::{self, Trees};
use crate::subscriber::Subscriber;

/// One open sled database and what writes to it: replaced as a whole when
/// the store reopens after a storage failure.
#[derive(Debug)]
pub(crate) struct Engine {
    pub trees: Trees,
    pub barrier: WriteBarrier,
    pub journal: crate::journal::Journal,
    /// The presence feed and counts, unless the feed is off.
    pub feeds: Option<std::sync::Arc<crate::feed::Feeds>>,
    /// Told about flush rounds, failures, purges, expiries, events.
    pub observer: std::sync::Arc<dyn crate::observer::Observer>,
    /// Where each running lease falls due on the monotonic clock (rebuilt
    /// at open from the documents): the only lease index.
    pub deadlines: crate::deadlines::Deadlines,
    /// Idempotency records in the database (counted at open, then kept).
    pub records: std::sync::atomic::AtomicI64,
    /// The records' expiry order (rebuilt at open from the records).
    pub record_expiry: crate::idempotency::RecordExpiry,
    pub db: sled::Db,
    /// Set once a storage failure was seen: sled 0.34 keeps an I/O error for
    /// good, and after a failed fdatasync nothing written since can be trusted.
    /// The first failure wins; read without a lock on every operation.
    pub failure: std::sync::OnceLock<String>,
}

impl Engine {
    /// Records a storage failure `result` carries: the next operation
    /// reopens the database.
    pub(crate) fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(Error::Storage(reason)) = &result {
            self.observer.storage_error();
            // Only the first failure is kept; later ones are its echoes.
            let _ = self.failure.set(reason.clone());
        }
        result
    }
}

pub(crate) fn read(engine: &Engine, key: &[u8]) -> Result<Option<Subscriber>> {
    match engine.trees.subscribers.get(key)? {
        Some(bytes) => Subscriber::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Opens sled as `config` says for the store run `run` (connection leases
/// of other runs end at once, deadlines.rs), checks the store's identity,
/// and in durable mode syncs once so nothing an earlier process left
/// unsynced is reported as done.
pub(crate) fn open_engine(config: &Config, run: u64) -> Result<Engine> {
    let mut sled_config = sled::Config::new()
        .segment_size(layout::SEGMENT_SIZE)
        .cache_capacity(config.cache_bytes);
    sled_config = match &config.path {
        Some(path) => sled_config.path(path),
        None => sled_config.temporary(true),
    };
    let relaxed = config.durability == Durability::Relaxed;
    // sled's own flusher syncs only its log file: relaxed mode runs the
    // store's round (which also syncs sled's other files and directories)
    // on a thread instead.
    sled_config = sled_config.flush_every_ms(None);
    let db = open_waiting_for_lock(&sled_config)?;
    let trees = Trees::open(&db)?;
    if let Some(path) = &config.path {
        check_identity(&db, &trees.meta, path)?;
    }
    // Environments of format 1 get their identifier (made durable by the
    // initial sync below).
    crate::tenancy::upgrade_environments(&trees)?;
    // Before anything is served: finish the writes a crash cut short.
    let journal = crate::journal::recover(&trees)?;
    // Then the feed: drop events whose change a crash cut off, count, and
    // build the online indexes.
    let feeds = if config.presence_feed {
        crate::feed::recover(&trees)?;
        Some(std::sync::Arc::new(crate::feed::Feeds::new(trees.clone())))
    } else {
        None
    };
    // What the documents tell, in one scan: the running leases, and with
    // the feed the counts and the online query's indexes.
    crate::presence_index::drop_old_trees(&trees)?;
    // Beside it, on a second thread (the two scans read different trees
    // and each is bound by sled's page reads: at 1,000,000 subscribers
    // each with a record, they are most of the open), the records'
    // expiry order.
    let (deadlines, loaded) = std::thread::scope(|scope| {
        let records = scope.spawn(|| crate::idempotency::RecordExpiry::load(&trees));
        let deadlines = scan_documents(
            &trees,
            feeds.as_deref(),
            crate::clock::Now::of(config.clock.as_ref()),
            run,
        );
        let loaded = records.join().unwrap_or_else(|_| {
            Err(crate::error::Error::Storage(
                "the scan of idempotency records panicked".into(),
            ))
        });
        (deadlines, loaded)
    });
    let deadlines = deadlines?;
    let (record_expiry, records) = loaded?;
    let barrier = match &config.path {
        Some(path) => {
            let syncer = Syncer::new(db.clone(), path)?;
            // Whatever an earlier process left in the page cache is made
            // durable before anything is read and reported as done; the
            // files and directory entries sled may have just created too.
            syncer.sync()?;
            if relaxed {
                WriteBarrier::periodic(
                    syncer,
                    config.flush_interval.max(Duration::from_millis(1)),
                    std::sync::Arc::clone(&config.observer),
                )?
            } else {
                WriteBarrier::group_commit(syncer, std::sync::Arc::clone(&config.observer))?
            }
        }
        None => WriteBarrier::Immediate,
    };
    if let Some(feeds) = &feeds {
        let feeds = std::sync::Arc::clone(feeds);
        barrier.on_durable(Box::new(move |durable| feeds.advance(durable)));
    }
    let records = i64::try_from(records).unwrap_or(i64::MAX);
    Ok(Engine {
        trees,
        barrier,
        journal,
        feeds,
        deadlines,
        observer: std::sync::Arc::clone(&config.observer),
        records: std::sync::atomic::AtomicI64::new(records),
        record_expiry,
        db,
        failure: std::sync::OnceLock::new(),
    })
}

/// One scan of `subscribers` at open: every running lease into the
/// deadlines (a deadline further than its TTL ahead is cut, deadlines.rs),
/// and with the feed each environment's counts and online indexes.
fn scan_documents(
    trees: &Trees,
    feeds: Option<&crate::feed::Feeds>,
    now: crate::clock::Now,
    run: u64,
) -> Result<crate::deadlines::Deadlines> {
    use crate::presence_index::{Presence, Sorted};
    let mut leases = Vec::new();
    let mut envs: std::collections::HashMap<crate::id::ObjectId, ([i64; 3], Sorted)> =
        std::collections::HashMap::new();
    for entry in trees.subscribers.iter() {
        let (key, value) = entry?;
        let Some((env, id)) = key.split_first_chunk::<12>() else {
            continue;
        };
        // A document that does not decode is still a subscriber (its reads
        // and writes fail with `Corrupt`), but not one online.
        let doc = Subscriber::decode(&value).ok();
        if let Some(lease) = doc.as_ref().and_then(|doc| doc.lease) {
            leases.push((key.to_vec(), lease));
        }
        if feeds.is_none() {
            continue;
        }
        let presence = match &doc {
            Some(doc) => Presence::of(Some(doc)),
            None => Presence {
                exists: true,
                ..Presence::default()
            },
        };
        let (count, sorted) = envs
            .entry(crate::id::ObjectId::from_bytes(*env))
            .or_default();
        count[0] += 1;
        count[1] += i64::from(presence.flagged);
        count[2] += i64::from(presence.leased);
        sorted.add(id, presence);
    }
    if let Some(feeds) = feeds {
        for (env, (counts, sorted)) in envs {
            feeds.set_counts(env, counts)?;
            feeds.env(env)?.index.fill(sorted);
        }
    }
    Ok(crate::deadlines::Deadlines::from_storage(leases, now, run))
}

/// A flush of everything committed, whatever the mode (none for a
/// temporary store).
pub(crate) fn sync_engine(engine: &Engine, config: &Config) -> Result<()> {
    match (engine.barrier.syncer(), &config.path) {
        (Some(syncer), _) => syncer.sync(),
        (None, Some(path)) => Syncer::new(engine.db.clone(), path)?.sync(),
        (None, None) => Ok(()),
    }
}

/// Proves a reopened database can write: a small durable write.
pub(crate) fn probe(engine: &Engine, config: &Config) -> Result<()> {
    let value = layout::probe_value(config.clock.now());
    engine.trees.meta.insert(layout::PROBE_KEY, &value[..])?;
    sync_engine(engine, config)
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
