//! Test helpers: a server on port 0 over a temporary store with two
//! environments (A and B) and a key for each; requests go through testkit's
//! raw HTTP/1.1 client.
//!
//! With `SUBSCRIBERD_TEST_DATABASE_URL` set (scripts/test sets it for a
//! second run of the contract tests), [`TestServer::start`] and
//! [`TestServer::with_config`] serve a fresh database on that PostgreSQL
//! server instead; tests that read the sled store directly
//! ([`TestServer::store`], [`TestServer::with_store`]) are sled's only.
#![allow(dead_code)]

use std::net::SocketAddr;

use subscriber_http::{InboxConfig, ServerConfig, TokenKey, serve};
use subscriber_store::{Config, Durability, ServerKey, Store, Tenant};
pub use testkit::Reply;

/// The server key every test server is given.
pub fn server_key() -> ServerKey {
    ServerKey::from_bytes([7; 32])
}

/// The Inbox token key of [`server_key`].
pub fn token_key() -> TokenKey {
    TokenKey::new(&server_key())
}

/// The Inbox settings of `subscriberd serve` by default, with the test key.
pub fn inbox() -> InboxConfig {
    InboxConfig {
        token_key: Some(token_key()),
        ..InboxConfig::default()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The served sled store (`None` on PostgreSQL).
    sled: Option<Store>,
    pub key_a: String,
    pub key_b: String,
    pub tenant_a: Tenant,
    pub tenant_b: Tenant,
    /// The application identifiers of environments A and B.
    pub identifier_a: String,
    pub identifier_b: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server as `subscriberd serve` runs it by default: metrics on.
    pub fn start() -> TestServer {
        let metrics = subscriber_http::Metrics::new().expect("metrics");
        TestServer::with_config(ServerConfig {
            metrics: Some(std::sync::Arc::new(metrics)),
            inbox: inbox(),
            ..ServerConfig::default()
        })
    }

    pub fn with_config(config: ServerConfig) -> TestServer {
        match std::env::var("SUBSCRIBERD_TEST_DATABASE_URL") {
            Ok(url) => TestServer::on_postgres(config, &url),
            Err(_) => TestServer::with_store(config, |c| c),
        }
    }

    /// The served sled store, for tests that check it directly.
    pub fn store(&self) -> &Store {
        self.sled
            .as_ref()
            .expect("this test reads the sled store directly: it runs on the sled backend only")
    }

    /// A server on a new database of the PostgreSQL server at `url`.
    fn on_postgres(config: ServerConfig, url: &str) -> TestServer {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let runtime = runtime();
        let name = format!(
            "contract_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (backend, env_a, env_b, key_a, key_b) = runtime.block_on(async {
            let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to SUBSCRIBERD_TEST_DATABASE_URL");
            tokio::spawn(connection);
            for statement in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("CREATE DATABASE {name}"),
            ] {
                admin
                    .batch_execute(&statement)
                    .await
                    .expect("create the test database");
            }
            let db_url = match url.rsplit_once('/') {
                Some((server, _)) => format!("{server}/{name}"),
                None => panic!("SUBSCRIBERD_TEST_DATABASE_URL needs a /database"),
            };
            let mut options = subscriber_postgres::Options::new(db_url);
            options.pool_size = 8;
            options.server_key = Some(server_key());
            if let Some(metrics) = &config.metrics {
                options.observer = std::sync::Arc::clone(metrics)
                    as std::sync::Arc<dyn subscriber_store::Observer>;
            }
            let backend = subscriber_postgres::PgBackend::start(options)
                .await
                .expect("start the postgres backend");
            let org = backend.create_organization("Acme").await.expect("org");
            let env_a = backend
                .create_environment(org.id, "A")
                .await
                .expect("env A");
            let env_b = backend
                .create_environment(org.id, "B")
                .await
                .expect("env B");
            let key_a = backend.issue_key(&env_a).await.expect("key A").secret;
            let key_b = backend.issue_key(&env_b).await.expect("key B").secret;
            (backend, env_a, env_b, key_a, key_b)
        });
        let (addr, tx, thread) = serve_on(runtime, backend.into(), config);
        TestServer {
            addr,
            sled: None,
            key_a,
            key_b,
            tenant_a: env_a.tenant(),
            tenant_b: env_b.tenant(),
            identifier_a: env_a.identifier,
            identifier_b: env_b.identifier,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A server whose store is opened with `store_config` applied to the
    /// default (relaxed, on a temporary directory): a manual clock, a
    /// presence TTL.
    pub fn with_store(
        config: ServerConfig,
        store_config: impl FnOnce(Config) -> Config,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(store_config(
            Config::new(dir.path())
                .durability(Durability::Relaxed)
                .server_key(server_key()),
        ))
        .expect("open store");
        let org = store.create_organization("Acme").expect("org");
        let env_a = store.create_environment(org.id, "A").expect("env A");
        let env_b = store.create_environment(org.id, "B").expect("env B");
        let key_a = store.issue_key(env_a.id).expect("key A").secret;
        let key_b = store.issue_key(env_b.id).expect("key B").secret;
        let (addr, tx, thread) = serve_on(runtime(), store.clone().into(), config);
        TestServer {
            addr,
            sled: Some(store),
            key_a,
            key_b,
            tenant_a: env_a.tenant(),
            tenant_b: env_b.tenant(),
            identifier_a: env_a.identifier,
            identifier_b: env_b.identifier,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The sled store's data directory (a placeholder on PostgreSQL).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn auth_a(&self) -> String {
        format!("ApiKey {}", self.key_a)
    }

    pub fn auth_b(&self) -> String {
        format!("ApiKey {}", self.key_b)
    }

    /// A request with key A and a JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = self.auth_a();
        self.send(
            method,
            path,
            &[("Authorization", &auth)],
            body.map(str::as_bytes),
        )
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        testkit::send(self.addr, method, path, headers, body)
    }

    pub fn send_raw(&self, bytes: &[u8]) -> Reply {
        testkit::send_raw(self.addr, bytes)
    }

    /// Shuts the server down as a signal would and waits for `serve` to
    /// return; how long that took.
    pub fn shut_down(&mut self) -> std::time::Duration {
        let started = std::time::Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread");
        }
        started.elapsed()
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves `backend` on a new port from a thread of its own until the
/// sender is used or dropped.
pub fn serve_on(
    runtime: tokio::runtime::Runtime,
    backend: std::sync::Arc<dyn subscriber_store::Backend>,
    config: ServerConfig,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime
            .block_on(serve(listener, backend, config, async {
                let _ = rx.await;
            }))
            .expect("serve");
    });
    (addr, tx, thread)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
