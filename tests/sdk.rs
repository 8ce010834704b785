//! Novu's official Node SDK (@novu/api) and browser SDK (@novu/js, the
//! Inbox's session and socket), pinned in tests/sdk/package-lock.json, against the real
//! binary. Fails, never skips, when Node or the packages are missing:
//! `scripts/test` installs them with `npm ci`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KEY, Server};

#[test]
fn official_node_sdk_works_against_the_server() {
    sdk_tests_pass(&[]);
}

#[test]
fn official_node_sdk_works_against_the_server_on_postgres() {
    let Some(pg) = testkit::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_database("sdk_node");
    sdk_tests_pass(&["--backend", "postgres", "--database-url", &url]);
    // The cluster outlives the server, stopped in `sdk_tests_pass`.
    drop(pg);
}

#[test]
fn official_browser_sdk_opens_inbox_sessions() {
    node_tests_pass("inbox-session.test.mjs", "@novu/js", &[], 4);
}

#[test]
fn official_browser_sdk_opens_inbox_sessions_on_postgres() {
    let Some(pg) = testkit::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_database("sdk_inbox");
    node_tests_pass(
        "inbox-session.test.mjs",
        "@novu/js",
        &["--backend", "postgres", "--database-url", &url],
        4,
    );
    drop(pg);
}

#[test]
fn official_browser_sdk_connects_inbox_sockets() {
    node_tests_pass("inbox-socket.test.mjs", "@novu/js", &[], 2);
}

/// Runs tests/sdk against `subscriberd serve ... --presence-ttl-secs 3600 BACKEND...`.
fn sdk_tests_pass(backend: &[&str]) {
    node_tests_pass("online-status.test.mjs", "@novu/api", backend, 6);
}

/// Runs `node --test FILE` in tests/sdk (which needs `package`) against
/// `subscriberd serve ... --presence-ttl-secs 3600 BACKEND...`; `passes`
/// tests must pass.
fn node_tests_pass(file: &str, package: &str, backend: &[&str], passes: usize) {
    let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    assert!(
        sdk_dir.join("node_modules").join(package).exists(),
        "{package} is not installed: run scripts/test (it runs npm ci in tests/sdk)"
    );
    let data = tempfile::tempdir().expect("dir");
    // Every online document then carries `onlineExpiresAt` (SPEC 10).
    let mut args = vec!["--presence-ttl-secs", "3600"];
    args.extend_from_slice(backend);
    let server = Server::start(data.path(), &args);
    let output = Command::new("node")
        .args(["--test", file])
        .current_dir(&sdk_dir)
        .env("SUBSCRIBERD_URL", format!("http://{}", server.addr))
        .env("SUBSCRIBERD_KEY", KEY)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node 20 is required for this test): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        eprintln!("server log:\n{}", server.stderr().join("\n"));
    }
    assert!(output.status.success(), "the SDK tests of {file} failed");
    assert!(
        stdout.contains(&format!("# pass {passes}\n")),
        "expected {passes} SDK tests of {file} to pass"
    );
    assert!(server.terminate().success());
}
