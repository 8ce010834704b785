//! The presence feed on tables. A write commits its events into
//! `event_outbox` (no lock shared between writers); the sequencer moves
//! the committed ones to `events`, numbering them after the environment's
//! `last_seq` in outbox order, in one transaction under the feed row's
//! lock. So seqs become visible a contiguous batch at a time, in order:
//! a reader can never see a later seq before an earlier one. A
//! subscriber's writes are serialised (its advisory lock), so a snapshot
//! holding one of its events holds every earlier one, and outbox ids are
//! drawn in its version order: its events keep their order in the feed.
//! Pages are read in one statement (the purge mark and the events in one
//! snapshot), after sequencing what is pending.

use std::collections::HashMap;
use std::time::Duration;

use subscriber_store::{
    Error, EventCause, EventPage, ObjectId, PresenceEvent, Result, Tenant, Timestamp, Version,
    rules,
};
use tokio::sync::watch;

use crate::PgBackend;
use crate::write::time_of;

/// How often this process looks for new events while someone waits.
const POLL: Duration = Duration::from_millis(20);

pub(crate) fn cause_code(cause: EventCause) -> i16 {
    match cause {
        EventCause::Write => 0,
        EventCause::Expired => 1,
        EventCause::Deleted => 2,
        EventCause::Connected => 3,
        EventCause::Disconnected => 4,
    }
}

fn cause_of(code: i16) -> Result<EventCause> {
    match code {
        0 => Ok(EventCause::Write),
        1 => Ok(EventCause::Expired),
        2 => Ok(EventCause::Deleted),
        3 => Ok(EventCause::Connected),
        4 => Ok(EventCause::Disconnected),
        other => Err(Error::Corrupt(format!("event cause {other}"))),
    }
}

fn seq_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The newest seq each environment's readers wait past, per process: one
/// poll for all of them.
#[derive(Default)]
pub(crate) struct Notices {
    envs: parking_lot::Mutex<HashMap<ObjectId, watch::Sender<u64>>>,
}

impl Notices {
    /// Resolves once the environment's newest event is past `after` (or
    /// the backend is gone).
    pub(crate) fn after(
        &self,
        env: ObjectId,
        after: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self
            .envs
            .lock()
            .entry(env)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        async move {
            let _ = receiver.wait_for(|newest| *newest > after).await;
        }
    }

    fn watched(&self) -> bool {
        self.envs
            .lock()
            .values()
            .any(|sender| sender.receiver_count() > 0)
    }

    fn publish(&self, env: ObjectId, newest: u64) {
        if let Some(sender) = self.envs.lock().get(&env) {
            sender.send_if_modified(|seen| {
                let moved = newest > *seen;
                *seen = newest.max(*seen);
                moved
            });
        }
    }
}

/// Sequences pending events: woken by this process's writes, and every
/// so often for other processes' (any process may sequence any event).
pub(crate) async fn sequencer(backend: PgBackend) {
    loop {
        let _ = tokio::time::timeout(POLL, backend.inner.pending.notified()).await;
        let envs = match backend.client().await {
            Ok(client) => client
                .query("SELECT DISTINCT environment_id FROM event_outbox", &[])
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|row| row.get::<_, Vec<u8>>(0))
                        .collect::<Vec<_>>()
                }),
            Err(_) => continue,
        };
        let Ok(envs) = envs else { continue };
        for env in envs {
            if let Err(e) = backend.sequence(&env).await {
                tracing::warn!(cause = %e, "sequencing presence events failed; retrying");
            }
        }
    }
}

/// Polls the feeds' heads while anyone in this process waits for events.
pub(crate) async fn watch(backend: PgBackend) {
    loop {
        tokio::time::sleep(POLL).await;
        if !backend.inner.feeds.watched() {
            continue;
        }
        let Ok(client) = backend.client().await else {
            continue;
        };
        let Ok(rows) = client
            .query("SELECT environment_id, last_seq FROM feeds", &[])
            .await
        else {
            continue;
        };
        for row in rows {
            let env: &[u8] = row.get(0);
            if let Ok(env) = crate::reads::id(env) {
                backend.inner.feeds.publish(env, seq_of(row.get(1)));
            }
        }
    }
}

impl PgBackend {
    /// Moves the environment's committed outbox events to the feed (see
    /// the module's docs); returns how many.
    pub(crate) async fn sequence(&self, env: &[u8]) -> Result<u64> {
        let mut client = self.client().await?;
        let pending = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM event_outbox WHERE environment_id = $1)",
                &[&env],
            )
            .await
            .map_err(|e| self.failed(&e))?
            .get::<_, bool>(0);
        if !pending {
            return Ok(0);
        }
        let tx = client.transaction().await.map_err(|e| self.failed(&e))?;
        tx.execute(
            "INSERT INTO feeds (environment_id, last_seq) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&env],
        )
        .await
        .map_err(|e| self.failed(&e))?;
        // One sequencer at a time per environment, and after it a fresh
        // snapshot for the statement below.
        let last: i64 = tx
            .query_one(
                "SELECT last_seq FROM feeds WHERE environment_id = $1 FOR UPDATE",
                &[&env],
            )
            .await
            .map_err(|e| self.failed(&e))?
            .get(0);
        let moved = tx
            .execute(
                "WITH moved AS (DELETE FROM event_outbox WHERE environment_id = $1 RETURNING *)
                 INSERT INTO events
                    (environment_id, seq, subscriber_id, is_online, last_online_at, version, at, cause, appended_at)
                 SELECT environment_id, $2 + row_number() OVER (ORDER BY id), subscriber_id, is_online,
                        last_online_at, version, at, cause, appended_at
                 FROM moved",
                &[&env, &last],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        if moved > 0 {
            tx.execute(
                "UPDATE feeds SET last_seq = last_seq + $2 WHERE environment_id = $1",
                &[&env, &i64::try_from(moved).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        }
        tx.commit().await.map_err(|e| self.failed(&e))?;
        Ok(moved)
    }

    /// Up to `limit` events after `after` (from the oldest kept without
    /// it); a cursor before the purge mark is `CursorExpired`. `next` is
    /// the last event's seq, else `after`, else the purge mark.
    pub(crate) async fn page(
        &self,
        tenant: &Tenant,
        after: Option<u64>,
        limit: u32,
    ) -> Result<EventPage> {
        let limit = rules::check_limit(limit)? as i64;
        let env = tenant.environment_id().as_bytes().to_vec();
        // What is committed is readable: sequence it first.
        self.sequence(&env).await?;
        let client = self.client().await?;
        let from = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        // One statement, one snapshot: the mark and the events agree.
        let rows = client
            .query(
                "SELECT f.purged_through, e.seq, e.subscriber_id, e.is_online, e.last_online_at,
                        e.version, e.at, e.cause
                 FROM (SELECT coalesce((SELECT purged_through FROM feeds WHERE environment_id = $1), 0)
                         AS purged_through) f
                 LEFT JOIN LATERAL (
                    SELECT * FROM events
                    WHERE environment_id = $1 AND seq > greatest($2, f.purged_through)
                    ORDER BY seq LIMIT $3
                 ) e ON true",
                &[&env, &from, &limit],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let purged = rows.first().map_or(0, |row| seq_of(row.get(0)));
        if let Some(after) = after {
            if after < purged {
                return Err(Error::CursorExpired {
                    after,
                    purged_through: purged,
                });
            }
        }
        let mut events = Vec::new();
        for row in &rows {
            let Some(seq) = row.get::<_, Option<i64>>(1) else {
                continue;
            };
            events.push(PresenceEvent {
                seq: seq_of(seq),
                subscriber_id: row.get(2),
                is_online: row.get(3),
                last_online_at: row.get::<_, Option<i64>>(4).map(time_of),
                version: Version(seq_of(row.get(5))),
                at: time_of(row.get(6)),
                cause: cause_of(row.get(7))?,
            });
        }
        // Else the cursor given, else the purge mark: never a cursor this
        // refuses for a reader that missed nothing.
        let next = events.last().map_or(after.unwrap_or(purged), |e| e.seq);
        Ok(EventPage { events, next })
    }

    /// The newest committed event's seq (0 if none).
    pub(crate) async fn newest(&self, tenant: &Tenant) -> Result<u64> {
        let env = tenant.environment_id().as_bytes().to_vec();
        self.sequence(&env).await?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT last_seq FROM feeds WHERE environment_id = $1",
                &[&env],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(row.map_or(0, |row| seq_of(row.get(0))))
    }

    /// Removes the events appended before `cutoff`, up to `limit` per
    /// environment, mark first (in the same transaction). Returns how many.
    pub(crate) async fn purge_events(&self, cutoff: Timestamp, limit: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let envs = client
            .query("SELECT environment_id FROM feeds", &[])
            .await
            .map_err(|e| self.failed(&e))?;
        let mut purged = 0;
        for row in envs {
            let env: Vec<u8> = row.get(0);
            let tx = client.transaction().await.map_err(|e| self.failed(&e))?;
            let through: Option<i64> = tx
                .query_one(
                    "SELECT max(seq) FROM (
                        SELECT seq FROM events WHERE environment_id = $1 AND appended_at < $2
                        ORDER BY seq LIMIT $3) doomed",
                    &[&env, &crate::write::millis(cutoff), &limit],
                )
                .await
                .map_err(|e| self.failed(&e))?
                .get(0);
            let Some(through) = through else {
                continue;
            };
            tx.execute(
                "UPDATE feeds SET purged_through = greatest(purged_through, $2)
                 WHERE environment_id = $1",
                &[&env, &through],
            )
            .await
            .map_err(|e| self.failed(&e))?;
            let gone = tx
                .execute(
                    "DELETE FROM events WHERE environment_id = $1 AND seq <= $2",
                    &[&env, &through],
                )
                .await
                .map_err(|e| self.failed(&e))?;
            tx.commit().await.map_err(|e| self.failed(&e))?;
            purged += gone;
        }
        if purged > 0 {
            self.inner.options.observer.events_purged(purged);
        }
        Ok(purged)
    }
}
