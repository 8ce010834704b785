//! SPEC 13, the Inbox session: `GET /v1/environments/me`, and
//! `POST /v1/inbox/session` with its HMAC check, its subscriber created
//! when missing, its token, and every malformed body refused in the error
//! shape with nothing changed. Also on PostgreSQL (scripts/test), but for
//! the tests that open a sled store of their own.

mod common;

use std::time::Duration;

use common::{TestServer, inbox, token_key};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subscriber_http::{InboxConfig, ServerConfig, TokenError, TokenKey};
use subscriber_store::{Clock, Config, Durability, ServerKey, Store, SystemClock, Timestamp};

/// What a customer's backend computes: lowercase hex HMAC-SHA256.
fn hash(key: &str, subscriber_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac");
    mac.update(subscriber_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn session(s: &TestServer, body: &Value) -> common::Reply {
    s.send(
        "POST",
        "/v1/inbox/session",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

fn body_for(s: &TestServer, subscriber_id: &str) -> Value {
    json!({
        "applicationIdentifier": s.identifier_a,
        "subscriber": {"subscriberId": subscriber_id},
        "subscriberHash": hash(&s.key_a, subscriber_id),
    })
}

fn subscribers_of_a(s: &TestServer) -> u64 {
    let stats = s.call("GET", "/v1/presence/stats", None);
    assert_eq!(stats.status, 200);
    stats.json()["data"]["subscribers"]
        .as_u64()
        .expect("a count")
}

/// The Novu error shape with this status and message.
fn assert_error(reply: &common::Reply, status: u16, message: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["statusCode"], status);
    assert_eq!(body["message"], message, "{body}");
    assert_eq!(body["path"], "/v1/inbox/session");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(body["error"].is_string());
}

#[test]
fn environments_me_shows_the_keys_environment_with_its_identifier() {
    let s = TestServer::start();
    let me = s.call("GET", "/v1/environments/me", None);
    assert_eq!(me.status, 200);
    let data = &me.json()["data"];
    assert_eq!(
        data.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["_id", "name", "identifier", "_organizationId"]
    );
    assert_eq!(data["_id"], s.tenant_a.environment_id().to_string());
    assert_eq!(
        data["_organizationId"],
        s.tenant_a.organization_id().to_string()
    );
    assert_eq!(data["name"], "A");
    assert_eq!(data["identifier"], s.identifier_a.as_str());
    let auth_b = s.auth_b();
    let b = s.send(
        "GET",
        "/v1/environments/me",
        &[("Authorization", &auth_b)],
        None,
    );
    assert_eq!(b.json()["data"]["identifier"], s.identifier_b.as_str());
    assert_ne!(s.identifier_a, s.identifier_b);
    let anonymous = s.send("GET", "/v1/environments/me", &[], None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["message"], "Missing authorization header");
}

#[test]
fn a_session_creates_the_subscriber_and_its_token_names_it() {
    let s = TestServer::start();
    let mut body = body_for(&s, "user-1");
    body["subscriber"]["firstName"] = json!("Ada");
    body["subscriber"]["email"] = json!("ada@example.com");
    body["subscriber"]["data"] = json!({"plan": "pro", "n": 1e2});
    let reply = session(&s, &body);
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let data = &reply.json()["data"];
    assert_eq!(
        data.as_object().expect("object").keys().collect::<Vec<_>>(),
        [
            "token",
            "totalUnreadCount",
            "removeNovuBranding",
            "isDevelopmentMode",
            "applicationIdentifier"
        ]
    );
    assert_eq!(data["totalUnreadCount"], 0);
    assert_eq!(data["removeNovuBranding"], false);
    assert_eq!(
        data["isDevelopmentMode"], false,
        "environment A is not Development"
    );
    assert_eq!(data["applicationIdentifier"], s.identifier_a.as_str());

    let doc = s.call("GET", "/v1/subscribers/user-1", None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["data"]["firstName"], "Ada");
    assert_eq!(doc["data"]["email"], "ada@example.com");
    assert_eq!(doc["data"]["data"], json!({"plan": "pro", "n": 1e2}));
    assert_eq!(doc["data"]["__v"], 0);

    let token = data["token"].as_str().expect("a token");
    let now = SystemClock.now();
    let verified = token_key().verify(token, now).expect("verifies");
    assert_eq!(verified.subscriber_id, "user-1");
    assert_eq!(verified.tenant(), s.tenant_a);
    // 24 hours by default.
    let left = verified.expires_at.as_millis() - now.as_millis();
    assert!((86_000_000..=86_400_000).contains(&left), "{left} ms");
    // The verify function the socket handshake calls refuses the rest.
    let day_later = Timestamp::from_millis(now.as_millis() + 86_400_001);
    assert!(matches!(
        token_key().verify(token, day_later),
        Err(TokenError::Expired { .. })
    ));
    assert_eq!(
        token_key().verify_for(token, now, s.tenant_b.environment_id()),
        Err(TokenError::OtherEnvironment)
    );
    let other = TokenKey::new(&ServerKey::from_bytes([8; 32]));
    assert_eq!(other.verify(token, now), Err(TokenError::Forged));
    let tampered = format!("{token}x");
    assert_eq!(token_key().verify(&tampered, now), Err(TokenError::Forged));
    // Environment B's key does not make hashes for A.
    let mut foreign = body_for(&s, "user-1b");
    foreign["subscriberHash"] = json!(hash(&s.key_b, "user-1b"));
    assert_error(
        &session(&s, &foreign),
        400,
        "Please provide a valid HMAC hash",
    );
}

#[test]
fn an_existing_subscriber_is_left_unchanged() {
    let s = TestServer::start();
    let created = s.call(
        "POST",
        "/v1/subscribers",
        Some(r#"{"subscriberId": "user-2", "firstName": "Bob"}"#),
    );
    assert_eq!(created.status, 201);
    let before = s.call("GET", "/v1/subscribers/user-2", None).body;
    let mut body = body_for(&s, "user-2");
    body["subscriber"]["firstName"] = json!("Eve");
    body["subscriber"]["lastName"] = json!("Other");
    for _ in 0..2 {
        let reply = session(&s, &body);
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let after = s.call("GET", "/v1/subscribers/user-2", None).body;
    assert_eq!(after, before, "the document did not move");
    assert_eq!(subscribers_of_a(&s), 1);
    // A subscriber of the other environment with the same id is apart.
    let auth_b = s.auth_b();
    let in_b = s.send(
        "GET",
        "/v1/subscribers/user-2",
        &[("Authorization", &auth_b)],
        None,
    );
    assert_eq!(in_b.status, 404);
}

#[test]
fn a_missing_or_wrong_hash_is_refused_and_creates_nothing() {
    let s = TestServer::start();
    let right = hash(&s.key_a, "user-3");
    let bad = [
        Value::Null,
        json!(""),
        json!(hash(&s.key_a, "someone-else")),
        json!(hash(&s.key_b, "user-3")),
        json!(hash("not-a-key-at-all-0123456789", "user-3")),
        json!(right.to_uppercase()),
        json!(format!("{}zz", &right[..62])),
        json!(&right[..63]),
        json!(format!("{right}0")),
        json!(format!(" {right}")),
    ];
    for hash in bad {
        let mut body = body_for(&s, "user-3");
        match hash {
            Value::Null => {
                body.as_object_mut()
                    .expect("object")
                    .remove("subscriberHash");
            }
            other => body["subscriberHash"] = other,
        }
        assert_error(&session(&s, &body), 400, "Please provide a valid HMAC hash");
    }
    assert_eq!(s.call("GET", "/v1/subscribers/user-3", None).status, 404);
    assert_eq!(subscribers_of_a(&s), 0);
    // The right one still works after all that.
    assert_eq!(session(&s, &body_for(&s, "user-3")).status, 201);
    assert_eq!(subscribers_of_a(&s), 1);
}

#[test]
fn with_hmac_off_a_session_needs_no_hash() {
    let s = TestServer::with_config(ServerConfig {
        inbox: InboxConfig {
            hmac: false,
            token_ttl: Duration::from_secs(90),
            ..inbox()
        },
        ..ServerConfig::default()
    });
    let body = json!({"applicationIdentifier": s.identifier_a, "subscriberId": "user-4"});
    let reply = session(&s, &body);
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let token = reply.json()["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let verified = token_key()
        .verify(&token, SystemClock.now())
        .expect("verifies");
    assert_eq!(verified.subscriber_id, "user-4");
    let left = verified.expires_at.as_millis() - SystemClock.now().as_millis();
    assert!(left <= 90_000, "--inbox-token-ttl-secs is followed: {left}");
    // A hash that is there is not judged; its type still is.
    let mut with_hash = body_for(&s, "user-5");
    with_hash["subscriberHash"] = json!("whatever");
    assert_eq!(session(&s, &with_hash).status, 201);
    with_hash["subscriberHash"] = json!(5);
    assert_eq!(session(&s, &with_hash).status, 422);
    assert_eq!(s.call("GET", "/v1/subscribers/user-4", None).status, 200);
    // The application identifier is still checked.
    let unknown = json!({"applicationIdentifier": "nope", "subscriberId": "user-6"});
    assert_error(
        &session(&s, &unknown),
        400,
        "Please provide a valid app identifier",
    );
}

#[test]
fn an_unknown_application_identifier_is_refused() {
    let s = TestServer::start();
    let long = "A".repeat(300);
    for identifier in ["", "nope-nope-no", "a b", long.as_str(), "ä"] {
        let mut body = body_for(&s, "user-7");
        body["applicationIdentifier"] = json!(identifier);
        assert_error(
            &session(&s, &body),
            400,
            "Please provide a valid app identifier",
        );
    }
    // Checked before the hash: B's identifier with A's hash is a hash error.
    let mut body = body_for(&s, "user-7");
    body["applicationIdentifier"] = json!(s.identifier_b);
    assert_error(&session(&s, &body), 400, "Please provide a valid HMAC hash");
    assert_eq!(subscribers_of_a(&s), 0);
}

#[test]
fn every_malformed_body_is_refused_in_the_error_shape_and_changes_nothing() {
    let s = TestServer::start();
    let id = &s.identifier_a;
    let h = hash(&s.key_a, "user-8");
    let long = "x".repeat(256);
    // (body, status, message, the field a 422 names)
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (String::new(), 400, "Request body is empty; expected JSON", None),
        ("not json".into(), 400, "", None),
        ("{\"applicationIdentifier\":".into(), 400, "", None),
        ("[]".into(), 422, "Validation Error", Some("applicationIdentifier")),
        ("\"x\"".into(), 422, "Validation Error", Some("applicationIdentifier")),
        ("null".into(), 422, "Validation Error", Some("applicationIdentifier")),
        (json!({"subscriberId": "user-8"}).to_string(), 422, "Validation Error", Some("applicationIdentifier")),
        (json!({"applicationIdentifier": 1, "subscriberId": "user-8"}).to_string(), 422, "Validation Error", Some("applicationIdentifier")),
        (json!({"applicationIdentifier": ["a"], "subscriberId": "user-8"}).to_string(), 422, "Validation Error", Some("applicationIdentifier")),
        (json!({"applicationIdentifier": id}).to_string(), 422, "Validation Error", Some("subscriberId")),
        (json!({"applicationIdentifier": id, "subscriberId": 8}).to_string(), 422, "Validation Error", Some("subscriberId")),
        (json!({"applicationIdentifier": id, "subscriber": "user-8"}).to_string(), 422, "Validation Error", Some("subscriber")),
        (json!({"applicationIdentifier": id, "subscriber": ["user-8"]}).to_string(), 422, "Validation Error", Some("subscriber")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "   "}}).to_string(), 422, "Validation Error", Some("subscriber.subscriberId")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": long}}).to_string(), 422, "Validation Error", Some("subscriber.subscriberId")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "a\u{7}b"}}).to_string(), 422, "Validation Error", Some("subscriber.subscriberId")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": true}}).to_string(), 422, "Validation Error", Some("subscriber.subscriberId")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8", "firstName": 1}, "subscriberHash": h}).to_string(), 422, "Validation Error", Some("subscriber.firstName")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8", "email": ["a"]}, "subscriberHash": h}).to_string(), 422, "Validation Error", Some("subscriber.email")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8", "locale": {}}, "subscriberHash": h}).to_string(), 422, "Validation Error", Some("subscriber.locale")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8", "data": "text"}, "subscriberHash": h}).to_string(), 422, "Validation Error", Some("subscriber.data")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8", "data": [1]}, "subscriberHash": h}).to_string(), 422, "Validation Error", Some("subscriber.data")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8"}, "subscriberHash": 12}).to_string(), 422, "Validation Error", Some("subscriberHash")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8"}, "subscriberHash": {"h": h}}).to_string(), 422, "Validation Error", Some("subscriberHash")),
        (json!({"applicationIdentifier": id, "subscriber": {"subscriberId": "user-8"}, "subscriberHash": "not hex"}).to_string(), 400, "Please provide a valid HMAC hash", None),
    ];
    for (body, status, message, field) in &cases {
        let reply = s.send(
            "POST",
            "/v1/inbox/session",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        assert_eq!(
            reply.status,
            *status,
            "{body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let answer = reply.json();
        assert_eq!(answer["statusCode"], *status, "{body}");
        assert_eq!(answer["path"], "/v1/inbox/session");
        if message.is_empty() {
            let text = answer["message"].as_str().expect("message");
            assert!(text.starts_with("Request body is not valid JSON"), "{text}");
        } else {
            assert_eq!(answer["message"], *message, "{body}");
        }
        if let Some(field) = field {
            let errors = answer["errors"].as_object().expect("errors");
            assert!(errors.contains_key(*field), "{body}: {errors:?}");
        }
    }
    // No body at all, and a body over the limit.
    let none = s.send("POST", "/v1/inbox/session", &[], None);
    assert_eq!(none.status, 400);
    let huge = format!(
        "{{\"applicationIdentifier\":\"{id}\",\"subscriberId\":\"user-8\",\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let too_large = s.send(
        "POST",
        "/v1/inbox/session",
        &[("Content-Type", "application/json")],
        Some(huge.as_bytes()),
    );
    assert_eq!(too_large.status, 413);
    assert_eq!(subscribers_of_a(&s), 0, "nothing was created");
    // The route takes POST only, and no API key is needed or read.
    let get = s.send("GET", "/v1/inbox/session", &[], None);
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    let wrong_key = s.send(
        "POST",
        "/v1/inbox/session",
        &[("Authorization", "ApiKey nope")],
        Some(body_for(&s, "user-8").to_string().as_bytes()),
    );
    assert_eq!(wrong_key.status, 201);
}

#[test]
fn the_session_counter_moves_by_outcome() {
    let s = TestServer::start();
    assert_eq!(session(&s, &body_for(&s, "user-9")).status, 201);
    let mut bad = body_for(&s, "user-9");
    bad["subscriberHash"] = json!("00");
    assert_eq!(session(&s, &bad).status, 400);
    bad["applicationIdentifier"] = json!("unknown");
    assert_eq!(session(&s, &bad).status, 400);
    let metrics = s.send("GET", "/metrics", &[], None);
    let text = String::from_utf8_lossy(&metrics.body);
    for (outcome, count) in [
        ("created", 1),
        ("bad_hash", 1),
        ("unknown_application", 1),
        ("invalid", 0),
        ("failed", 0),
    ] {
        let line = format!("subscriberd_inbox_sessions_total{{outcome=\"{outcome}\"}} {count}");
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
}

#[test]
fn without_a_server_key_sessions_are_off() {
    let s = TestServer::with_config(ServerConfig::default());
    let reply = session(&s, &body_for(&s, "user-10"));
    assert_error(
        &reply,
        404,
        "Inbox sessions are off: this server was started without a server key",
    );
}

/// A key made before the store had a server key is kept as a digest only;
/// once it authenticates any API request it is sealed, and its hashes open
/// sessions.
#[test]
fn an_older_key_works_for_hmac_once_it_has_authenticated() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed))
        .expect("open without a server key");
    let (env, _) = store.ensure_environment("Development").expect("env");
    let old_key = store.issue_key(env.id).expect("key").secret;
    drop(store);
    let store = Store::open(
        Config::new(dir.path())
            .durability(Durability::Relaxed)
            .server_key(common::server_key()),
    )
    .expect("reopen with one");
    let config = ServerConfig {
        inbox: inbox(),
        ..ServerConfig::default()
    };
    let (addr, stop, thread) = common::serve_on(common::runtime(), store.clone().into(), config);
    let body = json!({
        "applicationIdentifier": env.identifier,
        "subscriber": {"subscriberId": "user-11"},
        "subscriberHash": hash(&old_key, "user-11"),
    })
    .to_string();
    let post = || {
        testkit::send(
            addr,
            "POST",
            "/v1/inbox/session",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    };
    let before = post();
    assert_eq!(
        before.status, 400,
        "only a digest: no HMAC check is possible yet"
    );
    assert_eq!(before.json()["message"], "Please provide a valid HMAC hash");
    let auth = format!("ApiKey {old_key}");
    let me = testkit::send(
        addr,
        "GET",
        "/v1/environments/me",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["data"]["identifier"], env.identifier.as_str());
    let after = post();
    assert_eq!(
        after.status,
        201,
        "{}",
        String::from_utf8_lossy(&after.body)
    );
    assert_eq!(
        after.json()["data"]["isDevelopmentMode"],
        true,
        "the Development environment"
    );
    let _ = stop.send(());
    thread.join().expect("server thread");
    // Sealed for good: a new server on the directory checks it at once.
    store.flush().expect("flush");
    drop(store);
    let store =
        Store::open(Config::new(dir.path()).server_key(common::server_key())).expect("open again");
    let raw = hash(&old_key, "user-12");
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).expect("hex"))
        .collect();
    assert!(
        store
            .subscriber_hash_matches(env.id, "user-12", &bytes)
            .expect("check")
    );
}

/// SPEC 13: a copy of the data directory alone reveals no API key.
#[test]
fn a_copy_of_the_data_directory_holds_no_api_key() {
    let s = TestServer::with_store(
        ServerConfig {
            inbox: inbox(),
            ..ServerConfig::default()
        },
        |c| c,
    );
    assert_eq!(session(&s, &body_for(&s, "user-13")).status, 201);
    s.store().flush().expect("flush");
    let copy = tempfile::tempdir().expect("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", s.data_dir().display()))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let grep = |needle: &str| {
        std::process::Command::new("grep")
            .args(["-r", "-a", "-F", "-q", "-e", needle])
            .arg(copy.path())
            .status()
            .expect("grep")
            .code()
    };
    // grep finds the identifier (it is stored in the clear) ...
    assert_eq!(grep(&s.identifier_a), Some(0), "grep reads the copy");
    // ... and neither key.
    assert_eq!(grep(&s.key_a), Some(1), "key A is in the data directory");
    assert_eq!(grep(&s.key_b), Some(1), "key B is in the data directory");
}
