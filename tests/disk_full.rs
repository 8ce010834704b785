//! Disk full (SPEC 8): on a data directory in a 16 MiB tmpfs, durable writes
//! fill the disk. The writes it hits answer 500 in the error shape (never a
//! dropped connection), the health check answers 503 while the store cannot
//! write, and once the tmpfs is grown the same process writes again and is
//! healthy again: no restart. A server that cannot recover in place may
//! instead exit non-zero with one line stating why, so a supervisor restarts
//! it. Needs root (to mount a tmpfs); the only test that skips without it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{KEY, Reply, Server};

/// 100 KiB of `data`: about 160 of these fill 16 MiB.
const BLOB: usize = 100 * 1024;

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop (also
/// when the test panics; lazily if something still holds it).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("dir");
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], self.path());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// `None` when the connection dropped without a complete answer.
fn create(addr: SocketAddr, id: &str) -> Option<Reply> {
    let body = format!(
        "{{\"subscriberId\":\"{id}\",\"data\":{{\"blob\":\"{}\"}}}}",
        "x".repeat(BLOB)
    );
    let auth = format!("ApiKey {KEY}");
    testkit::try_send(
        addr,
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
}

fn health(addr: SocketAddr) -> Option<Reply> {
    testkit::try_send(addr, "GET", "/v1/health-check", &[], b"")
}

/// Asserts a 500 in the error shape with an `errorId`.
fn assert_internal_error(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        500,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["statusCode"], 500, "{body}");
    assert_eq!(body["error"], "Internal Server Error", "{body}");
    assert!(
        body["timestamp"].is_string() && body["path"].is_string(),
        "{body}"
    );
    assert!(
        body["errorId"].as_str().is_some_and(|id| id.len() == 36),
        "{what}: no errorId in {body}"
    );
}

/// If the server has exited: it must be with a non-zero status and exactly
/// one line of reason. Returns whether it exited.
fn exited_with_one_reason(server: &mut Server, observed: &mut Vec<String>) -> bool {
    let Some(status) = server.child.try_wait().expect("try_wait") else {
        return false;
    };
    let log = server.stderr_to_end(Duration::from_secs(2));
    observed.push(format!("the process exited: {status:?}"));
    assert!(
        !status.success(),
        "exited 0 while the disk was full: {observed:#?}"
    );
    let reasons: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("subscriberd: "))
        .collect();
    assert_eq!(
        reasons.len(),
        1,
        "exactly one line states why it stopped: {log:#?}"
    );
    assert_eq!(log.last(), Some(reasons[0]), "the reason is the last line");
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "no panic: {log:#?}"
    );
    true
}

#[test]
fn a_full_disk_answers_500_and_503_then_recovers_once_there_is_room() {
    if !running_as_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let tmpfs = Tmpfs::mount("16m");
    let data: PathBuf = tmpfs.path().join("data");
    let mut server = Server::start(&data, &[]);
    let addr = server.addr;
    let mut observed = Vec::new();

    // Fill the disk.
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for i in 0..600 {
        let id = format!("s{i}");
        let Some(reply) = create(addr, &id) else {
            if exited_with_one_reason(&mut server, &mut observed) {
                eprintln!("{observed:#?}");
                return;
            }
            panic!("POST {id}: the connection dropped without a complete answer");
        };
        if reply.status == 201 {
            acknowledged.push(id);
            continue;
        }
        assert_internal_error(&reply, &format!("POST {id} on a full disk"));
        failed += 1;
        if failed == 3 {
            break;
        }
    }
    observed.push(format!(
        "{} writes of {} KiB acknowledged, then {failed} answered 500",
        acknowledged.len(),
        BLOB / 1024
    ));
    assert!(failed > 0, "the disk never filled: {observed:#?}");
    assert!(
        acknowledged.len() > 10,
        "the server failed before the disk was full: {observed:#?}"
    );

    // While full: the health check says so (503, error shape), or the
    // process stops with its reason.
    let mut unhealthy = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if exited_with_one_reason(&mut server, &mut observed) {
            eprintln!("{observed:#?}");
            return;
        }
        let Some(reply) = health(addr) else {
            continue;
        };
        if reply.status == 503 {
            let body = reply.json();
            assert_eq!(body["statusCode"], 503, "{body}");
            assert!(body["message"].is_string(), "{body}");
            // Readiness says the same, and the metrics count the failures.
            let ready = testkit::try_send(addr, "GET", "/ready", &[], b"").map(|r| r.status);
            assert_eq!(ready, Some(503), "/ready while the store cannot write");
            let errors = testkit::try_send(addr, "GET", "/metrics", &[], b"")
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("subscriberd_storage_errors_total "))
                        .and_then(|v| v.parse::<f64>().ok())
                });
            assert!(
                errors.is_some_and(|n| n >= 1.0),
                "storage errors counted: {errors:?}"
            );
            unhealthy = true;
            break;
        }
        assert_eq!(reply.status, 200, "health check: {reply:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    observed.push(format!("health check answered 503 while full: {unhealthy}"));

    // Make room; the same process must write again by itself.
    tmpfs.resize("256m");
    let started = Instant::now();
    let mut recovered = None;
    let mut attempts = 0;
    while started.elapsed() < Duration::from_secs(15) {
        if exited_with_one_reason(&mut server, &mut observed) {
            eprintln!("{observed:#?}");
            return;
        }
        attempts += 1;
        let id = format!("after-{attempts}");
        let Some(reply) = create(addr, &id) else {
            if exited_with_one_reason(&mut server, &mut observed) {
                eprintln!("{observed:#?}");
                return;
            }
            panic!("POST {id}: the connection dropped without a complete answer");
        };
        let healthy = health(addr).is_some_and(|r| r.status == 200);
        if reply.status == 201 && healthy {
            recovered = Some(started.elapsed());
            break;
        }
        if reply.status != 201 {
            assert_internal_error(&reply, "POST after the disk was grown");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let last_health = health(addr).map(|r| r.status);
    observed.push(format!(
        "after growing the tmpfs: {attempts} write attempts, recovered after {recovered:?}, health {last_health:?}"
    ));
    eprintln!("{observed:#?}");
    assert!(
        unhealthy,
        "the health check stayed 200 while writes failed: {observed:#?}"
    );
    assert!(
        recovered.is_some(),
        "still failing 15 s after the disk was grown: {observed:#?}"
    );

    // Everything acknowledged before the disk filled is still there, and
    // presence writes work.
    for id in &acknowledged {
        let reply = server.call("GET", &format!("/v1/subscribers/{id}"), &[], None);
        assert_eq!(reply.status, 200, "{id} was acknowledged");
    }
    let reply = server.call(
        "PATCH",
        "/v1/subscribers/s0/online-status",
        &[],
        Some(r#"{"isOnline": true}"#),
    );
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(server.terminate().success());
}
