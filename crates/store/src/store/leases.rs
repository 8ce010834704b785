//! Presence leases on the handle: the heartbeat call, on-demand expiry, and
//! the expiry thread the store owns (no async runtime), which stops when
//! the store closes.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::clock::Timestamp;
use crate::command::Command;
use crate::error::Result;
use crate::expiry::{Expired, earliest_deadline, expire_due};
use crate::precondition::Precondition;
use crate::store::{Store, StoreCore};
use crate::subscriber::Subscriber;
use crate::tenancy::Tenant;

/// How many lease entries one expiry batch handles: one flush round each.
const BATCH: usize = 1024;

/// The longest the thread sleeps between looks at the index: also how late
/// an expiry can be written when the store's clock is not the system's.
const MAX_NAP: Duration = Duration::from_secs(1);

/// After a failed batch (a storage failure), the wait before the next.
const RETRY: Duration = Duration::from_millis(250);

impl Store {
    /// A heartbeat (SPEC section 10): the presence write going online with
    /// a lease of `ttl_seconds`, after which the subscriber goes offline by
    /// itself unless another online write comes first. 0 means no lease
    /// (and ends a running one).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use subscriber_store::{Config, ManualClock, Store, SubscriberInput, Timestamp};
    ///
    /// let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000)));
    /// let store = Store::open(Config::temporary().clock(clock.clone()))?;
    /// let tenant = store.ensure_environment("Development")?.0.tenant();
    /// store.upsert(&tenant, SubscriberInput::new("tab-1"), None)?;
    ///
    /// let doc = store.heartbeat(&tenant, "tab-1", 30, None)?;
    /// assert_eq!(doc.online_expires_at(), Some(Timestamp::from_millis(31_000)));
    ///
    /// clock.advance(Duration::from_secs(30)); // no heartbeat for 30 s
    /// let doc = store.get(&tenant, "tab-1")?;
    /// assert_eq!(doc.is_online, Some(false));
    /// assert_eq!(doc.last_online_at, Some(Timestamp::from_millis(1_000)));
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Store::execute`]; [`Error::InvalidInput`](crate::Error::InvalidInput)
    /// naming [`Field::TtlSeconds`](crate::Field::TtlSeconds) above
    /// [`MAX_TTL_SECONDS`](crate::MAX_TTL_SECONDS).
    pub fn heartbeat(
        &self,
        tenant: &Tenant,
        subscriber_id: &str,
        ttl_seconds: u32,
        expected: Option<Precondition>,
    ) -> Result<Subscriber> {
        let command = Command::Heartbeat {
            subscriber_id: subscriber_id.to_owned(),
            ttl_seconds,
        };
        self.execute(tenant, command, expected)
    }

    /// Writes the expiry of leases whose deadline has passed, oldest
    /// deadline first, up to `limit` index entries, and returns once they
    /// are durable, with how many subscribers went offline. The store's own
    /// thread does this by itself; reads already show a passed lease as
    /// expired, so calling this is never needed for correctness (tests and
    /// manual clocks use it to write expiries now).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage), [`Error::Corrupt`](crate::Error::Corrupt).
    pub fn expire_due(&self, limit: usize) -> Result<usize> {
        self.expiry_batch(limit).map(|batch| batch.expired)
    }

    fn expiry_batch(&self, limit: usize) -> Result<Expired> {
        let engine = self.engine()?;
        let result = expire_due(&self.core.writes, &engine, limit);
        self.noted(&engine, result)
    }

    /// One batch of the expiry thread (and of the feed's retention), and
    /// how long to nap after it.
    fn expiry_round(&self) -> Duration {
        if self.core.config.presence_feed {
            // Housekeeping: a failure is a storage failure, which the next
            // call reports and reopens after.
            let _ = self.purge_events(super::feed::PURGE_BATCH);
        }
        // Connection leases renewed, closes past their grace written
        // (SPEC 13); a failure is a storage failure, as above.
        let _ = self.tend_connections();
        match self.expiry_batch(BATCH) {
            Ok(Expired {
                next: Some(next),
                next_due,
                ..
            }) => {
                if next > self.now() {
                    // Nothing overdue is left: starting is over.
                    self.core
                        .started
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                let wait = next.as_millis().saturating_sub(self.now().as_millis());
                let wait = Duration::from_millis(wait);
                wait.min(next_due.unwrap_or(MAX_NAP)).min(MAX_NAP)
            }
            Ok(Expired {
                next: None,
                next_due,
                ..
            }) => {
                self.core
                    .started
                    .store(true, std::sync::atomic::Ordering::Release);
                next_due.unwrap_or(MAX_NAP).min(MAX_NAP)
            }
            // A storage failure: the store reopens on a later call; the
            // health check reports it meanwhile.
            Err(_) => RETRY,
        }
    }

    /// The earliest deadline of a running lease (as this process applies
    /// it), if any: a time at or before now means expiries are still to be
    /// written.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage).
    pub fn next_lease_deadline(&self) -> Result<Option<Timestamp>> {
        let engine = self.engine()?;
        let result = earliest_deadline(&engine);
        self.noted(&engine, result)
    }
}

/// The expiry thread of one store.
#[derive(Debug)]
pub(crate) struct ExpiryThread {
    state: Arc<Alarm>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Alarm {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl ExpiryThread {
    /// Starts the thread for `core`; it holds the store only while it works.
    pub(crate) fn start(core: &Arc<StoreCore>) -> Result<()> {
        let weak = Arc::downgrade(core);
        let state = Arc::clone(&core.expiry.state);
        let thread = std::thread::Builder::new()
            .name("subscriber-store-leases".into())
            .spawn(move || run(&weak, &state))?;
        *core.expiry.thread.lock() = Some(thread);
        Ok(())
    }

    pub(crate) fn new() -> ExpiryThread {
        ExpiryThread {
            state: Arc::new(Alarm::default()),
            thread: Mutex::new(None),
        }
    }
}

impl Drop for ExpiryThread {
    /// Stops the thread and waits for it, unless the thread itself is
    /// dropping the store (it held the last handle): it then stops on its own.
    fn drop(&mut self) {
        *self.state.stop.lock() = true;
        self.state.wake.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn run(core: &Weak<StoreCore>, alarm: &Alarm) {
    // The store is held only for the batch: dropped before the nap.
    while let Some(nap) = core.upgrade().map(|core| Store { core }.expiry_round()) {
        let mut stop = alarm.stop.lock();
        if !*stop && !nap.is_zero() {
            let _ = alarm.wake.wait_for(&mut stop, nap);
        }
        if *stop {
            return;
        }
    }
}
