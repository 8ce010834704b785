//! The binary under a stepped wall clock (SPEC section 10: clock steps do
//! not stretch a lease). libfaketime (Debian's package `faketime`, which
//! scripts/test installs) shifts the server's wall clock by the offset in
//! a file it re-reads on every call, and leaves its monotonic clock alone:
//! the wall clock steps, elapsed time does not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    let mut candidates: Vec<PathBuf> = dirs
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .collect();
    candidates.push(PathBuf::from("/usr/lib/faketime/libfaketime.so.1"));
    candidates.into_iter().find(|p| p.exists())
}

/// `subscriberd` whose wall clock is shifted by the offset in `offset_file`.
fn faked(lib: &Path, offset_file: &Path) -> Command {
    let mut command = common::binary();
    command
        .env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    command
}

fn step(offset_file: &Path, offset: &str) {
    std::fs::write(offset_file, format!("{offset}\n")).expect("write the offset");
}

fn millis(iso: &serde_json::Value) -> u64 {
    let text = iso.as_str().unwrap_or_else(|| panic!("a time, not {iso}"));
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64
}

fn create(server: &Server, id: &str) -> serde_json::Value {
    let body = json!({ "subscriberId": id }).to_string();
    let reply = server.call("POST", "/v1/subscribers", &[], Some(&body));
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.data()
}

fn heartbeat(server: &Server, id: &str, ttl: u32) -> serde_json::Value {
    let body = json!({ "isOnline": true, "ttlSeconds": ttl }).to_string();
    let path = format!("/v1/subscribers/{id}/online-status");
    let reply = server.call("PATCH", &path, &[], Some(&body));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.data()
}

fn get(server: &Server, id: &str) -> serde_json::Value {
    let reply = server.call("GET", &format!("/v1/subscribers/{id}"), &[], None);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.data()
}

/// The server's wall clock now, read off a new subscriber's `createdAt`.
fn server_now(server: &Server, id: &str) -> u64 {
    millis(&create(server, id)["createdAt"])
}

#[test]
fn a_lease_ends_on_time_when_the_wall_clock_steps_back_and_at_open_is_cut() {
    let Some(lib) = libfaketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing under CI (Debian's package faketime; scripts/test installs it)"
        );
        eprintln!("SKIPPED clock_step: libfaketime not found (install Debian's package faketime)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let offset = dir.path().join("faketime-offset");
    step(&offset, "+0");
    let server = Server::launch(faked(&lib, &offset), &data, &[], Some(common::KEY));

    create(&server, "a");
    let before = server_now(&server, "probe-0");
    let beat = heartbeat(&server, "a", 3);
    let heard = Instant::now();
    assert_eq!(beat["isOnline"], true);

    // One hour back; proven by the time a new document gets.
    step(&offset, "-3600");
    let stepped = server_now(&server, "probe-1");
    assert!(
        stepped + 3_000_000 < before,
        "libfaketime did not step the server's clock: {before} then {stepped}"
    );

    // Heartbeats stop: offline no later than the TTL after the last one
    // (plus the expiry thread's wake-up and this poll), not an hour later.
    let offline = loop {
        let doc = get(&server, "a");
        if doc["isOnline"] == false {
            break doc;
        }
        assert!(
            heard.elapsed() < Duration::from_secs(6),
            "still online {:?} after a 3 s lease: {doc}",
            heard.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(heard.elapsed() >= Duration::from_millis(2_900));
    assert_eq!(offline["__v"], 2, "one expiry: {offline}");
    assert_eq!(
        offline["lastOnlineAt"], beat["updatedAt"],
        "the last heartbeat"
    );

    // A heartbeat after the step: its deadline is its own time + TTL.
    create(&server, "b");
    let now = server_now(&server, "probe-2");
    let b = heartbeat(&server, "b", 3);
    let deadline = millis(&b["onlineExpiresAt"]);
    assert!(
        deadline >= now + 3_000 && deadline <= now + 5_000,
        "deadline {} for a heartbeat at {now}",
        b["onlineExpiresAt"]
    );

    // Leases written while the clock ran an hour ahead, then a restart
    // with the right time: each ends within its TTL of the restart.
    step(&offset, "+3600");
    create(&server, "c");
    let ahead = heartbeat(&server, "c", 30);
    server.kill();
    step(&offset, "+0");
    let server = Server::launch(faked(&lib, &offset), &data, &[], Some(common::KEY));
    let now = server_now(&server, "probe-3");
    let c = get(&server, "c");
    assert_eq!(c["isOnline"], true, "{c}");
    let cut = millis(&c["onlineExpiresAt"]);
    assert!(
        millis(&ahead["onlineExpiresAt"]) > now + 3_000_000,
        "stored an hour ahead: {ahead}"
    );
    assert!(
        cut <= now + 30_000 && cut + 10_000 >= now + 30_000,
        "cut to now + 30 s at open, not {} (now {now})",
        c["onlineExpiresAt"]
    );
}
