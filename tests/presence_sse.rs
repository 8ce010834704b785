//! The binary's presence event stream end to end (SPEC section 11): a
//! reader of `GET /v1/presence/events` as server-sent events while clients
//! write, a resume with `Last-Event-ID` after a disconnect (nothing lost,
//! nothing repeated), then SIGTERM: every open stream ends with the chunked
//! body's final chunk, not a reset, and the process exits 0 at once instead
//! of waiting out the shutdown grace.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{KEY, Server};
use serde_json::Value;
use testkit::{EventStream, Next, SseItem};

const EVENTS: &str = "/v1/presence/events";

fn auth() -> String {
    format!("ApiKey {KEY}")
}

fn open(addr: SocketAddr, extra: &[(&str, &str)]) -> EventStream {
    let auth = auth();
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "text/event-stream"),
    ];
    headers.extend_from_slice(extra);
    EventStream::open(addr, EVENTS, &headers).unwrap_or_else(|reply| {
        panic!(
            "no stream: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    })
}

fn write(addr: SocketAddr, method: &str, path: &str, body: &str) -> Value {
    let auth = auth();
    let reply = testkit::send(
        addr,
        method,
        path,
        &[("Authorization", &auth)],
        Some(body.as_bytes()),
    );
    assert!(
        reply.status == 200 || reply.status == 201,
        "{method} {path}: {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    reply.data()
}

fn set_online(addr: SocketAddr, id: &str, online: bool) {
    let body = format!(r#"{{"isOnline": {online}}}"#);
    write(
        addr,
        "PATCH",
        &format!("/v1/subscribers/{id}/online-status"),
        &body,
    );
}

/// The next event as (seq, event JSON).
fn next_event(stream: &mut EventStream) -> (u64, Value) {
    match stream.next_event(Duration::from_secs(10)) {
        Next::Item(SseItem::Event { id, event, data }) => {
            assert_eq!(event, "presence");
            let json: Value = serde_json::from_str(&data).expect("data is JSON");
            assert_eq!(json["seq"].as_str(), Some(id.as_str()));
            (id.parse().expect("a decimal id"), json)
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn a_stream_resumes_without_loss_and_ends_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Server::start(dir.path(), &[]);
    let addr = server.addr;
    let subscribers = 5;
    let rounds = 6;
    for i in 0..subscribers {
        write(
            addr,
            "POST",
            "/v1/subscribers",
            &format!(r#"{{"subscriberId": "u{i}"}}"#),
        );
    }

    let mut first = open(addr, &[]);
    assert_eq!(first.header("content-type"), Some("text/event-stream"));
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    // Two clients flip their subscribers: every write is one event.
    let writers: Vec<_> = [0..3, 3..subscribers]
        .into_iter()
        .map(|range| {
            std::thread::spawn(move || {
                for round in 0..rounds {
                    for i in range.clone() {
                        set_online(addr, &format!("u{i}"), round % 2 == 0);
                    }
                }
            })
        })
        .collect();
    let total = subscribers * rounds;
    let mut seen: Vec<(u64, Value)> = (0..total / 3).map(|_| next_event(&mut first)).collect();
    // The reader goes away mid-feed; the writers go on.
    drop(first);
    for writer in writers {
        writer.join().expect("writer");
    }
    let last = seen.last().expect("events").0.to_string();
    let mut second = open(addr, &[("Last-Event-ID", &last)]);
    while seen.len() < total {
        seen.push(next_event(&mut second));
    }
    assert_eq!(
        second.next_event(Duration::from_millis(300)),
        Next::Timeout,
        "nothing beyond the writes"
    );
    let listed = testkit::send(
        addr,
        "GET",
        &format!("{EVENTS}?limit=1000"),
        &[("Authorization", &auth())],
        None,
    )
    .data();
    let streamed: Vec<Value> = seen.into_iter().map(|(_, event)| event).collect();
    assert_eq!(
        Value::Array(streamed),
        listed["events"],
        "in seq order, none lost, none repeated"
    );

    // A stream that is live when SIGTERM comes.
    set_online(addr, "u0", true);
    let (seq, event) = next_event(&mut second);
    assert_eq!(event["subscriberId"], "u0");
    let before: u64 = listed["next"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("next is a decimal string");
    assert!(seq > before, "{seq} after {before}");

    let started = Instant::now();
    server.signal_term();
    let end = loop {
        match second.next(Duration::from_secs(5)) {
            Next::Item(SseItem::Comment(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(end, Next::End, "the final zero chunk, not a reset");
    assert!(second.closed_after_end(Duration::from_secs(5)));
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("subscriberd exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the stream held the shutdown for {took:?} (grace is 10 s)"
    );
    let log = server.stderr_to_end(Duration::from_secs(2)).join("\n");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
