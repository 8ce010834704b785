//! Key management through the running server: on a data directory whose
//! path is too long for a Unix socket address, and durable in relaxed mode
//! (a created key survives SIGKILL, a revoked key stays revoked).

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use common::{Server, keys};

/// A new key, through the running server (sled's lock keeps the command
/// from opening the store itself).
fn create_key(data: &Path) -> String {
    let secret = keys(data, &["create"]).trim().to_owned();
    assert_eq!(secret.len(), 64, "only the secret is printed: {secret:?}");
    secret
}

/// The id `keys list` shows for the key ending like `secret`.
fn key_id(data: &Path, secret: &str) -> String {
    let listing = keys(data, &["list"]);
    listing
        .lines()
        .find(|l| l.contains(&format!("...{}", &secret[60..])))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("key ...{} not listed: {listing}", &secret[60..]))
        .to_owned()
}

fn status_with(addr: SocketAddr, secret: &str, subscriber: &str) -> u16 {
    let auth = format!("ApiKey {secret}");
    let body = format!("{{\"subscriberId\":\"{subscriber}\"}}");
    testkit::send(
        addr,
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth)],
        Some(body.as_bytes()),
    )
    .status
}

#[test]
fn a_data_directory_too_long_for_a_socket_address_works() {
    let root = tempfile::tempdir().expect("dir");
    let mut data = root.path().to_path_buf();
    for i in 0..6 {
        data.push(format!("a-rather-long-directory-name-number-{i}"));
    }
    std::fs::create_dir_all(&data).expect("create nested dirs");
    let length = data.as_os_str().len();
    assert!(length > 200, "path of {length} bytes");

    let server = Server::start(&data, &[]);
    let socket = data.join("admin.sock");
    let meta = std::fs::metadata(&socket).expect("the socket is in the data directory");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let secret = create_key(&data);
    assert_eq!(
        status_with(server.addr, &secret, "u1"),
        201,
        "a key created while serving works at once"
    );
    let id = key_id(&data, &secret);
    let revoked = keys(&data, &["revoke", &id]);
    assert!(revoked.is_empty(), "{revoked}");
    assert_eq!(
        status_with(server.addr, &secret, "u2"),
        401,
        "a revoked key fails at once"
    );
    assert!(server.terminate().success());
    assert!(!socket.exists(), "the socket is removed at exit");

    // Without a server the commands open the store themselves.
    assert!(keys(&data, &["list"]).lines().count() >= 2);
}

#[test]
fn key_changes_survive_sigkill_in_relaxed_mode() {
    let dir = tempfile::tempdir().expect("dir");
    // The background flush is a minute away: only the key commands' own
    // flushes can put their changes on disk before the SIGKILL.
    let relaxed = ["--durability", "relaxed", "--flush-interval-ms", "60000"];

    let server = Server::start(dir.path(), &relaxed);
    let earlier = create_key(dir.path());
    assert!(
        server.terminate().success(),
        "SIGTERM flushes: `earlier` is on disk"
    );

    let server = Server::start(dir.path(), &relaxed);
    let created = create_key(dir.path());
    let id = key_id(dir.path(), &earlier);
    keys(dir.path(), &["revoke", &id]);
    assert_eq!(status_with(server.addr, &created, "u1"), 201);
    assert_eq!(status_with(server.addr, &earlier, "u2"), 401);
    server.kill();

    let server = Server::start(dir.path(), &relaxed);
    assert_eq!(
        status_with(server.addr, &earlier, "u3"),
        401,
        "a key revoked before SIGKILL works again after the restart"
    );
    assert_eq!(
        status_with(server.addr, &created, "u4"),
        201,
        "a key created before SIGKILL is lost after the restart"
    );
}
