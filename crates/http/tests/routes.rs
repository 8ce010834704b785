//! Routing, envelopes, content type, health check and the OpenAPI document.

mod common;

use common::TestServer;

#[test]
fn health_check_needs_no_key() {
    let s = TestServer::start();
    let reply = s.send("GET", "/v1/health-check", &[], None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"data": {"status": "ok"}}));
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
}

#[test]
fn unknown_route_is_404_in_the_error_shape() {
    let s = TestServer::start();
    for path in [
        "/",
        "/v1/nothing",
        "/v1/subscribers/x/online-status/more",
        "/v3/subscribers",
    ] {
        let body = s
            .send("GET", path, &[], None)
            .error(404, &format!("Cannot GET {path}"));
        assert_eq!(body["path"], path);
        assert_eq!(body["error"], "Not Found");
    }
}

#[test]
fn known_path_with_other_method_is_405_with_allow() {
    let s = TestServer::start();
    let reply = s.send("PUT", "/v1/subscribers/u1", &[], None);
    reply.error(405, "Method PUT is not allowed on /v1/subscribers/u1");
    assert_eq!(reply.header("allow"), Some("GET, DELETE"));
    let reply = s.send("GET", "/v1/subscribers/u1/online-status", &[], None);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("PATCH"));
    let reply = s.send("GET", "/v1/subscribers", &[], None);
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[test]
fn openapi_document_names_every_served_route() {
    let s = TestServer::start();
    let reply = s.send("GET", "/openapi.json", &[], None);
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut count = 0;
    for (method, pattern) in subscriber_http::routes() {
        count += 1;
        let operation = &doc["paths"][pattern][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {pattern} missing from /openapi.json"
        );
        // The route really is served: not a 404 or 405.
        let path = pattern.replace("{subscriberId}", "probe");
        let status = s.send(method, &path, &[], None).status;
        assert!(
            status != 404 && status != 405,
            "{method} {path} -> {status}"
        );
    }
    assert_eq!(count, 16);
}
