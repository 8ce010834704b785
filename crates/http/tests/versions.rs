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
fn if_match_follows_rfc_9110_star_lists_and_weak_tags() {
    let s = TestServer::start();
    s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    let auth = s.auth_a();
    let patch = |if_match: &str| {
        s.send(
            "PATCH",
            "/v1/subscribers/u1/online-status",
            &[("Authorization", &auth), ("If-Match", if_match)],
            Some(br#"{"isOnline":true}"#),
        )
    };
    // `*` matches any existing document.
    assert_eq!(patch("*").status, 200);
    // A list matches if any member does (the document is at 1 now).
    let listed = patch("\"7\", \"1\"");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.header("etag"), Some("\"2\""));
    // A weak tag never matches, even one naming the current version.
    patch("W/\"2\"").error(
        412,
        "If-Match names no version (a weak entity tag never matches) but the subscriber is at version 2",
    );
    patch("\"5\", W/\"2\"").error(
        412,
        "If-Match expected version 5 but the subscriber is at version 2",
    );
    patch("\"5\", \"6\"").error(
        412,
        "If-Match expected one of versions 5, 6 but the subscriber is at version 2",
    );
    // Valid entity tags that are not versions match nothing.
    assert_eq!(patch("\"\"").status, 412);
    assert_eq!(patch("\"abc\"").status, 412);
    assert_eq!(s.call("GET", "/v1/subscribers/u1", None).data()["__v"], 2);
    // `*` on a create of a missing subscriber: 412; on the presence write: 404.
    let headers = [("Authorization", auth.as_str()), ("If-Match", "*")];
    s.send(
        "POST",
        "/v1/subscribers",
        &headers,
        Some(br#"{"subscriberId":"new"}"#),
    )
    .error(
        412,
        "If-Match: * expected an existing subscriber but the subscriber does not exist",
    );
    s.send(
        "PATCH",
        "/v1/subscribers/new/online-status",
        &headers,
        Some(br#"{"isOnline":true}"#),
    )
    .error(404, "Subscriber not found");
}

#[test]
fn if_match_that_is_not_a_list_of_entity_tags_is_400_and_changes_nothing() {
    let s = TestServer::start();
    s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    let auth = s.auth_a();
    for value in [
        "abc",
        "-1",
        "W/0",
        "\"1",
        "\"1\" \"2\"",
        "*, \"1\"",
        "\"a b\"",
    ] {
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
