//! Lease deadlines as a running process measures them (SPEC section 10:
//! clock steps do not stretch a lease).
//!
//! A document stores its lease's deadline as a wall-clock time, which is
//! what reads show and what survives a restart. The wall clock can step
//! (NTP, a restored VM, an operator), so a running store also holds, for
//! every lease it knows, the moment the deadline falls on its monotonic
//! clock ([`Clock::monotonic`](crate::Clock::monotonic)): a lease set here
//! is due its TTL after its heartbeat as the process measures time,
//! whatever the wall clock does meanwhile. A lease is due when either
//! clock says so (a wall clock stepped forward ends it early, never late).
//!
//! When the monotonic clock says due but the wall clock is more than
//! [`STEP`] behind the deadline, the wall clock was stepped back: the
//! deadline the expiry applies (its `updatedAt` and its event's `at`)
//! becomes the monotonic deadline told in today's wall time, fixed from
//! then on so every reader and the expiry agree. A lease found at open
//! (the table is rebuilt from the documents) is due when its stored
//! deadline says, but never later than its TTL from the open: a deadline
//! further ahead is cut to now + TTL.
//!
//! Public (through [`rules`](crate::rules)) so another backend holds the
//! leases written through its process the same way.
//!
//! Memory: one entry per running lease (the document key once, shared by
//! the map and both orders: about 180 bytes with the key and the
//! structures' overhead, measured by `presence open` in crates/bench).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::{Now, Timestamp};
use crate::subscriber::{Lease, Subscriber};

/// A monotonic deadline passed while the wall clock is this far or more
/// behind the stored deadline counts as a step back; closer than this, the
/// two clocks' readings merely disagree in their last digits and the
/// stored deadline stands.
pub(crate) const STEP: Duration = Duration::from_millis(100);

/// One lease the process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// The deadline the document stores (which lease this entry is).
    stored: Timestamp,
    /// When it falls due on the monotonic clock.
    due: Duration,
    /// The deadline an expiry applies: the stored one, or less once cut
    /// at open or re-told after a step back.
    ends: Timestamp,
}

#[derive(Debug, Default)]
struct Table {
    held: HashMap<Arc<[u8]>, Held>,
    /// `(due, document key)`: the expiry's monotonic order.
    order: BTreeSet<(Duration, Arc<[u8]>)>,
    /// `(ends, document key)`: the expiry's wall-clock order.
    by_wall: BTreeSet<(Timestamp, Arc<[u8]>)>,
}

impl Table {
    fn put(&mut self, key: &[u8], held: Held) {
        let key: Arc<[u8]> = match self.held.remove_entry(key) {
            Some((key, old)) => {
                self.order.remove(&(old.due, Arc::clone(&key)));
                self.by_wall.remove(&(old.ends, Arc::clone(&key)));
                key
            }
            None => key.into(),
        };
        self.order.insert((held.due, Arc::clone(&key)));
        self.by_wall.insert((held.ends, Arc::clone(&key)));
        self.held.insert(key, held);
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some((key, old)) = self.held.remove_entry(key) {
            self.order.remove(&(old.due, Arc::clone(&key)));
            self.by_wall.remove(&(old.ends, key));
        }
    }
}

/// The deadlines of the leases one process knows, in both clocks' orders
/// (for the sled store: every running lease of its open database, its only
/// lease index; it costs no disk write).
#[derive(Debug, Default)]
pub struct Deadlines {
    table: Mutex<Table>,
}

/// A lease's length, as its document tells it (heartbeat to deadline).
fn ttl_of(lease: &Lease) -> Duration {
    Duration::from_millis(
        lease
            .expires_at
            .as_millis()
            .saturating_sub(lease.heard_at.as_millis()),
    )
}

/// What a lease found in storage at open (`now`) is held as: due when its
/// deadline says, but no later than its TTL from now.
fn held_at_open(lease: &Lease, now: Now) -> Held {
    let ttl = ttl_of(lease);
    let left = wall_gap(lease.expires_at, now.wall);
    let (left, ends) = if left > ttl {
        (ttl, now.wall.saturating_add(ttl))
    } else {
        (left, lease.expires_at)
    };
    Held {
        stored: lease.expires_at,
        due: now.mono.saturating_add(left),
        ends,
    }
}

/// `a - b` on the wall clock, 0 if `a` is earlier.
fn wall_gap(a: Timestamp, b: Timestamp) -> Duration {
    Duration::from_millis(a.as_millis().saturating_sub(b.as_millis()))
}

impl Deadlines {
    /// A write at `now` started or moved `lease` (under the subscriber's lock).
    pub fn started(&self, key: &[u8], lease: &Lease, now: Now) {
        let held = Held {
            stored: lease.expires_at,
            due: now.mono.saturating_add(ttl_of(lease)),
            ends: lease.expires_at,
        };
        self.table.lock().put(key, held);
    }

    /// A lease found in storage at open (`now`): due when its deadline says,
    /// but no later than its TTL from now.
    pub fn adopted(&self, key: &[u8], lease: &Lease, now: Now) {
        self.table.lock().put(key, held_at_open(lease, now));
    }

    /// Every lease found in storage at open, at once (as [`adopted`](Self::adopted)),
    /// by the store run `run`: a connection lease of another run (SPEC 13:
    /// its connections died with it) is due at once, ending when it would
    /// have or now, whichever is earlier.
    pub fn from_storage(leases: Vec<(Vec<u8>, Lease)>, now: Now, run: u64) -> Deadlines {
        let mut held = HashMap::with_capacity(leases.len());
        let mut order = Vec::with_capacity(leases.len());
        let mut by_wall = Vec::with_capacity(leases.len());
        for (key, lease) in leases {
            let key: Arc<[u8]> = key.into();
            let h = match lease.holder {
                Some(holder) if holder != run => Held {
                    stored: lease.expires_at,
                    due: now.mono,
                    ends: lease.expires_at.min(now.wall),
                },
                _ => held_at_open(&lease, now),
            };
            order.push((h.due, Arc::clone(&key)));
            by_wall.push((h.ends, Arc::clone(&key)));
            held.insert(key, h);
        }
        Deadlines {
            table: Mutex::new(Table {
                held,
                order: order.into_iter().collect(),
                by_wall: by_wall.into_iter().collect(),
            }),
        }
    }

    /// A write kept the running lease but stored it with deadline `stored`
    /// (the deadline a read applies, once cut): the same lease, renamed.
    pub fn kept(&self, key: &[u8], stored: Timestamp) {
        let mut table = self.table.lock();
        if let Some(held) = table.held.get_mut(key) {
            held.stored = stored;
        }
    }

    /// A write at `now` (under the subscriber's lock, once its change is
    /// stored) found the lease `seen` (as this process applies it) and
    /// stored `after`: started, moved, kept (renamed if it stored the
    /// applied deadline) or ended. A write that found no lease and stored
    /// none touches nothing.
    pub fn track(&self, key: &[u8], seen: Option<Lease>, after: Option<Lease>, now: Now) {
        match (seen, after) {
            (None, None) => {}
            (Some(_), None) => self.ended(key),
            (seen, Some(lease)) if seen == Some(lease) => self.kept(key, lease.expires_at),
            (_, Some(lease)) => self.started(key, &lease, now),
        }
    }

    /// The document at `key` holds no lease any more (offline, deleted,
    /// expired).
    pub fn ended(&self, key: &[u8]) {
        self.table.lock().remove(key);
    }

    /// Forgets the entry at `key` if it is the lease stored with `stored`.
    pub fn forget(&self, key: &[u8], stored: Timestamp) {
        let mut table = self.table.lock();
        if table.held.get(key).is_some_and(|h| h.stored == stored) {
            table.remove(key);
        }
    }

    /// `doc` (stored at `key`) with the deadline this process applies to
    /// its lease at `now`: after this, the wall-clock rules
    /// ([`Subscriber::as_of`], `lease_expired`) give the answer both
    /// clocks give. A lease this table does not hold keeps its stored
    /// deadline.
    pub fn apply(&self, key: &[u8], mut doc: Subscriber, now: Now) -> Subscriber {
        if let Some(lease) = &mut doc.lease {
            if let Some(ends) = self.ends(key, lease.expires_at, now) {
                lease.expires_at = ends;
            }
        }
        doc
    }

    /// The deadline to apply to the lease stored with deadline `stored`.
    fn ends(&self, key: &[u8], stored: Timestamp, now: Now) -> Option<Timestamp> {
        let mut table = self.table.lock();
        let held = table.held.get_mut(key).filter(|h| h.stored == stored)?;
        if now.mono >= held.due && wall_gap(held.ends, now.wall) >= STEP {
            // Stepped back: the monotonic deadline, in today's wall time.
            let before = held.ends;
            held.ends = now.wall.saturating_sub(now.mono - held.due);
            let ends = held.ends;
            if let Some((key, _)) = table.held.get_key_value(key) {
                let key = Arc::clone(key);
                table.by_wall.remove(&(before, Arc::clone(&key)));
                table.by_wall.insert((ends, key));
            }
            return Some(ends);
        }
        Some(held.ends)
    }

    /// Up to `limit` leases due at `now` by either clock: those the
    /// monotonic clock says are due, then those the wall clock says are,
    /// each in its order: `(document key, stored deadline)`.
    pub fn due(&self, now: Now, limit: usize) -> Vec<(Vec<u8>, Timestamp)> {
        let table = self.table.lock();
        let mut due: Vec<(Vec<u8>, Timestamp)> = table
            .order
            .iter()
            .take_while(|(due, _)| *due <= now.mono)
            .take(limit)
            .filter_map(|(_, key)| table.held.get(key).map(|h| (key.to_vec(), h.stored)))
            .collect();
        let by_wall = table
            .by_wall
            .iter()
            .take_while(|(ends, _)| *ends <= now.wall)
            .filter_map(|(_, key)| {
                let held = table.held.get(key)?;
                // Those due by both clocks are listed once, above.
                (held.due > now.mono).then(|| (key.to_vec(), held.stored))
            });
        let room = limit.saturating_sub(due.len());
        due.extend(by_wall.take(room));
        due
    }

    /// Those of [`due`](Self::due) whose key starts with `prefix`.
    pub fn due_under(&self, prefix: &[u8], now: Now) -> Vec<(Vec<u8>, Timestamp)> {
        self.due(now, usize::MAX)
            .into_iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .collect()
    }

    /// How long until the next lease falls due by either clock (leases due
    /// already are the expiry's to write now).
    pub fn next_due(&self, now: Now) -> Option<Duration> {
        let table = self.table.lock();
        let after: (Duration, Arc<[u8]>) = (
            now.mono.saturating_add(Duration::from_nanos(1)),
            Arc::from(&[][..]),
        );
        let mono = table
            .order
            .range(after..)
            .next()
            .map(|(due, _)| due.saturating_sub(now.mono));
        let wall_after: (Timestamp, Arc<[u8]>) = (
            Timestamp::from_millis(now.wall.as_millis().saturating_add(1)),
            Arc::from(&[][..]),
        );
        let wall = table
            .by_wall
            .range(wall_after..)
            .next()
            .map(|(ends, _)| wall_gap(*ends, now.wall));
        match (mono, wall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest deadline this process applies, by the wall clock.
    pub fn earliest(&self) -> Option<Timestamp> {
        self.table.lock().by_wall.first().map(|(ends, _)| *ends)
    }

    /// How many leases are held.
    pub fn len(&self) -> usize {
        self.table.lock().held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precondition::Version;

    const T: u64 = 1_795_687_200_000;

    fn at(wall_ms: u64, mono_ms: u64) -> Now {
        Now {
            wall: Timestamp::from_millis(wall_ms),
            mono: Duration::from_millis(mono_ms),
        }
    }

    fn lease(heard: u64, ttl_ms: u64) -> Lease {
        Lease {
            heard_at: Timestamp::from_millis(heard),
            expires_at: Timestamp::from_millis(heard + ttl_ms),
            holder: None,
        }
    }

    #[test]
    fn at_open_the_connection_leases_of_another_run_are_due_at_once() {
        let held_by = |run| Lease {
            holder: Some(run),
            ..lease(T - 5_000, 30_000)
        };
        let now = at(T, 0);
        let d = Deadlines::from_storage(
            vec![
                (b"dead".to_vec(), held_by(1)),
                (b"ours".to_vec(), held_by(2)),
                (b"beat".to_vec(), lease(T - 5_000, 30_000)),
            ],
            now,
            2,
        );
        // The dead run's lease ends now; this run's and a heartbeat's run on.
        assert_eq!(
            d.due(now, 10),
            vec![(b"dead".to_vec(), Timestamp::from_millis(T + 25_000))]
        );
        let seen = d.apply(b"dead", doc(held_by(1)), now);
        assert_eq!(seen.online_expires_at(), Some(Timestamp::from_millis(T)));
        assert!(seen.lease_expired(now.wall));
        assert_eq!(d.next_due(now), Some(Duration::from_secs(25)));
        // One that ran out while no process ran keeps its own deadline.
        let old = Lease {
            holder: Some(1),
            ..lease(T - 60_000, 30_000)
        };
        let d = Deadlines::from_storage(vec![(b"old".to_vec(), old)], now, 2);
        let seen = d.apply(b"old", doc(old), now);
        assert_eq!(seen.online_expires_at(), Some(old.expires_at));
    }

    fn doc(lease: Lease) -> Subscriber {
        let t = Timestamp::from_millis(T);
        Subscriber {
            id: crate::id::ObjectId::from_bytes([1; 12]),
            subscriber_id: "u".into(),
            first_name: None,
            last_name: None,
            email: None,
            phone: None,
            avatar: None,
            locale: None,
            channels: vec![],
            is_online: Some(true),
            last_online_at: None,
            lease: Some(lease),
            organization_id: crate::id::ObjectId::from_bytes([2; 12]),
            environment_id: crate::id::ObjectId::from_bytes([3; 12]),
            created_at: t,
            updated_at: t,
            version: Version(1),
            data: None,
            timezone: None,
        }
    }

    #[test]
    fn a_wall_clock_stepped_back_does_not_stretch_a_lease() {
        let d = Deadlines::default();
        let l = lease(T, 3_000);
        d.started(b"k", &l, at(T, 10_000));
        // One hour back, 2 s later: not due yet by either clock.
        let early = d.apply(b"k", doc(l), at(T - 3_600_000 + 2_000, 12_000));
        assert_eq!(early.online_expires_at(), Some(l.expires_at));
        assert!(d.due(at(T - 3_598_000, 12_000), 10).is_empty());
        // 3 s after the heartbeat by the monotonic clock: due, and the
        // deadline applied is that moment told in today's wall time.
        let now = at(T - 3_600_000 + 3_500, 13_500);
        assert_eq!(d.due(now, 10), vec![(b"k".to_vec(), l.expires_at)]);
        let seen = d.apply(b"k", doc(l), now);
        let ends = Timestamp::from_millis(T - 3_600_000 + 3_000);
        assert_eq!(seen.online_expires_at(), Some(ends));
        assert!(seen.lease_expired(now.wall));
        // Fixed from then on: a later read applies the same deadline.
        let later = d.apply(b"k", doc(l), at(T - 3_590_000, 23_500));
        assert_eq!(later.online_expires_at(), Some(ends));
    }

    #[test]
    fn clocks_that_agree_keep_the_stored_deadline() {
        let d = Deadlines::default();
        let l = lease(T, 3_000);
        d.started(b"k", &l, at(T, 10_000));
        // The two readings a millisecond apart: no step, the stored deadline.
        let now = at(T + 2_999, 13_000);
        let seen = d.apply(b"k", doc(l), now);
        assert_eq!(seen.online_expires_at(), Some(l.expires_at));
        assert_eq!(d.next_due(at(T, 10_000)), Some(Duration::from_secs(3)));
        d.ended(b"k");
        assert!(d.due(at(T, 20_000), 10).is_empty());
        assert_eq!(d.next_due(at(T, 10_000)), None);
    }

    #[test]
    fn at_open_a_deadline_beyond_its_ttl_is_cut_to_now_plus_ttl() {
        let d = Deadlines::default();
        // Stored by a clock an hour ahead; opened with the right time.
        let l = lease(T + 3_600_000, 30_000);
        d.adopted(b"k", &l, at(T, 0));
        let seen = d.apply(b"k", doc(l), at(T, 0));
        assert_eq!(
            seen.online_expires_at(),
            Some(Timestamp::from_millis(T + 30_000))
        );
        assert_eq!(d.next_due(at(T, 0)), Some(Duration::from_secs(30)));
        // One within its TTL keeps its deadline; one run out is due now.
        let near = lease(T - 10_000, 30_000);
        d.adopted(b"n", &near, at(T, 0));
        assert_eq!(d.next_due(at(T, 0)), Some(Duration::from_secs(20)));
        let gone = lease(T - 60_000, 30_000);
        d.adopted(b"g", &gone, at(T, 0));
        assert_eq!(d.due(at(T, 0), 10), vec![(b"g".to_vec(), gone.expires_at)]);
    }

    #[test]
    fn another_lease_under_the_key_is_not_this_entry() {
        let d = Deadlines::default();
        let l = lease(T, 3_000);
        d.started(b"k", &l, at(T, 0));
        let other = lease(T + 500, 3_000);
        let seen = d.apply(b"k", doc(other), at(T - 3_600_000, 10_000));
        assert_eq!(seen.online_expires_at(), Some(other.expires_at));
        d.kept(b"k", other.expires_at);
        let renamed = d.apply(b"k", doc(other), at(T - 3_600_000, 10_000));
        assert_eq!(
            renamed.online_expires_at(),
            Some(Timestamp::from_millis(T - 3_600_000 - 7_000)),
            "the held entry's monotonic deadline now speaks for it"
        );
    }
}
