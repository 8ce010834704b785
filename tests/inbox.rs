//! The Inbox session through the binary (SPEC 13): the application
//! identifier where keys are shown, the server key file the embedded
//! default makes beside the data directory (and never inside it), the
//! flags, and two PostgreSQL servers given one server key.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::{KEY, SERVER_KEY, Server};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subscriber_http::TokenKey;
use subscriber_store::{Clock, ServerKey, SystemClock};

fn hash(key: &str, subscriber_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac");
    mac.update(subscriber_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn identifier(server: &Server, key: &str) -> String {
    let auth = format!("ApiKey {key}");
    let me = testkit::send(
        server.addr,
        "GET",
        "/v1/environments/me",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(me.status, 200);
    me.json()["data"]["identifier"]
        .as_str()
        .expect("identifier")
        .to_owned()
}

fn session(server: &Server, identifier: &str, key: &str, subscriber_id: &str) -> testkit::Reply {
    let body = serde_json::json!({
        "applicationIdentifier": identifier,
        "subscriber": {"subscriberId": subscriber_id},
        "subscriberHash": hash(key, subscriber_id),
    });
    testkit::send(
        server.addr,
        "POST",
        "/v1/inbox/session",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

#[test]
fn the_first_start_makes_a_server_key_beside_the_data_directory_and_shows_the_identifier() {
    let root = tempfile::tempdir().expect("dir");
    let data = root.path().join("data");
    let mut command = common::binary();
    command.env_remove("SUBSCRIBERD_SERVER_KEY");
    let server = Server::launch(command, &data, &[], None);
    let banner = server.stdout("More keys");
    let secret = banner
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no key in {banner}"))
        .to_owned();
    let shown = banner
        .lines()
        .find_map(|l| l.split("(the Inbox's applicationIdentifier): ").nth(1))
        .unwrap_or_else(|| panic!("no identifier in {banner}"))
        .trim()
        .to_owned();
    assert_eq!(shown, identifier(&server, &secret));
    let log = server.stderr().join("\n");
    assert!(log.contains("Created the server key"), "{log}");
    assert!(
        log.contains(&format!("application_identifier={shown}")),
        "{log}"
    );
    let key_file = root.path().join("data.server-key");
    let mode = std::fs::metadata(&key_file)
        .expect("the key file beside the data directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let reply = session(&server, &shown, &secret, "user-1");
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["data"]["isDevelopmentMode"], true);
    let token = reply.json()["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(server.terminate().success());

    // The directory holds neither the API key nor the server key.
    let server_key = std::fs::read_to_string(&key_file).expect("key");
    let grep = |needle: &str| {
        std::process::Command::new("grep")
            .args(["-r", "-a", "-F", "-q", "-e", needle])
            .arg(&data)
            .status()
            .expect("grep")
            .code()
    };
    assert_eq!(grep(&shown), Some(0), "grep reads the directory");
    assert_eq!(
        grep(&secret),
        Some(1),
        "the API key is in the data directory"
    );
    assert_eq!(grep(server_key.trim()), Some(1), "the server key is in it");

    // The next start reads the same key: the token still verifies, the
    // sealed API key still checks hashes.
    let mut command = common::binary();
    command.env_remove("SUBSCRIBERD_SERVER_KEY");
    let server = Server::launch(command, &data, &[], None);
    assert!(
        !server
            .stderr()
            .join("\n")
            .contains("Created the server key")
    );
    assert_eq!(session(&server, &shown, &secret, "user-2").status, 201);
    let key = TokenKey::new(&ServerKey::parse(&server_key).expect("key"));
    let verified = key.verify(&token, SystemClock.now()).expect("verifies");
    assert_eq!(verified.subscriber_id, "user-1");

    // `keys create` and `keys list` show the identifier.
    let created = common::binary()
        .args(["keys", "create", "--data"])
        .arg(&data)
        .output()
        .expect("keys create");
    assert!(created.status.success());
    let new_key = String::from_utf8(created.stdout).expect("utf-8");
    assert_eq!(new_key.trim().len(), 64, "only the secret on stdout");
    let note = String::from_utf8_lossy(&created.stderr);
    assert!(
        note.contains(&format!(
            "application identifier (the Inbox's applicationIdentifier) is {shown}"
        )),
        "{note}"
    );
    assert_eq!(
        session(&server, &shown, new_key.trim(), "user-3").status,
        201
    );
    let listing = common::keys(&data, &["list"]);
    assert!(
        listing
            .lines()
            .next()
            .is_some_and(|l| l.contains("app identifier")),
        "{listing}"
    );
    assert!(
        listing.lines().filter(|l| l.contains(&shown)).count() >= 2,
        "{listing}"
    );
    assert!(server.terminate().success());
}

#[test]
fn the_inbox_flags_are_followed() {
    let data = tempfile::tempdir().expect("dir");
    let server = Server::start(
        data.path(),
        &["--inbox-hmac", "off", "--inbox-token-ttl-secs", "120"],
    );
    let id = identifier(&server, KEY);
    let body = format!(r#"{{"applicationIdentifier": "{id}", "subscriberId": "user-1"}}"#);
    let reply = testkit::send(
        server.addr,
        "POST",
        "/v1/inbox/session",
        &[],
        Some(body.as_bytes()),
    );
    assert_eq!(reply.status, 201, "no hash needed with --inbox-hmac off");
    let token = reply.json()["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let key = TokenKey::new(&ServerKey::parse(SERVER_KEY).expect("key"));
    let now = SystemClock.now();
    let left = key
        .verify(&token, now)
        .expect("verifies")
        .expires_at
        .as_millis()
        - now.as_millis();
    assert!((100_000..=120_000).contains(&left), "{left} ms");
    assert!(server.terminate().success());

    // A bad key or flag is one line and exit 1 or 2 (clap).
    for (args, env) in [
        (vec!["--inbox-token-ttl-secs", "5"], None),
        (vec![], Some("not-a-key")),
    ] {
        let mut command = common::binary();
        if let Some(env) = env {
            command.env("SUBSCRIBERD_SERVER_KEY", env);
        }
        let out = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(&args)
            .stdout(Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if env.is_some() {
            assert!(
                stderr.contains("SUBSCRIBERD_SERVER_KEY) is not 64 hexadecimal characters"),
                "{stderr}"
            );
        }
    }
}

/// Servers sharing a PostgreSQL store are given the same server key: a
/// key one of them sealed checks hashes on the other, and each accepts
/// the other's tokens. Without a key the server starts with sessions off.
#[test]
fn postgres_servers_given_one_server_key_share_sessions() {
    let Some(pg) = testkit::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_database("inbox");
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let args = ["--backend", "postgres", "--database-url", url.as_str()];
    let a = Server::start(dir_a.path(), &args);
    let id = identifier(&a, KEY);
    let b = Server::start(dir_b.path(), &args);
    let first = session(&a, &id, KEY, "user-1");
    assert_eq!(first.status, 201);
    let second = session(&b, &id, KEY, "user-2");
    assert_eq!(
        second.status,
        201,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    let key = TokenKey::new(&ServerKey::parse(SERVER_KEY).expect("key"));
    for reply in [first, second] {
        let token = reply.json()["data"]["token"]
            .as_str()
            .expect("token")
            .to_owned();
        assert!(key.verify(&token, SystemClock.now()).is_ok());
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());

    let mut command = common::binary();
    command.env_remove("SUBSCRIBERD_SERVER_KEY");
    let keyless = Server::launch(command, dir_a.path(), &args, Some(KEY));
    let log = keyless
        .stderr_until("no server key", Duration::from_secs(5))
        .join("\n");
    assert!(log.contains("Inbox sessions are off"), "{log}");
    assert_eq!(session(&keyless, &id, KEY, "user-3").status, 404);
    assert!(
        !dir_a.path().with_extension("server-key").exists(),
        "no key file is made up for PostgreSQL"
    );
    assert!(keyless.terminate().success());
}
