//! Presence leases over HTTP (SPEC section 10): `ttlSeconds` on the PATCH,
//! the server default, `onlineExpiresAt`, and expiry seen through reads,
//! `If-Match` and replays, with the store's clock set by the test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use subscriber_http::ServerConfig;
use subscriber_store::{ManualClock, Timestamp};

const PATCH: &str = "/v1/subscribers/u1/online-status";
const GET: &str = "/v1/subscribers/u1";
/// 2026-11-26T10:00:00.000Z
const START: Timestamp = Timestamp::from_millis(1_795_687_200_000);

fn server(default_ttl: u32) -> (TestServer, ManualClock) {
    let clock = ManualClock::new(START);
    let store_clock = Arc::new(clock.clone());
    let s = TestServer::with_store(ServerConfig::default(), |c| {
        c.clock(store_clock)
            .presence_ttl_secs(default_ttl)
            .background_expiry(false)
    });
    let created = s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    assert_eq!(created.status, 201);
    (s, clock)
}

fn at(seconds: u64) -> String {
    Timestamp::from_millis(START.as_millis() + seconds * 1_000).to_string()
}

#[test]
fn a_heartbeat_shows_its_deadline_and_expires_at_it() {
    let (s, clock) = server(0);
    // Offline first, so the document has a lastOnlineAt to order against.
    assert_eq!(
        s.call("PATCH", PATCH, Some(r#"{"isOnline": false}"#))
            .status,
        200
    );
    clock.advance(Duration::from_secs(5));
    let reply = s.call(
        "PATCH",
        PATCH,
        Some(r#"{"isOnline": true, "ttlSeconds": 30}"#),
    );
    assert_eq!(reply.status, 200);
    let doc = reply.data();
    assert_eq!(doc["onlineExpiresAt"], at(35));
    assert_eq!(doc["__v"], 2);
    let keys: Vec<&str> = doc
        .as_object()
        .expect("doc")
        .keys()
        .map(String::as_str)
        .collect();
    let after = keys
        .iter()
        .position(|k| *k == "lastOnlineAt")
        .expect("lastOnlineAt");
    assert_eq!(keys[after + 1], "onlineExpiresAt", "{keys:?}");

    clock.advance(Duration::from_secs(29));
    assert_eq!(s.call("GET", GET, None).data(), doc, "not yet due");

    clock.advance(Duration::from_secs(1));
    let read = s.call("GET", GET, None);
    let expired = read.data();
    assert_eq!(expired["isOnline"], false);
    assert!(expired.get("onlineExpiresAt").is_none());
    assert_eq!(expired["lastOnlineAt"], at(5), "the last heartbeat");
    assert_eq!(expired["updatedAt"], at(35), "the deadline");
    assert_eq!(expired["__v"], 3);
    assert_eq!(read.header("etag"), Some("\"3\""));

    // The version from before the deadline no longer matches.
    let stale = s.send(
        "PATCH",
        PATCH,
        &[("Authorization", &s.auth_a()), ("If-Match", "\"2\"")],
        Some(br#"{"isOnline": true}"#),
    );
    assert_eq!(stale.status, 412);
    assert_eq!(
        s.call("GET", GET, None).data(),
        expired,
        "412 changes nothing"
    );
}

#[test]
fn the_server_default_applies_unless_the_body_says_otherwise() {
    let (s, _clock) = server(60);
    let by_default = s.call("PATCH", PATCH, Some(r#"{"isOnline": true}"#)).data();
    assert_eq!(by_default["onlineExpiresAt"], at(60));
    let null = s
        .call(
            "PATCH",
            PATCH,
            Some(r#"{"isOnline": true, "ttlSeconds": null}"#),
        )
        .data();
    assert_eq!(null["onlineExpiresAt"], at(60));
    let own = s
        .call(
            "PATCH",
            PATCH,
            Some(r#"{"isOnline": true, "ttlSeconds": 5.0}"#),
        )
        .data();
    assert_eq!(own["onlineExpiresAt"], at(5));
    let none = s
        .call(
            "PATCH",
            PATCH,
            Some(r#"{"isOnline": true, "ttlSeconds": 0}"#),
        )
        .data();
    assert!(none.get("onlineExpiresAt").is_none(), "{none}");
    assert_eq!(none["isOnline"], true);
    s.call(
        "PATCH",
        PATCH,
        Some(r#"{"isOnline": true, "ttlSeconds": 30}"#),
    );
    let offline = s
        .call(
            "PATCH",
            PATCH,
            Some(r#"{"isOnline": false, "ttlSeconds": 30}"#),
        )
        .data();
    assert!(
        offline.get("onlineExpiresAt").is_none(),
        "offline ends the lease"
    );
}

#[test]
fn a_bad_ttl_is_a_422_naming_the_field_and_changes_nothing() {
    let (s, _clock) = server(0);
    let before = s.call("GET", GET, None).data();
    for (bad, online) in [
        ("-1", true),
        ("1.5", true),
        ("\"30\"", true),
        ("true", true),
        ("86401", true),
        ("{}", true),
        ("1.5", false),
    ] {
        let body = format!(r#"{{"isOnline": {online}, "ttlSeconds": {bad}}}"#);
        let reply = s.call("PATCH", PATCH, Some(&body));
        assert_eq!(reply.status, 422, "{body}");
        let error = reply.json();
        let value: Value = serde_json::from_str(bad).expect("json");
        assert_eq!(
            error["errors"],
            json!({"ttlSeconds": {"messages": ["ttlSeconds must be an integer between 0 and 86400"], "value": value}}),
            "{body}"
        );
        assert_eq!(error["message"], "Validation Error");
    }
    assert_eq!(s.call("GET", GET, None).data(), before);
    let edge = s.call(
        "PATCH",
        PATCH,
        Some(r#"{"isOnline": true, "ttlSeconds": 86400}"#),
    );
    assert_eq!(edge.data()["onlineExpiresAt"], at(86_400));
}

#[test]
fn a_replayed_heartbeat_answers_as_it_did_and_changes_nothing() {
    let (s, clock) = server(0);
    let send = || {
        s.send(
            "PATCH",
            PATCH,
            &[("Authorization", &s.auth_a()), ("idempotency-key", "hb-1")],
            Some(br#"{"isOnline": true, "ttlSeconds": 10}"#),
        )
    };
    let first = send();
    assert_eq!(first.status, 200);
    clock.advance(Duration::from_secs(20));
    let replay = send();
    assert_eq!(replay.header("idempotency-replay"), Some("true"));
    assert_eq!(
        replay.body, first.body,
        "the answer it gave then, byte for byte"
    );
    let now = s.call("GET", GET, None).data();
    assert_eq!(
        (now["isOnline"].clone(), now["__v"].clone()),
        (json!(false), json!(2))
    );
}
