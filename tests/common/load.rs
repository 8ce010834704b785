//! The crash workload: 32 clients sending presence writes and idempotent
//! creates, each with a fresh idempotency key, until the server dies (kill -9
//! in tests/crash.rs, a power cut in tests/power_loss.rs); then the checks
//! on the restarted server.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{KEY, Server};

pub const CLIENTS: usize = 32;
pub const SHARED_SUBSCRIBERS: usize = 16;

/// A request the server answered with success.
#[derive(Debug, Clone)]
pub struct Ack {
    pub subscriber: String,
    pub method: &'static str,
    pub path: String,
    pub key: String,
    pub body: String,
    pub status: u16,
    pub response: Vec<u8>,
    pub version: u64,
    /// When the answer arrived.
    pub at: Instant,
}

pub fn random_below(n: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n
}

/// Creates the shared subscribers `s0`..`s15`.
pub fn seed(server: &Server) {
    for s in 0..SHARED_SUBSCRIBERS {
        let body = format!("{{\"subscriberId\":\"s{s}\"}}");
        let reply = server.call("POST", "/v1/subscribers", &[], Some(&body));
        assert_eq!(reply.status, 201, "seeding s{s}");
    }
}

/// The clients of one round, running.
pub struct Load {
    /// Set when the server is about to fail: from then on an error answer
    /// ends a client instead of failing the test.
    failing: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Ack>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, round: usize) -> Load {
        let failing = Arc::new(AtomicBool::new(false));
        let clients = (0..CLIENTS)
            .map(|id| {
                let failing = Arc::clone(&failing);
                std::thread::spawn(move || client(addr, round, id, &failing))
            })
            .collect();
        Load { failing, clients }
    }

    /// The server is about to die or fail: errors are expected from now on.
    pub fn expect_failures(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    /// Waits for every client to stop (call once the server is gone) and
    /// returns what was acknowledged.
    pub fn acknowledged(self) -> Vec<Ack> {
        self.expect_failures();
        self.clients
            .into_iter()
            .flat_map(|c| c.join().expect("client"))
            .collect()
    }
}

fn client(addr: SocketAddr, round: usize, id: usize, failing: &AtomicBool) -> Vec<Ack> {
    let auth = format!("ApiKey {KEY}");
    let mut acks = Vec::new();
    for n in 0.. {
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
        // Read before sending: an answer to a request sent after this was
        // set may be an error, and is then no failure of the test.
        let failure_expected = failing.load(Ordering::SeqCst);
        let Some(reply) = testkit::try_send(addr, method, &path, &headers, body.as_bytes()) else {
            break; // the server is gone: this request is not acknowledged
        };
        if reply.status >= 300 {
            let expected = failure_expected || failing.load(Ordering::SeqCst);
            assert!(
                expected,
                "{method} {path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
            break;
        }
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
            at: Instant::now(),
        });
    }
    acks
}

/// What the restarted server no longer holds.
#[derive(Debug, Default)]
pub struct Losses<'a> {
    /// Acknowledged writes whose document is below the acknowledged `__v`.
    pub versions: Vec<&'a Ack>,
    /// Acknowledged keys that do not replay the acknowledged answer.
    pub records: Vec<&'a Ack>,
    /// Subscribers whose `__v` is below the highest ever acknowledged.
    pub went_backwards: Vec<String>,
}

impl Losses<'_> {
    pub fn none(&self) -> bool {
        self.versions.is_empty() && self.records.is_empty() && self.went_backwards.is_empty()
    }
}

/// Records the highest `__v` acknowledged for each subscriber.
pub fn note_highest(highest: &mut BTreeMap<String, u64>, acks: &[Ack]) {
    for ack in acks {
        let top = highest.entry(ack.subscriber.clone()).or_default();
        *top = (*top).max(ack.version);
    }
}

/// Compares the restarted server with what was acknowledged.
pub fn check<'a>(server: &Server, acks: &'a [Ack], highest: &BTreeMap<String, u64>) -> Losses<'a> {
    let mut conn = server.connect();
    let mut losses = Losses::default();
    let mut current: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let version_of = |conn: &mut super::KeepAlive, subscriber: &str| -> Option<u64> {
        let reply = conn.call("GET", &format!("/v1/subscribers/{subscriber}"), None);
        (reply.status == 200).then(|| reply.data()["__v"].as_u64().expect("__v"))
    };
    // Versions first: replays of lost keys would execute and move them.
    for ack in acks {
        let now = *current
            .entry(&ack.subscriber)
            .or_insert_with(|| version_of(&mut conn, &ack.subscriber));
        if now.is_none_or(|v| v < ack.version) {
            losses.versions.push(ack);
        }
    }
    for (subscriber, top) in highest {
        if version_of(&mut conn, subscriber).is_some_and(|v| v < *top) {
            losses.went_backwards.push(subscriber.clone());
        }
    }
    for ack in acks {
        let replay = conn.call_with(
            ack.method,
            &ack.path,
            &[("idempotency-key", &ack.key)],
            Some(&ack.body),
        );
        let same = replay.status == ack.status
            && replay.header("idempotency-replay") == Some("true")
            && replay.body == ack.response;
        if !same {
            losses.records.push(ack);
        }
    }
    losses
}

/// One event of the feed: seq, subscriber, `__v`, online.
pub type FeedEvent = (u64, String, u64, bool);

/// Reads the whole presence feed through `GET /v1/presence/events`.
pub fn read_feed(server: &Server) -> Vec<FeedEvent> {
    let mut conn = server.connect();
    let mut feed = Vec::new();
    let mut after = "0".to_owned();
    loop {
        let reply = conn.call(
            "GET",
            &format!("/v1/presence/events?after={after}&limit=1000"),
            None,
        );
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let data = reply.data();
        let events = data["events"].as_array().expect("events");
        if events.is_empty() {
            return feed;
        }
        for e in events {
            feed.push((
                e["seq"].as_str().expect("seq").parse().expect("decimal"),
                e["subscriberId"].as_str().expect("id").to_owned(),
                e["__v"].as_u64().expect("__v"),
                e["isOnline"].as_bool().expect("isOnline"),
            ));
        }
        after = data["next"].as_str().expect("next").to_owned();
    }
}

/// After a restart in durable mode: the feed is in seq order, keeps every
/// event read before (a reader resuming after `before`'s last seq reads on
/// from there), and agrees with every acknowledged presence write (the
/// presence at an acknowledged `__v` is the last event at or below it)
/// and with each subscriber's document now. Returns the feed.
pub fn check_feed(server: &Server, acks: &[Ack], before: &[FeedEvent]) -> Vec<FeedEvent> {
    let feed = read_feed(server);
    assert!(feed.windows(2).all(|w| w[0].0 < w[1].0), "seq order");
    assert!(
        feed.starts_with(before),
        "events read before the kill changed or vanished"
    );
    if let Some((cursor, ..)) = before.last() {
        let reply = server.call(
            "GET",
            &format!("/v1/presence/events?after={cursor}&limit=1000"),
            &[],
            None,
        );
        let resumed = reply.data()["events"].as_array().expect("events").len();
        assert_eq!(
            resumed,
            (feed.len() - before.len()).min(1000),
            "a resuming reader"
        );
    }
    let mut timelines: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    for (_, subscriber, version, online) in &feed {
        timelines
            .entry(subscriber)
            .or_default()
            .push((*version, *online));
    }
    let presence_at = |subscriber: &str, version: u64| -> Option<bool> {
        timelines
            .get(subscriber)?
            .iter()
            .rev()
            .find(|(v, _)| *v <= version)
            .map(|(_, online)| *online)
    };
    for ack in acks.iter().filter(|ack| ack.method == "PATCH") {
        let response: serde_json::Value = serde_json::from_slice(&ack.response).expect("json");
        let online = response["data"]["isOnline"].as_bool();
        assert_eq!(
            presence_at(&ack.subscriber, ack.version),
            online,
            "the feed disagrees with the acknowledged write {} (__v {})",
            ack.key,
            ack.version
        );
    }
    let mut conn = server.connect();
    for s in 0..SHARED_SUBSCRIBERS {
        let reply = conn.call("GET", &format!("/v1/subscribers/s{s}"), None);
        let data = reply.data();
        let version = data["__v"].as_u64().expect("__v");
        assert_eq!(
            presence_at(&format!("s{s}"), version),
            data["isOnline"].as_bool(),
            "the feed disagrees with s{s} at __v {version}"
        );
    }
    feed
}
