//! Idempotency over HTTP (SPEC section 6).

mod common;

use common::{Reply, TestServer};

fn patch(s: &TestServer, id: &str, key: &str, body: &str) -> Reply {
    let auth = s.auth_a();
    s.send(
        "PATCH",
        &format!("/v1/subscribers/{id}/online-status"),
        &[("Authorization", &auth), ("idempotency-key", key)],
        Some(body.as_bytes()),
    )
}

fn with(ids: &[&str]) -> TestServer {
    let s = TestServer::start();
    for id in ids {
        s.call(
            "POST",
            "/v1/subscribers",
            Some(&format!("{{\"subscriberId\":\"{id}\"}}")),
        );
    }
    s
}

#[test]
fn replay_has_the_header_and_the_same_body() {
    let s = with(&["u1"]);
    let first = patch(&s, "u1", "k1", r#"{"isOnline": true}"#);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotency-key"), Some("k1"));
    assert_eq!(first.header("idempotency-replay"), None);
    // Key order in the body does not matter; the request is the same.
    let again = patch(&s, "u1", "k1", r#"{ "isOnline" : true }"#);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotency-replay"), Some("true"));
    assert_eq!(again.header("idempotency-key"), Some("k1"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(s.call("GET", "/v1/subscribers/u1", None).data()["__v"], 1);
}

#[test]
fn reuse_for_another_request_is_422() {
    let s = with(&["u1", "u2"]);
    patch(&s, "u1", "k", r#"{"isOnline": true}"#);
    let message = "Request with key \"k\" is being reused for a different body";
    patch(&s, "u2", "k", r#"{"isOnline": true}"#).error(422, message);
    patch(&s, "u1", "k", r#"{"isOnline": false}"#).error(422, message);
    let auth = s.auth_a();
    let create = s.send(
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth), ("idempotency-key", "c")],
        Some(br#"{"subscriberId":"u3"}"#),
    );
    assert_eq!(create.status, 201);
    let other_route = s.send(
        "POST",
        "/v2/subscribers",
        &[("Authorization", &auth), ("idempotency-key", "c")],
        Some(br#"{"subscriberId":"u3"}"#),
    );
    other_route.error(
        422,
        "Request with key \"c\" is being reused for a different body",
    );
    assert_eq!(other_route.header("idempotency-key"), Some("c"));
    assert_eq!(s.call("GET", "/v1/subscribers/u2", None).data()["__v"], 0);
    assert_eq!(s.call("GET", "/v1/subscribers/u3", None).data()["__v"], 0);
}

#[test]
fn key_syntax_errors_are_400() {
    let s = with(&["u1"]);
    let long = "k".repeat(256);
    let reply = patch(&s, "u1", &long, r#"{"isOnline": true}"#);
    reply.error(
        400,
        &format!(
            "idempotencyKey \"{long}\" has exceeded the maximum allowed length of 255 characters"
        ),
    );
    assert_eq!(reply.header("idempotency-key"), None);
    assert_eq!(patch(&s, "u1", "\"\"", r#"{"isOnline": true}"#).status, 400);
    assert_eq!(
        patch(&s, "u1", "has space", r#"{"isOnline": true}"#).status,
        400
    );
    assert_eq!(
        patch(&s, "u1", &"k".repeat(255), r#"{"isOnline": true}"#).status,
        200
    );
    assert_eq!(s.call("GET", "/v1/subscribers/u1", None).data()["__v"], 1);
}

#[test]
fn quoted_key_is_the_same_key() {
    let s = with(&["u1"]);
    assert_eq!(
        patch(&s, "u1", "\"q1\"", r#"{"isOnline": true}"#).status,
        200
    );
    let replay = patch(&s, "u1", "q1", r#"{"isOnline": true}"#);
    assert_eq!(replay.header("idempotency-replay"), Some("true"));
}

#[test]
fn validation_failures_are_not_recorded() {
    let s = with(&["u1"]);
    let bad = patch(&s, "u1", "fix-me", r#"{"isOnline": "true"}"#);
    bad.error(422, "Validation Error");
    assert_eq!(bad.header("idempotency-key"), Some("fix-me"));
    let bad_json = patch(&s, "u1", "fix-me", "{");
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.header("idempotency-key"), Some("fix-me"));
    let fixed = patch(&s, "u1", "fix-me", r#"{"isOnline": true}"#);
    assert_eq!(fixed.status, 200);
    assert_eq!(fixed.header("idempotency-replay"), None);
    assert_eq!(fixed.data()["__v"], 1);
}

#[test]
fn not_found_is_recorded_and_replayed_byte_for_byte() {
    let s = TestServer::start();
    let first = patch(&s, "ghost", "nf", r#"{"isOnline": true}"#);
    first.error(404, "Subscriber not found");
    s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId":"ghost"}"#),
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    let replay = patch(&s, "ghost", "nf", r#"{"isOnline": true}"#);
    assert_eq!(replay.status, 404);
    assert_eq!(replay.header("idempotency-replay"), Some("true"));
    assert_eq!(
        replay.body, first.body,
        "the replay repeats the first answer, timestamp included"
    );
    assert_eq!(
        s.call("GET", "/v1/subscribers/ghost", None).data()["__v"],
        0
    );
}

#[test]
fn keys_are_scoped_by_environment_and_ignored_by_get() {
    let s = with(&["u1"]);
    patch(&s, "u1", "shared", r#"{"isOnline": true}"#);
    let auth_b = s.auth_b();
    s.send(
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth_b)],
        Some(br#"{"subscriberId":"u1"}"#),
    );
    let in_b = s.send(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        &[("Authorization", &auth_b), ("idempotency-key", "shared")],
        Some(br#"{"isOnline": true}"#),
    );
    assert_eq!(in_b.status, 200);
    assert_eq!(in_b.header("idempotency-replay"), None);
    assert_eq!(
        in_b.data()["_environmentId"],
        s.tenant_b.environment_id().to_string()
    );

    let auth = s.auth_a();
    let get = s.send(
        "GET",
        "/v1/subscribers/u1",
        &[("Authorization", &auth), ("idempotency-key", "x y")],
        None,
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.header("idempotency-key"), None);
}

#[test]
fn a_replayed_error_keeps_the_path_it_was_first_sent_to() {
    let s = TestServer::start();
    let first = patch(&s, "missing", "k404", r#"{"isOnline": true}"#);
    first.error(404, "Subscriber not found");
    // The same subscriber id, percent-encoded: the same request.
    let replay = patch(&s, "%6Dissing", "k404", r#"{"isOnline": true}"#);
    assert_eq!(replay.status, 404);
    assert_eq!(replay.header("idempotency-replay"), Some("true"));
    assert_eq!(
        String::from_utf8_lossy(&replay.body),
        String::from_utf8_lossy(&first.body),
        "a replay is the first answer byte for byte, path included"
    );
    assert_eq!(
        replay.json()["path"],
        "/v1/subscribers/missing/online-status"
    );
}
