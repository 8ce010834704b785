//! The PostgreSQL backend (SPEC section 12): the store's contract on tables
//! that any number of `subscriberd` processes share. The rules are the
//! store's own ([`subscriber_store::rules`]); what this crate adds is where
//! they run: every write is one database transaction that serialises on
//! the subscriber (an advisory lock), claims its idempotency key in the
//! database, and appends its events under the environment's feed row, so
//! every guarantee holds across processes. Durability is the database's
//! commit.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use subscriber_postgres::{Options, PgBackend};
//!
//! let backend = PgBackend::start(Options::new("postgres://app@db1,db2/presence?target_session_attrs=read-write")).await?;
//! let (env, _) = backend.ensure_environment("Development").await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod error;
mod feed;
mod housekeeping;
mod reads;
pub mod schema;
mod tenancy;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use subscriber_store::{
    Backend, BoxFuture, Clock, Command, ConnectionGuard, Environment, Error, EventPage, Executed,
    Gauges, Idempotency, NoObserver, ObjectId, Observer, OnlinePage, OnlineQuery, Precondition,
    PresenceStats, Result, ServerKey, Subscriber, SystemClock, Tenant, Timestamp,
};

pub use error::StartError;

/// How to run the backend.
#[derive(Clone)]
pub struct Options {
    /// `postgres://...` (several hosts and `target_session_attrs` allowed).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Apply missing migrations at start (else refuse an older schema).
    pub migrate: bool,
    /// How long an idempotency record is kept.
    pub idempotency_ttl: Duration,
    /// The lease an online write without its own TTL takes (0: none).
    pub presence_ttl_secs: u32,
    /// How long events are kept.
    pub event_retention: Duration,
    /// Whether this process expires leases and purges (one process is
    /// enough, any number is safe).
    pub housekeeping: bool,
    /// The clock for every timestamp.
    pub clock: Arc<dyn Clock>,
    /// Told of what the backend does (for metrics).
    pub observer: Arc<dyn Observer>,
    /// The server key (SPEC 13), the same on every server of the database:
    /// API keys are kept sealed under it for the Inbox's HMAC check.
    /// `None`: keys are kept as digests only and no hash matches.
    pub server_key: Option<ServerKey>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("migrate", &self.migrate)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The defaults (pool of 16, migrate, records 24 h, no lease TTL,
    /// events 24 h, housekeeping on) for `url`.
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            pool_size: 16,
            migrate: true,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            presence_ttl_secs: 0,
            event_retention: Duration::from_secs(24 * 3600),
            housekeeping: true,
            clock: Arc::new(SystemClock),
            observer: Arc::new(NoObserver),
            server_key: None,
        }
    }
}

/// A URL with its password hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_info = &url[scheme + 3..at];
            match user_info.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &user_info[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The backend: a pool of connections and this process's housekeeping.
#[derive(Clone)]
pub struct PgBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    options: Options,
    feeds: feed::Notices,
    /// Woken when this process commits events.
    pending: tokio::sync::Notify,
    keys: reads::KeyCache,
    /// The leases written through this process, on its monotonic clock
    /// (SPEC section 10; the store's deadlines.rs).
    deadlines: subscriber_store::rules::Deadlines,
    started: AtomicBool,
    gauges: parking_lot::Mutex<Gauges>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// The pool for `url`, checked by one connection.
async fn connect(url: &str, size: usize) -> std::result::Result<Pool, StartError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| StartError::BadUrl(e.to_string()))?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StartError::BadUrl(e.to_string()))
}

fn hosts_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// Applies the migrations `url`'s database lacks and returns them.
///
/// # Errors
/// [`StartError`].
pub async fn migrate(url: &str) -> std::result::Result<Vec<i32>, StartError> {
    let pool = connect(url, 1).await?;
    let mut client = pool.get().await.map_err(|e| unreachable(url, &e))?;
    schema::migrate(&mut client).await
}

fn unreachable(url: &str, e: &deadpool_postgres::PoolError) -> StartError {
    StartError::Unreachable {
        hosts: hosts_of(url),
        cause: pool_error(e),
    }
}

/// What a pool that could not hand out a connection says.
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => error::describe(e),
        other => other.to_string(),
    }
}

impl PgBackend {
    /// Connects, checks (or applies) the schema and starts this process's
    /// housekeeping: lease expiry, record and event purges, the feed's
    /// notices, the gauges. Must run on a tokio runtime.
    ///
    /// # Errors
    /// [`StartError`], one line each.
    pub async fn start(options: Options) -> std::result::Result<PgBackend, StartError> {
        let pool = connect(&options.url, options.pool_size).await?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| unreachable(&options.url, &e))?;
            if options.migrate {
                schema::migrate(&mut client).await?;
            } else {
                let found = schema::version(&client).await?;
                if found > schema::VERSION {
                    return Err(StartError::UnknownSchema {
                        found,
                        known: schema::VERSION,
                    });
                }
                if found < schema::VERSION {
                    return Err(StartError::Outdated {
                        found,
                        known: schema::VERSION,
                    });
                }
            }
        }
        let backend = PgBackend {
            inner: Arc::new(Inner {
                pool,
                feeds: feed::Notices::default(),
                pending: tokio::sync::Notify::new(),
                keys: reads::KeyCache::default(),
                deadlines: subscriber_store::rules::Deadlines::default(),
                started: AtomicBool::new(!options.housekeeping),
                gauges: parking_lot::Mutex::new(Gauges::default()),
                tasks: parking_lot::Mutex::new(Vec::new()),
                options,
            }),
        };
        let mut tasks = vec![
            tokio::spawn(feed::watch(backend.clone())),
            tokio::spawn(feed::sequencer(backend.clone())),
        ];
        tasks.push(tokio::spawn(housekeeping::gauges(backend.clone())));
        if backend.inner.options.housekeeping {
            tasks.push(tokio::spawn(housekeeping::run(backend.clone())));
        }
        *backend.inner.tasks.lock() = tasks;
        Ok(backend)
    }

    /// Stops this process's housekeeping tasks.
    pub fn shutdown(&self) {
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// The pool's size, connections in use and requests waiting for one.
    pub fn pool_status(&self) -> (u64, u64, u64) {
        let status = self.inner.pool.status();
        let in_use = status.size.saturating_sub(status.available);
        (status.max_size as u64, in_use as u64, status.waiting as u64)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(|e| {
            self.inner.options.observer.storage_error();
            subscriber_store::Error::Storage(format!("database unreachable: {}", pool_error(&e)))
        })
    }

    fn now(&self) -> Timestamp {
        self.inner.options.clock.now()
    }

    /// A storage error noted for the metrics.
    fn failed(&self, e: &tokio_postgres::Error) -> subscriber_store::Error {
        self.inner.options.observer.storage_error();
        error::storage(e)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

impl Backend for PgBackend {
    fn now(&self) -> Timestamp {
        PgBackend::now(self)
    }

    fn resolve_key<'a>(&'a self, secret: &'a str) -> BoxFuture<'a, Result<Tenant>> {
        Box::pin(self.resolve(secret))
    }

    fn environment<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<Environment>> {
        Box::pin(PgBackend::environment(self, tenant))
    }

    fn environment_by_identifier<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Environment>> {
        Box::pin(PgBackend::environment_by_identifier(self, identifier))
    }

    fn subscriber_hash_matches<'a>(
        &'a self,
        environment: ObjectId,
        subscriber_id: &'a str,
        hash: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(PgBackend::subscriber_hash_matches(
            self,
            environment,
            subscriber_id,
            hash,
        ))
    }

    fn get<'a>(
        &'a self,
        tenant: &'a Tenant,
        subscriber_id: &'a str,
    ) -> BoxFuture<'a, Result<Subscriber>> {
        Box::pin(self.read(tenant, subscriber_id))
    }

    fn submit<'a>(
        &'a self,
        tenant: &'a Tenant,
        command: Command,
        expected: Option<Precondition>,
        idempotency: Option<&'a Idempotency>,
    ) -> BoxFuture<'a, Result<Executed>> {
        Box::pin(self.write(tenant, command, expected, idempotency))
    }

    fn events<'a>(
        &'a self,
        tenant: &'a Tenant,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'a, Result<EventPage>> {
        Box::pin(self.page(tenant, after, limit))
    }

    fn last_event<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.newest(tenant))
    }

    fn event_after(&self, tenant: &Tenant, after: u64) -> Result<BoxFuture<'static, ()>> {
        Ok(Box::pin(
            self.inner.feeds.after(tenant.environment_id(), after),
        ))
    }

    fn online<'a>(
        &'a self,
        tenant: &'a Tenant,
        query: &'a OnlineQuery,
    ) -> BoxFuture<'a, Result<OnlinePage>> {
        Box::pin(self.online_page(tenant, query))
    }

    fn presence_stats<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<PresenceStats>> {
        Box::pin(self.stats(tenant))
    }

    fn check_writable(&self) -> Result<()> {
        let backend = self.clone();
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| subscriber_store::Error::Storage(format!("no runtime: {e}")))?;
        handle.block_on(async move { backend.writable().await })
    }

    fn started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    fn gauges(&self) -> Gauges {
        let mut gauges = *self.inner.gauges.lock();
        let (_, in_use, waiting) = self.pool_status();
        gauges.pool_in_use = Some(in_use);
        gauges.pool_waiting = Some(waiting);
        gauges
    }

    fn connect<'a>(
        &'a self,
        _tenant: &'a Tenant,
        _subscriber_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ConnectionGuard>>> {
        // Connection presence across processes needs a count every server
        // of the database shares (with each server's lease on its part of
        // it); not built yet: sockets are refused at the handshake.
        Box::pin(std::future::ready(Err(Error::Unsupported(
            "connection presence",
        ))))
    }

    fn close(&self) -> Result<()> {
        // Every acknowledged write is a committed transaction already.
        self.shutdown();
        Ok(())
    }
}

impl From<PgBackend> for Arc<dyn Backend> {
    fn from(backend: PgBackend) -> Arc<dyn Backend> {
        Arc::new(backend)
    }
}
