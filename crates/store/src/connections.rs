//! The open connections of one store run (SPEC 13), counted per
//! subscriber, and when their writes fall due: the first connection's
//! online write, the lease renewal every third of the lease, the offline
//! write once the last has closed and its grace has passed. The writes
//! themselves are ordinary writes through write.rs (`store/connections.rs`
//! makes them, under the subscriber's entry lock here, so a subscriber's
//! connection writes commit in the order its count moved).
//!
//! Memory only: a process that dies loses this table, and its connection
//! leases (marked with its run, `Lease::holder`) run out or are ended by
//! the next open (deadlines.rs).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::clock::{Now, Timestamp};
use crate::tenancy::Tenant;

/// Lock shards of the table (a connection's open and close hold one
/// while their write commits in memory).
const SHARDS: usize = 64;

/// One subscriber's connections on this store run.
#[derive(Debug)]
pub(crate) struct Entry {
    pub tenant: Tenant,
    pub subscriber_id: String,
    /// Open connections.
    pub open: usize,
    /// While the last connection's grace runs: when it closed (wall clock,
    /// the offline write's `lastOnlineAt`) and at what monotonic time.
    pub closed: Option<(Timestamp, Duration)>,
    /// When the connection lease was last written, by the monotonic clock.
    pub renewed: Duration,
}

/// What is due for one entry at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet.
    Nothing,
    /// The lease is a third of its length old: write it again.
    Renewal,
    /// The grace after the last close has passed: the offline write, with
    /// the close time.
    Close(Timestamp),
}

/// One lock shard of the table: document key -> entry.
pub(crate) type Shard = HashMap<Vec<u8>, Entry>;

/// The table of one store run.
#[derive(Debug)]
pub(crate) struct Connections {
    /// This store run (`Lease::holder` of the leases it writes).
    pub run: u64,
    /// The connection lease's length.
    pub lease_secs: u32,
    /// How long after the last close the offline write waits.
    pub grace: Duration,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Open connections in all.
    open: AtomicU64,
}

impl Connections {
    pub(crate) fn new(run: u64, lease_secs: u32, grace: Duration) -> Connections {
        Connections {
            run,
            lease_secs,
            grace,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            open: AtomicU64::new(0),
        }
    }

    /// The shard holding the document key `key`'s entry, locked. Taken
    /// before (never while holding) the subscriber's stripe lock.
    pub(crate) fn lock(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let shard = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        self.shards[shard].lock()
    }

    /// Every shard in turn (the renewal's walk).
    pub(crate) fn shards(&self) -> impl Iterator<Item = &Mutex<Shard>> {
        self.shards.iter()
    }

    /// How often a lease is written again: a third of its length.
    pub(crate) fn renew_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.lease_secs) * 1000 / 3)
    }

    /// What is due for `entry` at `now`.
    pub(crate) fn due(&self, entry: &Entry, now: Now) -> Due {
        if let (0, Some((at, closed))) = (entry.open, entry.closed) {
            if now.mono.saturating_sub(closed) >= self.grace {
                return Due::Close(at);
            }
        }
        if now.mono.saturating_sub(entry.renewed) >= self.renew_every() {
            return Due::Renewal;
        }
        Due::Nothing
    }

    /// A connection was counted (`true`) or its close was (`false`).
    pub(crate) fn counted(&self, opened: bool) {
        if opened {
            self.open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections in all.
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    fn entry(open: usize, closed: Option<(Timestamp, Duration)>, renewed: u64) -> Entry {
        Entry {
            tenant: Tenant {
                organization: ObjectId::from_bytes([1; 12]),
                environment: ObjectId::from_bytes([2; 12]),
            },
            subscriber_id: "u".into(),
            open,
            closed,
            renewed: Duration::from_secs(renewed),
        }
    }

    fn at(secs: u64) -> Now {
        Now {
            wall: Timestamp::from_millis(1_000_000 + secs * 1000),
            mono: Duration::from_secs(secs),
        }
    }

    #[test]
    fn renewal_is_due_every_third_of_the_lease_and_the_close_after_the_grace() {
        let table = Connections::new(1, 30, Duration::from_secs(5));
        assert_eq!(table.due(&entry(1, None, 0), at(9)), Due::Nothing);
        assert_eq!(table.due(&entry(1, None, 0), at(10)), Due::Renewal);
        let closed_at = Timestamp::from_millis(7);
        let closing = entry(0, Some((closed_at, Duration::from_secs(8))), 8);
        assert_eq!(table.due(&closing, at(12)), Due::Nothing);
        assert_eq!(table.due(&closing, at(13)), Due::Close(closed_at));
        // A connection opened within the grace: no close, only renewals.
        assert_eq!(table.due(&entry(1, None, 8), at(13)), Due::Nothing);
        // Without a grace the close is due at once.
        let at_once = Connections::new(1, 30, Duration::ZERO);
        assert_eq!(at_once.due(&closing, at(8)), Due::Close(closed_at));
    }
}
