//! Commits of idempotent writes, batched: each writer's document change,
//! idempotency record and expiry entry are applied in ONE sled transaction,
//! together with those of every other writer waiting at that moment. A sled
//! 0.34 transaction writes out its log buffer when it commits, so one
//! transaction for many writers costs little more than one for one.
//!
//! Leader/follower, like the group commit: a writer queues its entry; if no
//! batch is running it takes the whole queue and commits it, else it sleeps
//! until the batch holding its entry has committed. Writers keep their
//! subscriber and idempotency-key locks while they wait, so the entries of
//! one batch never touch the same keys.

use parking_lot::{Condvar, Mutex};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::error::{Error, Result};
use crate::layout::Trees;
use crate::store::Change;

/// One writer's part of a batch.
#[derive(Debug)]
pub(crate) struct Entry {
    pub doc_key: Vec<u8>,
    pub change: Option<Change>,
    pub record_key: Vec<u8>,
    pub record: Vec<u8>,
    pub expiry_key: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<(u64, Entry)>,
    next_ticket: u64,
    committing: bool,
    /// Batches are committed in ticket order: every ticket below this has
    /// its answer in `failed` or succeeded.
    finished_below: u64,
    /// Tickets whose batch failed, with the error (removed when read).
    failed: Vec<(u64, Error)>,
}

#[derive(Debug, Default)]
pub(crate) struct Batcher {
    state: Mutex<State>,
    done: Condvar,
}

impl Batcher {
    /// Commits `entry` (with whatever else is queued) and returns once it is
    /// committed in memory.
    pub(crate) fn commit(&self, trees: &Trees, entry: Entry) -> Result<()> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, entry));
        loop {
            if state.finished_below > ticket {
                return match state.failed.iter().position(|(t, _)| *t == ticket) {
                    Some(i) => Err(state.failed.swap_remove(i).1),
                    None => Ok(()),
                };
            }
            if state.committing {
                self.done.wait(&mut state);
                continue;
            }
            state.committing = true;
            let batch = std::mem::take(&mut state.queue);
            let last = batch.iter().map(|(t, _)| *t).max().unwrap_or(ticket);
            drop(state);
            let result = apply(trees, &batch);
            state = self.state.lock();
            state.committing = false;
            // Tickets are handed out in order and the queue holds every
            // ticket not yet taken, so this batch ends the range below `last + 1`.
            state.finished_below = state.finished_below.max(last + 1);
            if let Err(e) = result {
                state
                    .failed
                    .extend(batch.iter().map(|(t, _)| (*t, e.clone())));
            }
            self.done.notify_all();
        }
    }
}

/// One sled transaction for the whole batch. The closure may run more than
/// once; it only reads its inputs.
fn apply(trees: &Trees, batch: &[(u64, Entry)]) -> Result<()> {
    (
        &trees.subscribers,
        &trees.idempotency,
        &trees.idempotency_expiry,
    )
        .transaction(|(subscribers, records, expiry)| {
            for (_, entry) in batch {
                match &entry.change {
                    Some(Change::Put(bytes)) => {
                        subscribers.insert(entry.doc_key.as_slice(), bytes.as_slice())?;
                    }
                    Some(Change::Remove) => {
                        subscribers.remove(entry.doc_key.as_slice())?;
                    }
                    None => {}
                }
                records.insert(entry.record_key.as_slice(), entry.record.as_slice())?;
                expiry.insert(entry.expiry_key.as_slice(), &[][..])?;
            }
            Ok::<(), ConflictableTransactionError<Error>>(())
        })
        .map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => Error::from(e),
        })
}
