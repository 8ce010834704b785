//! `subscriberd serve`: open the store, make sure the default environment
//! and a key exist, serve HTTP and the admin socket until SIGINT/SIGTERM,
//! then drain and flush.

use std::sync::Arc;
use std::time::Duration;

use subscriber_http::{InboxConfig, Metrics, ServerConfig, TokenKey};
use subscriber_postgres::{Options as PgOptions, PgBackend};
use subscriber_store::{Backend, Config, Durability, Observer, Store};

use crate::cli::{BackendArg, DurabilityArg, MigrateArgs, ServeArgs, Switch};
use crate::{admin, limits, server_key};

pub fn run(args: ServeArgs) -> Result<(), String> {
    // Log lines gather in a buffer flushed every 100 ms (log.rs), so a
    // request neither waits for stderr nor wakes a thread; `_log_flusher`
    // writes out what is left when `run` returns.
    let (writer, _log_flusher) = crate::log::buffered_stderr();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // Before anything opens files: sled, the runtime, the sockets.
    let nofile = limits::raise_nofile_limit();

    let durability = match args.durability {
        DurabilityArg::Durable => Durability::Durable,
        DurabilityArg::Relaxed => Durability::Relaxed,
    };
    let metrics = match args.metrics {
        Switch::On => Some(Arc::new(Metrics::new()?)),
        Switch::Off => None,
    };
    // The server key: given, or for sled the file beside the data
    // directory (created on first start); PostgreSQL servers share one, so
    // there it is never made up here.
    let beside_data = (args.backend == BackendArg::Sled).then_some(args.data.as_path());
    let server_key = server_key::load(&args.server_key, beside_data)?;
    if let Some(path) = server_key.as_ref().and_then(|k| k.created.as_ref()) {
        tracing::info!("{}", server_key::created_message(path));
    }
    let server_key = server_key.map(|loaded| loaded.key);
    let sealed = server_key.is_some();
    if server_key.is_none() {
        tracing::warn!(
            "no server key (--server-key-file or SUBSCRIBERD_SERVER_KEY): Inbox sessions are off and API keys are kept as digests only; give every server of the database the same key"
        );
    }
    let mut store_config = Config::new(&args.data)
        .durability(durability)
        .flush_interval(Duration::from_millis(args.flush_interval_ms))
        .idempotency_ttl(Duration::from_secs(args.idempotency_ttl_secs))
        .presence_ttl_secs(args.presence_ttl_secs)
        .presence_feed(args.presence_feed == Switch::On)
        .event_retention(Duration::from_secs(args.event_retention_secs))
        .connection_lease_secs(args.connection_lease_secs)
        .disconnect_grace(Duration::from_secs(args.disconnect_grace_secs));
    if let Some(metrics) = &metrics {
        store_config = store_config.observer(Arc::clone(metrics) as Arc<dyn Observer>);
    }
    if let Some(key) = &server_key {
        store_config = store_config.server_key(key.clone());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        body_read_timeout: Duration::from_secs(args.body_timeout_secs),
        max_connections: args.max_connections,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        drain_delay: Duration::from_secs(args.drain_delay_secs),
        metrics: metrics.clone(),
        metrics_route: args.metrics_listen.is_none(),
        inbox: InboxConfig {
            token_key: server_key.as_ref().map(TokenKey::new),
            hmac: args.inbox_hmac == Switch::On,
            token_ttl: Duration::from_secs(args.inbox_token_ttl_secs),
        },
        ..ServerConfig::default()
    };
    let backend = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        // Installed before anything can take long: a signal while the
        // store opens stops the server as soon as it is up.
        let shutdown = shutdown_signal()?;
        let metrics_listener = match args.metrics_listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("cannot listen for metrics on {at}: {e}"))?,
            ),
            None => None,
        };
        let (backend, admin, env) = match args.backend {
            BackendArg::Sled => {
                // Opening recovers the journal and the feed and counts the
                // subscribers: the port answers 503 meanwhile (GET /ready too).
                tracing::info!(data = %args.data.display(), "starting on http://{addr}: opening the store");
                let opening = tokio::task::spawn_blocking(move || Store::open(store_config));
                let store = subscriber_http::answer_starting(&listener, opening)
                    .await
                    .map_err(|e| format!("cannot open the store: {e}"))?
                    .map_err(|e| format!("cannot open data directory {}: {e}", args.data.display()))?;
                let env = provision(&store, &args, sealed)?;
                let admin_path = admin::socket_path(&args.data);
                let admin_listener = admin::bind(&args.data)
                    .map_err(|e| format!("cannot create {}: {e}", admin_path.display()))?;
                let admin_task = tokio::spawn(admin::serve(admin_listener, store.clone()));
                (Arc::new(store) as Arc<dyn Backend>, Some((admin_task, admin_path)), env)
            }
            BackendArg::Postgres => {
                let backend =
                    start_postgres(&args, &listener, addr, metrics.as_ref(), server_key.clone())
                        .await?;
                let env = provision_postgres(&backend, &args, sealed).await?;
                (Arc::new(backend) as Arc<dyn Backend>, None, env)
            }
        };
        // Everything the server keeps open is open now: what is left under
        // the limit, less a reserve, is what connections may use.
        let config = ServerConfig {
            max_connections: limits::fit_connections(
                config.max_connections,
                nofile,
                limits::open_descriptors().unwrap_or(0),
            ),
            ..config
        };
        let metrics_task = match (metrics_listener, &metrics) {
            (Some(listener), Some(metrics)) => {
                let at = listener
                    .local_addr()
                    .map_err(|e| format!("cannot read the metrics address: {e}"))?;
                tracing::info!("metrics on http://{at}/metrics");
                Some(tokio::spawn(subscriber_http::serve_metrics(
                    listener,
                    Arc::clone(&backend),
                    Arc::clone(metrics),
                    std::future::pending(),
                )))
            }
            _ => None,
        };
        tracing::info!(
            backend = ?args.backend,
            data = %args.data.display(),
            durability = ?args.durability,
            max_connections = config.max_connections,
            presence_ttl_secs = args.presence_ttl_secs,
            presence_feed = ?args.presence_feed,
            event_retention_secs = args.event_retention_secs,
            metrics = ?args.metrics,
            environment = %env.name,
            application_identifier = %env.identifier,
            inbox_hmac = ?args.inbox_hmac,
            connection_lease_secs = args.connection_lease_secs,
            disconnect_grace_secs = args.disconnect_grace_secs,
            "listening on http://{addr}"
        );
        let served = subscriber_http::serve(listener, Arc::clone(&backend), config, shutdown).await;
        if let Some((task, path)) = admin {
            task.abort();
            let _ = std::fs::remove_file(&path);
        }
        if let Some(task) = metrics_task {
            task.abort();
        }
        served.map_err(|e| format!("server failed: {e}"))?;
        Ok::<_, String>(backend)
    })?;
    backend
        .close()
        .map_err(|e| format!("final flush failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// `subscriberd migrate`: the schema brought up to this build's version.
pub fn migrate(args: &MigrateArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let applied = runtime
        .block_on(subscriber_postgres::migrate(&args.database_url))
        .map_err(|e| e.to_string())?;
    match applied.as_slice() {
        [] => println!(
            "The schema is up to date (version {}).",
            subscriber_postgres::schema::VERSION
        ),
        versions => println!(
            "Applied migrations {versions:?}; the schema is at version {}.",
            subscriber_postgres::schema::VERSION
        ),
    }
    Ok(())
}

/// Connects to PostgreSQL (the port answers 503 meanwhile) with the
/// serve flags that apply to it.
async fn start_postgres(
    args: &ServeArgs,
    listener: &tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    metrics: Option<&Arc<Metrics>>,
    server_key: Option<subscriber_store::ServerKey>,
) -> Result<PgBackend, String> {
    let Some(url) = args.database_url.clone() else {
        return Err(
            "--backend postgres needs --database-url (or SUBSCRIBERD_DATABASE_URL)".to_owned(),
        );
    };
    if args.presence_feed == Switch::Off {
        return Err("--presence-feed off is not available with --backend postgres".to_owned());
    }
    if args.durability == DurabilityArg::Relaxed {
        return Err("--durability relaxed is not available with --backend postgres: durability is the database's commit (synchronous_commit)".to_owned());
    }
    let mut options = PgOptions::new(url);
    options.pool_size = usize::try_from(args.pool_size).unwrap_or(16);
    options.migrate = args.migrate == Switch::On;
    options.idempotency_ttl = Duration::from_secs(args.idempotency_ttl_secs);
    options.presence_ttl_secs = args.presence_ttl_secs;
    options.event_retention = Duration::from_secs(args.event_retention_secs);
    options.server_key = server_key;
    if let Some(metrics) = metrics {
        options.observer = Arc::clone(metrics) as Arc<dyn Observer>;
    }
    tracing::info!(database = %subscriber_postgres::redact(&options.url), "starting on http://{addr}: connecting to PostgreSQL");
    subscriber_http::answer_starting(listener, PgBackend::start(options))
        .await
        .map_err(|e| e.to_string())
}

/// The default environment and a key, in the database (as [`provision`]).
async fn provision_postgres(
    backend: &PgBackend,
    args: &ServeArgs,
    sealed: bool,
) -> Result<subscriber_store::Environment, String> {
    let (env, _) = backend
        .ensure_environment(&args.environment)
        .await
        .map_err(|e| format!("cannot create environment {:?}: {e}", args.environment))?;
    if let Some(secret) = &args.api_key {
        backend
            .add_key(&env, secret)
            .await
            .map_err(|e| format!("cannot provision the given API key: {e}"))?;
        return Ok(env);
    }
    if backend
        .key_count()
        .await
        .map_err(|e| format!("cannot count keys: {e}"))?
        > 0
    {
        return Ok(env);
    }
    let key = backend
        .issue_key(&env)
        .await
        .map_err(|e| format!("cannot issue an API key: {e}"))?;
    println!(
        "Created the {name} environment and an API key in the database. It is shown only now; the database keeps its SHA-256 digest{sealed}.\n\n    {secret}\n\nThe environment's application identifier (the Inbox's applicationIdentifier): {identifier}\n",
        name = env.name,
        secret = key.secret,
        identifier = env.identifier,
        sealed = sealed_note(sealed),
    );
    Ok(env)
}

/// How the first-start message says what is kept of the key.
fn sealed_note(sealed: bool) -> &'static str {
    if sealed {
        " and, for Inbox HMAC checks, the key sealed under the server key (which is not stored with the data)"
    } else {
        ""
    }
}

/// The default environment, and a key: the one given, or on first start a
/// new one printed once (with the environment's application identifier).
fn provision(
    store: &Store,
    args: &ServeArgs,
    sealed: bool,
) -> Result<subscriber_store::Environment, String> {
    let (env, _) = store
        .ensure_environment(&args.environment)
        .map_err(|e| format!("cannot create environment {:?}: {e}", args.environment))?;
    if let Some(secret) = &args.api_key {
        store
            .add_key(env.id, secret)
            .map_err(|e| format!("cannot provision the given API key: {e}"))?;
        return Ok(env);
    }
    let has_keys = !store
        .keys(None)
        .map_err(|e| format!("cannot list keys: {e}"))?
        .is_empty();
    if has_keys {
        return Ok(env);
    }
    let key = store
        .issue_key(env.id)
        .map_err(|e| format!("cannot issue an API key: {e}"))?;
    let port = args.listen.port();
    println!(
        "Created the {name} environment and an API key. It is shown only now; the store keeps its SHA-256 digest{sealed}.\n\n    {secret}\n\nThe environment's application identifier (the Inbox's applicationIdentifier): {identifier}\n\nTry it:\n\n    curl -X POST http://localhost:{port}/v1/subscribers \\\n      -H 'Authorization: ApiKey {secret}' -H 'Content-Type: application/json' \\\n      -d '{{\"subscriberId\": \"user-1\"}}'\n    curl -X PATCH http://localhost:{port}/v1/subscribers/user-1/online-status \\\n      -H 'Authorization: ApiKey {secret}' -H 'Content-Type: application/json' \\\n      -d '{{\"isOnline\": true}}'\n\nMore keys: subscriberd keys create --data {data}\n",
        name = env.name,
        secret = key.secret,
        identifier = env.identifier,
        sealed = sealed_note(sealed),
        data = args.data.display(),
    );
    Ok(env)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, before the server says it is listening, so no early signal is
/// lost to the default action.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutting down: draining in-flight requests");
    })
}
