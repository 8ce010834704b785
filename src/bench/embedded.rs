//! The embedded target: the store opened in this process, called as the
//! HTTP facade calls it (`Store::submit`, then awaiting the `Durable`, so a
//! durable write parks no thread), without the network. Each client is one
//! concurrent caller.

use std::sync::Arc;

use subscriber_store::{
    Command, Config, Durability, Error, Idempotency, IdempotencyKey, Store, SubscriberInput, Tenant,
};

use super::plan::{Op, Plan, Target};
use super::{Call, Client, Failure, Outcome};
use crate::cli::DurabilityArg;

#[derive(Debug)]
struct Shared {
    store: Store,
    tenant: Tenant,
    ids: Vec<String>,
    /// The replay workload's key, always with an online write to the first subscriber.
    replay: Idempotency,
    /// The lease a heartbeat asks for.
    ttl_seconds: u32,
}

/// One concurrent caller.
#[derive(Debug)]
pub struct EmbeddedClient {
    shared: Arc<Shared>,
    /// The last fresh idempotency key, its buffer reused.
    key: String,
}

/// Opens the store on `--data` and makes a client per `--connections`.
pub fn open(plan: &Plan) -> Result<Vec<EmbeddedClient>, String> {
    let Target::Embedded {
        data,
        durability,
        environment,
    } = &plan.target
    else {
        return Err("not an embedded run".into());
    };
    let durability = match durability {
        DurabilityArg::Durable => Durability::Durable,
        DurabilityArg::Relaxed => Durability::Relaxed,
    };
    let store = Store::open(Config::new(data).durability(durability)).map_err(|e| {
        let held = e.to_string().contains("lock");
        format!(
            "cannot open data directory {}: {e}{}",
            data.display(),
            if held {
                " (a running server holds it: measure that server with --url instead)"
            } else {
                ""
            }
        )
    })?;
    let (env, _) = store
        .ensure_environment(environment)
        .map_err(|e| format!("cannot create environment {environment:?}: {e}"))?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let replay = IdempotencyKey::new(format!("bench-{run:x}-replay"))
        .map_err(|e| format!("cannot make the replay key: {e}"))?;
    let shared = Arc::new(Shared {
        store,
        tenant: env.tenant(),
        ids: plan.subscriber_ids(),
        replay: Idempotency::new(replay),
        ttl_seconds: plan.ttl_seconds,
    });
    Ok((0..plan.connections)
        .map(|_| EmbeddedClient {
            shared: Arc::clone(&shared),
            key: String::new(),
        })
        .collect())
}

/// The store's errors, by kind (the summary's "status" for the embedded target).
fn failure(error: &Error) -> Failure {
    Failure::Store(match error {
        Error::NotFound(_) => "not found",
        Error::VersionConflict { .. } => "version conflict",
        Error::AlreadyExists { .. } => "already exists",
        Error::InvalidInput { .. } => "invalid input",
        Error::InvalidIdempotencyKey(_) => "invalid idempotency key",
        Error::IdempotencyKeyReused => "idempotency key reused",
        Error::Corrupt(_) => "corrupt",
        Error::Storage(_) => "storage failure",
        _ => "other",
    })
}

impl EmbeddedClient {
    /// Any write, as the HTTP facade makes it: committed in memory, then
    /// awaited until durable.
    async fn write(&self, command: Command, idempotency: Option<&Idempotency>) -> Outcome {
        let s = &*self.shared;
        let executed = match s.store.submit(&s.tenant, command, None, idempotency) {
            Ok(durable) => durable.await,
            Err(e) => Err(e),
        };
        match executed {
            Ok(executed) => match executed.outcome {
                Ok(_) => Outcome::Ok {
                    replayed: executed.replayed,
                },
                Err(e) => Outcome::Failed(failure(&e)),
            },
            Err(e) => Outcome::Failed(failure(&e)),
        }
    }
}

impl Client for EmbeddedClient {
    async fn call(&mut self, call: Call) -> Outcome {
        let s = Arc::clone(&self.shared);
        let set_online = |n: usize, online: bool| Command::SetOnline {
            subscriber_id: s.ids[n].clone(),
            online,
        };
        match call.op {
            Op::Presence => {
                self.write(set_online(call.subscriber, call.online), None)
                    .await
            }
            Op::PresenceKeyed => {
                super::fresh_key(&mut self.key, call.random);
                match IdempotencyKey::new(self.key.as_str()) {
                    Ok(key) => {
                        let once = Idempotency::new(key);
                        self.write(set_online(call.subscriber, call.online), Some(&once))
                            .await
                    }
                    Err(e) => Outcome::Failed(failure(&e)),
                }
            }
            Op::Replay => self.write(set_online(0, true), Some(&s.replay)).await,
            // The online write with a lease of `--ttl-seconds`, as the
            // HTTP target's `ttlSeconds`.
            Op::Heartbeat => {
                let command = Command::Heartbeat {
                    subscriber_id: s.ids[call.subscriber].clone(),
                    ttl_seconds: s.ttl_seconds,
                };
                self.write(command, None).await
            }
            Op::Read => match s.store.get(&s.tenant, &s.ids[call.subscriber]) {
                Ok(_) => Outcome::Ok { replayed: false },
                Err(e) => Outcome::Failed(failure(&e)),
            },
        }
    }

    async fn create(&mut self, n: usize) -> Result<bool, String> {
        let s = &*self.shared;
        let id = &s.ids[n];
        let command = Command::Upsert {
            input: SubscriberInput::new(id.clone()),
            fail_if_exists: true,
        };
        let written = match s.store.submit(&s.tenant, command, None, None) {
            Ok(durable) => durable.await.and_then(|executed| executed.outcome),
            Err(e) => Err(e),
        };
        match written {
            Ok(_) => Ok(true),
            Err(Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(format!("cannot create subscriber {id}: {e}")),
        }
    }

    async fn delete(&mut self, n: usize) -> Result<bool, String> {
        let s = &*self.shared;
        let id = &s.ids[n];
        let command = Command::Delete {
            subscriber_id: id.clone(),
        };
        let deleted = match s.store.submit(&s.tenant, command, None, None) {
            Ok(durable) => durable.await.and_then(|executed| executed.outcome),
            Err(e) => Err(e),
        };
        match deleted {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(format!("cannot delete subscriber {id}: {e}")),
        }
    }

    fn flush_rounds(&self) -> Option<u64> {
        Some(self.shared.store.flush_rounds())
    }

    fn close(&self) -> Result<(), String> {
        self.shared
            .store
            .flush()
            .map_err(|e| format!("cannot flush the store: {e}"))
    }
}
