//! Key management while a server holds the data directory: sled locks it, so
//! `subscriberd keys ...` sends its request to the running server over a Unix
//! socket in the data directory (mode 0600); with no server, it opens the
//! store itself. Both paths run the same `apply`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use subscriber_store::{ObjectId, Store};

/// The socket's file name inside the data directory.
pub const SOCKET: &str = "admin.sock";

pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET)
}

/// The longest path a Unix socket address holds: `sun_path` is 108 bytes,
/// with the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// Runs `f` (bind, connect, chmod...) with a path to `data/admin.sock` that
/// fits in a socket address, whatever the data directory's length.
///
/// A socket address holds at most 107 bytes of path, far less than the
/// paths the OS accepts everywhere else. When the direct path fits, it is
/// used as is, so the common case depends on nothing more than the file
/// system. When it does not, the data directory is opened and the socket is
/// reached through `/proc/self/fd/<fd>/admin.sock`: Linux resolves that
/// link to the directory itself, so the socket file is the same one in the
/// data directory (mode 0600), and the address stays about 30 bytes long.
/// The directory stays open until `f` returns.
fn with_socket_path<T>(
    data: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let direct = socket_path(data);
    if direct.as_os_str().len() <= SUN_PATH_MAX {
        return f(&direct);
    }
    let dir = File::open(data)?;
    f(Path::new(&format!(
        "/proc/self/fd/{}/{SOCKET}",
        dir.as_raw_fd()
    )))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Create { environment: String },
    List,
    Revoke { id: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyLine {
    pub id: String,
    pub environment: String,
    /// The environment's application identifier (absent from the answers
    /// of a server from before identifiers).
    #[serde(default)]
    pub identifier: String,
    pub hint: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Created {
        secret: String,
        #[serde(default)]
        environment: String,
        #[serde(default)]
        identifier: String,
    },
    Listed {
        keys: Vec<KeyLine>,
    },
    Revoked,
    Failed {
        error: String,
    },
}

/// Carries out one request on an open store.
pub fn apply(store: &Store, request: Request) -> Response {
    let result = match request {
        Request::Create { environment } => store
            .ensure_environment(&environment)
            .and_then(|(env, _)| Ok((store.issue_key(env.id)?, env)))
            .map(|(key, env)| Response::Created {
                secret: key.secret,
                environment: env.name,
                identifier: env.identifier,
            }),
        Request::List => list(store),
        Request::Revoke { id } => id
            .parse::<ObjectId>()
            .and_then(|id| store.revoke_key(id))
            .map(|()| Response::Revoked),
    };
    result.unwrap_or_else(|e| Response::Failed {
        error: e.to_string(),
    })
}

fn list(store: &Store) -> subscriber_store::Result<Response> {
    let environments = store.environments()?;
    let keys = store
        .keys(None)?
        .into_iter()
        .map(|k| {
            let env = environments.iter().find(|e| e.id == k.environment_id);
            KeyLine {
                id: k.id.to_string(),
                environment: env.map_or_else(|| k.environment_id.to_string(), |e| e.name.clone()),
                identifier: env.map(|e| e.identifier.clone()).unwrap_or_default(),
                hint: format!("...{}", k.hint),
                created_at: k.created_at.to_string(),
            }
        })
        .collect();
    Ok(Response::Listed { keys })
}

/// Binds the admin socket in the data directory `data` (call before
/// announcing the server, so a key command run right after finds it).
pub fn bind(data: &Path) -> std::io::Result<tokio::net::UnixListener> {
    with_socket_path(data, |path| {
        // A socket file left by a server that died is stale: we hold the
        // sled lock, so no live server owns it.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    })
}

/// Serves the admin socket until the task is dropped.
pub async fn serve(listener: tokio::net::UnixListener, store: Store) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, store).await {
                tracing::warn!(error = %e, "admin request failed");
            }
        });
    }
}

async fn answer(stream: tokio::net::UnixStream, store: Store) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => tokio::task::spawn_blocking(move || apply(&store, request))
            .await
            .unwrap_or_else(|e| Response::Failed {
                error: e.to_string(),
            }),
        Err(e) => Response::Failed {
            error: format!("bad admin request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Sends a request to the server running on `data`, if one answers.
pub fn send(data: &Path, request: &Request) -> Option<std::io::Result<Response>> {
    let mut stream = with_socket_path(data, |path| UnixStream::connect(path)).ok()?;
    let mut exchange = || -> std::io::Result<Response> {
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line)?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer)?;
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    };
    Some(exchange())
}
