//! Presence events and queries over HTTP (SPEC section 11): the event feed
//! as pages and as server-sent events, the online query, the counts,
//! retention (410), bad query parameters (422) and tenancy. The store's
//! clock is set by the test; the stream's keep-alive interval is the
//! server's own timer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use subscriber_http::ServerConfig;
use subscriber_store::{Durability, ManualClock, Timestamp};
use testkit::{EventStream, Next, SseItem};

/// 2026-11-26T10:00:00.000Z
const START: Timestamp = Timestamp::from_millis(1_795_687_200_000);
const EVENTS: &str = "/v1/presence/events";
const FEED_OFF: &str =
    "The presence feed is off on this server (subscriberd serve --presence-feed on keeps it)";

/// A durable store (an acknowledged write's event is readable at once) on
/// a manual clock, with no expiry thread, keeping events for an hour.
fn server_with(config: ServerConfig) -> (TestServer, ManualClock) {
    let clock = ManualClock::new(START);
    let store_clock = Arc::new(clock.clone());
    let s = TestServer::with_store(config, |c| {
        c.clock(store_clock)
            .durability(Durability::Durable)
            .background_expiry(false)
            .event_retention(Duration::from_secs(3600))
    });
    (s, clock)
}

fn server() -> (TestServer, ManualClock) {
    server_with(ServerConfig::default())
}

fn at(seconds: u64) -> String {
    Timestamp::from_millis(START.as_millis() + seconds * 1_000).to_string()
}

fn create(s: &TestServer, auth: &str, id: &str) {
    let body = json!({ "subscriberId": id }).to_string();
    let reply = s.send(
        "POST",
        "/v1/subscribers",
        &[("Authorization", auth)],
        Some(body.as_bytes()),
    );
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}

/// A presence write with key A; the document after it.
fn presence(s: &TestServer, id: &str, body: &str) -> Value {
    let reply = s.call(
        "PATCH",
        &format!("/v1/subscribers/{}/online-status", encode(id)),
        Some(body),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.data()
}

fn set_online(s: &TestServer, id: &str, online: bool) -> Value {
    presence(s, id, &json!({ "isOnline": online }).to_string())
}

fn encode(id: &str) -> String {
    id.replace('%', "%25").replace(' ', "%20")
}

/// `GET path` with key A: the `data` of a 200.
fn get(s: &TestServer, path: &str) -> Value {
    let reply = s.call("GET", path, None);
    assert_eq!(
        reply.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    reply.data()
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            e["seq"]
                .as_str()
                .expect("seq is a string")
                .parse()
                .expect("a decimal seq")
        })
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["subscribers"]
        .as_array()
        .expect("subscribers")
        .iter()
        .map(|d| d["subscriberId"].as_str().expect("subscriberId").to_owned())
        .collect()
}

/// A stream with key A, or the error answer.
fn stream(
    s: &TestServer,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<EventStream, common::Reply> {
    let auth = s.auth_a();
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "text/event-stream"),
    ];
    headers.extend_from_slice(extra);
    EventStream::open(s.addr, path, &headers)
}

/// The next event of a stream as (seq, event JSON); panics on anything else.
fn next_event(stream: &mut EventStream) -> (u64, Value) {
    match stream.next_event(Duration::from_secs(10)) {
        Next::Item(SseItem::Event { id, event, data }) => {
            assert_eq!(event, "presence");
            let json: Value = serde_json::from_str(&data).expect("data is JSON");
            assert_eq!(json["seq"].as_str(), Some(id.as_str()), "id is the seq");
            (id.parse().expect("a decimal id"), json)
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn presence_changes_are_events_and_nothing_else_is() {
    let (s, clock) = server();
    assert_eq!(get(&s, EVENTS), json!({"events": [], "next": "0"}));
    let auth = s.auth_a();
    create(&s, &auth, "u1");
    create(&s, &auth, "u2");
    assert_eq!(get(&s, EVENTS)["events"], json!([]), "a create is no event");

    clock.advance(Duration::from_secs(1));
    set_online(&s, "u1", true);
    clock.advance(Duration::from_secs(1));
    set_online(&s, "u1", true); // a heartbeat: still online
    clock.advance(Duration::from_secs(1));
    set_online(&s, "u2", false); // the first presence write sets isOnline
    clock.advance(Duration::from_secs(1));
    set_online(&s, "u1", false);
    clock.advance(Duration::from_secs(1));
    set_online(&s, "u1", false); // already offline
    // An upsert is no presence change either.
    s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId":"u1","firstName":"Ada"}"#),
    );

    let page = get(&s, EVENTS);
    let seqs = seqs(&page);
    assert_eq!(seqs.len(), 3, "{page}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let events = page["events"].as_array().expect("events");
    let expected = [
        json!({"seq": seqs[0].to_string(), "subscriberId": "u1", "isOnline": true, "lastOnlineAt": null, "__v": 1, "at": at(1), "cause": "write"}),
        json!({"seq": seqs[1].to_string(), "subscriberId": "u2", "isOnline": false, "lastOnlineAt": at(3), "__v": 1, "at": at(3), "cause": "write"}),
        json!({"seq": seqs[2].to_string(), "subscriberId": "u1", "isOnline": false, "lastOnlineAt": at(4), "__v": 3, "at": at(4), "cause": "write"}),
    ];
    for (event, expected) in events.iter().zip(&expected) {
        assert_eq!(event, expected);
        let keys: Vec<&str> = event
            .as_object()
            .expect("event")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "seq",
                "subscriberId",
                "isOnline",
                "lastOnlineAt",
                "__v",
                "at",
                "cause"
            ]
        );
    }
    assert_eq!(page["next"], seqs[2].to_string());
}

#[test]
fn pages_follow_the_cursor_and_next_is_always_a_string() {
    let (s, _clock) = server();
    let auth = s.auth_a();
    for i in 0..5 {
        let id = format!("u{i}");
        create(&s, &auth, &id);
        set_online(&s, &id, true);
    }
    let all = seqs(&get(&s, EVENTS));
    assert_eq!(all.len(), 5);

    let first = get(&s, &format!("{EVENTS}?limit=2"));
    assert_eq!(seqs(&first), all[..2]);
    assert_eq!(first["next"], all[1].to_string());
    let second = get(&s, &format!("{EVENTS}?after={}&limit=2", all[1]));
    assert_eq!(seqs(&second), all[2..4]);
    assert_eq!(second["next"], all[3].to_string());
    let third = get(&s, &format!("{EVENTS}?limit=2&after={}", all[3]));
    assert_eq!(seqs(&third), all[4..]);
    // Past the newest: an empty page whose next is the cursor given.
    let last = all[4];
    let empty = get(&s, &format!("{EVENTS}?after={last}"));
    assert_eq!(empty, json!({"events": [], "next": last.to_string()}));
    let beyond = get(
        &s,
        &format!("{EVENTS}?after=18446744073709551615&limit=1000"),
    );
    assert_eq!(
        beyond,
        json!({"events": [], "next": "18446744073709551615"})
    );
    // after=0 with nothing purged: from the oldest.
    assert_eq!(seqs(&get(&s, &format!("{EVENTS}?after=0"))), all);
}

#[test]
fn deletes_of_online_subscribers_and_lease_expiries_are_events() {
    let (s, clock) = server();
    let auth = s.auth_a();
    for id in ["u1", "u2", "u3"] {
        create(&s, &auth, id);
    }
    clock.advance(Duration::from_secs(1));
    presence(&s, "u1", r#"{"isOnline": true, "ttlSeconds": 30}"#);
    set_online(&s, "u2", true);
    set_online(&s, "u3", false);
    clock.advance(Duration::from_secs(30));
    assert_eq!(s.store().expire_due(100).expect("expire"), 1);
    clock.advance(Duration::from_secs(9));
    let deleted = s.call("DELETE", "/v1/subscribers/u2", None);
    assert_eq!(deleted.status, 200);
    // Offline already: its delete is no presence change.
    assert_eq!(s.call("DELETE", "/v1/subscribers/u3", None).status, 200);

    let page = get(&s, EVENTS);
    let events = page["events"].as_array().expect("events");
    let without_seq: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().expect("event").remove("seq");
            e
        })
        .collect();
    assert_eq!(
        without_seq,
        [
            json!({"subscriberId": "u1", "isOnline": true, "lastOnlineAt": null, "__v": 1, "at": at(1), "cause": "write"}),
            json!({"subscriberId": "u2", "isOnline": true, "lastOnlineAt": null, "__v": 1, "at": at(1), "cause": "write"}),
            json!({"subscriberId": "u3", "isOnline": false, "lastOnlineAt": at(1), "__v": 1, "at": at(1), "cause": "write"}),
            // The lease's deadline, and the last heartbeat as lastOnlineAt.
            json!({"subscriberId": "u1", "isOnline": false, "lastOnlineAt": at(1), "__v": 2, "at": at(31), "cause": "expired"}),
            // The last version; the delete's time as lastOnlineAt and at.
            json!({"subscriberId": "u2", "isOnline": false, "lastOnlineAt": at(40), "__v": 1, "at": at(40), "cause": "deleted"}),
        ]
    );
}

#[test]
fn online_lists_who_is_online_now_in_id_order_with_a_cursor_and_a_window() {
    let (s, clock) = server();
    let auth = s.auth_a();
    for id in ["a", "b", "c", "d", "e f"] {
        create(&s, &auth, id);
    }
    clock.advance(Duration::from_secs(1));
    set_online(&s, "e f", true);
    set_online(&s, "c", true);
    set_online(&s, "b", true);
    presence(&s, "d", r#"{"isOnline": true, "ttlSeconds": 50}"#);
    clock.advance(Duration::from_secs(1));
    set_online(&s, "a", true);
    set_online(&s, "a", false);

    let page = get(&s, "/v1/presence/online");
    assert_eq!(ids(&page), ["b", "c", "d", "e f"]);
    assert_eq!(page["next"], Value::Null);
    // Each document exactly as GET renders it.
    for doc in page["subscribers"].as_array().expect("subscribers") {
        let id = doc["subscriberId"].as_str().expect("id");
        let path = format!("/v1/subscribers/{}", encode(id));
        assert_eq!(doc, &get(&s, &path));
    }

    let first = get(&s, "/v1/presence/online?limit=2");
    assert_eq!(ids(&first), ["b", "c"]);
    assert_eq!(first["next"], "c");
    let second = get(&s, "/v1/presence/online?limit=3&after=c");
    assert_eq!(ids(&second), ["d", "e f"]);
    assert_eq!(second["next"], Value::Null);
    assert_eq!(ids(&get(&s, "/v1/presence/online?after=d")), ["e f"]);
    assert_eq!(
        ids(&get(&s, "/v1/presence/online?after=e+f")),
        [] as [&str; 0]
    );
    assert_eq!(
        ids(&get(&s, "/v1/presence/online?after=e%20f")),
        [] as [&str; 0]
    );

    // 100 s after a went offline; d's lease (deadline at 51 s) has run out,
    // its lastOnlineAt its heartbeat at 1 s.
    clock.set(Timestamp::from_millis(START.as_millis() + 102_000));
    assert_eq!(ids(&get(&s, "/v1/presence/online")), ["b", "c", "e f"]);
    assert_eq!(
        ids(&get(&s, "/v1/presence/online?within=99")),
        ["b", "c", "e f"]
    );
    assert_eq!(
        ids(&get(&s, "/v1/presence/online?within=100")),
        ["a", "b", "c", "e f"]
    );
    let window = get(&s, "/v1/presence/online?within=101");
    assert_eq!(ids(&window), ["a", "b", "c", "d", "e f"]);
    let d = &window["subscribers"][3];
    assert_eq!(d["isOnline"], false, "lease-aware: {d}");
    assert_eq!(d["lastOnlineAt"], at(1));
    assert_eq!(
        ids(&get(
            &s,
            "/v1/presence/online?within=2592000&limit=1&after=a"
        )),
        ["b"]
    );
}

#[test]
fn stats_count_online_and_all_subscribers_exactly() {
    let (s, clock) = server();
    assert_eq!(
        get(&s, "/v1/presence/stats"),
        json!({"online": 0, "subscribers": 0})
    );
    let auth = s.auth_a();
    for id in ["a", "b", "c", "d"] {
        create(&s, &auth, id);
    }
    set_online(&s, "a", true);
    set_online(&s, "b", true);
    set_online(&s, "c", false);
    presence(&s, "d", r#"{"isOnline": true, "ttlSeconds": 10}"#);
    assert_eq!(
        get(&s, "/v1/presence/stats"),
        json!({"online": 3, "subscribers": 4})
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        get(&s, "/v1/presence/stats"),
        json!({"online": 2, "subscribers": 4}),
        "a passed lease counts as offline"
    );
    assert_eq!(s.call("DELETE", "/v1/subscribers/a", None).status, 200);
    assert_eq!(
        get(&s, "/v1/presence/stats?ignored=1"),
        json!({"online": 1, "subscribers": 3})
    );
}

#[test]
fn a_query_parameter_that_breaks_its_rule_is_422_naming_it() {
    let (s, _clock) = server();
    let seq_rule = "after must be an integer between 0 and 18446744073709551615";
    let limit_rule = "limit must be an integer between 1 and 1000";
    let within_rule = "within must be an integer between 1 and 2592000";
    let long = "x".repeat(256);
    let mut cases: Vec<(String, &str, String, Value)> = Vec::new();
    for bad in ["", "-1", "x", "1.5", "18446744073709551616", "%20", "1e3"] {
        let value = bad.replace("%20", " ");
        cases.push((
            format!("{EVENTS}?after={bad}"),
            "after",
            seq_rule.into(),
            json!(value),
        ));
    }
    for route in [EVENTS, "/v1/presence/online"] {
        for bad in [
            "",
            "0",
            "1001",
            "-1",
            "ten",
            "1e2",
            "99999999999999999999999",
        ] {
            cases.push((
                format!("{route}?limit={bad}"),
                "limit",
                limit_rule.into(),
                json!(bad),
            ));
        }
        cases.push((
            format!("{route}?limit=5&limit=5"),
            "limit",
            "limit must be given at most once".into(),
            json!("5"),
        ));
    }
    for bad in ["", "0", "2592001", "-60", "1h", "1.0"] {
        cases.push((
            format!("/v1/presence/online?within={bad}"),
            "within",
            within_rule.into(),
            json!(bad),
        ));
    }
    cases.push((
        format!("{EVENTS}?after=1&after=2"),
        "after",
        "after must be given at most once".into(),
        json!("2"),
    ));
    for (path, param, message, value) in cases {
        let body = s.call("GET", &path, None).error(422, "Validation Error");
        let errors = body["errors"].as_object().expect("errors");
        assert_eq!(errors.len(), 1, "{path}: {body}");
        assert_eq!(errors[param]["messages"], json!([message]), "{path}");
        assert_eq!(errors[param]["value"], value, "{path}");
        assert_eq!(body["path"], path.split('?').next().expect("path"));
    }
    // The online cursor is a subscriber id: the path id's rules, by the store.
    for (bad, message) in [
        ("", "after should not be empty"),
        ("%01", "after must not contain control characters"),
        (
            long.as_str(),
            "after must be shorter than or equal to 255 bytes",
        ),
    ] {
        let body = s
            .call("GET", &format!("/v1/presence/online?after={bad}"), None)
            .error(422, "Validation Error");
        assert_eq!(
            body["errors"]["after"]["messages"],
            json!([message]),
            "{bad}"
        );
    }
    // Two broken parameters: both named.
    let body = s
        .call("GET", "/v1/presence/online?limit=0&within=0", None)
        .error(422, "Validation Error");
    let errors = body["errors"].as_object().expect("errors");
    assert!(errors.contains_key("limit") && errors.contains_key("within"));
    // Unknown parameters are ignored, as Novu ignores them.
    assert_eq!(
        get(&s, &format!("{EVENTS}?foo=bar&within=x"))["events"],
        json!([])
    );
    assert_eq!(
        get(&s, "/v1/presence/online?status=online")["next"],
        Value::Null
    );
    // Authentication comes first.
    s.send("GET", &format!("{EVENTS}?limit=0"), &[], None)
        .error(401, "Missing authorization header");
    // A stream's Last-Event-ID too.
    let refused = stream(&s, EVENTS, &[("Last-Event-ID", "abc")]).expect_err("422");
    let body = refused.error(422, "Validation Error");
    assert_eq!(
        body["errors"]["Last-Event-ID"]["messages"],
        json!(["Last-Event-ID must be an integer between 0 and 18446744073709551615"])
    );
    let refused = stream(&s, &format!("{EVENTS}?after=-1"), &[]).expect_err("422");
    refused.error(422, "Validation Error");
    // A page request checks the header as well; empty means absent.
    let auth = s.auth_a();
    s.send(
        "GET",
        EVENTS,
        &[("Authorization", &auth), ("Last-Event-ID", "-1")],
        None,
    )
    .error(422, "Validation Error");
    let page = s.send(
        "GET",
        EVENTS,
        &[("Authorization", &auth), ("Last-Event-ID", "")],
        None,
    );
    assert_eq!(page.status, 200);
}

#[test]
fn a_cursor_older_than_the_retention_is_410() {
    let clock = ManualClock::new(START);
    let store_clock = Arc::new(clock.clone());
    let s = TestServer::with_store(ServerConfig::default(), |c| {
        c.clock(store_clock)
            .durability(Durability::Durable)
            .background_expiry(false)
            .event_retention(Duration::from_secs(60))
    });
    let auth = s.auth_a();
    for id in ["u1", "u2", "u3"] {
        create(&s, &auth, id);
        set_online(&s, id, true);
    }
    let old = seqs(&get(&s, EVENTS));
    assert_eq!(old.len(), 3);
    // Nothing is purged before the retention has passed.
    clock.advance(Duration::from_secs(59));
    assert_eq!(s.store().purge_events(100).expect("purge"), 0);
    assert_eq!(seqs(&get(&s, &format!("{EVENTS}?after=0"))), old);

    clock.advance(Duration::from_secs(2));
    assert_eq!(s.store().purge_events(100).expect("purge"), 3);
    set_online(&s, "u1", false);
    let kept = seqs(&get(&s, EVENTS));
    assert_eq!(kept.len(), 1, "without after: from the oldest kept event");
    assert!(kept[0] > old[2]);

    for cursor in [0, old[0], old[1]] {
        let path = format!("{EVENTS}?after={cursor}");
        let reply = s.call("GET", &path, None);
        let body = reply.json();
        assert_eq!(reply.status, 410, "{path}: {body}");
        let message = body["message"].as_str().expect("message");
        assert!(
            message.starts_with(&format!(
                "The cursor {cursor} is older than the event retention"
            )),
            "{message}"
        );
        assert!(message.contains("/v1/presence/online"), "{message}");
        reply.error(410, message);
        // The same before a stream starts: an error answer, not a stream.
        let refused = stream(&s, &path, &[]).expect_err("410");
        refused.error(410, message);
        let refused =
            stream(&s, EVENTS, &[("Last-Event-ID", &cursor.to_string())]).expect_err("410");
        refused.error(410, message);
    }
    assert_eq!(
        get(&s, &format!("{EVENTS}?after={}", kept[0])),
        json!({"events": [], "next": kept[0].to_string()})
    );
}

/// After a purge of every event (SPEC 11): the page without `after` is
/// empty with `next` the last purged seq; passing that back is no 410, nor
/// is a stream started there or from now; the next change is on the page
/// after it and on both streams. Below the floor (and `after=0`) is 410.
#[test]
fn after_a_full_purge_next_is_the_floor_and_passing_it_back_reads_on() {
    let clock = ManualClock::new(START);
    let store_clock = Arc::new(clock.clone());
    let s = TestServer::with_store(ServerConfig::default(), |c| {
        c.clock(store_clock)
            .durability(Durability::Durable)
            .background_expiry(false)
            .event_retention(Duration::from_secs(60))
    });
    let auth = s.auth_a();
    for id in ["u1", "u2"] {
        create(&s, &auth, id);
        set_online(&s, id, true);
    }
    let old = seqs(&get(&s, EVENTS));
    assert_eq!(old.len(), 2);
    let floor = old[1];
    clock.advance(Duration::from_secs(61));
    assert_eq!(s.store().purge_events(100).expect("purge"), 2);

    let page = get(&s, EVENTS);
    assert_eq!(page, json!({"events": [], "next": floor.to_string()}));
    let next = page["next"].as_str().expect("next").to_owned();
    let after_next = format!("{EVENTS}?after={next}");
    assert_eq!(
        get(&s, &after_next),
        json!({"events": [], "next": next}),
        "a reader that missed nothing is not told to resynchronise"
    );
    for cursor in [0, old[0]] {
        let path = format!("{EVENTS}?after={cursor}");
        let reply = s.call("GET", &path, None);
        assert_eq!(reply.status, 410, "{path}: {}", reply.json());
    }

    let mut from_floor = stream(&s, &after_next, &[]).expect("a stream at the floor");
    assert_eq!(from_floor.status, 200);
    let mut resumed = stream(&s, EVENTS, &[("Last-Event-ID", &next)]).expect("Last-Event-ID");
    let mut from_now = stream(&s, EVENTS, &[]).expect("a stream from now");
    assert_eq!(
        from_now.next_event(Duration::from_millis(300)),
        Next::Timeout
    );

    set_online(&s, "u1", false);
    let page = get(&s, &after_next);
    let written = seqs(&page);
    assert_eq!(written.len(), 1, "exactly the new event: {page}");
    assert!(written[0] > floor);
    assert_eq!(page["next"], written[0].to_string());
    assert_eq!(page["events"][0]["subscriberId"], "u1");
    assert_eq!(page["events"][0]["isOnline"], false);
    for live in [&mut from_floor, &mut resumed, &mut from_now] {
        let (seq, event) = next_event(live);
        assert_eq!(seq, written[0]);
        assert_eq!(event, page["events"][0]);
    }
    assert_eq!(get(&s, EVENTS)["events"], page["events"]);
}

#[test]
fn a_key_sees_only_its_own_environment() {
    let (s, _clock) = server();
    let (auth_a, auth_b) = (s.auth_a(), s.auth_b());
    create(&s, &auth_a, "u1");
    set_online(&s, "u1", true);
    let as_b = |path: &str| {
        let reply = s.send("GET", path, &[("Authorization", &auth_b)], None);
        assert_eq!(reply.status, 200, "{path}");
        reply.data()
    };
    assert_eq!(as_b(EVENTS), json!({"events": [], "next": "0"}));
    assert_eq!(
        as_b("/v1/presence/online?within=2592000"),
        json!({"subscribers": [], "next": null})
    );
    assert_eq!(
        as_b("/v1/presence/stats"),
        json!({"online": 0, "subscribers": 0})
    );

    // B's stream hears nothing of A's writes, then its own.
    let mut b_stream = EventStream::open(
        s.addr,
        EVENTS,
        &[("Authorization", &auth_b), ("Accept", "text/event-stream")],
    )
    .expect("B's stream");
    set_online(&s, "u1", false);
    assert_eq!(
        b_stream.next_event(Duration::from_millis(500)),
        Next::Timeout
    );
    create(&s, &auth_b, "u1");
    let reply = s.send(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        &[("Authorization", &auth_b)],
        Some(br#"{"isOnline": true}"#),
    );
    assert_eq!(reply.status, 200);
    let b_doc = reply.data();
    let (_, event) = next_event(&mut b_stream);
    assert_eq!(event["subscriberId"], "u1");
    assert_eq!(event["isOnline"], true);
    assert_eq!(event["__v"], 1);

    let b_events = as_b(EVENTS)["events"].clone();
    assert_eq!(b_events.as_array().map(Vec::len), Some(1));
    assert_eq!(seqs(&get(&s, EVENTS)).len(), 2, "A's own two");
    let b_online = as_b("/v1/presence/online");
    assert_eq!(b_online["subscribers"], json!([b_doc]));
    assert_eq!(
        get(&s, "/v1/presence/online")["subscribers"],
        json!([]),
        "A's u1 is offline; B's is not A's"
    );
    assert_eq!(
        as_b("/v1/presence/stats"),
        json!({"online": 1, "subscribers": 1})
    );
    assert_eq!(
        get(&s, "/v1/presence/stats"),
        json!({"online": 0, "subscribers": 1})
    );
}

#[test]
fn the_feed_off_answers_404() {
    let s = TestServer::with_store(ServerConfig::default(), |c| c.presence_feed(false));
    for path in [EVENTS, "/v1/presence/online", "/v1/presence/stats"] {
        s.call("GET", path, None).error(404, FEED_OFF);
    }
    stream(&s, EVENTS, &[])
        .expect_err("404")
        .error(404, FEED_OFF);
}

#[test]
fn a_stream_starts_from_now_from_after_or_from_last_event_id() {
    let (s, _clock) = server();
    let auth = s.auth_a();
    for id in ["u1", "u2", "u3"] {
        create(&s, &auth, id);
        set_online(&s, id, true);
    }
    let old = seqs(&get(&s, EVENTS));

    let mut live = stream(&s, EVENTS, &[]).expect("stream");
    assert_eq!(live.status, 200);
    assert_eq!(live.header("content-type"), Some("text/event-stream"));
    assert_eq!(live.header("cache-control"), Some("no-cache"));
    // From now: nothing written before it.
    assert_eq!(live.next_event(Duration::from_millis(300)), Next::Timeout);
    let doc = set_online(&s, "u2", false);
    let (seq, event) = next_event(&mut live);
    assert!(seq > old[2]);
    assert_eq!(
        event,
        json!({"seq": seq.to_string(), "subscriberId": "u2", "isOnline": false, "lastOnlineAt": doc["lastOnlineAt"], "__v": 2, "at": doc["updatedAt"], "cause": "write"})
    );
    // The same event JSON as the page carries.
    let page = get(&s, &format!("{EVENTS}?after={}", old[2]));
    assert_eq!(page["events"], json!([event]));

    let mut from_start = stream(&s, &format!("{EVENTS}?after=0"), &[]).expect("stream");
    let seen: Vec<u64> = (0..4).map(|_| next_event(&mut from_start).0).collect();
    assert_eq!(seen, [old[0], old[1], old[2], seq]);

    // Last-Event-ID wins over after.
    let mut resumed = stream(
        &s,
        &format!("{EVENTS}?after=0"),
        &[("Last-Event-ID", &old[1].to_string())],
    )
    .expect("stream");
    assert_eq!(next_event(&mut resumed).0, old[2]);
    assert_eq!(next_event(&mut resumed).0, seq);
    assert_eq!(
        resumed.next_event(Duration::from_millis(300)),
        Next::Timeout
    );
}

#[test]
fn a_reader_that_resumes_with_last_event_id_misses_nothing_and_sees_nothing_twice() {
    let (s, _clock) = server();
    let s = Arc::new(s);
    let auth = s.auth_a();
    let writers = 4;
    let per_writer = 3;
    let rounds = 8;
    for w in 0..writers {
        for i in 0..per_writer {
            create(&s, &auth, &format!("w{w}-{i}"));
        }
    }
    let mut first = stream(&s, EVENTS, &[]).expect("stream");
    // Every write flips its subscriber: one event each.
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for round in 0..rounds {
                    for i in 0..per_writer {
                        set_online(&s, &format!("w{w}-{i}"), round % 2 == 0);
                    }
                }
            })
        })
        .collect();
    let total = writers * per_writer * rounds;
    let mut seen: Vec<(u64, Value)> = (0..total / 3).map(|_| next_event(&mut first)).collect();
    drop(first);
    for thread in threads {
        thread.join().expect("writer");
    }
    let last = seen.last().expect("some events").0.to_string();
    let mut second = stream(&s, EVENTS, &[("Last-Event-ID", &last)]).expect("stream");
    while seen.len() < total {
        seen.push(next_event(&mut second));
    }
    assert_eq!(
        second.next_event(Duration::from_millis(300)),
        Next::Timeout,
        "no event beyond the writes"
    );

    let page = get(&s, &format!("{EVENTS}?limit=1000"));
    let listed: Vec<Value> = page["events"].as_array().expect("events").clone();
    assert_eq!(listed.len(), total);
    let streamed: Vec<Value> = seen.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(streamed, listed, "in seq order, none lost, none repeated");
}

#[test]
fn a_silent_stream_sends_a_comment_every_keep_alive_interval() {
    let (s, _clock) = server_with(ServerConfig {
        event_stream_keep_alive: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let mut live = stream(&s, EVENTS, &[]).expect("stream");
    for _ in 0..3 {
        assert_eq!(
            live.next(Duration::from_secs(2)),
            Next::Item(SseItem::Comment("keep-alive".into()))
        );
    }
    let auth = s.auth_a();
    create(&s, &auth, "u1");
    set_online(&s, "u1", true);
    assert_eq!(next_event(&mut live).1["subscriberId"], "u1");
}

#[test]
fn shutdown_ends_every_stream_with_its_final_chunk() {
    let (mut s, _clock) = server_with(ServerConfig {
        shutdown_grace: Duration::from_secs(30),
        ..ServerConfig::default()
    });
    let auth = s.auth_a();
    create(&s, &auth, "u1");
    let mut silent = stream(&s, EVENTS, &[]).expect("stream");
    let mut busy = stream(&s, &format!("{EVENTS}?after=0"), &[]).expect("stream");
    set_online(&s, "u1", true);
    next_event(&mut busy);
    let took = s.shut_down();
    assert!(
        took < Duration::from_secs(5),
        "the streams held the drain for {took:?}"
    );
    for live in [&mut silent, &mut busy] {
        let mut ended = live.next(Duration::from_secs(5));
        while let Next::Item(_) = ended {
            ended = live.next(Duration::from_secs(5));
        }
        assert_eq!(ended, Next::End);
        assert!(live.closed_after_end(Duration::from_secs(5)));
    }
}
