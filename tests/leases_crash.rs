//! kill -9 while thousands of presence leases are expiring (SPEC sections 7
//! and 10): after a restart every lease past its deadline is offline, each
//! flipped exactly once (`__v` one above its last acknowledged heartbeat,
//! `updatedAt` its own deadline, `lastOnlineAt` its last heartbeat), and no
//! acknowledged heartbeat of the subscribers still alive is lost.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, load};

/// Subscribers whose lease runs out (1 to 3 s after their heartbeat).
const EXPIRING: usize = 3_000;
/// Subscribers kept alive by heartbeats until the kill.
const ALIVE: usize = 200;
const THREADS: usize = 8;

/// What the server acknowledged for one subscriber's last write.
#[derive(Debug, Clone)]
struct Acked {
    version: u64,
    heard_at: String,
    deadline: String,
}

fn id(kind: &str, i: usize) -> String {
    format!("{kind}-{i:05}")
}

/// Runs `work(i)` for `0..n` on [`THREADS`] kept-alive connections.
fn spread<T: Send + 'static>(
    server: &Server,
    n: usize,
    work: impl Fn(&mut common::KeepAlive, usize) -> Option<T> + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut connection = server.connect();
            let work = Arc::clone(&work);
            std::thread::spawn(move || {
                (t..n)
                    .step_by(THREADS)
                    .filter_map(|i| work(&mut connection, i))
                    .collect::<Vec<T>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect()
}

fn heartbeat(
    connection: &mut common::KeepAlive,
    subscriber: &str,
    ttl: u64,
    key: &str,
) -> Option<Acked> {
    let path = format!("/v1/subscribers/{subscriber}/online-status");
    let body = format!(r#"{{"isOnline": true, "ttlSeconds": {ttl}}}"#);
    let reply = connection.call_with("PATCH", &path, &[("idempotency-key", key)], Some(&body));
    assert_eq!(reply.status, 200, "heartbeat of {subscriber}");
    let doc = reply.data();
    Some(Acked {
        version: doc["__v"].as_u64().expect("__v"),
        heard_at: doc["updatedAt"].as_str().expect("updatedAt").to_owned(),
        deadline: doc["onlineExpiresAt"]
            .as_str()
            .expect("onlineExpiresAt")
            .to_owned(),
    })
}

#[test]
fn leases_expiring_through_a_sigkill_flip_exactly_once() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &["--durability", "durable"]);
    spread(&server, EXPIRING + ALIVE, |c, i| {
        let subscriber = if i < EXPIRING {
            id("gone", i)
        } else {
            id("alive", i - EXPIRING)
        };
        let reply = c.call(
            "POST",
            "/v1/subscribers",
            Some(&format!(r#"{{"subscriberId":"{subscriber}"}}"#)),
        );
        assert_eq!(reply.status, 201);
        None::<()>
    });

    // The alive ones: heartbeats with a long lease until the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let alive: Vec<_> = (0..4)
        .map(|t| {
            let mut connection = server.connect();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut acked: BTreeMap<String, u64> = BTreeMap::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let subscriber = id("alive", (t + 4 * n) % ALIVE);
                    let path = format!("/v1/subscribers/{subscriber}/online-status");
                    let key = format!("alive-{t}-{n}");
                    let reply = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        connection.call_with(
                            "PATCH",
                            &path,
                            &[("idempotency-key", &key)],
                            Some(r#"{"isOnline": true, "ttlSeconds": 60}"#),
                        )
                    })) {
                        Ok(reply) => reply,
                        Err(_) => break, // the server died mid-request
                    };
                    if reply.status != 200 {
                        break;
                    }
                    let version = reply.data()["__v"].as_u64().expect("__v");
                    acked.insert(subscriber, version);
                    n += 1;
                }
                acked
            })
        })
        .collect();

    // The expiring ones: one heartbeat each, leases of 1, 2 or 3 s, so the
    // expiries run over a few seconds.
    let gone: BTreeMap<String, Acked> = spread(&server, EXPIRING, |c, i| {
        let subscriber = id("gone", i);
        let ttl = 1 + (i % 3) as u64;
        heartbeat(c, &subscriber, ttl, &format!("gone-{i}")).map(|a| (subscriber, a))
    })
    .into_iter()
    .collect();
    let all_acked = Instant::now();

    // Kill while the expiries are being written.
    std::thread::sleep(Duration::from_millis(1_000 + load::random_below(1_500)));
    stop.store(true, Ordering::Relaxed);
    server.kill();
    let alive_acked: Vec<BTreeMap<String, u64>> = alive
        .into_iter()
        .map(|t| t.join().expect("alive client"))
        .collect();

    let server = Server::start(dir.path(), &["--durability", "durable"]);
    // Past every deadline, with time for the expiry thread to write them.
    let past = Duration::from_secs(5);
    if let Some(left) = past.checked_sub(all_acked.elapsed()) {
        std::thread::sleep(left);
    }
    let mut flipped = 0;
    for (subscriber, acked) in &gone {
        let reply = server.call("GET", &format!("/v1/subscribers/{subscriber}"), &[], None);
        assert_eq!(reply.status, 200);
        let doc = reply.data();
        assert_eq!(doc["isOnline"], false, "{subscriber}: {doc}");
        assert_eq!(
            doc["__v"],
            acked.version + 1,
            "{subscriber} flipped once: {doc}"
        );
        assert_eq!(
            doc["updatedAt"],
            acked.deadline.as_str(),
            "{subscriber}: {doc}"
        );
        assert_eq!(
            doc["lastOnlineAt"],
            acked.heard_at.as_str(),
            "{subscriber}: {doc}"
        );
        assert!(doc.get("onlineExpiresAt").is_none(), "{subscriber}: {doc}");
        flipped += 1;
    }
    assert_eq!(flipped, EXPIRING);
    let mut checked_alive = 0;
    for acked in &alive_acked {
        for (subscriber, version) in acked {
            let doc = server
                .call("GET", &format!("/v1/subscribers/{subscriber}"), &[], None)
                .data();
            assert!(
                doc["__v"].as_u64().expect("__v") >= *version,
                "acknowledged heartbeat of {subscriber} lost: {doc}"
            );
            assert_eq!(doc["isOnline"], true, "{subscriber}: {doc}");
            checked_alive += 1;
        }
    }
    assert!(
        checked_alive > 0,
        "no heartbeat of the alive set was acknowledged"
    );
    assert!(server.terminate().success());
}
