//! Presence from live connections on the handle (SPEC 13): [`Store::connect`]
//! and the [`Connection`] guard whose drop is the close, and the renewal
//! and grace writes the store's thread makes. Every one is an ordinary
//! write ([`Command::Connection`](crate::Command::Connection)) through the write path, made while the
//! subscriber's entry in the connection table is locked (connections.rs).

use crate::clock::{Now, Timestamp};
use crate::command::{ConnectionKind, ConnectionWrite};
use crate::connections::{Due, Entry, Shard};
use crate::error::{Error, Result};
use crate::layout;
use crate::store::{Durable, Store};
use crate::subscriber::validate_subscriber_id;
use crate::tenancy::Tenant;

/// One open connection of a subscriber (an Inbox socket, a tab): while any
/// is open on the store, the subscriber is online; dropping the last one
/// takes it offline (after [`Config::disconnect_grace`](crate::Config::disconnect_grace),
/// if no other opens meanwhile). Made by [`Store::connect`]. It does not
/// hold the store open: a store closed with connections open leaves their
/// presence as a crash would, and the next [`Store::open`] ends it.
///
/// A presence write made while connections are open (an explicit PATCH)
/// wins until the next connection opens or the last closes.
#[derive(Debug)]
#[must_use = "the connection closes when this is dropped"]
pub struct Connection {
    store: std::sync::Weak<super::StoreCore>,
    key: Vec<u8>,
    subscriber_id: String,
}

impl Connection {
    /// Whose connection this is.
    pub fn subscriber_id(&self) -> &str {
        &self.subscriber_id
    }
}

impl Drop for Connection {
    /// The close: the subscriber's count goes down, and when it reaches
    /// zero without a grace, the offline write commits now (its flush is
    /// not waited for). A write that fails here (a storage failure) is
    /// not retried: the connection lease, no longer renewed, runs out.
    fn drop(&mut self) {
        if let Some(core) = self.store.upgrade() {
            Store { core }.close_connection(&self.key);
        }
    }
}

impl Store {
    /// Opens a connection of `subscriber_id` (SPEC 13) and returns once its
    /// presence is durable: the first connection is an online write (event
    /// cause `connected`, unless the subscriber is already online) with a
    /// connection lease the store renews every third of
    /// [`Config::connection_lease_secs`](crate::Config::connection_lease_secs);
    /// further connections write nothing. Dropping the [`Connection`] is
    /// the close; when the last one closes the subscriber goes offline
    /// with `lastOnlineAt` the close time (event cause `disconnected`).
    /// If the process dies instead, the lease runs out (cause `expired`,
    /// `lastOnlineAt` its last renewal), or the next [`Store::open`] ends it.
    ///
    /// ```
    /// use subscriber_store::{Config, EventCause, Store, SubscriberInput};
    ///
    /// let store = Store::open(Config::temporary())?;
    /// let tenant = store.ensure_environment("Development")?.0.tenant();
    /// store.upsert(&tenant, SubscriberInput::new("ada"), None)?;
    ///
    /// let tab = store.connect(&tenant, "ada")?;
    /// let other_tab = store.connect(&tenant, "ada")?;
    /// drop(tab);
    /// assert_eq!(store.get(&tenant, "ada")?.is_online, Some(true));
    /// drop(other_tab); // the last one
    /// let doc = store.get(&tenant, "ada")?;
    /// assert_eq!(doc.is_online, Some(false));
    /// assert!(doc.last_online_at.is_some());
    ///
    /// let causes: Vec<_> = store.events(&tenant, None, 10)?.events.iter().map(|e| e.cause).collect();
    /// assert_eq!(causes, [EventCause::Connected, EventCause::Disconnected]);
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`] for a subscriber that does not exist;
    /// [`Error::InvalidInput`] for a malformed id; [`Error::Storage`],
    /// [`Error::Corrupt`]. A connection that fails is not counted.
    pub fn connect(&self, tenant: &Tenant, subscriber_id: &str) -> Result<Connection> {
        self.commit_connect(tenant, subscriber_id)?.wait()
    }

    /// As [`Store::connect`], returning once the online write is committed
    /// in memory: wait for or await the [`Durable`] (an async caller awaits
    /// it). Dropped unfinished, the connection closes.
    ///
    /// # Errors
    /// As [`Store::connect`], for everything but the flush.
    pub fn commit_connect(
        &self,
        tenant: &Tenant,
        subscriber_id: &str,
    ) -> Result<Durable<Connection>> {
        validate_subscriber_id(subscriber_id)?;
        let key = layout::subscriber_key(tenant.environment_id(), subscriber_id);
        let table = &self.core.connections;
        let kind = ConnectionKind::Opened {
            run: table.run,
            lease_secs: table.lease_secs,
        };
        let mut shard = table.lock(&key);
        let now = self.core.writes.clocks();
        let durable = self.submit(
            tenant,
            ConnectionWrite::command(subscriber_id, kind),
            None,
            None,
        )?;
        // The lease this run holds now, and when it was written.
        let heard = durable
            .value
            .as_ref()
            .and_then(|executed| executed.outcome.as_ref().ok())
            .and_then(|doc| doc.lease)
            .map(|lease| lease.heard_at);
        let entry = shard.entry(key.clone()).or_insert_with(|| Entry {
            tenant: *tenant,
            subscriber_id: subscriber_id.to_owned(),
            open: 0,
            closed: None,
            renewed: renewed_at(heard, now),
        });
        entry.open += 1;
        entry.closed = None;
        table.counted(true);
        drop(shard);
        let connection = Connection {
            store: std::sync::Arc::downgrade(&self.core),
            key,
            subscriber_id: subscriber_id.to_owned(),
        };
        durable.try_map(|_| Ok(connection))
    }

    /// A [`Connection`]'s drop.
    fn close_connection(&self, key: &[u8]) {
        let table = &self.core.connections;
        let mut shard = table.lock(key);
        let Some(entry) = shard.get_mut(key) else {
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        table.counted(false);
        if entry.open > 0 {
            return;
        }
        let now = self.core.writes.clocks();
        entry.closed = Some((now.wall, now.mono));
        if table.grace.is_zero() {
            // A failure is left to the lease, which is no longer renewed.
            let _ = self.write_due(&mut shard, key, now);
        }
    }

    /// Writes what is due for the entry at `key` (its shard locked) at
    /// `now`: the offline write once the grace has passed (the entry
    /// goes), or the lease's renewal. Returns whether it submitted one.
    fn write_due(&self, shard: &mut Shard, key: &[u8], now: Now) -> Result<bool> {
        let table = &self.core.connections;
        let Some(entry) = shard.get_mut(key) else {
            return Ok(false);
        };
        let kind = match table.due(entry, now) {
            Due::Nothing => return Ok(false),
            Due::Close(at) => ConnectionKind::Closed { at },
            Due::Renewal => ConnectionKind::Renewed {
                run: table.run,
                lease_secs: table.lease_secs,
            },
        };
        let (tenant, command) = (
            entry.tenant,
            ConnectionWrite::command(&entry.subscriber_id, kind),
        );
        if matches!(kind, ConnectionKind::Closed { .. }) {
            shard.remove(key);
        } else {
            entry.renewed = now.mono;
        }
        match self.submit(&tenant, command, None, None) {
            // Its flush follows without anyone waiting (durability.rs).
            Ok(_) => Ok(true),
            // Deleted meanwhile: nothing to hold.
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the connection writes due now: each lease a third of its
    /// length old is renewed (unless an explicit presence write has
    /// overruled it since), and each subscriber whose last connection
    /// closed longer than the grace ago goes offline. Returns how many
    /// connection writes it submitted (a renewal that an explicit presence
    /// write has overruled is one, and stores nothing). The store's thread does this by itself at least
    /// every second; tests with a manual clock call it.
    ///
    /// # Errors
    /// The first [`Error::Storage`] met (the rest are tried again next time).
    pub fn tend_connections(&self) -> Result<usize> {
        let now = self.core.writes.clocks();
        let mut written = 0;
        let mut failure = None;
        for shard in self.core.connections.shards() {
            let keys: Vec<Vec<u8>> = shard.lock().keys().cloned().collect();
            for key in keys {
                let mut locked = shard.lock();
                match self.write_due(&mut locked, &key, now) {
                    Ok(wrote) => written += usize::from(wrote),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Connections open on this store now ([`Connection`]s not dropped).
    pub fn open_connections(&self) -> u64 {
        self.core.connections.open()
    }
}

/// When a lease heard at `heard` (wall clock) was written, by the monotonic
/// clock at `now`: renewals follow the lease's own age, so a connection
/// that finds a lease of this run already holding the presence (written
/// before a failed close) renews it in time.
fn renewed_at(heard: Option<Timestamp>, now: Now) -> std::time::Duration {
    let age = heard.map_or(0, |heard| {
        now.wall.as_millis().saturating_sub(heard.as_millis())
    });
    now.mono
        .saturating_sub(std::time::Duration::from_millis(age))
}
