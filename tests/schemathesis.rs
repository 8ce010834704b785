//! Schemathesis (pinned in tests/schemathesis/requirements.txt, installed in
//! .venv by scripts/test) generates requests from `/openapi.json` and checks
//! every answer against the document. Fails, never skips, when it is missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KEY, Server};

#[test]
fn responses_conform_to_the_openapi_document() {
    responses_conform(&["--durability", "relaxed"]);
}

/// The postgres backend refuses `--durability relaxed`: its durability is
/// the database's commit.
#[test]
fn responses_conform_to_the_openapi_document_on_postgres() {
    let Some(pg) = testkit::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_database("schemathesis");
    responses_conform(&["--backend", "postgres", "--database-url", &url]);
    // The cluster outlives the server, stopped in `responses_conform`.
    drop(pg);
}

/// Runs schemathesis against `subscriberd serve ... SERVER_ARGS...`.
fn responses_conform(server_args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = root.join(".venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis is not installed: run scripts/test (it creates .venv)"
    );
    let data = tempfile::tempdir().expect("dir");
    let server = Server::start(data.path(), server_args);
    let scratch = tempfile::tempdir().expect("dir");
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261126".into());
    let output = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://{}/openapi.json", server.addr))
        .args(["--header", &format!("Authorization: ApiKey {KEY}")])
        .args(["--checks", "all"])
        // Both flag intended state-dependent answers: a valid request with a
        // reused idempotency key (422) or a stale If-Match (412) is refused,
        // and a replayed create answers what happened then, even if the
        // subscriber was deleted since (SPEC section 6).
        .args([
            "--exclude-checks",
            "positive_data_acceptance,ensure_resource_availability",
        ])
        .args(["--max-examples", "25", "--seed", &seed])
        // No example database, and its crash cache in a fresh directory:
        // every run starts from the same state, outside the work tree.
        .args(["--generation-database", "none"])
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        eprintln!("server log:\n{}", server.stderr().join("\n"));
    }
    assert!(
        output.status.success(),
        "schemathesis found responses that do not conform"
    );
    assert!(stdout.contains("passed"), "schemathesis ran no test case");
    assert!(server.terminate().success());
}
