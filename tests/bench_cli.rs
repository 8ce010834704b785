//! `subscriberd bench` as an operator runs it: against the built server on a
//! free loopback port and on the embedded store, each workload for a
//! bounded number of requests. Its summary must add up, and the documents
//! must show exactly the writes it reports (`__v` rose by one per executed
//! write; replays and reads add nothing). Bad flags are one line and a
//! non-zero exit.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{KEY, Server, binary};
use serde_json::Value;
use subscriber_store::{Config, Store};

const SUBSCRIBERS: u64 = 12;

/// `subscriberd bench ARGS...`, with no bench variables from outside.
fn bench(args: &[&str]) -> Output {
    let mut command = binary();
    command.arg("bench").args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("SUBSCRIBERD_BENCH_") {
            command.env_remove(name);
        }
    }
    command.output().expect("run subscriberd bench")
}

/// Runs a bench that must succeed with `--json`; checks that its counts
/// add up and returns the summary.
fn summary(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let s: Value = serde_json::from_str(&stdout).expect("the summary is JSON");
    let n = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s}"));
    assert_eq!(n("requests"), n("ok") + n("errors"), "{s}");
    let by_status: u64 = s["errors_by_status"]
        .as_object()
        .expect("errors_by_status")
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum();
    assert_eq!(by_status, n("errors"), "{s}");
    let operations = s["operations"].as_object().expect("operations");
    let per_kind: u64 = operations
        .values()
        .map(|o| o["requests"].as_u64().expect("requests"))
        .sum();
    assert_eq!(per_kind, n("requests"), "{s}");
    let ok: u64 = operations
        .values()
        .map(|o| o["ok"].as_u64().expect("ok"))
        .sum();
    assert_eq!(ok, n("ok"), "{s}");
    assert!(n("writes") + n("replayed") <= n("ok"), "{s}");
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(s["latency_us"][p].as_u64().is_some(), "{p} in {s}");
    }
    assert!(s["latency_us"]["p50"].as_u64() <= s["latency_us"]["max"].as_u64());
    assert!(
        s["requests_per_second"].as_f64().is_some_and(|r| r > 0.0),
        "{s}"
    );
    s
}

/// The `__v` of each bench subscriber `prefix0000000...`; 0 for one that
/// does not exist (a create starts it at 0).
fn versions(server: &Server, prefix: &str) -> Vec<u64> {
    (0..SUBSCRIBERS)
        .map(|n| {
            let reply = server.call("GET", &format!("/v1/subscribers/{prefix}{n:07}"), &[], None);
            match reply.status {
                200 => reply.data()["__v"].as_u64().expect("__v"),
                404 => 0,
                other => panic!("GET answered {other}"),
            }
        })
        .collect()
}

/// Runs `workload` twice on a fresh server (the second run reuses the
/// subscribers the first created) and checks that the documents moved by
/// exactly the writes each run reports. Returns the two summaries.
fn writes_match_versions(workload: &[&str]) -> [Value; 2] {
    writes_match_versions_then(workload, |_, _| {})
}

/// As [`writes_match_versions`], then `after(server, prefix)`.
fn writes_match_versions_then(workload: &[&str], after: impl Fn(&Server, &str)) -> [Value; 2] {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &[]);
    let url = format!("http://{}", server.addr);
    let prefix = "b-";
    let subscribers = SUBSCRIBERS.to_string();
    let run = || {
        let before = versions(&server, prefix);
        let mut args = vec![
            "--url",
            &url,
            "--api-key",
            KEY,
            "--requests",
            "150",
            "--connections",
            "4",
            "--threads",
            "2",
            "--subscribers",
            &subscribers,
            "--id-prefix",
            prefix,
        ];
        args.extend_from_slice(workload);
        let s = summary(&args);
        let after = versions(&server, prefix);
        let moved: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        assert_eq!(moved, s["writes"].as_u64().expect("writes"), "{s}");
        assert_eq!(s["requests"], 150, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        s
    };
    let first = run();
    assert_eq!(first["subscribers_created"], SUBSCRIBERS);
    let second = run();
    assert_eq!(second["subscribers_created"], 0, "existing ones are reused");
    after(&server, prefix);
    [first, second]
}

#[test]
fn presence_writes_each_raise_the_version() {
    for s in writes_match_versions(&["--workload", "presence"]) {
        assert_eq!(s["workload"], "presence");
        assert_eq!(s["writes"], 150, "{s}");
        assert_eq!(s["replayed"], 0, "{s}");
    }
}

#[test]
fn keyed_presence_writes_each_execute() {
    for s in writes_match_versions(&["--workload", "presence-keyed"]) {
        assert_eq!(s["writes"], 150, "{s}");
        assert_eq!(s["replayed"], 0, "{s}");
    }
}

#[test]
fn a_replayed_request_executes_once_per_run() {
    for s in writes_match_versions(&["--workload", "replay"]) {
        assert_eq!(s["writes"], 1, "{s}");
        assert_eq!(s["replayed"], 149, "{s}");
    }
}

#[test]
fn reads_change_nothing() {
    for s in writes_match_versions(&["--workload", "read"]) {
        assert_eq!(s["writes"], 0, "{s}");
        assert_eq!(s["operations"]["read"]["ok"], 150, "{s}");
    }
}

#[test]
fn a_mix_writes_what_its_write_kinds_executed() {
    let mix = "read=40,presence=30,presence-keyed=20,replay=10";
    for s in writes_match_versions(&["--mix", mix]) {
        assert_eq!(s["workload"], "mixed");
        let ops = &s["operations"];
        let count = |kind: &str, field: &str| ops[kind][field].as_u64().unwrap_or(0);
        // The replay's first request in a run executes; the rest replay.
        let replay_executed = u64::from(count("replay", "requests") > 0);
        assert_eq!(
            s["writes"].as_u64(),
            Some(count("presence", "ok") + count("presence-keyed", "ok") + replay_executed),
            "{s}"
        );
        assert!(count("read", "requests") > 0, "{s}");
    }
}

#[test]
fn the_text_summary_and_cleanup() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &[]);
    let url = format!("http://{}", server.addr);
    let out = bench(&[
        "--url",
        &url,
        "--api-key",
        KEY,
        "-n",
        "100",
        "-c",
        "3",
        "--subscribers",
        "12",
        "--id-prefix",
        "gone-",
        "--cleanup",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no progress line off a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "subscriberd bench: presence on http://",
        "requests      100 in ",
        ": 100 ok, 0 errors",
        "throughput",
        "p50 ",
        "p99.9 ",
        "writes        100 executed, 0 replayed",
        "cleanup       12 subscribers deleted",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    assert_eq!(versions(&server, "gone-"), vec![0; 12]);
    let reply = server.call("GET", "/v1/subscribers/gone-0000000", &[], None);
    assert_eq!(reply.status, 404, "deleted");
}

#[test]
fn an_open_loop_keeps_its_rate() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &[]);
    let url = format!("http://{}", server.addr);
    let s = summary(&[
        "--url",
        &url,
        "--api-key",
        KEY,
        "--rate",
        "200",
        "--duration",
        "1s",
        "-c",
        "4",
        "--subscribers",
        "12",
        "-w",
        "read",
    ]);
    let requests = s["requests"].as_u64().expect("requests");
    // 200 scheduled in the second; the last few may fall past its end.
    assert!((180..=200).contains(&requests), "{s}");
    assert_eq!(s["rate"], 200.0);
}

#[test]
fn the_embedded_store_counts_its_flushes_per_write() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let mut writes = 0;
    for workload in ["presence", "presence-keyed", "replay", "read"] {
        let s = summary(&[
            "--embedded",
            "--data",
            data_arg,
            "-n",
            "200",
            "-c",
            "8",
            "--subscribers",
            "12",
            "--workload",
            workload,
        ]);
        assert_eq!(s["requests"], 200, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert!(
            s["target"]
                .as_str()
                .is_some_and(|t| t.contains("(durable)"))
        );
        let executed = s["writes"].as_u64().expect("writes");
        if executed > 0 {
            let per_write = s["flush_rounds_per_write"].as_f64().expect("per write");
            assert!(per_write > 0.0, "durable: a round at least: {s}");
            if workload.starts_with("presence") {
                assert!(per_write <= 1.0, "group commit: {s}");
            }
        }
        writes += executed;
    }
    assert_eq!(writes, 200 + 200 + 1);
    // The store shows them: versions rose by exactly the writes.
    let store = Store::open(Config::new(&data)).expect("open the bench's store");
    let tenant = store
        .environment_named("Development")
        .expect("environment")
        .tenant();
    let total: u64 = (0..SUBSCRIBERS)
        .map(|n| {
            store
                .get(&tenant, &format!("bench-subscriber-{n:07}"))
                .expect("subscriber")
                .version
                .0
        })
        .sum();
    assert_eq!(total, writes);
}

#[test]
fn relaxed_embedded_runs_too() {
    let dir = tempfile::tempdir().expect("dir");
    let s = summary(&[
        "--embedded",
        "--data",
        dir.path().to_str().expect("utf-8 path"),
        "--durability",
        "relaxed",
        "-n",
        "300",
        "--subscribers",
        "12",
        "--cleanup",
    ]);
    assert_eq!(s["writes"], 300, "{s}");
    assert!(s["flush_rounds_per_write"].is_number(), "{s}");
    assert_eq!(s["deleted"], 12, "{s}");
    assert!(
        s["target"]
            .as_str()
            .is_some_and(|t| t.contains("(relaxed)"))
    );
}

/// The bench fails with exactly one line on stderr saying `says`.
fn fails_with_one_line(args: &[&str], says: &str) {
    let out = bench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: exit 1, stderr {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got {stderr:?}");
    assert!(lines[0].starts_with("subscriberd: "), "{stderr}");
    assert!(lines[0].contains(says), "{args:?}: {says:?} in {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"));
    assert!(out.stdout.is_empty(), "no summary");
}

#[test]
fn bad_flags_fail_with_one_clear_line() {
    fails_with_one_line(
        &["--url", "127.0.0.1:3000", "--api-key", KEY],
        "has no scheme: write it as http://127.0.0.1:3000",
    );
    fails_with_one_line(
        &["--url", "https://127.0.0.1:3000", "--api-key", KEY],
        "https is not supported",
    );
    fails_with_one_line(
        &[
            "--url",
            "http://127.0.0.1:3000",
            "--api-key",
            KEY,
            "-c",
            "0",
        ],
        "--connections must be from 1",
    );
    fails_with_one_line(&["--url", "http://127.0.0.1:3000"], "--url needs --api-key");
    fails_with_one_line(&["--embedded"], "--embedded needs --data");
    fails_with_one_line(&[], "nothing to measure");
    fails_with_one_line(
        &["--embedded", "--data", "x", "--workload", "mixed"],
        "--workload mixed needs --mix",
    );
    fails_with_one_line(
        &["--embedded", "--data", "x", "--mix", "read=1,write=2"],
        "unknown workload \"write\"",
    );
    fails_with_one_line(
        &["--embedded", "--data", "x", "--duration", "soon"],
        "--duration \"soon\"",
    );
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    fails_with_one_line(
        &[
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--api-key",
            KEY,
        ],
        "cannot connect to",
    );
}

#[test]
fn negative_numbers_fail_with_one_clear_line() {
    // A value such as `-5` is the flag's value, not another flag: it
    // reaches the same check as any other out-of-range value.
    for (flag, value, says) in [
        (
            "--rate",
            "-5",
            "--rate must be a number of requests per second above 0 (at most 10000000), not -5",
        ),
        (
            "--rate",
            "-0.5",
            "--rate must be a number of requests per second above 0 (at most 10000000), not -0.5",
        ),
        (
            "--connections",
            "-1",
            "--connections must be from 1 to 100000, not -1",
        ),
        ("-c", "-1", "--connections must be from 1 to 100000, not -1"),
        (
            "--duration",
            "-3",
            "--duration \"-3\": give a duration above zero",
        ),
        (
            "-d",
            "-3s",
            "--duration \"-3s\": give a duration above zero",
        ),
        (
            "--timeout",
            "-1",
            "--timeout \"-1\": give a duration above zero",
        ),
        (
            "--ttl-seconds",
            "-1",
            "--ttl-seconds must be from 0 to 86400, not -1",
        ),
        (
            "--subscribers",
            "-1",
            "--subscribers must be from 1 to 1000000, not -1",
        ),
        (
            "--threads",
            "-1",
            "--threads must be from 1 to 1024, not -1",
        ),
        ("-n", "-1", "--requests must be at least 1, not -1"),
    ] {
        fails_with_one_line(&["--embedded", "--data", "x", flag, value], says);
    }
}

#[test]
fn heartbeats_each_raise_the_version_and_start_a_lease() {
    let leased = |server: &Server, prefix: &str| {
        let doc = server
            .call(
                "GET",
                &format!("/v1/subscribers/{prefix}0000000"),
                &[],
                None,
            )
            .data();
        assert_eq!(doc["isOnline"], true, "{doc}");
        assert!(doc["onlineExpiresAt"].is_string(), "a lease runs: {doc}");
    };
    for s in
        writes_match_versions_then(&["--workload", "heartbeat", "--ttl-seconds", "600"], leased)
    {
        assert_eq!(s["workload"], "heartbeat");
        assert_eq!(s["writes"], 150, "{s}");
    }
}

#[test]
fn heartbeats_run_embedded_with_their_lease() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let s = summary(&[
        "--embedded",
        "--data",
        data,
        "--workload",
        "heartbeat",
        "--ttl-seconds",
        "600",
        "-n",
        "50",
        "-c",
        "2",
        "--subscribers",
        "5",
    ]);
    assert_eq!(s["writes"], 50, "{s}");
    let out = bench(&[
        "--embedded",
        "--data",
        data,
        "--workload",
        "heartbeat",
        "--ttl-seconds",
        "86401",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl-seconds"));
}

#[test]
fn a_wrong_key_or_a_held_directory_is_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &[]);
    let url = format!("http://{}", server.addr);
    fails_with_one_line(
        &["--url", &url, "--api-key", "not-the-key-0123456789"],
        "refused the API key: API Key not found",
    );
    fails_with_one_line(
        &["--embedded", "--data", path(dir.path()), "-n", "1"],
        "a running server holds it",
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
