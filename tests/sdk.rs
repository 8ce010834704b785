//! Novu's official Node SDK (@novu/api, pinned in tests/sdk/package-lock.json)
//! against the real binary. Fails, never skips, when Node or the packages are
//! missing: `scripts/test` installs them with `npm ci`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KEY, Server};

#[test]
fn official_node_sdk_works_against_the_server() {
    let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    assert!(
        sdk_dir.join("node_modules/@novu/api").exists(),
        "the SDK is not installed: run scripts/test (it runs npm ci in tests/sdk)"
    );
    let data = tempfile::tempdir().expect("dir");
    // Every online document then carries `onlineExpiresAt` (SPEC 10).
    let server = Server::start(data.path(), &["--presence-ttl-secs", "3600"]);
    let output = Command::new("node")
        .args(["--test", "online-status.test.mjs"])
        .current_dir(&sdk_dir)
        .env("SUBSCRIBERD_URL", format!("http://{}", server.addr))
        .env("SUBSCRIBERD_KEY", KEY)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node 20 is required for this test): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the SDK tests failed");
    assert!(stdout.contains("# pass 6"), "expected 6 SDK tests to pass");
    assert!(server.terminate().success());
}
