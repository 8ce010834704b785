//! When a write is durable. In `durable` mode one flusher thread serves every
//! waiting writer per round of sled `flush()` plus `fdatasync` of sled's log
//! file (group commit); in `relaxed` mode and for temporary stores nobody waits.
//!
//! Protocol: a writer commits to sled in memory, then takes a sequence number
//! from `committed` and waits until `durable` reaches it. The flusher reads
//! `committed` *before* it starts a round, so every write whose sequence number
//! it read had completed its in-memory commit before the round began, and the
//! round covers it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

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
    /// Highest sequence number some writer waits for.
    requested: u64,
    /// Every write with a sequence number up to this is on disk.
    durable: u64,
    /// The last failed round covered writes up to this.
    failed_through: u64,
    last_error: String,
    shutdown: bool,
    /// Completed rounds, for tests and metrics.
    rounds: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    committed: AtomicU64,
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

/// The durability point of a store.
#[derive(Debug)]
pub(crate) enum WriteBarrier {
    /// Acknowledge after the in-memory commit.
    Immediate,
    /// Acknowledge after a group flush that covers the write.
    GroupCommit {
        shared: Arc<Shared>,
        flusher: Option<JoinHandle<()>>,
    },
}

impl WriteBarrier {
    pub(crate) fn group_commit(syncer: Syncer) -> Result<Self> {
        let shared = Arc::new(Shared {
            committed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("subscriber-store-flusher".into())
            .spawn(move || run_flusher(&for_thread, &syncer))?;
        Ok(WriteBarrier::GroupCommit {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Call after a write's in-memory commit; returns once it is durable.
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush round that should have covered the
    /// write failed: the write is visible but may not survive a crash.
    pub(crate) fn wait_committed(&self) -> Result<()> {
        match self {
            WriteBarrier::Immediate => Ok(()),
            WriteBarrier::GroupCommit { shared, .. } => {
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
            WriteBarrier::GroupCommit { shared, .. } => {
                let seq = shared.committed.load(Ordering::SeqCst);
                wait_for(shared, seq)
            }
        }
    }

    /// Completed flush rounds (0 when not in group-commit mode).
    pub(crate) fn rounds(&self) -> u64 {
        match self {
            WriteBarrier::Immediate => 0,
            WriteBarrier::GroupCommit { shared, .. } => shared.state.lock().rounds,
        }
    }
}

fn wait_for(shared: &Shared, seq: u64) -> Result<()> {
    let mut state = shared.state.lock();
    if state.durable >= seq {
        return Ok(());
    }
    if state.requested < seq {
        state.requested = seq;
        shared.work.notify_one();
    }
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
        shared.done.wait(&mut state);
    }
}

fn run_flusher(shared: &Shared, syncer: &Syncer) {
    loop {
        let target = {
            let mut state = shared.state.lock();
            while state.requested <= state.durable.max(state.failed_through) && !state.shutdown {
                shared.work.wait(&mut state);
            }
            if state.shutdown && state.requested <= state.durable.max(state.failed_through) {
                return;
            }
            shared.committed.load(Ordering::SeqCst)
        };
        let result = syncer.sync();
        let mut state = shared.state.lock();
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

impl Drop for WriteBarrier {
    fn drop(&mut self) {
        if let WriteBarrier::GroupCommit { shared, flusher } = self {
            shared.state.lock().shutdown = true;
            shared.work.notify_all();
            if let Some(handle) = flusher.take() {
                // A panicked flusher has nothing left to clean up.
                let _ = handle.join();
            }
        }
    }
}
