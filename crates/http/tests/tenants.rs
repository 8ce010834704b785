//! Tenant isolation: a key of environment B can never read, change, delete
//! or replay anything of environment A.

mod common;

use common::TestServer;

#[test]
fn key_b_cannot_touch_environment_a() {
    let s = TestServer::start();
    let auth_a = s.auth_a();
    let auth_b = s.auth_b();
    s.send(
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth_a), ("idempotency-key", "create-a")],
        Some(br#"{"subscriberId":"secret-user"}"#),
    );
    let before = s.call("GET", "/v1/subscribers/secret-user", None).body;
    let b = |method: &str, path: &str, body: Option<&[u8]>| {
        s.send(method, path, &[("Authorization", &auth_b)], body)
    };
    b("GET", "/v1/subscribers/secret-user", None).error(404, "Subscriber not found");
    b("GET", "/v2/subscribers/secret-user", None).error(404, "Subscriber not found");
    b(
        "PATCH",
        "/v1/subscribers/secret-user/online-status",
        Some(br#"{"isOnline":true}"#),
    )
    .error(404, "Subscriber not found");
    b("DELETE", "/v1/subscribers/secret-user", None).error(404, "Subscriber not found");
    // Replaying A's key from B executes in B instead of showing A's answer.
    let replay = s.send(
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth_b), ("idempotency-key", "create-a")],
        Some(br#"{"subscriberId":"secret-user"}"#),
    );
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotency-replay"), None);
    assert_eq!(
        replay.data()["_environmentId"],
        s.tenant_b.environment_id().to_string()
    );
    assert_eq!(
        s.call("GET", "/v1/subscribers/secret-user", None).body,
        before
    );
}
