//! Create/upsert, retrieve and delete over HTTP (SPEC sections 1 and 3).

mod common;

use common::TestServer;
use serde_json::json;

#[test]
fn create_is_201_and_upsert_changes_only_given_fields() {
    let s = TestServer::start();
    let reply = s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId":"u1","firstName":"Ada","email":"ada@example.com","data":{"z":1,"a":{"n":[1.5,null]}}}"#),
    );
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("etag"), Some("\"0\""));
    let doc = reply.data();
    assert_eq!(doc["__v"], 0);
    assert_eq!(doc["firstName"], "Ada");
    assert_eq!(doc["data"], json!({"z":1,"a":{"n":[1.5,null]}}));
    assert_eq!(doc["_id"].as_str().expect("id").len(), 24);

    let doc = s
        .call(
            "POST",
            "/v2/subscribers",
            Some(r#"{"subscriberId":"u1","lastName":"Lovelace","email":null}"#),
        )
        .data();
    assert_eq!(doc["__v"], 1);
    assert_eq!(doc["firstName"], "Ada");
    assert_eq!(doc["lastName"], "Lovelace");
    assert_eq!(doc["email"], serde_json::Value::Null);
    assert_eq!(doc["data"], json!({"z":1,"a":{"n":[1.5,null]}}));

    for path in ["/v1/subscribers/u1", "/v2/subscribers/u1"] {
        let reply = s.call("GET", path, None);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.data(), doc);
        assert_eq!(reply.header("etag"), Some("\"1\""));
    }
}

#[test]
fn v2_fail_if_exists_is_409() {
    let s = TestServer::start();
    assert_eq!(
        s.call(
            "POST",
            "/v2/subscribers?failIfExists=true",
            Some(r#"{"subscriberId":"u1"}"#)
        )
        .status,
        201
    );
    s.call(
        "POST",
        "/v2/subscribers?failIfExists=true",
        Some(r#"{"subscriberId":"u1","firstName":"X"}"#),
    )
    .error(409, "Subscriber already exists");
    assert_eq!(s.call("GET", "/v1/subscribers/u1", None).data()["__v"], 0);
    let bad = s.call(
        "POST",
        "/v2/subscribers?failIfExists=maybe",
        Some(r#"{"subscriberId":"u2"}"#),
    );
    assert_eq!(
        bad.error(422, "Validation Error")["errors"]["failIfExists"]["value"],
        "maybe"
    );
}

#[test]
fn create_validation_names_fields() {
    let s = TestServer::start();
    let cases = [
        ("{}", "subscriberId"),
        (r#"{"subscriberId": null}"#, "subscriberId"),
        (r#"{"subscriberId": 7}"#, "subscriberId"),
        (r#"{"subscriberId": "   "}"#, "subscriberId"),
        (r#"{"subscriberId": "u", "firstName": 1}"#, "firstName"),
        (r#"{"subscriberId": "u", "email": 1}"#, "email"),
        (r#"{"subscriberId": "u", "data": [1]}"#, "data"),
        (
            r#"{"subscriberId": "u", "channels": [{"providerId": "pigeon"}]}"#,
            "channels.0.providerId",
        ),
        (
            r#"{"subscriberId": "u", "channels": [{"providerId": "fcm", "credentials": {"deviceTokens": [1]}}]}"#,
            "channels.0.credentials.deviceTokens",
        ),
        ("[1]", "subscriberId"),
    ];
    for (body, field) in cases {
        let got = s
            .call("POST", "/v1/subscribers", Some(body))
            .error(422, "Validation Error");
        assert!(got["errors"][field]["messages"].is_array(), "{body}: {got}");
    }
    s.call("GET", "/v1/subscribers/u", None)
        .error(404, "Subscriber not found");
}

#[test]
fn channels_round_trip_with_an_integration_id() {
    let s = TestServer::start();
    let doc = s
        .call(
            "POST",
            "/v1/subscribers",
            Some(r#"{"subscriberId":"u1","channels":[{"providerId":"slack","credentials":{"webhookUrl":"https://hooks.example.com/a"}}]}"#),
        )
        .data();
    let channel = &doc["channels"][0];
    assert_eq!(channel["providerId"], "slack");
    assert_eq!(
        channel["credentials"],
        json!({"webhookUrl": "https://hooks.example.com/a"})
    );
    assert_eq!(channel["_integrationId"].as_str().expect("id").len(), 24);
}

#[test]
fn delete_then_everything_is_404_and_create_starts_over() {
    let s = TestServer::start();
    let first = s
        .call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#))
        .data();
    s.call(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        Some(r#"{"isOnline":true}"#),
    );
    let reply = s.call("DELETE", "/v2/subscribers/u1", None);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"data": {"acknowledged": true, "status": "deleted"}})
    );
    s.call("GET", "/v1/subscribers/u1", None)
        .error(404, "Subscriber not found");
    s.call("GET", "/v2/subscribers/u1", None)
        .error(404, "Subscriber not found");
    s.call(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        Some(r#"{"isOnline":true}"#),
    )
    .error(404, "Subscriber not found");
    s.call("DELETE", "/v1/subscribers/u1", None)
        .error(404, "Subscriber not found");
    let again = s
        .call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#))
        .data();
    assert_eq!(again["__v"], 0);
    assert_ne!(again["_id"], first["_id"]);
    assert!(again.get("isOnline").is_none());
}

#[test]
fn null_on_optional_fields_is_unset_on_create_and_clears_on_upsert() {
    let s = TestServer::start();
    // What Novu's legacy Python SDK (`novu` 1.14) sends for a create.
    let created = s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId":"py","email":"a@b.c","firstName":"Ada","lastName":null,"phone":null,"avatar":null,"locale":null,"channels":null,"data":{}}"#),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let doc = created.data();
    assert_eq!(doc["firstName"], "Ada");
    assert_eq!(doc["email"], "a@b.c");
    assert_eq!(doc["channels"], json!([]));
    for unset in ["lastName", "phone", "avatar", "locale"] {
        assert!(doc.get(unset).is_none(), "{unset} stays unset: {doc}");
    }
    // What novu-py sends on v2 when the caller left fields unset.
    let v2 = s.call(
        "POST",
        "/v2/subscribers",
        Some(r#"{"subscriberId":"py2","firstName":null,"lastName":null,"email":null,"phone":null,"avatar":null,"locale":null,"timezone":null,"data":null}"#),
    );
    assert_eq!(v2.status, 201, "{}", String::from_utf8_lossy(&v2.body));
    for unset in ["firstName", "email", "timezone", "data"] {
        assert!(v2.data().get(unset).is_none(), "{unset}: {}", v2.data());
    }
    // On an upsert, null clears the field; absent fields stay.
    s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId":"py","lastName":"Lovelace","timezone":"UTC","data":{"a":1}}"#),
    );
    let cleared = s
        .call(
            "POST",
            "/v1/subscribers",
            Some(
                r#"{"subscriberId":"py","email":null,"timezone":null,"data":null,"channels":null}"#,
            ),
        )
        .data();
    assert_eq!(cleared["firstName"], "Ada");
    assert_eq!(cleared["lastName"], "Lovelace");
    for gone in ["email", "timezone", "data"] {
        assert!(cleared.get(gone).is_none(), "{gone} cleared: {cleared}");
    }
    assert_eq!(cleared["__v"], 2);
    assert_eq!(s.call("GET", "/v1/subscribers/py", None).data(), cleared);
}

#[test]
fn data_numbers_come_back_with_every_digit() {
    let s = TestServer::start();
    let body = r#"{"subscriberId":"n","data":{"big":12345678901234567890123,"exp":1e2,"neg":-0.000000000000000000001,"f":1.50}}"#;
    let created = s.call("POST", "/v1/subscribers", Some(body));
    assert_eq!(created.status, 201);
    let fetched = s.call("GET", "/v1/subscribers/n", None);
    for reply in [&created, &fetched] {
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            text.contains(r#""data":{"big":12345678901234567890123,"exp":1e2,"neg":-0.000000000000000000001,"f":1.50}"#),
            "{text}"
        );
    }
}
