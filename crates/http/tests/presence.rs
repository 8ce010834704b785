//! The presence write over HTTP (SPEC sections 1, 4 and 5).

mod common;

use common::TestServer;
use serde_json::{Value, json};

const PATCH: &str = "/v1/subscribers/u1/online-status";

fn with_u1() -> TestServer {
    let s = TestServer::start();
    assert_eq!(
        s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#))
            .status,
        201
    );
    s
}

#[test]
fn online_then_offline_returns_the_whole_document() {
    let s = with_u1();
    let reply = s.call("PATCH", PATCH, Some(r#"{"isOnline": true}"#));
    assert_eq!(reply.status, 200);
    let doc = reply.data();
    assert_eq!(doc["isOnline"], true);
    assert_eq!(doc["__v"], 1);
    assert!(doc.get("lastOnlineAt").is_none());
    assert_eq!(reply.header("etag"), Some("\"1\""));
    let keys: Vec<&str> = doc
        .as_object()
        .expect("doc")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "_id",
            "subscriberId",
            "channels",
            "isOnline",
            "_organizationId",
            "_environmentId",
            "deleted",
            "createdAt",
            "updatedAt",
            "__v"
        ]
    );
    assert_eq!(doc["deleted"], false);
    assert_eq!(
        doc["_environmentId"],
        s.tenant_a.environment_id().to_string()
    );

    let doc = s
        .call("PATCH", PATCH, Some(r#"{"isOnline": false}"#))
        .data();
    assert_eq!(doc["isOnline"], false);
    assert_eq!(doc["__v"], 2);
    let last = doc["lastOnlineAt"].as_str().expect("stamped").to_owned();
    assert_eq!(last, doc["updatedAt"].as_str().expect("updatedAt"));

    // Offline again keeps lastOnlineAt (beyond Novu).
    std::thread::sleep(std::time::Duration::from_millis(5));
    let doc = s
        .call("PATCH", PATCH, Some(r#"{"isOnline": false}"#))
        .data();
    assert_eq!(doc["lastOnlineAt"], last.as_str());
    assert_eq!(doc["__v"], 3);
}

#[test]
fn legacy_online_field_and_extra_fields() {
    let s = with_u1();
    let doc = s.call("PATCH", PATCH, Some(r#"{"online": true}"#)).data();
    assert_eq!(doc["isOnline"], true);
    let doc = s
        .call(
            "PATCH",
            PATCH,
            Some(r#"{"isOnline": false, "online": true, "x": [1]}"#),
        )
        .data();
    assert_eq!(doc["isOnline"], false);
}

#[test]
fn missing_subscriber_is_404() {
    let s = TestServer::start();
    let body = s
        .call(
            "PATCH",
            "/v1/subscribers/ghost/online-status",
            Some(r#"{"isOnline": true}"#),
        )
        .error(404, "Subscriber not found");
    assert_eq!(body["path"], "/v1/subscribers/ghost/online-status");
    assert_eq!(body["error"], "Not Found");
}

#[test]
fn validation_errors_are_422_in_the_validation_shape() {
    let s = with_u1();
    let missing = json!({"isOnline": {"messages": ["isOnline should not be null or undefined", "isOnline must be a boolean value"]}});
    let cases: Vec<(&str, Value)> = vec![
        ("{}", missing.clone()),
        ("[]", missing.clone()),
        ("\"text\"", missing.clone()),
        ("1", missing.clone()),
        ("null", missing),
        (
            r#"{"isOnline": null}"#,
            json!({"isOnline": {"messages": ["isOnline should not be null or undefined", "isOnline must be a boolean value"], "value": null}}),
        ),
        (
            r#"{"isOnline": "true"}"#,
            json!({"isOnline": {"messages": ["isOnline must be a boolean value"], "value": "true"}}),
        ),
        (
            r#"{"isOnline": 1}"#,
            json!({"isOnline": {"messages": ["isOnline must be a boolean value"], "value": 1}}),
        ),
        (
            r#"{"online": "yes"}"#,
            json!({"online": {"messages": ["online must be a boolean value"], "value": "yes"}}),
        ),
    ];
    for (body, errors) in cases {
        let reply = s.call("PATCH", PATCH, Some(body));
        let got = reply.error(422, "Validation Error");
        assert_eq!(got["error"], "Unprocessable Entity");
        assert_eq!(got["errors"], errors, "body {body}");
    }
    let doc = s.call("GET", "/v1/subscribers/u1", None);
    assert_eq!(doc.data()["__v"], 0, "nothing changed");
}

#[test]
fn bad_json_and_empty_body_are_400() {
    let s = with_u1();
    for body in ["", "   ", "{", "{\"isOnline\": tru}", "\u{0}"] {
        let got = s.call("PATCH", PATCH, Some(body));
        assert_eq!(got.status, 400, "{body:?}");
        assert_eq!(got.json()["error"], "Bad Request");
    }
    let auth = s.auth_a();
    let reply = s.send("PATCH", PATCH, &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 400);
}

#[test]
fn path_ids_are_percent_decoded_and_checked() {
    let s = TestServer::start();
    s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId":"a b/é"}"#),
    );
    let doc = s
        .call(
            "PATCH",
            "/v1/subscribers/a%20b%2F%C3%A9/online-status",
            Some(r#"{"isOnline": true}"#),
        )
        .data();
    assert_eq!(doc["subscriberId"], "a b/é");
    let long = "x".repeat(256);
    for id in ["", "%00", "%FF", "a%0Ab", &long, "%20%20"] {
        let reply = s.call(
            "PATCH",
            &format!("/v1/subscribers/{id}/online-status"),
            Some(r#"{"isOnline": true}"#),
        );
        assert_eq!(
            reply.status,
            400,
            "id {id:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.json()["error"], "Bad Request");
    }
    let ok = "y".repeat(255);
    let reply = s.call(
        "PATCH",
        &format!("/v1/subscribers/{ok}/online-status"),
        Some(r#"{"isOnline": true}"#),
    );
    reply.error(404, "Subscriber not found");
}
