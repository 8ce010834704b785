//! The presence feed and queries on the handle (SPEC section 11): events
//! after a cursor, waiting for the next one (blocking, or as a future for
//! an async caller), the online query and the counts.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{
    EventPage, OnlinePage, OnlineQuery, PresenceStats, validate_limit, validate_query,
};
use crate::feed::EnvFeed;
use crate::presence_index::{online_page, overdue};
use crate::store::Store;
use crate::tenancy::Tenant;

/// How many events one purge call of the expiry thread removes at most.
pub(crate) const PURGE_BATCH: usize = 4096;

/// Resolves once an event after the cursor it was made for is readable
/// (see [`Store::event_after`]). A [`Future`](std::future::Future) woken by
/// the store's own threads; it needs no particular async runtime.
#[derive(Debug)]
pub struct EventNotice {
    feed: Arc<EnvFeed>,
    after: u64,
}

impl std::future::Future for EventNotice {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.feed.ready_or_register(self.after, cx.waker()) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Store {
    /// Up to `limit` (1 to 1000) events of the tenant's feed after the
    /// cursor `after` (a seq), oldest first; without a cursor, from the
    /// oldest event kept. Only events whose changes are durable (and every
    /// smaller seq with them) are readable, so a reader that resumes after
    /// the last seq it saw never misses one and never sees one twice.
    ///
    /// ```
    /// use std::time::Duration;
    /// use subscriber_store::{Config, EventCause, Store, SubscriberInput};
    ///
    /// let store = Store::open(Config::temporary())?;
    /// let tenant = store.ensure_environment("Development")?.0.tenant();
    /// store.upsert(&tenant, SubscriberInput::new("user-42"), None)?;
    ///
    /// // A reader that wants only what happens from now on.
    /// let mut cursor = store.last_event(&tenant)?;
    /// store.set_online(&tenant, "user-42", true, None)?;
    /// assert!(store.wait_for_event(&tenant, cursor, Duration::from_secs(5))?);
    ///
    /// let page = store.events(&tenant, Some(cursor), 100)?;
    /// let event = &page.events[0];
    /// assert_eq!((event.subscriber_id.as_str(), event.is_online), ("user-42", true));
    /// assert_eq!(event.cause, EventCause::Write);
    /// cursor = page.next; // resume from here, even after a restart
    /// assert_eq!(cursor, event.seq);
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming
    /// [`Field::Limit`](crate::Field::Limit); [`Error::CursorExpired`](crate::Error::CursorExpired)
    /// when events after `after` were purged; [`Error::FeedOff`](crate::Error::FeedOff).
    pub fn events(&self, tenant: &Tenant, after: Option<u64>, limit: u32) -> Result<EventPage> {
        let limit = validate_limit(limit)?;
        self.with_feed(tenant, |engine, feed| {
            feed.page(&engine.trees, after, limit)
        })
    }

    /// The seq of the newest readable event of the tenant's feed (0 when
    /// there is none): where a reader that wants only new events starts.
    ///
    /// # Errors
    /// [`Error::FeedOff`](crate::Error::FeedOff), [`Error::Storage`](crate::Error::Storage).
    pub fn last_event(&self, tenant: &Tenant) -> Result<u64> {
        self.with_feed(tenant, |_, feed| Ok(feed.readable()))
    }

    /// Blocks until an event after `after` is readable or `timeout` has
    /// passed; returns whether one is.
    ///
    /// # Errors
    /// As [`Store::last_event`].
    pub fn wait_for_event(&self, tenant: &Tenant, after: u64, timeout: Duration) -> Result<bool> {
        let feed = self.with_feed(tenant, |_, feed| Ok(Arc::clone(feed)))?;
        Ok(feed.wait_after(after, timeout))
    }

    /// A future that resolves once an event after `after` is readable (at
    /// once if one is). Dropping it stops nothing.
    ///
    /// # Errors
    /// As [`Store::last_event`].
    pub fn event_after(&self, tenant: &Tenant, after: u64) -> Result<EventNotice> {
        let feed = self.with_feed(tenant, |_, feed| Ok(Arc::clone(feed)))?;
        Ok(EventNotice { feed, after })
    }

    /// The subscribers online now (a passed lease is offline), in
    /// subscriber id order after `query.after`; with `within_seconds`, also
    /// those whose `lastOnlineAt` is at most that long ago. Reads the
    /// online index and the window's subscribers, never every subscriber.
    ///
    /// ```
    /// use subscriber_store::{Config, OnlineQuery, Store, SubscriberInput};
    ///
    /// let store = Store::open(Config::temporary())?;
    /// let tenant = store.ensure_environment("Development")?.0.tenant();
    /// for id in ["ann", "bob", "cy"] {
    ///     store.upsert(&tenant, SubscriberInput::new(id), None)?;
    /// }
    /// store.set_online(&tenant, "bob", true, None)?;
    /// store.set_online(&tenant, "cy", true, None)?;
    /// store.set_online(&tenant, "cy", false, None)?;
    ///
    /// let now = store.online(&tenant, &OnlineQuery::default())?;
    /// assert_eq!(now.subscribers.len(), 1); // bob
    /// let recently = OnlineQuery { within_seconds: Some(1800), ..Default::default() };
    /// assert_eq!(store.online(&tenant, &recently)?.subscribers.len(), 2); // bob, cy
    /// let stats = store.presence_stats(&tenant)?;
    /// assert_eq!((stats.online, stats.subscribers), (1, 3));
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming
    /// [`Field::Limit`](crate::Field::Limit), [`Field::Within`](crate::Field::Within)
    /// or [`Field::After`](crate::Field::After) (the subscriber id rule);
    /// [`Error::FeedOff`](crate::Error::FeedOff).
    pub fn online(&self, tenant: &Tenant, query: &OnlineQuery) -> Result<OnlinePage> {
        validate_query(query)?;
        let now = self.core.writes.clocks();
        self.with_feed(tenant, |engine, feed| online_page(engine, feed, query, now))
    }

    /// Exact counts: subscribers online now, and all subscribers.
    ///
    /// # Errors
    /// [`Error::FeedOff`](crate::Error::FeedOff), [`Error::Storage`](crate::Error::Storage).
    pub fn presence_stats(&self, tenant: &Tenant) -> Result<PresenceStats> {
        let now = self.core.writes.clocks();
        self.with_feed(tenant, |engine, feed| {
            let (subscribers, flagged) = feed.counts();
            let online = flagged.saturating_sub(overdue(engine, feed.env_id(), now)?);
            Ok(PresenceStats {
                online,
                subscribers,
            })
        })
    }

    /// Purges events older than the retention
    /// ([`Config::event_retention`](crate::Config::event_retention)), oldest
    /// first, up to `limit`; returns how many. The store's expiry thread
    /// does this by itself.
    ///
    /// # Errors
    /// [`Error::FeedOff`](crate::Error::FeedOff), [`Error::Storage`](crate::Error::Storage).
    pub fn purge_events(&self, limit: usize) -> Result<usize> {
        let engine = self.engine()?;
        let feeds = engine.feeds.clone().ok_or(Error::FeedOff)?;
        let retention = self.core.config.event_retention;
        let cutoff = self.now().saturating_sub(retention);
        let mut purged = 0;
        let mut result = Ok(());
        for feed in feeds.all() {
            match feed.purge(&engine.trees, cutoff, limit - purged) {
                Ok(n) => purged += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if purged >= limit {
                break;
            }
        }
        if purged > 0 {
            engine.observer.events_purged(purged as u64);
        }
        self.noted(&engine, result)?;
        Ok(purged)
    }

    /// Runs `f` on the tenant's feed, noting a storage failure.
    fn with_feed<T>(
        &self,
        tenant: &Tenant,
        f: impl FnOnce(&Engine, &Arc<EnvFeed>) -> Result<T>,
    ) -> Result<T> {
        let engine = self.engine()?;
        let feeds = engine.feeds.clone().ok_or(Error::FeedOff)?;
        let result = feeds
            .env(tenant.environment_id())
            .and_then(|feed| f(&engine, &feed));
        self.noted(&engine, result)
    }
}
