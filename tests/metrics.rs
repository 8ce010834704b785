//! What an operator scrapes and probes (issue 15): `GET /metrics` in the
//! Prometheus text format, checked by the real `promtool check metrics`,
//! with numbers that move as traffic is driven; `--metrics-listen` and
//! `--metrics off`; `GET /ready` up, and at 503 while draining after
//! SIGTERM with `--drain-delay-secs`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, Server};
use testkit::EventStream;

/// `name{labels}` -> value, from the text exposition.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("a sample line");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn scrape(server: &Server) -> (String, BTreeMap<String, f64>) {
    let reply = server.call("GET", "/metrics", &[], None);
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = String::from_utf8(reply.body).expect("utf-8");
    let parsed = parse(&text);
    (text, parsed)
}

fn value(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`: its lint and parse must pass.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_move_with_traffic() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(
        dir.path(),
        &["--presence-ttl-secs", "1", "--idempotency-ttl-secs", "1"],
    );
    let (text, before) = scrape(&server);
    promtool_check(&text);
    for name in [
        "subscriberd_flush_rounds_total",
        "subscriberd_storage_errors_total",
        "subscriberd_idempotency_records",
        "subscriberd_leases",
        "subscriberd_events_appended_total",
        "subscriberd_event_stream_readers",
        "subscriberd_connections_open",
    ] {
        assert!(before.contains_key(name), "{name} is exported");
    }

    let auth = format!("ApiKey {KEY}");
    let stream = EventStream::open(
        server.addr,
        "/v1/presence/events",
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
    )
    .unwrap_or_else(|reply| panic!("no stream: {}", reply.status));
    for i in 0..5 {
        let body = format!(r#"{{"subscriberId":"m{i}"}}"#);
        assert_eq!(
            server
                .call("POST", "/v1/subscribers", &[], Some(&body))
                .status,
            201
        );
    }
    let patch = |key: Option<&str>, id: &str, online: bool| {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let body = format!(r#"{{"isOnline": {online}}}"#);
        let reply = server.call(
            "PATCH",
            &format!("/v1/subscribers/{id}/online-status"),
            &headers,
            Some(&body),
        );
        assert_eq!(reply.status, 200);
    };
    patch(None, "m0", true);
    patch(None, "m1", false);
    patch(Some("k-1"), "m2", true);
    patch(Some("k-2"), "m3", true);
    patch(Some("k-2"), "m3", true); // a replay
    assert_eq!(
        server
            .call("GET", "/v1/subscribers/nobody", &[], None)
            .status,
        404
    );
    let (text, during) = scrape(&server);
    promtool_check(&text);
    let moved = |name: &str| value(&during, name) - value(&before, name);
    assert_eq!(
        moved(
            r#"subscriberd_http_requests_total{method="PATCH",route="/v1/subscribers/{subscriberId}/online-status",status="200"}"#
        ),
        5.0
    );
    assert_eq!(
        moved(
            r#"subscriberd_http_requests_total{method="GET",route="/v1/subscribers/{subscriberId}",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        moved(
            r#"subscriberd_http_request_duration_seconds_count{route="/v1/subscribers/{subscriberId}/online-status"}"#
        ),
        5.0
    );
    assert_eq!(
        moved(r#"subscriberd_writes_total{kind="plain"}"#),
        7.0,
        "5 creates, 2 PATCH"
    );
    assert_eq!(moved(r#"subscriberd_writes_total{kind="keyed"}"#), 2.0);
    assert_eq!(moved(r#"subscriberd_writes_total{kind="replay"}"#), 1.0);
    assert_eq!(moved("subscriberd_idempotency_records_written_total"), 2.0);
    assert_eq!(value(&during, "subscriberd_idempotency_records"), 2.0);
    assert!(moved("subscriberd_flush_rounds_total") >= 1.0);
    assert!(moved("subscriberd_flush_duration_seconds_count") >= 1.0);
    assert!(
        moved("subscriberd_flush_writes_sum") >= 9.0,
        "every write was flushed"
    );
    // Online writes with a 1 s lease: m0, m2, m3 (m1 went offline).
    assert_eq!(moved("subscriberd_events_appended_total"), 4.0);
    assert_eq!(value(&during, "subscriberd_subscribers"), 5.0);
    assert_eq!(value(&during, "subscriberd_subscribers_online"), 3.0);
    assert_eq!(value(&during, "subscriberd_leases"), 3.0);
    assert_eq!(value(&during, "subscriberd_event_stream_readers"), 1.0);
    assert!(
        value(&during, "subscriberd_connections_open") >= 2.0,
        "the stream and the scrape"
    );

    // The leases run out and the store expires them; the records expire
    // and the next keyed write purges them.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let (_, now) = scrape(&server);
        if value(&now, "subscriberd_leases_expired_total") >= 3.0 {
            break now;
        }
        assert!(Instant::now() < deadline, "the expiries never showed");
        std::thread::sleep(Duration::from_millis(100));
    };
    patch(Some("k-3"), "m4", false);
    let (_, purged) = scrape(&server);
    assert_eq!(
        value(&purged, "subscriberd_idempotency_records_purged_total"),
        2.0
    );
    assert_eq!(value(&purged, "subscriberd_idempotency_records"), 1.0);
    assert_eq!(value(&after, "subscriberd_leases"), 0.0);
    assert_eq!(value(&after, "subscriberd_subscribers_online"), 0.0);
    assert_eq!(
        value(&after, "subscriberd_events_appended_total")
            - value(&before, "subscriberd_events_appended_total"),
        7.0
    );
    assert!(server.terminate().success());
}

#[test]
fn metrics_can_move_to_their_own_address_or_be_off() {
    let dir = tempfile::tempdir().expect("dir");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(dir.path(), &["--metrics-listen", &listen]);
    server.call("GET", "/metrics", &[], None).error(
        404,
        "Metrics are not served here (see --metrics and --metrics-listen)",
    );
    let addr: std::net::SocketAddr = listen.parse().expect("addr");
    let reply = testkit::send(addr, "GET", "/metrics", &[], None);
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).expect("utf-8");
    assert!(text.contains("subscriberd_flush_rounds_total"));
    promtool_check(&text);
    assert_eq!(
        testkit::send(addr, "GET", "/v1/health-check", &[], None).status,
        404
    );
    assert!(server.terminate().success());

    let server = Server::start(dir.path(), &["--metrics", "off"]);
    server.call("GET", "/metrics", &[], None).error(
        404,
        "Metrics are not served here (see --metrics and --metrics-listen)",
    );
    assert!(server.terminate().success());
}

#[test]
fn ready_is_200_when_up_and_503_while_draining() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Server::start(dir.path(), &["--drain-delay-secs", "2"]);
    let reply = testkit::send(server.addr, "GET", "/ready", &[], None);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    server.signal_term();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = false;
    while Instant::now() < deadline {
        let reply = testkit::send(server.addr, "GET", "/ready", &[], None);
        if reply.status == 503 {
            let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
            assert_eq!(body["message"], "Draining: the server is shutting down");
            // Still serving everything else meanwhile.
            assert_eq!(
                server.call("GET", "/v1/health-check", &[], None).status,
                200
            );
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen, "/ready never said 503 during the drain delay");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the delay and the drain");
    assert!(status.success());
}
