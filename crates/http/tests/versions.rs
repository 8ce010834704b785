//! ETag and If-Match (SPEC section 3, beyond Novu).

mod common;

use common::TestServer;

#[test]
fn if_match_applies_only_at_that_version() {
    let s = TestServer::start();
    s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    let auth = s.auth_a();
    let patch = |if_match: &str, online: &str| {
        s.send(
            "PATCH",
            "/v1/subscribers/u1/online-status",
            &[("Authorization", &auth), ("If-Match", if_match)],
            Some(format!("{{\"isOnline\": {online}}}").as_bytes()),
        )
    };
    let ok = patch("\"0\"", "true");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("etag"), Some("\"1\""));
    assert_eq!(patch("1", "false").status, 200);

    let stale = patch("\"0\"", "true");
    let body = stale.error(
        412,
        "If-Match expected version 0 but the subscriber is at version 2",
    );
    assert_eq!(body["error"], "Precondition Failed");
    assert_eq!(
        s.call("GET", "/v1/subscribers/u1", None).data()["isOnline"],
        false
    );

    let delete = s.send(
        "DELETE",
        "/v1/subscribers/u1",
        &[("Authorization", &auth), ("If-Match", "\"1\"")],
        None,
    );
    assert_eq!(delete.status, 412);
    let upsert = s.send(
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth), ("If-Match", "\"2\"")],
        Some(br#"{"subscriberId":"u1","firstName":"B"}"#),
    );
    assert_eq!(upsert.status, 201);
    assert_eq!(upsert.header("etag"), Some("\"3\""));
}

#[test]
fn if_match_on_a_missing_subscriber() {
    let s = TestServer::start();
    let auth = s.auth_a();
    let headers = [("Authorization", auth.as_str()), ("If-Match", "\"0\"")];
    s.send(
        "PATCH",
        "/v1/subscribers/nope/online-status",
        &headers,
        Some(br#"{"isOnline":true}"#),
    )
    .error(404, "Subscriber not found");
    s.send(
        "POST",
        "/v1/subscribers",
        &headers,
        Some(br#"{"subscriberId":"nope"}"#),
    )
    .error(
        412,
        "If-Match expected version 0 but the subscriber does not exist",
    );
    s.call("GET", "/v1/subscribers/nope", None)
        .error(404, "Subscriber not found");
}

#[test]
fn garbage_if_match_is_400_and_changes_nothing() {
    let s = TestServer::start();
    s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    let auth = s.auth_a();
    for value in ["W/\"0\"", "*", "abc", "\"\"", "-1", "1, 2"] {
        let reply = s.send(
            "PATCH",
            "/v1/subscribers/u1/online-status",
            &[("Authorization", &auth), ("If-Match", value)],
            Some(br#"{"isOnline":true}"#),
        );
        assert_eq!(reply.status, 400, "{value}");
    }
    assert_eq!(s.call("GET", "/v1/subscribers/u1", None).data()["__v"], 0);
}
