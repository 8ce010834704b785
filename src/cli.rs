//! Command-line arguments: every flag has an environment variable, and
//! `--help` explains each.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "subscriberd",
    version,
    about = "A Novu-compatible subscriber presence server on an embedded sled store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Bring a PostgreSQL database's schema up to this version (`serve
    /// --backend postgres` also does at start unless `--migrate off`).
    Migrate(MigrateArgs),
    /// Create, list or revoke API keys (works while a server runs on the directory).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Load-test a running server or the embedded store (presence writes, reads, a mix).
    ///
    /// A progress line while it runs (on a terminal), then a summary:
    /// requests, errors by status, throughput, latency percentiles, and disk
    /// flushes per write when the disk is local.
    #[command(after_long_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
}

const BENCH_EXAMPLES: &str = "\
Examples:
  subscriberd bench --url http://127.0.0.1:3000 --api-key \"$KEY\" -c 64 -d 10s
  subscriberd bench --url http://127.0.0.1:3000 --api-key \"$KEY\" --mix read=80,presence=20
  subscriberd bench --url http://127.0.0.1:3000 --api-key \"$KEY\" --rate 5000 -d 30s
  subscriberd bench --embedded --data /tmp/bench-data --durability durable -n 100000

Subscribers are named <id-prefix><n>, n from 0000000 to subscribers - 1; they
are created when missing (POST /v2/subscribers?failIfExists=true: an existing
one is reused as it is) and deleted afterwards with --cleanup.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// A 2xx only after the write is on disk (fdatasync, group commit).
    Durable,
    /// A 2xx after the in-memory commit; a crash can lose the last flush interval.
    Relaxed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The embedded sled store in --data (one machine).
    Sled,
    /// PostgreSQL at --database-url (any number of servers on one database).
    Postgres,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// postgres://user:password@host[:port][,host2[:port]]/database[?target_session_attrs=read-write]
    #[arg(long, env = "SUBSCRIBERD_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SUBSCRIBERD_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Where subscribers are kept.
    #[arg(long, env = "SUBSCRIBERD_BACKEND", value_enum, default_value = "sled")]
    pub backend: BackendArg,

    /// The PostgreSQL database of --backend postgres:
    /// postgres://user:password@host[:port][,host2[:port]]/database; with
    /// several hosts add ?target_session_attrs=read-write so the primary
    /// (after a failover, the promoted standby) is the one used.
    #[arg(long, env = "SUBSCRIBERD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Database connections this server keeps (--backend postgres).
    #[arg(
        long,
        env = "SUBSCRIBERD_POOL_SIZE",
        default_value_t = 16,
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    pub pool_size: u64,

    /// Apply missing schema migrations at start (--backend postgres); off,
    /// a database at an older schema is refused (run `subscriberd migrate`).
    #[arg(long, env = "SUBSCRIBERD_MIGRATE", value_enum, default_value = "on")]
    pub migrate: Switch,

    /// Data directory (a sled database, created if missing).
    #[arg(long, env = "SUBSCRIBERD_DATA", default_value = "./subscriberd-data")]
    pub data: PathBuf,

    /// When a write is acknowledged.
    #[arg(
        long,
        env = "SUBSCRIBERD_DURABILITY",
        value_enum,
        default_value = "durable"
    )]
    pub durability: DurabilityArg,

    /// Background flush interval of relaxed mode, in milliseconds: the window
    /// of acknowledged writes a crash can lose.
    #[arg(long, env = "SUBSCRIBERD_FLUSH_INTERVAL_MS", default_value_t = 500)]
    pub flush_interval_ms: u64,

    /// How long idempotency records are kept, in seconds.
    #[arg(
        long,
        env = "SUBSCRIBERD_IDEMPOTENCY_TTL_SECS",
        default_value_t = 86_400
    )]
    pub idempotency_ttl_secs: u64,

    /// Presence lease, in seconds: a subscriber set online goes offline by
    /// itself this long after its last online write (its heartbeat) unless
    /// the PATCH body's `ttlSeconds` says otherwise. 0 (the default): never,
    /// as in Novu. At most 86400.
    #[arg(
        long,
        env = "SUBSCRIBERD_PRESENCE_TTL_SECS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=86_400)
    )]
    pub presence_ttl_secs: u32,

    /// Keep the presence event feed, the online index and the counts
    /// (`/v1/presence/events`, `/online`, `/stats`). Off, those routes answer
    /// 404 and a presence write does a little less work; turned on again,
    /// the indexes are rebuilt at start (no events for the time it was off).
    #[arg(
        long,
        env = "SUBSCRIBERD_PRESENCE_FEED",
        value_enum,
        default_value = "on"
    )]
    pub presence_feed: Switch,

    /// How long presence events are kept, in seconds (1 to 31536000); a
    /// reader whose cursor is older gets 410 and resynchronises from
    /// /v1/presence/online.
    #[arg(
        long,
        env = "SUBSCRIBERD_EVENT_RETENTION_SECS",
        default_value_t = 86_400,
        value_parser = clap::value_parser!(u64).range(1..=31_536_000)
    )]
    pub event_retention_secs: u64,

    /// Largest request body in bytes; larger bodies get 413.
    #[arg(long, env = "SUBSCRIBERD_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "SUBSCRIBERD_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a client may take to send a request's body once its headers
    /// are in; slower requests get 408 and their connection is closed.
    #[arg(long, env = "SUBSCRIBERD_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// Connections served at once; more are answered 503.
    #[arg(long, env = "SUBSCRIBERD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds to let in-flight requests finish on SIGINT/SIGTERM.
    #[arg(long, env = "SUBSCRIBERD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Seconds to keep accepting after SIGINT/SIGTERM with GET /ready at
    /// 503, so a load balancer stops sending before the drain (0 to 300;
    /// behind one, set it above its probe interval times its threshold).
    #[arg(
        long,
        env = "SUBSCRIBERD_DRAIN_DELAY_SECS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=300)
    )]
    pub drain_delay_secs: u64,

    /// Prometheus metrics at GET /metrics (no authentication; see
    /// --metrics-listen to serve them elsewhere).
    #[arg(long, env = "SUBSCRIBERD_METRICS", value_enum, default_value = "on")]
    pub metrics: Switch,

    /// Serve GET /metrics on this address instead of the API's (for
    /// example 127.0.0.1:9464, reachable only by the scraper).
    #[arg(long, env = "SUBSCRIBERD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// An API key to provision into the default environment (16 to 255
    /// visible ASCII characters), so scripts can use a known key.
    #[arg(long, env = "SUBSCRIBERD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// The default environment: created on first start.
    #[arg(long, env = "SUBSCRIBERD_ENVIRONMENT", default_value = "Development")]
    pub environment: String,

    #[command(flatten)]
    pub server_key: ServerKeyArgs,

    /// Whether an Inbox session (POST /v1/inbox/session) needs a valid
    /// subscriberHash: the lowercase hex HMAC-SHA256 of the subscriberId
    /// keyed with one of the environment's API keys, computed by your
    /// backend. Off, anyone who knows the application identifier can open
    /// a session as any subscriber.
    #[arg(long, env = "SUBSCRIBERD_INBOX_HMAC", value_enum, default_value = "on")]
    pub inbox_hmac: Switch,

    /// How long an Inbox session token is valid, in seconds (60 to 2592000).
    #[arg(
        long,
        env = "SUBSCRIBERD_INBOX_TOKEN_TTL_SECS",
        default_value_t = 86_400,
        value_parser = clap::value_parser!(u64).range(60..=2_592_000)
    )]
    pub inbox_token_ttl_secs: u64,

    /// The lease of an Inbox socket's presence, in seconds (1 to 86400):
    /// the server renews it every third of that while the subscriber has a
    /// socket open, so if the server dies, its subscribers go offline by
    /// themselves this long after the last renewal. sled backend only (the
    /// postgres backend refuses sockets).
    #[arg(
        long,
        env = "SUBSCRIBERD_CONNECTION_LEASE_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(1..=86_400)
    )]
    pub connection_lease_secs: u32,

    /// How long after a subscriber's last Inbox socket closes it goes
    /// offline, in seconds (0 to 86400, default 0: at once). A socket that
    /// opens within it (a page reload) changes nothing.
    #[arg(
        long,
        env = "SUBSCRIBERD_DISCONNECT_GRACE_SECS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=86_400)
    )]
    pub disconnect_grace_secs: u64,
}

/// The server key (never stored with the data): it seals the API keys
/// kept for Inbox HMAC checks and signs Inbox session tokens. Every server
/// of one store needs the same.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerKeyArgs {
    /// A file holding the server key (64 hex characters, as
    /// `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'` makes one).
    /// Without this or --server-key: with --backend sled, the file
    /// <data>.server-key beside the data directory, created (mode 0600) if
    /// missing; with --backend postgres, none (Inbox sessions off).
    #[arg(long, env = "SUBSCRIBERD_SERVER_KEY_FILE", value_name = "PATH")]
    pub server_key_file: Option<std::path::PathBuf>,

    /// The server key itself, 64 hex characters (prefer the variable: a
    /// flag's value is visible to other users of the machine).
    #[arg(
        long,
        env = "SUBSCRIBERD_SERVER_KEY",
        hide_env_values = true,
        conflicts_with = "server_key_file",
        value_name = "HEX"
    )]
    pub server_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; prints only the secret on stdout.
    Create {
        #[arg(long, env = "SUBSCRIBERD_DATA", default_value = "./subscriberd-data")]
        data: PathBuf,
        /// The environment the key grants access to (created if missing).
        #[arg(long, env = "SUBSCRIBERD_ENVIRONMENT", default_value = "Development")]
        environment: String,
        /// The server key the new key is sealed under when no server runs
        /// (a running server seals it under its own).
        #[command(flatten)]
        server_key: ServerKeyArgs,
    },
    /// List keys (ids, environments and the last four characters, never secrets).
    List {
        #[arg(long, env = "SUBSCRIBERD_DATA", default_value = "./subscriberd-data")]
        data: PathBuf,
    },
    /// Revoke a key by id; it stops working at once.
    Revoke {
        #[arg(long, env = "SUBSCRIBERD_DATA", default_value = "./subscriberd-data")]
        data: PathBuf,
        /// The key's id, as `keys list` shows it.
        id: String,
    },
}

/// What each request of a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// PATCH online-status of a random subscriber, random isOnline.
    Presence,
    /// As presence, with a fresh idempotency key per request (what the
    /// official SDKs send).
    PresenceKeyed,
    /// The same keyed PATCH every time: the first executes, the rest are replays.
    Replay,
    /// Online with a lease of `--ttl-seconds` (ttlSeconds, SPEC 10).
    Heartbeat,
    /// GET a random subscriber.
    Read,
    /// A weighted mix of the above, given by --mix.
    Mixed,
}

/// The numeric flags are signed and take negative numbers (`--rate -5`),
/// and the durations take values starting with `-`, so such a value
/// reaches the plan's range checks (one line, exit 1) instead of being
/// read as an unknown flag.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A running server to measure, `http://HOST:PORT` (plain HTTP; a path
    /// prefix is kept, for a server behind a proxy).
    #[arg(long, env = "SUBSCRIBERD_BENCH_URL", value_name = "URL")]
    pub url: Option<String>,

    /// The API key for --url (sent as `Authorization: ApiKey <key>`).
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Measure the store in this process instead of a server: no network,
    /// on the data directory given by --data.
    #[arg(long, env = "SUBSCRIBERD_BENCH_EMBEDDED")]
    pub embedded: bool,

    /// With --embedded: the store's data directory (created if missing; not
    /// one a running server holds). With --url: the server's data
    /// directory, if it is on this machine, to count the disk flushes per
    /// write of the disk holding it (from /proc/diskstats).
    #[arg(long, env = "SUBSCRIBERD_BENCH_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// With --embedded: when a write is acknowledged [default: durable].
    #[arg(long, env = "SUBSCRIBERD_BENCH_DURABILITY", value_enum)]
    pub durability: Option<DurabilityArg>,

    /// With --embedded: the environment the subscribers live in (created if missing).
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_ENVIRONMENT",
        default_value = "Development"
    )]
    pub environment: String,

    /// What each request does [default: presence, or mixed with --mix].
    #[arg(short, long, env = "SUBSCRIBERD_BENCH_WORKLOAD", value_enum)]
    pub workload: Option<WorkloadArg>,

    /// The mixed workload's weights, `NAME=WEIGHT,...` over presence,
    /// presence-keyed, replay, heartbeat and read, e.g. `read=80,presence=20`:
    /// each request picks one at random in proportion to its weight (whole
    /// numbers; they need not add up to 100).
    #[arg(long, env = "SUBSCRIBERD_BENCH_MIX", value_name = "NAME=WEIGHT,...")]
    pub mix: Option<String>,

    /// The lease a heartbeat asks for, in seconds (its `ttlSeconds`).
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_TTL_SECONDS",
        default_value_t = 30,
        allow_negative_numbers = true
    )]
    pub ttl_seconds: i64,

    /// How many subscribers the run spreads its requests over (created
    /// first when missing).
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_SUBSCRIBERS",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    pub subscribers: i64,

    /// The subscribers' ids: this prefix and a 7-digit number (letters,
    /// digits, `-`, `_`, `.` and `~`).
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_ID_PREFIX",
        default_value = "bench-subscriber-"
    )]
    pub id_prefix: String,

    /// Delete the run's subscribers afterwards (also those that existed before it).
    #[arg(long, env = "SUBSCRIBERD_BENCH_CLEANUP")]
    pub cleanup: bool,

    /// Concurrent connections (with --embedded: concurrent writers), each
    /// with one request in flight at a time.
    #[arg(
        short,
        long,
        env = "SUBSCRIBERD_BENCH_CONNECTIONS",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub connections: i64,

    /// Worker threads of the client's async runtime [default: the number of CPUs].
    #[arg(
        short,
        long,
        env = "SUBSCRIBERD_BENCH_THREADS",
        allow_negative_numbers = true
    )]
    pub threads: Option<i64>,

    /// How long to run, e.g. `10s`, `1m`, `500ms` (a bare number is seconds)
    /// [default: 10s, unless --requests is given].
    #[arg(
        short,
        long,
        env = "SUBSCRIBERD_BENCH_DURATION",
        allow_hyphen_values = true
    )]
    pub duration: Option<String>,

    /// Stop after this many requests (with --duration too: whichever comes first).
    #[arg(
        short = 'n',
        long,
        env = "SUBSCRIBERD_BENCH_REQUESTS",
        allow_negative_numbers = true
    )]
    pub requests: Option<i64>,

    /// Open loop: send this many requests per second in all, on a fixed
    /// schedule, whatever the answers' pace; latency is then measured from
    /// each request's scheduled time, so a stall counts against every
    /// request it delays (no coordinated omission, as wrk2). Without it,
    /// each connection sends its next request as soon as the last is answered.
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_RATE",
        value_name = "PER_SECOND",
        allow_negative_numbers = true
    )]
    pub rate: Option<f64>,

    /// A request with no answer by then counts as a `timeout` error (its
    /// connection is reopened).
    #[arg(
        long,
        env = "SUBSCRIBERD_BENCH_TIMEOUT",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    pub timeout: String,

    /// Print the summary as one JSON object on stdout instead of text.
    #[arg(long, env = "SUBSCRIBERD_BENCH_JSON")]
    pub json: bool,
}
