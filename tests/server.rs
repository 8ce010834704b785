//! The `subscriberd` binary as a user runs it: first start, a session of
//! writes, SIGTERM, restart on the same directory, key management while it
//! runs, and clear failures.

mod common;

use std::collections::BTreeMap;

use common::{KEY, Server, binary};
use serde_json::json;

#[test]
fn acknowledged_writes_survive_sigterm_and_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &[]);
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut replays = Vec::new();
    for i in 0..20 {
        let id = format!("user-{i}");
        let reply = server.call(
            "POST",
            "/v1/subscribers",
            &[],
            Some(&format!("{{\"subscriberId\":\"{id}\"}}")),
        );
        assert_eq!(reply.status, 201);
        for n in 0..3 {
            let key = format!("k-{i}-{n}");
            let body = format!("{{\"isOnline\": {}}}", n % 2 == 0);
            let reply = server.call(
                "PATCH",
                &format!("/v1/subscribers/{id}/online-status"),
                &[("idempotency-key", &key)],
                Some(&body),
            );
            assert_eq!(reply.status, 200);
            acked.insert(id.clone(), reply.data()["__v"].as_u64().expect("__v"));
            replays.push((id.clone(), key, body, reply.body));
        }
    }
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");

    let server = Server::start(dir.path(), &[]);
    for (id, version) in &acked {
        let doc = server
            .call("GET", &format!("/v1/subscribers/{id}"), &[], None)
            .data();
        assert_eq!(doc["__v"].as_u64(), Some(*version), "{id}");
    }
    for (id, key, body, first) in &replays {
        let reply = server.call(
            "PATCH",
            &format!("/v1/subscribers/{id}/online-status"),
            &[("idempotency-key", key)],
            Some(body),
        );
        assert_eq!(reply.header("idempotency-replay"), Some("true"));
        assert_eq!(&reply.body, first);
    }
    assert!(server.terminate().success());
}

#[test]
fn first_start_prints_a_working_key_once() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with(dir.path(), &[], None);
    let banner = server.stdout("More keys");
    assert!(banner.contains("Development"), "{banner}");
    let secret = banner
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no key in {banner}"))
        .to_owned();
    assert!(banner.contains("curl -X PATCH"));
    let auth = format!("ApiKey {secret}");
    let reply = testkit::send(
        server.addr,
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth)],
        Some(br#"{"subscriberId":"a"}"#),
    );
    assert_eq!(reply.status, 201);
    assert!(
        server.stderr().iter().all(|line| !line.contains(&secret)),
        "the key is never logged"
    );
    assert!(server.terminate().success());

    // A second start reuses the stored key and prints none.
    let server = Server::start_with(dir.path(), &[], None);
    assert!(!server.stdout("More keys").contains(&secret));
    let reply = testkit::send(
        server.addr,
        "GET",
        "/v1/subscribers/a",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn key_commands_work_while_the_server_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &[]);
    let created = binary()
        .args(["keys", "create", "--data"])
        .arg(dir.path())
        .output()
        .expect("keys create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let secret = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(secret.len(), 64, "only the secret is printed: {secret:?}");
    let auth = format!("ApiKey {secret}");
    let get = || {
        testkit::send(
            server.addr,
            "GET",
            "/v1/subscribers/x",
            &[("Authorization", &auth)],
            None,
        )
    };
    assert_eq!(get().status, 404, "a new key works at once");

    let listed = binary()
        .args(["keys", "list", "--data"])
        .arg(dir.path())
        .output()
        .expect("keys list");
    let listing = String::from_utf8(listed.stdout).expect("utf-8");
    assert!(
        !listing.contains(&secret) && !listing.contains(KEY),
        "{listing}"
    );
    let id = listing
        .lines()
        .find(|l| l.contains(&secret[60..]))
        .and_then(|l| l.split_whitespace().next())
        .expect("the new key is listed")
        .to_owned();
    let revoked = binary()
        .args(["keys", "revoke", "--data"])
        .arg(dir.path())
        .arg(&id)
        .output()
        .expect("revoke");
    assert!(revoked.status.success());
    assert_eq!(get().status, 401, "a revoked key fails at once");
    assert!(server.terminate().success());

    // Without a server the commands open the store themselves.
    let listed = binary()
        .args(["keys", "list", "--data"])
        .arg(dir.path())
        .output()
        .expect("keys list");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

#[test]
fn unusable_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("write");
    let out = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open data directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A damaged database is refused with a clear message, not served empty.
    let damaged = tempfile::tempdir().expect("dir");
    assert!(Server::start(damaged.path(), &[]).terminate().success());
    std::fs::remove_file(damaged.path().join("db")).expect("remove sled's log");
    let out = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(damaged.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("damaged or missing"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no new key is issued on a damaged directory"
    );

    // A directory a live server holds is refused, not shared.
    let server = Server::start(dir.path(), &["--durability", "relaxed"]);
    let out = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open data directory"));
    drop(server);
}

#[test]
fn the_presence_ttl_flag_takes_0_to_86400_and_its_variable_works() {
    let dir = tempfile::tempdir().expect("dir");
    refuses_values(
        dir.path(),
        "--presence-ttl-secs",
        &["86401", "-1", "1.5", "soon"],
    );
    // The environment variable sets the default lease.
    let mut command = binary();
    command.env("SUBSCRIBERD_PRESENCE_TTL_SECS", "120");
    let server = Server::launch(command, dir.path(), &[], Some(common::KEY));
    let created = server.call(
        "POST",
        "/v1/subscribers",
        &[],
        Some(r#"{"subscriberId":"u1"}"#),
    );
    assert_eq!(created.status, 201);
    let online = server
        .call(
            "PATCH",
            "/v1/subscribers/u1/online-status",
            &[],
            Some(r#"{"isOnline": true}"#),
        )
        .data();
    let updated = online["updatedAt"].as_str().expect("updatedAt");
    let expires = online["onlineExpiresAt"]
        .as_str()
        .expect("a lease from the variable");
    assert!(expires > updated, "{online}");
    assert!(server.terminate().success());
}

#[test]
fn the_event_retention_flag_takes_1_to_31536000_and_its_variable_works() {
    let dir = tempfile::tempdir().expect("dir");
    refuses_values(
        dir.path(),
        "--event-retention-secs",
        &["0", "31536001", "-1", "1.5", "a day"],
    );
    // The variable is read, and held to the same range.
    let out = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("SUBSCRIBERD_EVENT_RETENTION_SECS", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--event-retention-secs"));
    let mut command = binary();
    command.env("SUBSCRIBERD_EVENT_RETENTION_SECS", "31536000");
    let server = Server::launch(command, dir.path(), &[], Some(common::KEY));
    let page = server.call("GET", "/v1/presence/events", &[], None);
    assert_eq!(page.status, 200);
    assert_eq!(page.data(), json!({"events": [], "next": "0"}));
    assert!(server.terminate().success());
    let help = binary()
        .args(["serve", "--help"])
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--event-retention-secs",
        "SUBSCRIBERD_EVENT_RETENTION_SECS",
        "--presence-feed",
        "SUBSCRIBERD_PRESENCE_FEED",
    ] {
        assert!(help.contains(flag), "{flag} in --help: {help}");
    }
}

#[test]
fn the_presence_feed_flag_takes_on_or_off_and_off_answers_404() {
    let dir = tempfile::tempdir().expect("dir");
    refuses_values(dir.path(), "--presence-feed", &["yes", "1", ""]);
    let mut command = binary();
    command.env("SUBSCRIBERD_PRESENCE_FEED", "off");
    let server = Server::launch(command, dir.path(), &[], Some(common::KEY));
    for path in [
        "/v1/presence/events",
        "/v1/presence/online",
        "/v1/presence/stats",
    ] {
        server.call("GET", path, &[], None).error(
            404,
            "The presence feed is off on this server (subscriberd serve --presence-feed on keeps it)",
        );
    }
    // Presence writes still work without the feed.
    let created = server.call(
        "POST",
        "/v1/subscribers",
        &[],
        Some(r#"{"subscriberId":"u1"}"#),
    );
    assert_eq!(created.status, 201);
    let online = server.call(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        &[],
        Some(r#"{"isOnline": true}"#),
    );
    assert_eq!(online.status, 200);
    assert!(server.terminate().success());

    // On again (the default): the routes answer, the counts rebuilt at open.
    let server = Server::start(dir.path(), &["--presence-feed", "on"]);
    let stats = server.call("GET", "/v1/presence/stats", &[], None);
    assert_eq!(stats.status, 200);
    assert_eq!(stats.data(), json!({"online": 1, "subscribers": 1}));
    assert!(server.terminate().success());
}

/// `serve` with each of `bad` as `flag` exits 2 naming the flag, without a panic.
fn refuses_values(dir: &std::path::Path, flag: &str, bad: &[&str]) {
    for bad in bad {
        let out = binary()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg(format!("{flag}={bad}"))
            .arg("--data")
            .arg(dir)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
