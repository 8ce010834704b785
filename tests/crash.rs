//! Crash under load: the `subscriberd` binary takes presence writes and
//! idempotent creates from 32 clients and is killed with SIGKILL at random
//! moments, then restarted on the same directory. In durable mode every
//! acknowledged write must survive, `__v` never goes backwards, and every
//! acknowledged idempotency key replays the same body. In relaxed mode the
//! losses are measured and reported, not asserted (README: "Durability").

mod common;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{KEY, Server};

const CLIENTS: usize = 32;
const SHARED_SUBSCRIBERS: usize = 16;

#[derive(Debug, Clone)]
struct Ack {
    subscriber: String,
    method: &'static str,
    path: String,
    key: String,
    body: String,
    status: u16,
    response: Vec<u8>,
    version: u64,
}

fn random_below(n: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n
}

fn client(addr: SocketAddr, round: usize, id: usize, stop: &AtomicBool) -> Vec<Ack> {
    let auth = format!("ApiKey {KEY}");
    let mut acks = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("r{round}-c{id}-{n}");
        let (method, path, body, subscriber) = if id % 4 == 0 {
            let subscriber = format!("new-{key}");
            let body = format!("{{\"subscriberId\":\"{subscriber}\",\"data\":{{\"n\":{n}}}}}");
            ("POST", "/v1/subscribers".to_owned(), body, subscriber)
        } else {
            let subscriber = format!("s{}", (id + n) % SHARED_SUBSCRIBERS);
            let body = format!("{{\"isOnline\": {}}}", n % 3 != 0);
            let path = format!("/v1/subscribers/{subscriber}/online-status");
            ("PATCH", path, body, subscriber)
        };
        let headers = [
            ("Authorization", auth.as_str()),
            ("idempotency-key", key.as_str()),
        ];
        let Some(reply) = testkit::try_send(addr, method, &path, &headers, body.as_bytes()) else {
            break; // the server is gone: this request is not acknowledged
        };
        assert!(
            reply.status < 300,
            "{method} {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        let version = reply.data()["__v"].as_u64().expect("__v");
        acks.push(Ack {
            subscriber,
            method,
            path,
            key,
            body,
            status: reply.status,
            response: reply.body,
            version,
        });
    }
    acks
}

#[derive(Debug, Default)]
struct Tally {
    acknowledged: usize,
    kills: usize,
    lost_versions: usize,
    lost_records: usize,
    went_backwards: usize,
}

fn run(mode: &str, rounds: usize) -> Tally {
    let dir = tempfile::tempdir().expect("dir");
    let args = ["--durability", mode, "--flush-interval-ms", "200"];
    let server = Server::start(dir.path(), &args);
    for s in 0..SHARED_SUBSCRIBERS {
        let reply = server.call(
            "POST",
            "/v1/subscribers",
            &[],
            Some(&format!("{{\"subscriberId\":\"s{s}\"}}")),
        );
        assert_eq!(reply.status, 201);
    }
    // Make the setup durable in both modes before the first kill.
    assert!(server.terminate().success());

    let mut tally = Tally::default();
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..rounds {
        let server = Server::start(dir.path(), &args);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let stop = Arc::clone(&stop);
                let addr = server.addr;
                std::thread::spawn(move || client(addr, round, id, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + random_below(1200)));
        server.kill();
        tally.kills += 1;
        stop.store(true, Ordering::Relaxed);
        let acks: Vec<Ack> = clients
            .into_iter()
            .flat_map(|c| c.join().expect("client"))
            .collect();
        tally.acknowledged += acks.len();
        for ack in &acks {
            let top = highest.entry(ack.subscriber.clone()).or_default();
            *top = (*top).max(ack.version);
        }

        let server = Server::start(dir.path(), &args);
        check(&server, dir.path(), &acks, &highest, mode, &mut tally);
        assert!(server.terminate().success());
    }
    tally
}

fn check(
    server: &Server,
    _dir: &Path,
    acks: &[Ack],
    highest: &BTreeMap<String, u64>,
    mode: &str,
    tally: &mut Tally,
) {
    // Versions first: replays of lost keys would execute and move them.
    for ack in acks {
        let reply = server.call(
            "GET",
            &format!("/v1/subscribers/{}", ack.subscriber),
            &[],
            None,
        );
        let current = (reply.status == 200).then(|| reply.data()["__v"].as_u64().expect("__v"));
        if current.is_none_or(|v| v < ack.version) {
            tally.lost_versions += 1;
            assert_ne!(
                mode, "durable",
                "acknowledged {} {} at __v {} but found {current:?}",
                ack.method, ack.path, ack.version
            );
        }
    }
    for (subscriber, top) in highest {
        let reply = server.call("GET", &format!("/v1/subscribers/{subscriber}"), &[], None);
        if reply.status == 200 && reply.data()["__v"].as_u64().is_some_and(|v| v < *top) {
            tally.went_backwards += 1;
            assert_ne!(mode, "durable", "__v of {subscriber} went back below {top}");
        }
    }
    for ack in acks {
        let replay = server.call(
            ack.method,
            &ack.path,
            &[("idempotency-key", &ack.key)],
            Some(&ack.body),
        );
        let same = replay.status == ack.status
            && replay.header("idempotency-replay") == Some("true")
            && replay.body == ack.response;
        if !same {
            tally.lost_records += 1;
            assert_ne!(
                mode, "durable",
                "key {} did not replay its acknowledged answer",
                ack.key
            );
        }
    }
}

#[test]
fn durable_mode_loses_no_acknowledged_write_under_sigkill() {
    let tally = run("durable", 6);
    eprintln!("durable: {tally:?}");
    assert!(tally.kills >= 5);
    assert!(tally.acknowledged > 0, "no write was acknowledged");
    assert_eq!(
        (
            tally.lost_versions,
            tally.lost_records,
            tally.went_backwards
        ),
        (0, 0, 0)
    );
}

#[test]
fn relaxed_mode_losses_are_measured() {
    let tally = run("relaxed", 5);
    eprintln!(
        "relaxed (flush every 200 ms): {} acknowledged, {} kills, {} lost writes, {} lost records, {} subscribers went backwards",
        tally.acknowledged,
        tally.kills,
        tally.lost_versions,
        tally.lost_records,
        tally.went_backwards
    );
    assert!(tally.acknowledged > 0, "no write was acknowledged");
}
