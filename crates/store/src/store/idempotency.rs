//! The store's idempotent calls: `execute_once`, `commit_once`, `recorded`,
//! the purge of expired records (the records and their rules are in
//! `crate::idempotency`).

use crate::command::Command;
use crate::error::Result;
use crate::idempotency::{Executed, Idempotency, IdempotencyKey};
use crate::layout;
use crate::precondition::Precondition;
use crate::store::{Durable, Store};
use crate::tenancy::Tenant;
use crate::write::live_record;

impl Store {
    /// Applies a write at most once per idempotency key (SPEC section 6).
    ///
    /// - First use of the key (or after its record expired): executes like
    ///   [`Store::execute`] and records the outcome (the document, or the
    ///   `NotFound`/`VersionConflict`/`AlreadyExists` it executed to); after
    ///   a crash the record and the write are both there or both absent.
    /// - Same key, same request: returns the recorded outcome with
    ///   `replayed: true`; nothing is written. In durable mode it returns
    ///   only once the record is on disk.
    /// - Concurrent calls with one key are serialised: the later ones wait
    ///   and replay; a write never executes twice.
    ///
    /// Keys are scoped by the tenant's environment.
    ///
    /// ```
    /// use subscriber_store::{Command, Config, Idempotency, IdempotencyKey, Store, SubscriberInput};
    ///
    /// let store = Store::open(Config::temporary())?;
    /// let org = store.create_organization("Acme")?;
    /// let tenant = store.create_environment(org.id, "Development")?.tenant();
    /// store.upsert(&tenant, SubscriberInput::new("u1"), None)?;
    ///
    /// let once = Idempotency::new(IdempotencyKey::new("req-1")?);
    /// let online = || Command::SetOnline { subscriber_id: "u1".into(), online: true };
    /// let first = store.execute_once(&tenant, online(), None, &once)?;
    /// let again = store.execute_once(&tenant, online(), None, &once)?;
    /// assert!(!first.replayed && again.replayed);
    /// assert_eq!(first.outcome, again.outcome);
    /// assert_eq!(store.get(&tenant, "u1")?.version.0, 1);
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// Rejections, not recorded: [`Error::InvalidInput`],
    /// [`Error::IdempotencyKeyReused`] (same key, other request; nothing
    /// written). Failures: [`Error::Storage`], [`Error::Corrupt`].
    pub fn execute_once(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: &Idempotency,
    ) -> Result<Executed> {
        let executed = self
            .commit_once(tenant, command, expected, idempotency)?
            .wait()?;
        fail::fail_point!("execute_once::after_durable");
        Ok(executed)
    }

    /// As [`Store::execute_once`], returning once the write (or the replay's
    /// record) is committed in memory: wait for or await the [`Durable`]
    /// before reporting it done. A replay's `Durable` waits for everything
    /// committed before it, so it never reports a write still on its way
    /// to the disk.
    ///
    /// # Errors
    /// As [`Store::execute_once`], for everything but the flush.
    pub fn commit_once(
        &self,
        tenant: &Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: &Idempotency,
    ) -> Result<Durable<Executed>> {
        self.submit(tenant, command, expected, Some(idempotency))
    }

    /// The live (unexpired) outcome recorded for a key, without executing
    /// anything: `None` if the key is unused or expired.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn recorded(&self, tenant: &Tenant, key: &IdempotencyKey) -> Result<Option<Executed>> {
        let record_key = layout::idempotency_record_key(tenant.environment_id(), key.as_str());
        let engine = self.engine()?;
        let result = live_record(&engine, &record_key, self.now());
        Ok(self.noted(&engine, result)?.map(|record| Executed {
            outcome: record.outcome.into_result(),
            replayed: true,
            executed_at: record.executed_at,
            annotation: record.annotation,
        }))
    }

    /// Removes up to `limit` expired idempotency records, oldest expiry
    /// first, and returns how many it removed. Idempotent writes call it
    /// with a small limit, so the records stay bounded without a thread.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn purge_expired(&self, limit: usize) -> Result<usize> {
        let engine = self.engine()?;
        let result = self.writes().purge(&engine, limit);
        self.noted(&engine, result)
    }

    /// Number of idempotency records held, expired or not (O(n): for tests
    /// and operators, not hot paths).
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read.
    pub fn idempotency_record_count(&self) -> Result<usize> {
        Ok(self.engine()?.trees.idempotency.len())
    }
}
