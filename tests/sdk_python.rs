//! Novu's two official Python SDKs against the real binary: `novu-py` (module
//! `novu_py`, the current one) and `novu` (the legacy one), with pytest,
//! all pinned in tests/sdk-python/requirements.txt. Fails, never skips, when
//! `.venv` or the packages are missing: `scripts/test` installs them.

mod common;

use std::path::Path;
use std::process::Command;

use common::{KEY, Server};

/// Tests in tests/sdk-python: 7 for novu-py, 6 for the legacy SDK.
const EXPECTED_PASSED: usize = 15;

/// The count before "passed" in pytest's closing line ("3 failed, 10 passed in 1.2s").
fn passed(stdout: &str) -> Option<usize> {
    let summary = stdout.lines().rev().find(|line| line.contains(" in "))?;
    let words: Vec<&str> = summary
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    let at = words.iter().position(|w| *w == "passed")?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

#[test]
fn official_python_sdks_work_against_the_server() {
    python_sdk_tests_pass(&[]);
}

#[test]
fn official_python_sdks_work_against_the_server_on_postgres() {
    let Some(pg) = testkit::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_database("sdk_python");
    python_sdk_tests_pass(&["--backend", "postgres", "--database-url", &url]);
    // The cluster outlives the server, stopped in `python_sdk_tests_pass`.
    drop(pg);
}

/// Runs tests/sdk-python against `subscriberd serve ... --presence-ttl-secs 3600 BACKEND...`.
fn python_sdk_tests_pass(backend: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (it creates .venv and installs \
         tests/sdk-python/requirements.txt)",
        python.display()
    );
    let check = Command::new(&python)
        .args(["-c", "import novu_py, novu, pytest"])
        .output()
        .expect("run .venv/bin/python");
    assert!(
        check.status.success(),
        "the Python SDKs are not installed in .venv: run scripts/test (it installs \
         tests/sdk-python/requirements.txt)\n{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let data = tempfile::tempdir().expect("dir");
    // Every online document then carries `onlineExpiresAt` (SPEC 10).
    let mut args = vec!["--presence-ttl-secs", "3600"];
    args.extend_from_slice(backend);
    let server = Server::start(data.path(), &args);
    let output = Command::new(&python)
        .args(["-m", "pytest", "tests/sdk-python", "-q", "--tb=short"])
        // No .pytest_cache or __pycache__ in the work tree, and only pytest's
        // own plugins whatever else .venv holds.
        .args(["-p", "no:cacheprovider"])
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        .env_remove("PYTEST_ADDOPTS")
        .env("NO_COLOR", "1")
        .env("SUBSCRIBERD_URL", format!("http://{}", server.addr))
        .env("SUBSCRIBERD_KEY", KEY)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        eprintln!("server log:\n{}", server.stderr().join("\n"));
    }
    assert!(output.status.success(), "the Python SDK tests failed");
    assert_eq!(
        passed(&stdout),
        Some(EXPECTED_PASSED),
        "expected {EXPECTED_PASSED} Python SDK tests to pass"
    );
    assert!(server.terminate().success());
}

#[test]
fn the_summary_line_is_read() {
    assert_eq!(passed("....\n13 passed in 1.46s\n"), Some(13));
    assert_eq!(passed("F.\n1 failed, 12 passed in 0.5s\n"), Some(12));
    assert_eq!(passed("no tests ran in 0.01s\n"), None);
    assert_eq!(passed("1 failed in 0.2s\n"), None);
}
