//! A write as one transaction (SPEC sections 6, 7, 11 across processes):
//! 1. with an idempotency key, claim it: insert its row (a live row of a
//!    committed write means replay; a concurrent claimer's uncommitted row
//!    makes this insert wait for its outcome, so a key executes once);
//! 2. the subscriber's advisory lock (serialises its writers and the
//!    expirers of every process), then its document;
//! 3. the store's rule ([`rules::decide`]);
//! 4. the document, the record, and last the events: numbered under the
//!    environment's feed row, whose lock is held until commit, so events
//!    commit in `seq` order and a reader never sees a later one first;
//! 5. commit: durable as the database's commit is.

use subscriber_store::rules::{self, Appended, Decision};
use subscriber_store::{
    Command, Error, Executed, Idempotency, Precondition, Result, Subscriber, Tenant, Timestamp,
};
use tokio_postgres::Transaction;

use crate::PgBackend;
use crate::error::retryable;

/// How often a write that lost a race (deadlock, serialization) runs again.
const ATTEMPTS: usize = 5;

/// The key of a subscriber's advisory lock: FNV-1a over the environment
/// and the id (the same in every process; a collision only serialises two
/// subscribers).
pub(crate) fn lock_key(environment: &[u8], subscriber_id: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in environment
        .iter()
        .chain([0u8].iter())
        .chain(subscriber_id.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The identity of one idempotent call.
struct Once<'a> {
    key: &'a str,
    fingerprint: [u8; 32],
    annotation: &'a [u8],
}

/// What a transaction ended with (made once per write and matched at
/// once: boxing would only add an allocation).
#[allow(clippy::large_enum_variant)]
enum Ended {
    Executed(Executed),
    /// Refused before anything was written (rolled back).
    Refused(Error),
}

impl PgBackend {
    pub(crate) async fn write(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Executed> {
        let fresh_id = rules::prepare(&command, self.now())?;
        let once = match idempotency {
            Some(idempotency) => Some(Once {
                key: idempotency.key().as_str(),
                fingerprint: rules::fingerprint(idempotency, &command, expected.as_ref())?,
                annotation: idempotency.annotation(),
            }),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| self.failed(&e))?;
            let ran = self
                .transaction(
                    &tx,
                    tenant,
                    command.clone(),
                    expected.as_ref(),
                    once.as_ref(),
                    fresh_id,
                )
                .await;
            match ran {
                Ok(Ended::Executed(executed)) => {
                    // A failed commit leaves the outcome unknown: the
                    // client's retry with its key replays or executes.
                    match tx.commit().await {
                        Ok(()) => {
                            if once.is_some() && !executed.replayed {
                                self.inner.options.observer.idempotency_recorded();
                            }
                            return Ok(executed);
                        }
                        Err(e) if retryable(&e) && attempt < ATTEMPTS => continue,
                        Err(e) => return Err(self.failed(&e)),
                    }
                }
                Ok(Ended::Refused(e)) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
                Err(Failed::Db(e)) if retryable(&e) && attempt < ATTEMPTS => {
                    let _ = tx.rollback().await;
                }
                Err(Failed::Db(e)) => return Err(self.failed(&e)),
                Err(Failed::Store(e)) => return Err(e),
            }
        }
    }

    async fn transaction(
        &self,
        tx: &Transaction<'_>,
        tenant: &Tenant,
        command: Command,
        expected: Option<&Precondition>,
        once: Option<&Once<'_>>,
        fresh_id: subscriber_store::ObjectId,
    ) -> std::result::Result<Ended, Failed> {
        let env = tenant.environment_id().as_bytes().to_vec();
        let subscriber_id = rules::subscriber_id(&command).to_owned();
        let ttl = self.inner.options.idempotency_ttl;
        if let Some(once) = once {
            let now = self.now();
            let claimed = tx
                .query_opt(
                    "INSERT INTO idempotency_records (environment_id, key, record, expires_at)
                     VALUES ($1, $2, NULL, $3)
                     ON CONFLICT (environment_id, key) DO UPDATE
                        SET record = NULL, expires_at = EXCLUDED.expires_at
                        WHERE idempotency_records.expires_at <= $4
                     RETURNING 1",
                    &[
                        &env,
                        &once.key,
                        &millis(now.saturating_add(ttl)),
                        &millis(now),
                    ],
                )
                .await?;
            if claimed.is_none() {
                // A live record of a committed write.
                let row = tx
                    .query_one(
                        "SELECT record FROM idempotency_records
                         WHERE environment_id = $1 AND key = $2",
                        &[&env, &once.key],
                    )
                    .await?;
                let bytes: Option<Vec<u8>> = row.get(0);
                let bytes = bytes.ok_or_else(|| {
                    Failed::Store(Error::Corrupt(
                        "an idempotency record without its outcome".into(),
                    ))
                })?;
                let (fingerprint, _, executed) = rules::replay(&bytes)?;
                if fingerprint != once.fingerprint {
                    return Ok(Ended::Refused(Error::IdempotencyKeyReused));
                }
                return Ok(Ended::Executed(executed));
            }
        }
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(&env, &subscriber_id)],
        )
        .await?;
        // Read under the lock: writes to one document take their times in
        // the order they commit.
        let now = self.now();
        let current = tx
            .query_opt(
                "SELECT document FROM subscribers WHERE environment_id = $1 AND subscriber_id = $2",
                &[&env, &subscriber_id],
            )
            .await?
            .map(|row| rules::decode_document(row.get::<_, &[u8]>(0)))
            .transpose()?;
        let decided = rules::decide(
            command,
            current,
            expected,
            tenant,
            now,
            fresh_id,
            self.inner.options.presence_ttl_secs,
        );
        let (outcome, events) = match decided {
            Ok(Decision {
                document,
                removed,
                events,
            }) => {
                if removed {
                    tx.execute(
                        "DELETE FROM subscribers WHERE environment_id = $1 AND subscriber_id = $2",
                        &[&env, &subscriber_id],
                    )
                    .await?;
                } else {
                    put(tx, &env, &document).await?;
                }
                (Ok(document), events)
            }
            Err(e) if once.is_none() => return Ok(Ended::Refused(e)),
            Err(e) => (Err(e), Vec::new()),
        };
        let annotation = match once {
            Some(once) => {
                // An outcome that is not recordable (a rejection) comes
                // back as the error: nothing is written.
                let bytes = match rules::record(
                    outcome.clone(),
                    once.fingerprint,
                    now,
                    now.saturating_add(ttl),
                    once.annotation,
                ) {
                    Ok(bytes) => bytes,
                    Err(e) => return Ok(Ended::Refused(e)),
                };
                tx.execute(
                    "UPDATE idempotency_records SET record = $3, expires_at = $4
                     WHERE environment_id = $1 AND key = $2",
                    &[&env, &once.key, &bytes, &millis(now.saturating_add(ttl))],
                )
                .await?;
                once.annotation.to_vec()
            }
            None => Vec::new(),
        };
        if !events.is_empty() {
            append(tx, &env, &events).await?;
            self.inner
                .options
                .observer
                .events_appended(events.len() as u64);
        }
        Ok(Ended::Executed(Executed {
            outcome,
            replayed: false,
            executed_at: now,
            annotation,
        }))
    }
}

/// Why a transaction stopped: the database, or the store's rules.
pub(crate) enum Failed {
    Db(tokio_postgres::Error),
    Store(Error),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Failed {
        Failed::Db(e)
    }
}

impl From<Error> for Failed {
    fn from(e: Error) -> Failed {
        Failed::Store(e)
    }
}

/// A timestamp as the tables keep it (ms since the epoch, bigint).
pub(crate) fn millis(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// Inserts or replaces a document and its query columns.
pub(crate) async fn put(
    tx: &Transaction<'_>,
    env: &[u8],
    doc: &Subscriber,
) -> std::result::Result<(), Failed> {
    let bytes = rules::encode_document(doc)?;
    // lastOnlineAt as the document shows it once its lease has run out:
    // what `within` compares when the lease is no longer running.
    let settled = doc.clone().as_of(Timestamp::from_millis(u64::MAX));
    tx.execute(
        "INSERT INTO subscribers
            (environment_id, subscriber_id, document, version, is_online, last_online_at, lease_deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (environment_id, subscriber_id) DO UPDATE SET
            document = EXCLUDED.document, version = EXCLUDED.version,
            is_online = EXCLUDED.is_online, last_online_at = EXCLUDED.last_online_at,
            lease_deadline = EXCLUDED.lease_deadline",
        &[
            &env,
            &doc.subscriber_id,
            &bytes,
            &i64::try_from(doc.version.0).unwrap_or(i64::MAX),
            &(doc.is_online == Some(true)),
            &settled.last_online_at.map(millis),
            &doc.online_expires_at().map(millis),
        ],
    )
    .await?;
    Ok(())
}

/// Numbers `events` under the environment's feed row (locked until the
/// transaction ends) and inserts them.
pub(crate) async fn append(
    tx: &Transaction<'_>,
    env: &[u8],
    events: &[Appended],
) -> std::result::Result<(), Failed> {
    let count = events.len() as i64;
    let last: i64 = tx
        .query_one(
            "INSERT INTO feeds (environment_id, last_seq) VALUES ($1, $2)
             ON CONFLICT (environment_id) DO UPDATE SET last_seq = feeds.last_seq + EXCLUDED.last_seq
             RETURNING last_seq",
            &[&env, &count],
        )
        .await?
        .get(0);
    for (at, appended) in events.iter().enumerate() {
        let seq = last - count + 1 + at as i64;
        let event = &appended.event;
        tx.execute(
            "INSERT INTO events
                (environment_id, seq, subscriber_id, is_online, last_online_at, version, at, cause, appended_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &env,
                &seq,
                &event.subscriber_id,
                &event.is_online,
                &event.last_online_at.map(millis),
                &i64::try_from(event.version.0).unwrap_or(i64::MAX),
                &millis(event.at),
                &crate::feed::cause_code(event.cause),
                &millis(appended.appended_at),
            ],
        )
        .await?;
    }
    Ok(())
}
