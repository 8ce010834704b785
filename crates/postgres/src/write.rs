//! A write as one transaction (SPEC sections 6, 7, 11 across processes):
//! 1. with an idempotency key, its advisory lock and its record (a live
//!    record means replay; whoever holds the lock is the key's only
//!    writer, so a key executes once across processes);
//! 2. the subscriber's advisory lock (serialises its writers and the
//!    expirers of every process), then its document;
//! 3. the store's rule ([`rules::decide`]);
//! 4. the document, the record, and last the events: numbered under the
//!    environment's feed row, whose lock is held until commit, so events
//!    commit in `seq` order and a reader never sees a later one first;
//! 5. commit: durable as the database's commit is.

use deadpool_postgres::Transaction;
use subscriber_store::rules::{self, Appended, Deadlines, Decision, Now};
use subscriber_store::{
    Command, Error, Executed, Idempotency, Lease, Precondition, Result, Subscriber, Tenant,
    Timestamp,
};

use crate::PgBackend;
use crate::error::retryable;

/// How often a write that lost a race (deadlock, serialization) runs again.
const ATTEMPTS: usize = 5;

/// A committed write's effect on a lease: the one it found (as this
/// process applies it) and the one it stored.
struct LeaseChange {
    key: Vec<u8>,
    seen: Option<Lease>,
    after: Option<Lease>,
    clocks: Now,
}

impl LeaseChange {
    fn tell(self, deadlines: &Deadlines) {
        deadlines.track(&self.key, self.seen, self.after, self.clocks);
    }
}

/// The key this process's [`Deadlines`] hold a subscriber's lease under
/// (the sled store's document key: environment, then id).
pub(crate) fn deadline_key(environment: &[u8], subscriber_id: &str) -> Vec<u8> {
    let mut key = environment.to_vec();
    key.extend_from_slice(subscriber_id.as_bytes());
    key
}

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
    /// Ran (or replayed); `true` if it appended events; what it did to the
    /// subscriber's lease, told to the process's deadlines once committed.
    Executed(Executed, bool, Option<LeaseChange>),
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
                Ok(Ended::Executed(executed, appended, lease)) => {
                    // A failed commit leaves the outcome unknown: the
                    // client's retry with its key replays or executes.
                    match tx.commit().await {
                        Ok(()) => {
                            if let Some(lease) = lease {
                                lease.tell(&self.inner.deadlines);
                            }
                            if appended {
                                self.inner.pending.notify_one();
                            }
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
        // Sent together (tokio-postgres pipelines them, in this order):
        // the key's lock and its record, the subscriber's lock and its
        // document. Whoever holds a key's lock is the only writer of its
        // record, and a record read under it is committed: a key executes
        // once across processes.
        // Prepared first (once per connection): a statement still being
        // prepared would otherwise be sent after the ones behind it, and
        // the document must be read after the lock is granted.
        let (lock_statement, record_statement, read_statement) = tokio::try_join!(
            tx.prepare_cached("SELECT pg_advisory_xact_lock($1)"),
            tx.prepare_cached(
                "SELECT record, expires_at FROM idempotency_records
                 WHERE environment_id = $1 AND key = $2"
            ),
            tx.prepare_cached(
                "SELECT document FROM subscribers WHERE environment_id = $1 AND subscriber_id = $2"
            ),
        )?;
        let key_lock_id = once.map(|once| lock_key(&env, &format!("\0key\0{}", once.key)));
        let key_lock = async {
            match key_lock_id {
                Some(id) => tx.execute(&lock_statement, &[&id]).await.map(drop),
                None => Ok(()),
            }
        };
        let recorded = async {
            match once {
                Some(once) => tx
                    .query_opt(&record_statement, &[&env, &once.key])
                    .await
                    .map(|row| row.map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, i64>(1)))),
                None => Ok(None),
            }
        };
        let lock_id = lock_key(&env, &subscriber_id);
        let lock = async { tx.execute(&lock_statement, &[&lock_id]).await };
        let read = async { tx.query_opt(&read_statement, &[&env, &subscriber_id]).await };
        let ((), found, _, current) = tokio::try_join!(key_lock, recorded, lock, read)?;
        let live = found.filter(|(_, expires_at)| *expires_at > millis(self.now()));
        if let (Some(once), Some((bytes, _))) = (once, live) {
            // The record of a committed write: its answer again.
            let (fingerprint, _, executed) = rules::replay(&bytes)?;
            if fingerprint != once.fingerprint {
                return Ok(Ended::Refused(Error::IdempotencyKeyReused));
            }
            return Ok(Ended::Executed(executed, false, None));
        }
        // Read under the lock: writes to one document take their times in
        // the order they commit.
        let clocks = Now::of(self.inner.options.clock.as_ref());
        let now = clocks.wall;
        let key = deadline_key(&env, &subscriber_id);
        // The lease as this process measures it (SPEC section 10), then the rules.
        let current = current
            .map(|row| rules::decode_document(row.get::<_, &[u8]>(0)))
            .transpose()?
            .map(|doc| self.inner.deadlines.apply(&key, doc, clocks));
        let seen = current.as_ref().and_then(|doc| doc.lease);
        let decided = rules::decide(
            command,
            current,
            expected,
            tenant,
            now,
            fresh_id,
            self.inner.options.presence_ttl_secs,
        );
        let lease = decided.as_ref().ok().map(|decision| LeaseChange {
            key,
            seen,
            after: decision.document.lease.filter(|_| !decision.removed),
            clocks,
        });
        let (outcome, events, removed) = match decided {
            Ok(Decision {
                document,
                removed,
                events,
            }) => (Ok(document), events, Some(removed)),
            Err(e) if once.is_none() => return Ok(Ended::Refused(e)),
            Err(e) => (Err(e), Vec::new(), None),
        };
        // An outcome that is not recordable (a rejection) comes back as
        // the error: nothing is written.
        let record = match once {
            Some(once) => match rules::record(
                outcome.clone(),
                once.fingerprint,
                now,
                now.saturating_add(ttl),
                once.annotation,
            ) {
                Ok(bytes) => Some((once, bytes)),
                Err(e) => return Ok(Ended::Refused(e)),
            },
            None => None,
        };
        // Sent together: the document's change, the record, the events.
        let change = async {
            match (&outcome, removed) {
                (Ok(_), Some(true)) => tx
                    .execute(&tx.prepare_cached("DELETE FROM subscribers WHERE environment_id = $1 AND subscriber_id = $2").await?,
                        &[&env, &subscriber_id],
                    )
                    .await
                    .map(drop)
                    .map_err(Failed::from),
                (Ok(document), Some(false)) => put(tx, &env, document).await,
                _ => Ok(()),
            }
        };
        let recorded = async {
            match &record {
                Some((once, bytes)) => tx
                    .execute(
                        &tx.prepare_cached(
                            "INSERT INTO idempotency_records (environment_id, key, record, expires_at)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (environment_id, key) DO UPDATE
                            SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at"
                        )
                        .await?,
                        &[&env, &once.key, bytes, &millis(now.saturating_add(ttl))],
                    )
                    .await
                    .map(drop)
                    .map_err(Failed::from),
                None => Ok(()),
            }
        };
        let appended = async {
            if events.is_empty() {
                Ok(())
            } else {
                append(tx, &env, &events).await
            }
        };
        tokio::try_join!(change, recorded, appended)?;
        if !events.is_empty() {
            self.inner
                .options
                .observer
                .events_appended(events.len() as u64);
        }
        let annotation = once
            .map(|once| once.annotation.to_vec())
            .unwrap_or_default();
        Ok(Ended::Executed(
            Executed {
                outcome,
                replayed: false,
                executed_at: now,
                annotation,
            },
            !events.is_empty(),
            lease,
        ))
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

/// A timestamp column back (ms since the epoch).
pub(crate) fn time_of(n: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(n).unwrap_or(0))
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
    tx.execute(&tx.prepare_cached("INSERT INTO subscribers
            (environment_id, subscriber_id, document, version, is_online, last_online_at, lease_deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (environment_id, subscriber_id) DO UPDATE SET
            document = EXCLUDED.document, version = EXCLUDED.version,
            is_online = EXCLUDED.is_online, last_online_at = EXCLUDED.last_online_at,
            lease_deadline = EXCLUDED.lease_deadline").await?,
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

/// Inserts `events` into the outbox (one statement); the sequencer gives
/// them their seq once committed (feed.rs).
pub(crate) async fn append(
    tx: &Transaction<'_>,
    env: &[u8],
    events: &[Appended],
) -> std::result::Result<(), Failed> {
    let column = |f: &dyn Fn(&Appended) -> i64| events.iter().map(f).collect::<Vec<i64>>();
    let subscribers: Vec<&str> = events
        .iter()
        .map(|a| a.event.subscriber_id.as_str())
        .collect();
    let online: Vec<bool> = events.iter().map(|a| a.event.is_online).collect();
    let last_online: Vec<Option<i64>> = events
        .iter()
        .map(|a| a.event.last_online_at.map(millis))
        .collect();
    let causes: Vec<i16> = events
        .iter()
        .map(|a| crate::feed::cause_code(a.event.cause))
        .collect();
    tx.execute(&tx.prepare_cached("INSERT INTO event_outbox
            (environment_id, subscriber_id, is_online, last_online_at, version, at, cause, appended_at)
         SELECT $1, s, o, l, v, a, c, t FROM unnest($2::text[], $3::bool[], $4::bigint[], $5::bigint[], $6::bigint[],
                                 $7::smallint[], $8::bigint[]) WITH ORDINALITY AS e(s, o, l, v, a, c, t, n)
         ORDER BY n").await?,
        &[
            &env,
            &subscribers,
            &online,
            &last_online,
            &column(&|a| i64::try_from(a.event.version.0).unwrap_or(i64::MAX)),
            &column(&|a| millis(a.event.at)),
            &causes,
            &column(&|a| millis(a.appended_at)),
        ],
    )
    .await?;
    Ok(())
}
