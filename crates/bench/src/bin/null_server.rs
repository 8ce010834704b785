//! The HTTP facade's own cost: the project's full HTTP server
//! (`subscriber_http::serve`: routing, auth header, extractors, body
//! reading, the wire JSON, metrics off) over a backend that does nothing:
//! every key resolves to one tenant, every write and read answers a fixed
//! document at once, nothing is stored or synced. Beside the
//! fixed-response server it splits a request's cost between hyper and the
//! facade; beside `subscriberd serve`, between the facade and the store.
//!
//! It runs on subscriberd's allocator (mimalloc).
//!
//! `null_server ADDR` prints `listening on http://ADDR` and serves until killed.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use subscriber_store::{
    Backend, BoxFuture, Command, Config, Entity, Environment, Error, EventPage, Executed, Gauges,
    Idempotency, ObjectId, OnlinePage, OnlineQuery, Precondition, PresenceStats, Result, Store,
    Subscriber, SubscriberInput, Tenant, Timestamp,
};

/// subscriberd's allocator, so null -> subscriberd is the store alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug)]
struct NullBackend {
    tenant: Tenant,
    /// What every call answers (its id replaced by the one asked for).
    document: Subscriber,
}

impl NullBackend {
    fn answer(&self, subscriber_id: &str) -> Subscriber {
        let mut doc = self.document.clone();
        doc.subscriber_id = subscriber_id.to_owned();
        doc
    }
}

impl Backend for NullBackend {
    fn now(&self) -> Timestamp {
        subscriber_store::Clock::now(&subscriber_store::SystemClock)
    }

    fn resolve_key<'a>(&'a self, _secret: &'a str) -> BoxFuture<'a, Result<Tenant>> {
        Box::pin(std::future::ready(Ok(self.tenant)))
    }

    // The Inbox routes are not measured here: nothing is known.
    fn environment<'a>(&'a self, _: &'a Tenant) -> BoxFuture<'a, Result<Environment>> {
        Box::pin(std::future::ready(Err(Error::NotFound(
            Entity::Environment,
        ))))
    }

    fn environment_by_identifier<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Environment>> {
        Box::pin(std::future::ready(Err(Error::NotFound(
            Entity::Environment,
        ))))
    }

    fn subscriber_hash_matches<'a>(
        &'a self,
        _: ObjectId,
        _: &'a str,
        _: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(std::future::ready(Ok(false)))
    }

    fn get<'a>(&'a self, _: &'a Tenant, id: &'a str) -> BoxFuture<'a, Result<Subscriber>> {
        Box::pin(std::future::ready(Ok(self.answer(id))))
    }

    fn submit<'a>(
        &'a self,
        _: &'a Tenant,
        command: Command,
        _: Option<Precondition>,
        _: Option<&'a Idempotency>,
    ) -> BoxFuture<'a, Result<Executed>> {
        let doc = self.answer(subscriber_store::rules::subscriber_id(&command));
        Box::pin(std::future::ready(Ok(Executed {
            outcome: Ok(doc),
            replayed: false,
            executed_at: self.now(),
            annotation: Vec::new(),
        })))
    }

    fn events<'a>(
        &'a self,
        _: &'a Tenant,
        after: Option<u64>,
        _: u32,
    ) -> BoxFuture<'a, Result<EventPage>> {
        Box::pin(std::future::ready(Ok(EventPage {
            events: Vec::new(),
            next: after.unwrap_or(0),
        })))
    }

    fn last_event<'a>(&'a self, _: &'a Tenant) -> BoxFuture<'a, Result<u64>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn event_after(&self, _: &Tenant, _: u64) -> Result<BoxFuture<'static, ()>> {
        Ok(Box::pin(std::future::pending()))
    }

    fn online<'a>(
        &'a self,
        _: &'a Tenant,
        _: &'a OnlineQuery,
    ) -> BoxFuture<'a, Result<OnlinePage>> {
        Box::pin(std::future::ready(Ok(OnlinePage {
            subscribers: Vec::new(),
            next: None,
        })))
    }

    fn presence_stats<'a>(&'a self, _: &'a Tenant) -> BoxFuture<'a, Result<PresenceStats>> {
        Box::pin(std::future::ready(Ok(PresenceStats {
            online: 0,
            subscribers: 0,
        })))
    }

    fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    fn started(&self) -> bool {
        true
    }

    fn gauges(&self) -> Gauges {
        Gauges::default()
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    // A real document to answer with, made by a temporary store once.
    let store = Store::open(Config::temporary()).unwrap();
    let tenant = store.ensure_environment("Development").unwrap().0.tenant();
    let mut input = SubscriberInput::new("subscriber-0000001");
    input.first_name = Some(Some("Ada".into()));
    input.last_name = Some(Some("Lovelace".into()));
    input.email = Some(Some("user1@example.com".into()));
    store.upsert(&tenant, input, None).unwrap();
    let document = store
        .set_online(&tenant, "subscriber-0000001", true, None)
        .unwrap();
    drop(store);
    let backend: Arc<dyn Backend> = Arc::new(NullBackend { tenant, document });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        let config = subscriber_http::ServerConfig::default();
        subscriber_http::serve(listener, backend, config, std::future::pending())
            .await
            .unwrap();
    });
}
