//! When a write is durable. In `durable` mode each round of sled `flush()`
//! plus `fdatasync` of sled's log file serves every writer waiting for it
//! (group commit, run by the first waiter); in `relaxed` mode and for
//! temporary stores nobody waits.
//!
//! Protocol: a writer commits to sled in memory, then takes a sequence number
//! from `committed` and waits until `durable` reaches it. A round reads
//! `committed` *before* it starts, so every write whose sequence number it
//! read had completed its in-memory commit before the round began, and the
//! round covers it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::layout;

/// Makes everything committed so far survive power loss.
#[derive(Debug)]
pub(crate) struct Syncer {
    db: sled::Db,
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already fsynced (sled never rewrites a blob in place).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Syncer {
    /// Opens sled's log file in `data_dir` for syncing.
    pub(crate) fn new(db: sled::Db, data_dir: &Path) -> Result<Self> {
        Ok(Syncer {
            db,
            log: File::open(data_dir.join(layout::SLED_LOG_FILE))?,
            blobs_dir: data_dir.join(layout::SLED_BLOBS_DIR),
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// sled's flush writes its buffers and calls `sync_file_range`, which
    /// survives a killed process but does not flush the disk's cache;
    /// `fdatasync` on the log file does. Values or tree nodes too large for
    /// the log go to blob files that sled writes without any sync, so new
    /// blob files and their directory are synced as well.
    pub(crate) fn sync(&self) -> Result<()> {
        self.db.flush()?;
        self.log.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut synced = self.synced_blobs.lock();
        let mut live = HashSet::new();
        let mut any_new = false;
        for entry in entries {
            let name = entry?.file_name();
            if !synced.contains(&name) {
                match File::open(self.blobs_dir.join(&name)) {
                    Ok(file) => file.sync_data()?,
                    // sled removed it (garbage collection) since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                any_new = true;
            }
            live.insert(name);
        }
        if any_new {
            File::open(&self.blobs_dir)?.sync_all()?;
        }
        *synced = live;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    /// A writer is running a flush round now.
    flushing: bool,
    /// Every write with a sequence number up to this is on disk.
    durable: u64,
    /// The last failed round covered writes up to this.
    failed_through: u64,
    last_error: String,
    /// Completed rounds, for tests and metrics.
    rounds: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    committed: AtomicU64,
    state: Mutex<State>,
    done: Condvar,
    syncer: Syncer,
}

/// The durability point of a store.
#[derive(Debug)]
pub(crate) enum WriteBarrier {
    /// Acknowledge after the in-memory commit.
    Immediate,
    /// Acknowledge after a group flush that covers the write.
    GroupCommit(Box<Shared>),
}

impl WriteBarrier {
    pub(crate) fn group_commit(syncer: Syncer) -> Self {
        WriteBarrier::GroupCommit(Box::new(Shared {
            committed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            syncer,
        }))
    }

    /// Call after a write's in-memory commit; returns once it is durable.
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush round that should have covered the
    /// write failed: the write is visible but may not survive a crash.
    pub(crate) fn wait_committed(&self) -> Result<()> {
        match self {
            WriteBarrier::Immediate => Ok(()),
            WriteBarrier::GroupCommit(shared) => {
                let seq = shared.committed.fetch_add(1, Ordering::SeqCst) + 1;
                wait_for(shared, seq)
            }
        }
    }

    /// Returns once everything committed before the call is durable: a
    /// replay must not report a write that is still waiting for its flush.
    pub(crate) fn wait_all(&self) -> Result<()> {
        match self {
            WriteBarrier::Immediate => Ok(()),
            WriteBarrier::GroupCommit(shared) => {
                let seq = shared.committed.load(Ordering::SeqCst);
                wait_for(shared, seq)
            }
        }
    }

    /// Completed flush rounds (0 when not in group-commit mode).
    pub(crate) fn rounds(&self) -> u64 {
        match self {
            WriteBarrier::Immediate => 0,
            WriteBarrier::GroupCommit(shared) => shared.state.lock().rounds,
        }
    }
}

/// Leader/follower group commit: a waiter whose write is not yet durable
/// either runs the next flush round itself (when none is running) or
/// sleeps until the running one ends. A round covers every write that had
/// committed when it read `committed`, so one round serves all the writers
/// that queued behind the previous one, with no thread handoff.
fn wait_for(shared: &Shared, seq: u64) -> Result<()> {
    let mut state = shared.state.lock();
    loop {
        if state.durable >= seq {
            return Ok(());
        }
        if state.failed_through >= seq {
            return Err(Error::Storage(format!(
                "flush to disk failed: {}",
                state.last_error
            )));
        }
        if state.flushing {
            shared.done.wait(&mut state);
            continue;
        }
        state.flushing = true;
        // Read under the lock, before the flush starts: every write counted
        // here finished its in-memory commit before the round began.
        let target = shared.committed.load(Ordering::SeqCst);
        drop(state);
        let result = shared.syncer.sync();
        state = shared.state.lock();
        state.flushing = false;
        state.rounds += 1;
        match result {
            Ok(()) => state.durable = state.durable.max(target),
            Err(e) => {
                state.failed_through = state.failed_through.max(target);
                state.last_error = e.to_string();
            }
        }
        shared.done.notify_all();
    }
}
