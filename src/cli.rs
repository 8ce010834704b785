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
    /// Create, list or revoke API keys (works while a server runs on the directory).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// A 2xx only after the write is on disk (fdatasync, group commit).
    Durable,
    /// A 2xx after the in-memory commit; a crash can lose the last flush interval.
    Relaxed,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SUBSCRIBERD_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

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

    /// An API key to provision into the default environment (16 to 255
    /// visible ASCII characters), so scripts can use a known key.
    #[arg(long, env = "SUBSCRIBERD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// The default environment: created on first start.
    #[arg(long, env = "SUBSCRIBERD_ENVIRONMENT", default_value = "Development")]
    pub environment: String,
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
