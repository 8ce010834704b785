//! Reads: API keys (cached briefly per process), one subscriber, the
//! online query and the counts. Every document is shown as of now (a
//! passed lease reads as expired, written or not), as the sled store does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use subscriber_store::{
    Entity, Error, OnlinePage, OnlineQuery, PresenceStats, Result, Subscriber, Tenant, rules,
};

use crate::PgBackend;
use crate::write::millis;

/// How long this process trusts a key it resolved.
const KEY_TTL: Duration = Duration::from_secs(5);

/// Resolved keys by digest, each with when it was read.
#[derive(Default)]
pub(crate) struct KeyCache {
    keys: parking_lot::Mutex<HashMap<[u8; 32], (Tenant, Instant)>>,
}

impl PgBackend {
    pub(crate) async fn resolve(&self, secret: &str) -> Result<Tenant> {
        let digest = rules::key_digest(secret);
        if let Some((tenant, read)) = self.inner.keys.keys.lock().get(&digest) {
            if read.elapsed() < KEY_TTL {
                return Ok(*tenant);
            }
        }
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT organization_id, environment_id, sealed_secret IS NULL FROM api_keys WHERE digest = $1",
                    )
                    .await
                    .map_err(|e| self.failed(&e))?,
                &[&digest.as_slice()],
            )
            .await
            .map_err(|e| self.failed(&e))?
            .ok_or(Error::NotFound(Entity::ApiKey))?;
        let tenant = rules::tenant(id(row.get(0))?, id(row.get(1))?);
        if row.get::<_, bool>(2) {
            self.seal_late(&client, &digest, secret).await;
        }
        let mut keys = self.inner.keys.keys.lock();
        if keys.len() > 10_000 {
            keys.clear();
        }
        keys.insert(digest, (tenant, Instant::now()));
        Ok(tenant)
    }

    /// The lazy upgrade of a key kept only as a digest (made by a server
    /// without a server key): its secret is at hand, so it is sealed now.
    /// Best effort: a failure leaves it for the key's next use, and the
    /// request it came with is still authenticated.
    async fn seal_late(&self, client: &deadpool_postgres::Object, digest: &[u8; 32], secret: &str) {
        let Ok(Some(sealed)) = self.seal(secret) else {
            return;
        };
        let updated = client
            .execute(
                "UPDATE api_keys SET sealed_secret = $2 WHERE digest = $1 AND sealed_secret IS NULL",
                &[&digest.as_slice(), &sealed],
            )
            .await;
        if let Err(e) = updated {
            tracing::warn!(error = %crate::error::describe(&e), "could not seal an API key; it is tried again at its next use");
        }
    }

    pub(crate) async fn read(&self, tenant: &Tenant, subscriber_id: &str) -> Result<Subscriber> {
        rules::check_subscriber_id(subscriber_id)?;
        let env = tenant.environment_id().as_bytes().to_vec();
        let client = self.client().await?;
        let row = client.query_opt(&client.prepare_cached("SELECT document FROM subscribers WHERE environment_id = $1 AND subscriber_id = $2").await.map_err(|e| self.failed(&e))?,
                &[&env, &subscriber_id],
            )
            .await
            .map_err(|e| self.failed(&e))?
            .ok_or(Error::NotFound(Entity::Subscriber))?;
        let clocks = rules::Now::of(self.inner.options.clock.as_ref());
        let doc = rules::decode_document(row.get::<_, &[u8]>(0))?;
        let key = crate::write::deadline_key(&env, subscriber_id);
        Ok(self
            .inner
            .deadlines
            .apply(&key, doc, clocks)
            .as_of(clocks.wall))
    }

    /// Online now (lease-aware), or with `within` also offline since then,
    /// in subscriber id order after the cursor: one indexed range query.
    pub(crate) async fn online_page(
        &self,
        tenant: &Tenant,
        query: &OnlineQuery,
    ) -> Result<OnlinePage> {
        rules::check_online_query(query)?;
        let env = tenant.environment_id().as_bytes().to_vec();
        let now = self.now();
        let since = query
            .within_seconds
            .map(|within| millis(now.saturating_sub(Duration::from_secs(u64::from(within)))));
        let after = query.after.clone().unwrap_or_default();
        let limit = i64::from(query.limit);
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        // Two index walks, never the environment's rows:
                        // the online ones in id order (partial index
                        // subscribers_online) and the window's (index
                        // subscribers_recent, only with `within`).
                        "SELECT subscriber_id, document FROM (
                            (SELECT subscriber_id, document FROM subscribers
                             WHERE environment_id = $1 AND is_online AND subscriber_id > $2
                               AND (lease_deadline IS NULL OR lease_deadline > $3)
                             ORDER BY subscriber_id LIMIT $5)
                            UNION
                            (SELECT subscriber_id, document FROM subscribers
                             WHERE $4::bigint IS NOT NULL AND environment_id = $1
                               AND last_online_at >= $4 AND subscriber_id > $2)
                         ) page ORDER BY subscriber_id LIMIT $5",
                    )
                    .await
                    .map_err(|e| self.failed(&e))?,
                &[&env, &after, &millis(now), &since, &(limit + 1)],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let mut subscribers = rows
            .iter()
            .map(|row| rules::decode_document(row.get::<_, &[u8]>(1)).map(|doc| doc.as_of(now)))
            .collect::<Result<Vec<_>>>()?;
        let next = if subscribers.len() > query.limit as usize {
            subscribers.truncate(query.limit as usize);
            subscribers.last().map(|doc| doc.subscriber_id.clone())
        } else {
            None
        };
        Ok(OnlinePage { subscribers, next })
    }

    /// Exact counts of one environment, lease-aware.
    pub(crate) async fn stats(&self, tenant: &Tenant) -> Result<PresenceStats> {
        let env = tenant.environment_id().as_bytes().to_vec();
        let client = self.client().await?;
        let row = client.query_one(&client.prepare_cached("SELECT count(*) FILTER (WHERE is_online AND (lease_deadline IS NULL OR lease_deadline > $2)),
                        count(*)
                 FROM subscribers WHERE environment_id = $1").await.map_err(|e| self.failed(&e))?,
                &[&env, &millis(self.now())],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(PresenceStats {
            online: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            subscribers: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        })
    }

    /// Whether a write could commit now: a connection to a primary.
    pub(crate) async fn writable(&self) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &client
                    .prepare_cached("SELECT pg_is_in_recovery()")
                    .await
                    .map_err(|e| self.failed(&e))?,
                &[],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        if row.get::<_, bool>(0) {
            return Err(Error::Storage(
                "the database is a standby (read-only)".into(),
            ));
        }
        Ok(())
    }
}

/// An id from its stored bytes.
pub(crate) fn id(bytes: &[u8]) -> Result<subscriber_store::ObjectId> {
    <[u8; 12]>::try_from(bytes)
        .map(rules::id_from_bytes)
        .map_err(|_| Error::Corrupt(format!("an id of {} bytes", bytes.len())))
}
