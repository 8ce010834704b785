//! When a write is durable. In `durable` mode each round of sled `flush()`
//! plus `fdatasync` of sled's log file (and of whatever new files and names
//! sled made) serves every writer waiting for it (group commit, run by a
//! thread of the engine while anyone waits; a waiter blocks or awaits a
//! future); in `relaxed` mode a thread runs the same round every flush
//! interval and nobody waits; temporary stores never sync.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::layout;

/// Makes everything committed so far survive power loss. A round opens no
/// file descriptor unless sled created a new file since the last one (a
/// server out of descriptors can still make its writes durable).
#[derive(Debug)]
pub(crate) struct Syncer {
    db: sled::Db,
    log: File,
    /// The data directory and sled's blob directory, in that order.
    dirs: Mutex<[WatchedDir; 2]>,
}

/// A directory whose new files and changed names each round makes durable.
#[derive(Debug)]
struct WatchedDir {
    /// Held open and re-read from the start each round.
    dir: rustix::fs::Dir,
    /// Names present at the last round, their files already synced (sled
    /// never rewrites a blob or a snapshot in place; its log is synced by
    /// name).
    synced: HashSet<OsString>,
}

impl Syncer {
    /// Opens sled's log file, the data directory and the blob directory in
    /// `data_dir` for syncing.
    pub(crate) fn new(db: sled::Db, data_dir: &Path) -> Result<Self> {
        let blobs_dir = data_dir.join(layout::SLED_BLOBS_DIR);
        std::fs::create_dir_all(&blobs_dir)?;
        Ok(Syncer {
            db,
            log: File::open(data_dir.join(layout::SLED_LOG_FILE))?,
            dirs: Mutex::new([WatchedDir::open(data_dir)?, WatchedDir::open(&blobs_dir)?]),
        })
    }

    /// sled's flush writes its buffers and calls `sync_file_range`, which
    /// survives a killed process but does not flush the disk's cache;
    /// `fdatasync` on the log file does. sled writes its other files (its
    /// `conf`, blobs for values too large for the log, snapshots renamed
    /// into place) without syncing them or their directory, so after the
    /// log each round syncs the files that appeared since the last round,
    /// and each directory whose names changed (found by power-cut tests:
    /// an unsynced snapshot rename left a log that recovered empty).
    pub(crate) fn sync(&self) -> Result<()> {
        fail::fail_point!("durability::sync", |_| Err(Error::Storage(
            "injected: fdatasync failed".into()
        )));
        self.db.flush()?;
        fail::fail_point!("durability::after_flush");
        self.log.sync_data()?;
        fail::fail_point!("durability::after_log_sync");
        for dir in self.dirs.lock().iter_mut() {
            dir.sync()?;
        }
        Ok(())
    }
}

impl WatchedDir {
    fn open(path: &Path) -> Result<Self> {
        let dir = rustix::fs::Dir::new(File::open(path)?).map_err(std::io::Error::from)?;
        Ok(WatchedDir {
            dir,
            synced: HashSet::new(),
        })
    }

    /// Fdatasyncs the regular files that appeared since the last round, and
    /// fsyncs the directory when names appeared or went.
    fn sync(&mut self) -> Result<()> {
        let WatchedDir { dir, synced } = self;
        dir.rewind();
        let mut live = HashSet::with_capacity(synced.len());
        let mut appeared = 0;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(std::io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name).to_os_string();
            if !synced.contains(&name) {
                if entry.file_type() == rustix::fs::FileType::RegularFile {
                    let opened = rustix::fs::openat(
                        dir.fd().map_err(std::io::Error::from)?,
                        entry.file_name(),
                        rustix::fs::OFlags::RDONLY
                            | rustix::fs::OFlags::CLOEXEC
                            | rustix::fs::OFlags::NOFOLLOW,
                        rustix::fs::Mode::empty(),
                    );
                    match opened {
                        Ok(fd) => rustix::fs::fdatasync(&fd).map_err(std::io::Error::from)?,
                        // sled removed it (a collected blob, a snapshot
                        // renamed) since the listing.
                        Err(rustix::io::Errno::NOENT) => continue,
                        Err(e) => return Err(std::io::Error::from(e).into()),
                    }
                }
                appeared += 1;
            }
            live.insert(name);
        }
        let went = synced.len() + appeared != live.len();
        if appeared > 0 || went {
            rustix::fs::fsync(dir.fd().map_err(std::io::Error::from)?.as_fd())
                .map_err(std::io::Error::from)?;
        }
        *synced = live;
        Ok(())
    }
}

/// Writes a small file (in `dir`) so that it is either absent or whole
/// after a crash: a temporary file, synced, renamed over, and the
/// directory synced.
pub(crate) fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Told the new durable mark after every successful round: every write
/// whose ticket is at or below it is on disk (the presence feed makes its
/// events readable from this).
pub(crate) type DurableListener = Box<dyn Fn(u64) + Send + Sync>;

/// Where a barrier keeps its [`DurableListener`], set once.
#[derive(Default)]
struct ListenerSlot(std::sync::OnceLock<DurableListener>);

impl std::fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "ListenerSlot(set)"
        } else {
            "ListenerSlot(unset)"
        })
    }
}

impl ListenerSlot {
    fn tell(&self, durable: u64) {
        if let Some(listener) = self.0.get() {
            listener(durable);
        }
    }
}

/// A write's place in the order of in-memory commits: it is durable once a
/// round that read `committed` at or past it has succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is acknowledged only after waiting for its ticket"]
pub(crate) struct Ticket(u64);

impl Ticket {
    /// Its place in the order of commits.
    pub(crate) fn number(self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
struct RoundState {
    /// The highest ticket a waiter is waiting for: the flusher runs rounds
    /// while this is above `durable` (no waiter, no round).
    requested: u64,
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
    /// How many writes the last round of the commit thread covered, and
    /// how long it took: what it waits to gather before the next.
    last_round: (u64, Duration),
    /// The commit thread is gathering writes for its next round: a
    /// requester need not wake it.
    gathering: bool,
    /// Whether gathering pays (see `GroupCommit::gather`).
    gathers: Gathers,
    /// The engine is closing: the flusher ends.
    stop: bool,
    /// A round is running (on the commit thread or a blocking waiter).
    flushing: bool,
    /// Async waiters, woken when `durable` reaches their ticket or a round fails.
    wakers: Vec<(u64, Waker)>,
}

/// Rounds in an epoch: the gathering is judged on epochs, never on a
/// single round (one round's rate says more about the round before it).
const EPOCH: u32 = 32;

/// Epochs the better choice is kept before both are measured again.
const KEEP: u32 = 8;

/// A gathered epoch must beat a plain one by this to be chosen.
const GAIN: f64 = 1.05;

/// What the commit thread knows of its gathering (`GroupCommit::gather`):
/// epochs of [`EPOCH`] rounds, one without waits and one with, measured
/// in writes per second of round and wait time; the better (waiting only
/// if it wins by [`GAIN`]) is kept for [`KEEP`] epochs, then both are
/// measured again. So when waiting does not pay, it costs one epoch in
/// ten; a round that covered fewer than two writes never waits.
#[derive(Debug, Default)]
struct Gathers {
    /// Whether this epoch's rounds wait.
    waiting: bool,
    /// This epoch so far: when it began, rounds, writes.
    started: Option<std::time::Instant>,
    rounds: u32,
    writes: u64,
    /// The last wait asked for.
    waited: Duration,
    /// Writes per second of the last epoch without waits, and with.
    plain: Option<f64>,
    gathered: Option<f64>,
    /// Epochs left on the current choice (0: measuring).
    keep: u32,
}

impl Gathers {
    /// The last round covered `batch` writes in `took` and ended at `now`:
    /// how long to wait before the next (`None`: start it now).
    fn next_wait(
        &mut self,
        batch: u64,
        took: Duration,
        now: std::time::Instant,
    ) -> Option<Duration> {
        let started = *self.started.get_or_insert(now);
        self.rounds += 1;
        self.writes += batch;
        if self.rounds >= EPOCH {
            // Wall time: what the writers see, the thread's idle time
            // between rounds included.
            self.end_epoch(now.saturating_duration_since(started));
            self.started = Some(now);
        }
        if !self.waiting || batch < 2 {
            return None;
        }
        self.waited = (took / 2).min(MAX_GATHER);
        Some(self.waited)
    }

    fn end_epoch(&mut self, took: Duration) {
        let rate = self.writes as f64 / took.as_secs_f64().max(1e-9);
        (self.rounds, self.writes) = (0, 0);
        if self.keep > 0 {
            self.keep -= 1;
            if self.keep == 0 {
                // Measure both again, plain first.
                (self.plain, self.gathered, self.waiting) = (None, None, false);
            }
            return;
        }
        if self.waiting {
            self.gathered = Some(rate);
        } else {
            self.plain = Some(rate);
        }
        match (self.plain, self.gathered) {
            (Some(plain), Some(gathered)) => {
                self.waiting = gathered > plain * GAIN;
                self.keep = KEEP;
            }
            (Some(_), None) => self.waiting = true,
            _ => self.waiting = false,
        }
    }
}

impl RoundState {
    /// `Some` once the write with ticket `seq` is durable or cannot become so.
    fn decided(&self, seq: u64) -> Option<Result<()>> {
        if self.durable >= seq {
            return Some(Ok(()));
        }
        self.failure
            .as_ref()
            .map(|error| Err(Error::Storage(format!("flush to disk failed: {error}"))))
    }
}

/// Group commit: writers take tickets and wait (blocking, or as a future).
/// A blocking waiter runs the next round itself when none is running
/// (leader/follower, no handoff); for futures, the engine's commit thread
/// runs rounds back to back while any is waiting. One round at a time. A round
/// reads `committed` before it starts, so it covers every write whose
/// ticket was taken before, and serves every waiter that queued behind the
/// previous round.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    committed: AtomicU64,
    /// `RoundState::durable`, readable without the lock.
    durable: AtomicU64,
    state: Mutex<RoundState>,
    /// The flusher waits on this for a request.
    work: Condvar,
    /// Blocking waiters wait on this for the end of a round.
    done: Condvar,
    syncer: Syncer,
    listener: ListenerSlot,
    observer: Arc<dyn crate::observer::Observer>,
}

/// The flusher thread of a durable engine; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Flusher {
    shared: Arc<GroupCommit>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_rounds(shared: &GroupCommit) {
    let mut state = shared.state.lock();
    loop {
        while !state.stop
            && (state.flushing || state.requested <= state.durable || state.failure.is_some())
        {
            shared.work.wait(&mut state);
        }
        if state.stop {
            return;
        }
        if shared.gather(&mut state) {
            state = shared.round(state);
        }
    }
}

/// The longest the commit thread gathers writes before a round.
const MAX_GATHER: Duration = Duration::from_micros(500);

impl GroupCommit {
    /// Before a round of the commit thread: under concurrent load, waits
    /// half the last round's time (at most [`MAX_GATHER`]) so that the
    /// round covers more writes and rounds come less often (each wakes
    /// sled's IO threads, its `flush` handing them the log write, and the
    /// commit thread twice), while that pays in writes per second
    /// ([`Gathers`] judges it on epochs of rounds). A lone writer never
    /// waits. Returns whether the round is still to run (not if a blocking
    /// waiter started one meanwhile, or the engine stops).
    fn gather(&self, state: &mut parking_lot::MutexGuard<'_, RoundState>) -> bool {
        let (batch, took) = state.last_round;
        let now = std::time::Instant::now();
        let Some(wait) = state.gathers.next_wait(batch, took, now) else {
            return true;
        };
        let deadline = now + wait;
        state.gathering = true;
        while !state.stop && !state.flushing {
            if self.work.wait_until(state, deadline).timed_out() {
                break;
            }
        }
        state.gathering = false;
        !state.stop && !state.flushing
    }

    /// Runs one flush round (the caller saw none running) and wakes every
    /// waiter it decided. Returns with the lock held again.
    fn round<'a>(
        &'a self,
        mut state: parking_lot::MutexGuard<'a, RoundState>,
    ) -> parking_lot::MutexGuard<'a, RoundState> {
        state.flushing = true;
        // Read under the lock, before the flush starts: every write counted
        // here finished its in-memory commit before the round began.
        let target = self.committed.load(Ordering::SeqCst);
        let covered = self.durable.load(Ordering::Acquire);
        drop(state);
        let started = std::time::Instant::now();
        let result = self.syncer.sync();
        let took = started.elapsed();
        if result.is_ok() {
            self.observer
                .flush_round(took, target.saturating_sub(covered));
            // Before anyone can see the new durable mark: a waiter that
            // sees it finds its events readable (if their smaller seqs are).
            self.listener.tell(target);
        }
        let mut state = self.state.lock();
        state.flushing = false;
        state.rounds += 1;
        match result {
            Ok(()) => {
                state.last_round = (target.saturating_sub(covered), took);
                state.durable = state.durable.max(target);
                self.durable.store(state.durable, Ordering::Release);
            }
            Err(e) => state.failure = Some(e.to_string()),
        }
        let durable = state.durable;
        let failed = state.failure.is_some();
        let mut ready = Vec::new();
        state.wakers.retain(|(seq, waker)| {
            let done = failed || *seq <= durable;
            if done {
                ready.push(waker.clone());
            }
            !done
        });
        self.done.notify_all();
        if state.requested > state.durable && !failed {
            // Someone asked for more while this round ran.
            self.work.notify_one();
        }
        drop(state);
        // Again once the mark is published: a write that handed the feed
        // its ticket after the first call read the old mark, and its
        // events would otherwise wait for the next round.
        if !failed {
            self.listener.tell(durable);
        }
        ready.into_iter().for_each(Waker::wake);
        self.state.lock()
    }

    /// `Some` once the write with ticket `seq` is durable or cannot become
    /// so; else asks the flusher for a round that covers it.
    fn decided_or_request(&self, state: &mut RoundState, seq: u64) -> Option<Result<()>> {
        if let Some(result) = state.decided(seq) {
            return Some(result);
        }
        if state.requested < seq {
            state.requested = seq;
            // A gathering commit thread runs its round anyway, and that
            // round covers this ticket (taken before this call).
            if !state.gathering {
                self.work.notify_one();
            }
        }
        None
    }
}

/// Waiting for one write (or everything committed so far) to be durable,
/// blocking or as a future.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Decided when it was created (relaxed mode, temporary store, or
    /// already durable).
    Ready(Option<Result<()>>),
    Group {
        shared: Arc<GroupCommit>,
        seq: u64,
    },
}

impl Pending {
    /// Blocks until decided.
    pub(crate) fn wait(mut self) -> Result<()> {
        let (shared, seq) = match &mut self {
            Pending::Ready(result) => return result.take().unwrap_or(Ok(())),
            Pending::Group { shared, seq } => (Arc::clone(shared), *seq),
        };
        if shared.durable.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let mut state = shared.state.lock();
        loop {
            if let Some(result) = state.decided(seq) {
                return result;
            }
            if state.flushing {
                shared.done.wait(&mut state);
            } else {
                // No round is running: a blocking waiter runs it
                // itself, with no handoff to the commit thread.
                state = shared.round(state);
            }
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self {
            Pending::Ready(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            Pending::Group { shared, seq } => {
                if shared.durable.load(Ordering::Acquire) >= *seq {
                    return Poll::Ready(Ok(()));
                }
                let mut state = shared.state.lock();
                if let Some(result) = shared.decided_or_request(&mut state, *seq) {
                    return Poll::Ready(result);
                }
                state.wakers.push((*seq, cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

impl Drop for Pending {
    /// A write nobody waits for still gets its round (the commit thread
    /// runs it): its presence events must become readable.
    fn drop(&mut self) {
        if let Pending::Group { shared, seq } = self {
            if shared.durable.load(Ordering::Acquire) < *seq {
                let mut state = shared.state.lock();
                let _ = shared.decided_or_request(&mut state, *seq);
            }
        }
    }
}

/// The durability point of a store.
#[derive(Debug)]
pub(crate) enum WriteBarrier {
    /// Acknowledge after the in-memory commit (a temporary store).
    Immediate,
    /// Acknowledge after the in-memory commit; a thread makes everything
    /// durable every interval (relaxed mode).
    Periodic(Box<Periodic>),
    /// Acknowledge after a group flush that covers the write.
    GroupCommit(Box<Flusher>),
}

impl WriteBarrier {
    pub(crate) fn group_commit(
        syncer: Syncer,
        observer: Arc<dyn crate::observer::Observer>,
    ) -> Result<Self> {
        let shared = Arc::new(GroupCommit {
            committed: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            state: Mutex::new(RoundState::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            syncer,
            listener: ListenerSlot::default(),
            observer,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("subscriber-store-commit".into())
                .spawn(move || run_rounds(&shared))?
        };
        Ok(WriteBarrier::GroupCommit(Box::new(Flusher {
            shared,
            thread: Some(thread),
        })))
    }

    pub(crate) fn periodic(
        syncer: Syncer,
        interval: Duration,
        observer: Arc<dyn crate::observer::Observer>,
    ) -> Result<Self> {
        let syncer = Arc::new(syncer);
        let state = Arc::new(PeriodicState {
            observer: Some(observer),
            ..PeriodicState::default()
        });
        let thread = {
            let (syncer, state) = (Arc::clone(&syncer), Arc::clone(&state));
            std::thread::Builder::new()
                .name("subscriber-store-flush".into())
                .spawn(move || flush_every(&syncer, &state, interval))?
        };
        Ok(WriteBarrier::Periodic(Box::new(Periodic {
            syncer,
            state,
            thread: Some(thread),
        })))
    }

    /// Call right after a write's in-memory commit, while the write's locks
    /// are still held, so anyone who can see the write also sees its ticket.
    pub(crate) fn ticket(&self) -> Ticket {
        match self {
            WriteBarrier::Immediate => Ticket(0),
            WriteBarrier::Periodic(periodic) => {
                Ticket(periodic.state.committed.fetch_add(1, Ordering::SeqCst) + 1)
            }
            WriteBarrier::GroupCommit(flusher) => {
                Ticket(flusher.shared.committed.fetch_add(1, Ordering::SeqCst) + 1)
            }
        }
    }

    /// Waits (see [`Pending`]) until the write that took `ticket` is durable.
    /// Fails with [`Error::Storage`] once any flush round has failed: the
    /// write is visible but may not survive a crash.
    pub(crate) fn pending(&self, ticket: Ticket) -> Pending {
        match self {
            WriteBarrier::Immediate => Pending::Ready(Some(Ok(()))),
            WriteBarrier::Periodic(periodic) => Pending::Ready(Some(periodic.healthy())),
            WriteBarrier::GroupCommit(flusher) => Pending::Group {
                shared: Arc::clone(&flusher.shared),
                seq: ticket.0,
            },
        }
    }

    /// Waits until everything committed before the call is durable: a
    /// replay must not report a write that is still waiting for its flush.
    pub(crate) fn pending_all(&self) -> Pending {
        match self {
            WriteBarrier::GroupCommit(flusher) => {
                let seq = flusher.shared.committed.load(Ordering::SeqCst);
                self.pending(Ticket(seq))
            }
            _ => self.pending(Ticket(0)),
        }
    }

    /// Returns once the write that took `ticket` is durable.
    ///
    /// # Errors
    /// As [`WriteBarrier::pending`].
    pub(crate) fn wait_until_durable(&self, ticket: Ticket) -> Result<()> {
        self.pending(ticket).wait()
    }

    /// Every write whose ticket is at or below this is durable (all of
    /// them, for a store that never syncs).
    pub(crate) fn durable_mark(&self) -> u64 {
        match self {
            WriteBarrier::Immediate => u64::MAX,
            WriteBarrier::Periodic(periodic) => periodic.state.durable.load(Ordering::Acquire),
            WriteBarrier::GroupCommit(flusher) => flusher.shared.durable.load(Ordering::Acquire),
        }
    }

    /// Sets what is told the durable mark after every successful round
    /// (once; later calls are ignored).
    pub(crate) fn on_durable(&self, listener: DurableListener) {
        let _ = match self {
            WriteBarrier::Immediate => Ok(()),
            WriteBarrier::Periodic(periodic) => periodic.state.listener.0.set(listener),
            WriteBarrier::GroupCommit(flusher) => flusher.shared.listener.0.set(listener),
        };
    }

    /// Completed flush rounds (0 when not in group-commit mode).
    pub(crate) fn rounds(&self) -> u64 {
        match self {
            WriteBarrier::Immediate => 0,
            WriteBarrier::Periodic(periodic) => periodic.state.inner.lock().rounds,
            WriteBarrier::GroupCommit(flusher) => flusher.shared.state.lock().rounds,
        }
    }

    /// One flush outside the group commit (opening, `Store::flush`).
    pub(crate) fn syncer(&self) -> Option<&Syncer> {
        match self {
            WriteBarrier::Immediate => None,
            WriteBarrier::Periodic(periodic) => Some(&periodic.syncer),
            WriteBarrier::GroupCommit(flusher) => Some(&flusher.shared.syncer),
        }
    }
}

/// Relaxed mode's flusher: a thread that syncs every interval until the
/// engine is dropped. A failed round stops it and fails every later write
/// (the store then reopens, as after any storage failure).
#[derive(Debug)]
pub(crate) struct Periodic {
    syncer: Arc<Syncer>,
    state: Arc<PeriodicState>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct PeriodicState {
    /// Tickets handed out (as in group commit).
    committed: AtomicU64,
    /// Every ticket up to this is durable.
    durable: AtomicU64,
    listener: ListenerSlot,
    observer: Option<Arc<dyn crate::observer::Observer>>,
    /// Read on every write without a lock.
    failed: AtomicBool,
    inner: Mutex<PeriodicInner>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct PeriodicInner {
    stop: bool,
    rounds: u64,
    failure: Option<String>,
}

impl Periodic {
    fn healthy(&self) -> Result<()> {
        if !self.state.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let reason = self.state.inner.lock().failure.clone().unwrap_or_default();
        Err(Error::Storage(format!(
            "background flush to disk failed: {reason}"
        )))
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.state.inner.lock().stop = true;
        self.state.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn flush_every(syncer: &Syncer, state: &PeriodicState, interval: Duration) {
    let mut inner = state.inner.lock();
    loop {
        let deadline = std::time::Instant::now() + interval;
        while !inner.stop && !state.wake.wait_until(&mut inner, deadline).timed_out() {}
        if inner.stop {
            return;
        }
        drop(inner);
        let target = state.committed.load(Ordering::SeqCst);
        let covered = state.durable.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let result = syncer.sync();
        inner = state.inner.lock();
        inner.rounds += 1;
        if let Err(e) = result {
            inner.failure = Some(e.to_string());
            state.failed.store(true, Ordering::Release);
            return;
        }
        state.durable.fetch_max(target, Ordering::AcqRel);
        if let Some(observer) = &state.observer {
            observer.flush_round(started.elapsed(), target.saturating_sub(covered));
        }
        state.listener.tell(state.durable.load(Ordering::Acquire));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs one epoch of rounds back to back, each covering `batch`
    /// writes in `took` (plus the wait asked for before it); returns how
    /// many of them waited first.
    fn epoch(gathers: &mut Gathers, batch: u64, took: Duration) -> u32 {
        thread_local!(static CLOCK: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) });
        let mut now = CLOCK.get().unwrap_or_else(std::time::Instant::now);
        let mut wait = Duration::ZERO;
        let mut waited = 0;
        for _ in 0..EPOCH {
            now += wait + took;
            wait = gathers.next_wait(batch, took, now).unwrap_or_default();
            waited += u32::from(!wait.is_zero());
        }
        CLOCK.set(Some(now + wait));
        waited
    }

    #[test]
    fn a_lone_writer_never_waits_for_a_round() {
        let mut gathers = Gathers::default();
        for _ in 0..4 * KEEP {
            assert_eq!(epoch(&mut gathers, 1, MS), 0);
            assert_eq!(epoch(&mut gathers, 0, MS), 0);
        }
    }

    #[test]
    fn concurrent_writers_wait_half_a_round_while_it_pays() {
        let mut gathers = Gathers::default();
        // A plain epoch: 10 writes a round in 1 ms. Its last round ends it
        // and the next epoch waits, half a round each time.
        assert_eq!(epoch(&mut gathers, 10, MS), 1);
        assert_eq!(gathers.waited, MS / 2);
        // Waiting pays: 20 writes in 1 + 0.5 ms beat 10 in 1 ms. Each call
        // below ends an epoch with its last round: the waiting one that
        // measured it, the KEEP - 1 that keep it; the KEEP-th ends the
        // choice (its last round does not wait), then a plain epoch is
        // measured again.
        let waited: Vec<u32> = (0..KEEP + 2).map(|_| epoch(&mut gathers, 20, MS)).collect();
        let mut expected = vec![EPOCH; KEEP as usize];
        expected.extend([EPOCH - 1, 1]);
        assert_eq!(waited, expected);
        // Never longer than MAX_GATHER, whatever a round takes.
        assert_eq!(
            gathers.next_wait(40, 10 * MS, std::time::Instant::now()),
            Some(MAX_GATHER)
        );
    }

    #[test]
    fn a_wait_that_does_not_pay_is_tried_one_epoch_in_ten() {
        let mut gathers = Gathers::default();
        // The same 8 writes a round, with or without the wait: the wait
        // loses (8 in 1.5 ms against 8 in 1 ms).
        let waited: Vec<u32> = (0..3 * (KEEP + 2))
            .map(|_| epoch(&mut gathers, 8, MS))
            .collect();
        let epochs_waiting = waited.iter().filter(|&&n| n > 1).count();
        assert_eq!(epochs_waiting, 3, "{waited:?}");
        // A gain below GAIN does not count as paying either.
        let mut gathers = Gathers::default();
        epoch(&mut gathers, 100, MS);
        epoch(&mut gathers, 151, MS);
        assert_eq!(epoch(&mut gathers, 151, MS), 0);
    }
}
