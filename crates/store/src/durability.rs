//! When a write is durable. In `durable` mode each round of sled `flush()`
//! plus `fdatasync` of sled's log file serves every writer waiting for it
//! (group commit, run by the first waiter); in `relaxed` mode and for
//! temporary stores nobody waits.
//!
//! Protocol: a writer commits to sled in memory, then (still holding the
//! locks that make its write visible to others) takes a [`Ticket`] from
//! `committed`, and after releasing them waits until `durable` reaches it. A
//! round reads `committed` *before* it starts, so every write whose ticket it
//! read had completed its in-memory commit before the round began, and the
//! round covers it.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::layout;

/// Makes everything committed so far survive power loss. A round opens no
/// file descriptor unless sled created a new blob file since the last one
/// (a server out of descriptors can still make its writes durable).
#[derive(Debug)]
pub(crate) struct Syncer {
    db: sled::Db,
    log: File,
    blobs: Mutex<Blobs>,
}

#[derive(Debug)]
struct Blobs {
    /// sled's blob directory, held open and re-read from the start each round.
    dir: rustix::fs::Dir,
    /// Blob files already fsynced (sled never rewrites a blob in place).
    synced: HashSet<OsString>,
}

impl Syncer {
    /// Opens sled's log file and blob directory in `data_dir` for syncing.
    pub(crate) fn new(db: sled::Db, data_dir: &Path) -> Result<Self> {
        let blobs_dir = data_dir.join(layout::SLED_BLOBS_DIR);
        std::fs::create_dir_all(&blobs_dir)?;
        let dir = rustix::fs::Dir::new(File::open(&blobs_dir)?).map_err(std::io::Error::from)?;
        Ok(Syncer {
            db,
            log: File::open(data_dir.join(layout::SLED_LOG_FILE))?,
            blobs: Mutex::new(Blobs {
                dir,
                synced: HashSet::new(),
            }),
        })
    }

    /// sled's flush writes its buffers and calls `sync_file_range`, which
    /// survives a killed process but does not flush the disk's cache;
    /// `fdatasync` on the log file does. Values or tree nodes too large for
    /// the log go to blob files that sled writes without any sync, so new
    /// blob files and their directory are synced as well.
    pub(crate) fn sync(&self) -> Result<()> {
        fail::fail_point!("durability::sync", |_| Err(Error::Storage(
            "injected: fdatasync failed".into()
        )));
        self.db.flush()?;
        self.log.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&self) -> Result<()> {
        let mut blobs = self.blobs.lock();
        let Blobs { dir, synced } = &mut *blobs;
        dir.rewind();
        let mut live = HashSet::new();
        let mut any_new = false;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(std::io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name).to_os_string();
            if !synced.contains(&name) {
                let opened = rustix::fs::openat(
                    dir.fd().map_err(std::io::Error::from)?,
                    entry.file_name(),
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                );
                match opened {
                    Ok(fd) => rustix::fs::fdatasync(&fd).map_err(std::io::Error::from)?,
                    // sled removed it (garbage collection) since the listing.
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(std::io::Error::from(e).into()),
                }
                any_new = true;
            }
            live.insert(name);
        }
        if any_new {
            rustix::fs::fsync(dir.fd().map_err(std::io::Error::from)?.as_fd())
                .map_err(std::io::Error::from)?;
        }
        *synced = live;
        Ok(())
    }
}

/// A write's place in the order of in-memory commits: it is durable once a
/// round that read `committed` at or past it has succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is acknowledged only after waiting for its ticket"]
pub(crate) struct Ticket(u64);

#[derive(Debug, Default)]
struct RoundState {
    /// A writer is running a flush round now.
    flushing: bool,
    /// Every write with a ticket up to this is on disk.
    durable: u64,
    /// Why a round failed. Sticky: after a failed fdatasync the kernel may
    /// have dropped the pages it could not write, so a later round that
    /// succeeds proves nothing about them, and sled's log may now have a
    /// hole that cuts off everything after it. The store reopens the
    /// database instead (see `Store::engine`).
    failure: Option<String>,
    /// Completed rounds, for tests and metrics.
    rounds: u64,
}

#[derive(Debug)]
pub(crate) struct GroupCommit {
    committed: AtomicU64,
    state: Mutex<RoundState>,
    done: Condvar,
    syncer: Syncer,
}

/// The durability point of a store.
#[derive(Debug)]
pub(crate) enum WriteBarrier {
    /// Acknowledge after the in-memory commit.
    Immediate,
    /// Acknowledge after a group flush that covers the write.
    GroupCommit(Box<GroupCommit>),
}

impl WriteBarrier {
    pub(crate) fn group_commit(syncer: Syncer) -> Self {
        WriteBarrier::GroupCommit(Box::new(GroupCommit {
            committed: AtomicU64::new(0),
            state: Mutex::new(RoundState::default()),
            done: Condvar::new(),
            syncer,
        }))
    }

    /// Call right after a write's in-memory commit, while the write's locks
    /// are still held, so anyone who can see the write also sees its ticket.
    pub(crate) fn ticket(&self) -> Ticket {
        match self {
            WriteBarrier::Immediate => Ticket(0),
            WriteBarrier::GroupCommit(shared) => {
                Ticket(shared.committed.fetch_add(1, Ordering::SeqCst) + 1)
            }
        }
    }

    /// Returns once the write that took `ticket` is durable.
    ///
    /// # Errors
    /// [`Error::Storage`] once any flush round has failed: the write is
    /// visible but may not survive a crash.
    pub(crate) fn wait_until_durable(&self, ticket: Ticket) -> Result<()> {
        match self {
            WriteBarrier::Immediate => Ok(()),
            WriteBarrier::GroupCommit(shared) => wait_for(shared, ticket.0),
        }
    }

    /// Returns once everything committed before the call is durable: a
    /// replay must not report a write that is still waiting for its flush.
    pub(crate) fn wait_until_all_durable(&self) -> Result<()> {
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

    /// One flush outside the group commit (opening, `Store::flush`).
    pub(crate) fn syncer(&self) -> Option<&Syncer> {
        match self {
            WriteBarrier::Immediate => None,
            WriteBarrier::GroupCommit(shared) => Some(&shared.syncer),
        }
    }
}

/// Leader/follower group commit: a waiter whose write is not yet durable
/// either runs the next flush round itself (when none is running) or
/// sleeps until the running one ends. A round covers every write that had
/// committed when it read `committed`, so one round serves all the writers
/// that queued behind the previous one, with no thread handoff.
fn wait_for(shared: &GroupCommit, seq: u64) -> Result<()> {
    let mut state = shared.state.lock();
    loop {
        if state.durable >= seq {
            return Ok(());
        }
        if let Some(error) = &state.failure {
            return Err(Error::Storage(format!("flush to disk failed: {error}")));
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
            Err(e) => state.failure = Some(e.to_string()),
        }
        shared.done.notify_all();
    }
}
