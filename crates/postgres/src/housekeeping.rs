//! What each process does in the background: expire due leases, purge
//! expired idempotency records and old events, refresh the gauges. Any
//! number of processes may run it at once: each expiry is a transaction
//! under the subscriber's advisory lock that re-reads the document, so a
//! lease expires once whichever process gets there.

use std::time::Duration;

use subscriber_store::rules::{self, Now};
use subscriber_store::{Result, Subscriber, Timestamp};

use crate::PgBackend;
use crate::write::{Failed, append, deadline_key, lock_key, millis, put};

/// Due leases read per round.
const BATCH: i64 = 256;
/// The longest nap between rounds.
const MAX_NAP: Duration = Duration::from_millis(500);
/// How often records and events are purged.
const PURGE_EVERY: Duration = Duration::from_secs(5);

/// The expiry and purge loop.
pub(crate) async fn run(backend: PgBackend) {
    match backend.adopt_far_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            leases = n,
            "leases stored further than their TTL ahead: each ends within its TTL from now"
        ),
        Err(e) => tracing::warn!(cause = %e, "reading the running leases at start failed"),
    }
    let mut purged_at = tokio::time::Instant::now();
    loop {
        let nap = match backend.expire_due(BATCH).await {
            Ok((expired, more)) => {
                if !more {
                    backend
                        .inner
                        .started
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                if expired > 0 {
                    Duration::ZERO
                } else if more {
                    // Due, but each held by a writer that folds it in.
                    Duration::from_millis(10)
                } else {
                    let clocks = Now::of(backend.inner.options.clock.as_ref());
                    let due = backend.inner.deadlines.next_due(clocks);
                    due.map_or(MAX_NAP, |due| due.min(MAX_NAP))
                }
            }
            Err(e) => {
                tracing::warn!(cause = %e, "lease expiry failed; retrying");
                MAX_NAP
            }
        };
        if purged_at.elapsed() >= PURGE_EVERY {
            purged_at = tokio::time::Instant::now();
            if let Err(e) = backend.purge_records(10_000).await {
                tracing::warn!(cause = %e, "purging idempotency records failed");
            }
            let cutoff = backend
                .now()
                .saturating_sub(backend.inner.options.event_retention);
            if let Err(e) = backend.purge_events(cutoff, 10_000).await {
                tracing::warn!(cause = %e, "purging events failed");
            }
        }
        if !nap.is_zero() {
            tokio::time::sleep(nap).await;
        }
    }
}

/// Refreshes the counts the metrics show, every few seconds.
pub(crate) async fn gauges(backend: PgBackend) {
    loop {
        if let Ok(client) = backend.client().await {
            let counts = client
                .query_one(
                    "SELECT (SELECT count(*) FROM subscribers),
                            (SELECT count(*) FROM subscribers WHERE is_online),
                            (SELECT count(*) FROM subscribers WHERE lease_deadline IS NOT NULL),
                            (SELECT count(*) FROM idempotency_records)",
                    &[],
                )
                .await;
            if let Ok(row) = counts {
                let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
                let mut gauges = backend.inner.gauges.lock();
                gauges.subscribers = Some(n(0));
                gauges.online = Some(n(1));
                gauges.leases = Some(n(2));
                gauges.idempotency_records = n(3);
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

impl PgBackend {
    /// Expires up to `limit` due leases, each in its own transaction:
    /// those run out by the wall clock (the deadline column), then those
    /// written through this process and due by its monotonic clock
    /// (a wall clock stepped back). Returns how many it expired and
    /// whether more are due.
    pub(crate) async fn expire_due(&self, limit: i64) -> Result<(u64, bool)> {
        let now = self.now();
        let mut client = self.client().await?;
        let due = client
            .query(
                "SELECT environment_id, subscriber_id FROM subscribers
                 WHERE lease_deadline <= $1 ORDER BY lease_deadline LIMIT $2",
                &[&millis(now), &limit],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let mut more = due.len() as i64 == limit;
        let mut expired = 0;
        for row in due {
            let env: Vec<u8> = row.get(0);
            let subscriber_id: String = row.get(1);
            if self
                .expire_one(&mut client, &env, &subscriber_id, None)
                .await?
            {
                expired += 1;
            }
        }
        let clocks = Now::of(self.inner.options.clock.as_ref());
        let room = usize::try_from(limit).unwrap_or(0);
        let stepped = self.inner.deadlines.due(clocks, room);
        more |= room > 0 && stepped.len() == room;
        for (key, stored) in stepped {
            let Some((env, id)) = key.split_first_chunk::<12>() else {
                continue;
            };
            let Ok(subscriber_id) = std::str::from_utf8(id) else {
                continue;
            };
            if self
                .expire_one(&mut client, env, subscriber_id, Some((stored, &key)))
                .await?
            {
                expired += 1;
            }
        }
        if expired > 0 {
            self.inner.options.observer.leases_expired(expired);
        }
        Ok((expired, more))
    }

    /// One expiry, in its own transaction under the subscriber's lock:
    /// writes it if the document's lease has run out (as this process
    /// applies it). With `held`, only if the document still stores that
    /// deadline (the process's entry under that key); a stale entry is
    /// forgotten.
    async fn expire_one(
        &self,
        client: &mut deadpool_postgres::Object,
        env: &[u8],
        subscriber_id: &str,
        held: Option<(Timestamp, &[u8])>,
    ) -> Result<bool> {
        let tx = client.transaction().await.map_err(|e| self.failed(&e))?;
        let ran: std::result::Result<bool, Failed> = async {
            // A writer holding the lock folds the expiry into its own
            // write (the rules do): skip it rather than wait.
            let locked: bool = tx
                .query_one(
                    &tx.prepare_cached("SELECT pg_try_advisory_xact_lock($1)")
                        .await?,
                    &[&lock_key(env, subscriber_id)],
                )
                .await?
                .get(0);
            if !locked {
                return Ok(false);
            }
            let row = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT document FROM subscribers
                         WHERE environment_id = $1 AND subscriber_id = $2",
                    )
                    .await?,
                    &[&env, &subscriber_id],
                )
                .await?;
            let doc = match row {
                Some(row) => Some(rules::decode_document(row.get::<_, &[u8]>(0))?),
                None => None,
            };
            if let Some((stored, key)) = held {
                if doc.as_ref().and_then(Subscriber::online_expires_at) != Some(stored) {
                    self.inner.deadlines.forget(key, stored);
                    return Ok(false);
                }
            }
            let Some(doc) = doc else {
                return Ok(false);
            };
            let clocks = Now::of(self.inner.options.clock.as_ref());
            let key = deadline_key(env, subscriber_id);
            let doc = self.inner.deadlines.apply(&key, doc, clocks);
            let Some((doc, event)) = rules::expire(doc, clocks.wall) else {
                return Ok(false);
            };
            put(&tx, env, &doc).await?;
            append(&tx, env, &[event]).await?;
            Ok(true)
        }
        .await;
        match ran {
            Ok(true) => {
                tx.commit().await.map_err(|e| self.failed(&e))?;
                self.inner
                    .deadlines
                    .ended(&deadline_key(env, subscriber_id));
                self.inner.pending.notify_one();
                self.inner.options.observer.events_appended(1);
                Ok(true)
            }
            Ok(false) => {
                let _ = tx.rollback().await;
                Ok(false)
            }
            Err(Failed::Db(e)) => Err(self.failed(&e)),
            Err(Failed::Store(e)) => Err(e),
        }
    }

    /// At start: the running leases whose deadline is further than their
    /// TTL ahead of this process's clock (written by a clock that ran
    /// ahead) are held on the monotonic clock and end within their TTL
    /// from now (SPEC section 10). One pass over the running leases.
    pub(crate) async fn adopt_far_leases(&self) -> Result<usize> {
        let client = self.client().await?;
        let clocks = Now::of(self.inner.options.clock.as_ref());
        let rows = client
            .query(
                "SELECT environment_id, subscriber_id, document FROM subscribers
                 WHERE lease_deadline > $1",
                &[&millis(clocks.wall)],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let mut adopted = 0;
        for row in rows {
            let env: Vec<u8> = row.get(0);
            let subscriber_id: String = row.get(1);
            let Ok(doc) = rules::decode_document(row.get::<_, &[u8]>(2)) else {
                continue;
            };
            let Some(lease) = doc.lease else {
                continue;
            };
            let ttl = lease
                .expires_at
                .as_millis()
                .saturating_sub(lease.heard_at.as_millis());
            if lease.expires_at.as_millis() > clocks.wall.as_millis().saturating_add(ttl) {
                let key = deadline_key(&env, &subscriber_id);
                self.inner.deadlines.adopted(&key, &lease, clocks);
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    /// Removes up to `limit` expired idempotency records.
    pub(crate) async fn purge_records(&self, limit: i64) -> Result<u64> {
        let client = self.client().await?;
        let gone = client
            .execute(
                "DELETE FROM idempotency_records WHERE ctid IN (
                    SELECT ctid FROM idempotency_records WHERE expires_at <= $1 LIMIT $2)",
                &[&millis(self.now()), &limit],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        if gone > 0 {
            self.inner.options.observer.idempotency_purged(gone);
        }
        Ok(gone)
    }
}
