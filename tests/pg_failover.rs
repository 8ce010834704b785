//! Failover under load (SPEC 12): two `subscriberd serve --backend
//! postgres` on a primary with a synchronous standby, both named in a
//! multi-host URL with `target_session_attrs=read-write`. 32 clients write
//! presence flips with fresh idempotency keys; the primary is killed with
//! SIGKILL and the standby promoted. Clients retry a failed request with its
//! key until it succeeds; the servers must find the promoted standby by
//! themselves. Afterwards every acknowledged write is there exactly once,
//! and every acknowledged key replays its answer.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{KEY, Reply, Server};
use testkit::pg::PgCluster;

const CLIENTS: usize = 32;
/// How long a client retries one request before the test fails.
const RECOVERY: Duration = Duration::from_secs(30);

/// A write the servers answered with 200.
#[derive(Debug)]
struct Ack {
    subscriber: String,
    key: String,
    body: String,
    response: Vec<u8>,
    version: u64,
    /// Whether it came as a replay (an earlier attempt had committed).
    replayed: bool,
    /// When the answer arrived.
    at: Instant,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Client {
    acks: Vec<Ack>,
    /// Failed attempts (5xx, 409, no complete answer), all retried.
    failures: usize,
    /// The answers of the failures, a few.
    failure_samples: Vec<String>,
}

fn serve(url: &str) -> (Server, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::launch(
        common::binary(),
        data.path(),
        &["--backend", "postgres", "--database-url", url],
        Some(KEY),
    );
    (server, data)
}

fn call(addr: SocketAddr, method: &str, path: &str, key: &str, body: &str) -> Option<Reply> {
    let auth = format!("ApiKey {KEY}");
    testkit::try_send(
        addr,
        method,
        path,
        &[("Authorization", &auth), ("idempotency-key", key)],
        body.as_bytes(),
    )
}

/// Flips `subscriber` with a fresh key per write until `stop`; a failed
/// attempt is sent again with the same key until it gets a 200.
fn client(addrs: [SocketAddr; 2], id: usize, stop: &AtomicBool) -> Client {
    let subscriber = format!("f{id}");
    let path = format!("/v1/subscribers/{subscriber}/online-status");
    let mut seen = Client::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("fo-{id}-{n}");
        let body = format!("{{\"isOnline\":{}}}", n % 2 == 0);
        let mut first_failure: Option<Instant> = None;
        let mut attempt = 0;
        let ack = loop {
            // Alternate servers on retries: either must serve.
            let addr = addrs[(id + attempt) % 2];
            attempt += 1;
            let reply = call(addr, "PATCH", &path, &key, &body);
            match reply {
                Some(reply) if reply.status == 200 => {
                    let version = reply.data()["__v"].as_u64().expect("__v");
                    break Ack {
                        subscriber: subscriber.clone(),
                        key: key.clone(),
                        body: body.clone(),
                        replayed: reply.header("idempotency-replay") == Some("true"),
                        response: reply.body,
                        version,
                        at: Instant::now(),
                    };
                }
                Some(reply) if reply.status < 500 && reply.status != 409 => {
                    panic!(
                        "{key} on {addr}: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                }
                failed => {
                    seen.failures += 1;
                    if seen.failure_samples.len() < 3 {
                        seen.failure_samples.push(failed.map_or_else(
                            || "no complete answer".to_owned(),
                            |r| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
                        ));
                    }
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    assert!(
                        since.elapsed() < RECOVERY,
                        "{key}: no 200 within {RECOVERY:?} of retries; the servers did not \
                         recover from the failover; last answers: {:?}",
                        seen.failure_samples
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        seen.acks.push(ack);
        n += 1;
    }
    seen
}

#[test]
fn failover_loses_no_acknowledged_write() {
    let started = Instant::now();
    let Some(mut primary) = PgCluster::start() else {
        return;
    };
    let standby = primary.standby(true);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let (a, _a_data) = serve(&url);
    let (b, _b_data) = serve(&url);
    let addrs = [a.addr, b.addr];
    for id in 0..CLIENTS {
        let body = format!("{{\"subscriberId\":\"f{id}\"}}");
        let reply = a.call("POST", "/v1/subscribers", &[], Some(&body));
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (stop, go) = (Arc::clone(&stop), Arc::clone(&go));
            std::thread::spawn(move || {
                go.wait();
                client(addrs, id, &stop)
            })
        })
        .collect();
    go.wait();
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    primary.kill9();
    standby.promote();
    let promoted = Instant::now();
    eprintln!(
        "primary killed, standby promoted in {:?}",
        promoted - killed
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<Client> = clients
        .into_iter()
        .map(|c| c.join().expect("a client failed"))
        .collect();

    let acks: Vec<&Ack> = seen.iter().flat_map(|c| &c.acks).collect();
    let before = acks.iter().filter(|a| a.at < killed).count();
    let after = acks.iter().filter(|a| a.at > promoted).count();
    let replays = acks.iter().filter(|a| a.replayed).count();
    let failures: usize = seen.iter().map(|c| c.failures).sum();
    eprintln!(
        "{} acknowledged ({before} before the kill, {after} after the promotion), \
         {failures} failed attempts retried, {replays} acknowledged as replays",
        acks.len()
    );
    assert!(before > 0, "nothing was acknowledged before the kill");
    for (id, client) in seen.iter().enumerate() {
        assert!(
            client.acks.iter().any(|a| a.at > promoted),
            "client {id} had no write acknowledged after the promotion"
        );
    }

    // Each subscriber: acknowledged versions exactly 1..=n, and n now on
    // the promoted standby (read through both servers and by SQL).
    let mut per_subscriber: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ack in &acks {
        per_subscriber
            .entry(&ack.subscriber)
            .or_default()
            .push(ack.version);
    }
    let stored: BTreeMap<String, u64> = standby
        .sql(
            "postgres",
            "SELECT subscriber_id || ' ' || version FROM subscribers",
        )
        .lines()
        .filter_map(|line| {
            let (id, v) = line.split_once(' ')?;
            Some((id.to_owned(), v.parse().ok()?))
        })
        .collect();
    for (subscriber, versions) in &per_subscriber {
        let n = versions.len() as u64;
        assert_eq!(
            *versions,
            (1..=n).collect::<Vec<_>>(),
            "{subscriber}: acknowledged versions (a write executed twice or lost)"
        );
        assert_eq!(
            stored.get(*subscriber),
            Some(&n),
            "{subscriber}: stored __v on the promoted standby vs acknowledged writes"
        );
        for server in [&a, &b] {
            let reply = server.call("GET", &format!("/v1/subscribers/{subscriber}"), &[], None);
            assert_eq!(reply.data()["__v"].as_u64(), Some(n), "{subscriber}");
        }
    }

    // Every acknowledged key replays its answer, on either server.
    let mut not_replayed = Vec::new();
    for (i, ack) in acks.iter().enumerate() {
        let path = format!("/v1/subscribers/{}/online-status", ack.subscriber);
        let reply = call(addrs[i % 2], "PATCH", &path, &ack.key, &ack.body)
            .expect("an answer from the recovered server");
        let same = reply.status == 200
            && reply.header("idempotency-replay") == Some("true")
            && reply.body == ack.response;
        if !same {
            not_replayed.push((
                ack.key.clone(),
                ack.version,
                reply.status,
                String::from_utf8_lossy(&reply.body).into_owned(),
            ));
        }
    }
    assert!(
        not_replayed.is_empty(),
        "{} of {} acknowledged keys do not replay their answer: {:?}",
        not_replayed.len(),
        acks.len(),
        &not_replayed[..not_replayed.len().min(5)]
    );
    for (subscriber, versions) in &per_subscriber {
        let v = a
            .call("GET", &format!("/v1/subscribers/{subscriber}"), &[], None)
            .data()["__v"]
            .as_u64();
        assert_eq!(
            v,
            Some(versions.len() as u64),
            "{subscriber}: replays wrote"
        );
    }
    for server in [&a, &b] {
        let health = server.call("GET", "/v1/health-check", &[], None);
        assert_eq!(
            health.status,
            200,
            "{}",
            String::from_utf8_lossy(&health.body)
        );
    }
    eprintln!("failover test took {:?}", started.elapsed());
}
