//! Authentication failures (SPEC section 2): messages as Novu's, checked
//! before the body is read.

mod common;

use common::TestServer;

#[test]
fn missing_header() {
    let s = TestServer::start();
    s.send("GET", "/v1/subscribers/u1", &[], None)
        .error(401, "Missing authorization header");
}

#[test]
fn other_schemes_are_named() {
    let s = TestServer::start();
    for (value, scheme) in [
        ("Bearer abc", "Bearer"),
        ("apikey abc", "apikey"),
        ("APIKEY abc", "APIKEY"),
        ("Basic", "Basic"),
        // No space: the whole value is the scheme, and a long one (likely a
        // bare key) is echoed only in part.
        (&s.key_a, &format!("{}...", &s.key_a[..16])),
        (
            &format!("ApiKey\t{}", s.key_a),
            &format!("ApiKey{}...", &s.key_a[..10]),
        ),
    ] {
        let body = s
            .send(
                "GET",
                "/v1/subscribers/u1",
                &[("Authorization", value)],
                None,
            )
            .error(401, &format!("Invalid authentication scheme: \"{scheme}\""));
        assert_eq!(body["error"], "Unauthorized");
    }
}

#[test]
fn unknown_empty_and_revoked_keys() {
    let s = TestServer::start();
    for value in ["ApiKey nope", "ApiKey ", &format!("ApiKey  {}", s.key_a)] {
        s.send(
            "GET",
            "/v1/subscribers/u1",
            &[("Authorization", value)],
            None,
        )
        .error(401, "API Key not found");
    }
    // A key issued while the server runs works at once; revoked, it stops at once.
    let key = s
        .store()
        .issue_key(s.tenant_a.environment_id())
        .expect("issue");
    let auth = format!("ApiKey {}", key.secret);
    let reply = s.send(
        "GET",
        "/v1/subscribers/u1",
        &[("Authorization", &auth)],
        None,
    );
    reply.error(404, "Subscriber not found");
    s.store().revoke_key(key.info.id).expect("revoke");
    s.send(
        "GET",
        "/v1/subscribers/u1",
        &[("Authorization", &auth)],
        None,
    )
    .error(401, "API Key not found");
}

#[test]
fn auth_is_checked_before_the_body() {
    let s = TestServer::start();
    let big = vec![b'x'; 300 * 1024];
    s.send(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        &[("Authorization", "ApiKey wrong")],
        Some(&big),
    )
    .error(401, "API Key not found");
    s.send("POST", "/v1/subscribers", &[], Some(b"not json"))
        .error(401, "Missing authorization header");
}
