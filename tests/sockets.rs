//! The Inbox socket (SPEC 13) end to end on the binary, with a socket.io
//! client of our own: tokio-tungstenite speaking Engine.IO 4 and the
//! socket.io protocol 5 by hand (the open packet `0{...}`, the namespace
//! connect `40`, its answer `40{"sid"}` or the refusal `44{"message"}`,
//! pings `2` answered `3`). Refused handshakes change nothing; a thousand
//! sockets opened and dropped at once leave exact counts; a server killed
//! with sockets open comes back with their subscribers offline at their
//! last renewal. @novu/js itself is tested in tests/sdk.rs.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{SERVER_KEY, Server};
use futures_util::{SinkExt, StreamExt};
use subscriber_store::{ObjectId, ServerKey, Timestamp, rules};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The outcome of a socket.io handshake.
enum Handshake {
    Connected(Box<Ws>),
    Refused(String),
}

/// Opens a socket the way socket.io-client does with
/// `transports: ["websocket"]` and `query: {token}`.
async fn open(addr: SocketAddr, token: Option<&str>) -> Handshake {
    open_with(addr, token, None).await
}

/// As [`open`], with `auth: {token: auth}` in the connect packet too.
async fn open_with(addr: SocketAddr, token: Option<&str>, auth: Option<&str>) -> Handshake {
    let mut url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    if let Some(token) = token {
        url.push_str("&token=");
        url.push_str(token);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket upgrade");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with("0{"), "an Engine.IO open packet: {open}");
    assert!(open.contains("\"sid\""), "{open}");
    let connect = match auth {
        Some(token) => format!("40{}", serde_json::json!({ "token": token })),
        None => "40".to_owned(),
    };
    ws.send(Message::text(connect)).await.expect("send connect");
    loop {
        let packet = next_text(&mut ws).await;
        if packet == "2" {
            ws.send(Message::text("3")).await.expect("pong");
        } else if let Some(data) = packet.strip_prefix("40") {
            assert!(data.contains("\"sid\""), "{packet}");
            return Handshake::Connected(Box::new(ws));
        } else if let Some(data) = packet.strip_prefix("44") {
            let error: serde_json::Value = serde_json::from_str(data).expect("connect error JSON");
            return Handshake::Refused(error["message"].as_str().unwrap_or_default().to_owned());
        } else {
            panic!("unexpected packet {packet}");
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a packet within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn connected(addr: SocketAddr, token: &str) -> Box<Ws> {
    match open(addr, Some(token)).await {
        Handshake::Connected(ws) => ws,
        Handshake::Refused(message) => panic!("refused: {message}"),
    }
}

/// Now, by the system clock (the server's).
fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    Timestamp::from_millis(u64::try_from(since.as_millis()).expect("ms"))
}

/// An ISO time of the wire.
fn time(value: &serde_json::Value) -> Timestamp {
    let text = value.as_str().unwrap_or_else(|| panic!("a time: {value}"));
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let since = at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    Timestamp::from_millis(u64::try_from(since.as_millis()).expect("ms"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The environment's application identifier.
fn identifier(server: &Server) -> String {
    let me = server.call("GET", "/v1/environments/me", &[], None);
    assert_eq!(me.status, 200);
    me.data()["identifier"]
        .as_str()
        .expect("identifier")
        .to_owned()
}

/// A session token for `subscriber_id` (the server runs with
/// `--inbox-hmac off`: the hash is tested in tests/inbox.rs).
fn token(server: &Server, identifier: &str, subscriber_id: &str) -> String {
    let body = serde_json::json!({
        "applicationIdentifier": identifier,
        "subscriber": {"subscriberId": subscriber_id},
    });
    let reply = server.call(
        "POST",
        "/v1/inbox/session",
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    );
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.data()["token"].as_str().expect("token").to_owned()
}

fn document(server: &Server, subscriber_id: &str) -> serde_json::Value {
    let reply = server.call(
        "GET",
        &format!("/v1/subscribers/{subscriber_id}"),
        &[],
        None,
    );
    assert_eq!(reply.status, 200);
    reply.data()
}

/// Every event of the feed, oldest first.
fn events(server: &Server) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/v1/presence/events?limit=1000".to_owned()
        } else {
            format!("/v1/presence/events?limit=1000&after={after}")
        };
        let page = server.call("GET", &path, &[], None).data();
        let events = page["events"].as_array().expect("events").clone();
        let done = events.len() < 1000;
        all.extend(events);
        if done {
            return all;
        }
        after = page["next"].as_str().expect("next").to_owned();
    }
}

fn online_count(server: &Server) -> u64 {
    server.call("GET", "/v1/presence/stats", &[], None).data()["online"]
        .as_u64()
        .expect("online")
}

/// The value of an unlabelled metric, or of one labelled series.
fn metric(server: &Server, series: &str) -> f64 {
    let text = server.call("GET", "/metrics", &[], None);
    String::from_utf8_lossy(&text.body)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// Waits up to 20 s for `check`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn handshakes_with_missing_forged_expired_or_foreign_tokens_are_refused_and_change_nothing() {
    let data = tempfile::tempdir().expect("dir");
    let server = Server::start(data.path(), &["--inbox-hmac", "off"]);
    let identifier = identifier(&server);
    let good = token(&server, &identifier, "ada");
    let before = document(&server, "ada");
    let tenant = {
        let id = |field: &str| {
            before[field]
                .as_str()
                .expect("id")
                .parse::<ObjectId>()
                .expect("id")
        };
        rules::tenant(id("_organizationId"), id("_environmentId"))
    };
    let ours = subscriber_http::TokenKey::new(&ServerKey::parse(SERVER_KEY).expect("server key"));
    let theirs = subscriber_http::TokenKey::new(&ServerKey::from_bytes([9; 32]));
    let now = now();
    let hour = Duration::from_secs(3600);
    let forged = theirs.issue(&tenant, "ada", now, hour).expect("token");
    // One character of the signature changed (not its last, whose low
    // bits are padding).
    let mut altered: Vec<char> = good.chars().collect();
    let at = altered.len() - 10;
    altered[at] = if altered[at] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    let expired = ours
        .issue(
            &tenant,
            "ada",
            Timestamp::from_millis(now.as_millis() - 7_200_000),
            hour,
        )
        .expect("token");
    let elsewhere = rules::tenant(tenant.organization_id(), rules::id_from_bytes([5; 12]));
    let foreign = ours.issue(&elsewhere, "ada", now, hour).expect("token");

    let runtime = runtime();
    let cases: [(Option<&str>, &str, &str); 6] = [
        (None, "Missing token", "missing_token"),
        (Some("not-a-token"), "Invalid token", "invalid_token"),
        (Some(&forged), "Invalid token", "forged_token"),
        (Some(&altered), "Invalid token", "forged_token"),
        (Some(&expired), "Token expired", "expired_token"),
        (Some(&foreign), "Unknown environment", "other_environment"),
    ];
    for (token, message, _) in cases {
        match runtime.block_on(open(server.addr, token)) {
            Handshake::Refused(got) => assert_eq!(got, message, "{token:?}"),
            Handshake::Connected(_) => panic!("{token:?} was accepted"),
        }
    }
    assert_eq!(document(&server, "ada"), before, "nothing changed");
    assert!(events(&server).is_empty());
    assert_eq!(metric(&server, "subscriberd_socket_connections_open"), 0.0);
    for (reason, refused) in [
        ("missing_token", 1.0),
        ("invalid_token", 1.0),
        ("forged_token", 2.0),
        ("expired_token", 1.0),
        ("other_environment", 1.0),
        ("unknown_subscriber", 0.0),
    ] {
        let series = format!("subscriberd_socket_handshakes_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&server, &series), refused, "{reason}");
    }

    // The good token connects, and the subscriber is online until it closes.
    let ws = runtime.block_on(connected(server.addr, &good));
    assert_eq!(document(&server, "ada")["isOnline"], true);
    assert_eq!(metric(&server, "subscriberd_socket_connections_open"), 1.0);
    drop(ws);
    eventually("ada offline", || {
        document(&server, "ada")["isOnline"] == false
    });
    eventually("the gauge at 0", || {
        metric(&server, "subscriberd_socket_connections_open") == 0.0
    });
    // The token in the connect packet's `auth` (other socket.io clients
    // put it there) is read first.
    match runtime.block_on(open_with(server.addr, Some("not-a-token"), Some(&good))) {
        Handshake::Connected(ws) => drop(ws),
        Handshake::Refused(message) => panic!("auth.token refused: {message}"),
    }
    match runtime.block_on(open_with(server.addr, Some(&good), Some(&forged))) {
        Handshake::Refused(got) => assert_eq!(got, "Invalid token"),
        Handshake::Connected(_) => panic!("a forged auth.token was accepted"),
    }
    eventually("ada offline again", || {
        document(&server, "ada")["isOnline"] == false
    });
    // A deleted subscriber's token no longer connects.
    assert_eq!(
        server
            .call("DELETE", "/v1/subscribers/ada", &[], None)
            .status,
        200
    );
    match runtime.block_on(open(server.addr, Some(&good))) {
        Handshake::Refused(got) => assert_eq!(got, "Subscriber not found"),
        Handshake::Connected(_) => panic!("a deleted subscriber connected"),
    }
    assert!(server.terminate().success());
}

#[test]
fn a_thousand_sockets_opened_and_dropped_at_once_leave_exact_counts() {
    // A thousand sockets here and a thousand on the server.
    let soft = rlimit::increase_nofile_limit(8192).expect("raise the open-file limit");
    assert!(
        soft >= 2048,
        "this test needs 2048 open files, the hard limit allows {soft}"
    );
    let data = tempfile::tempdir().expect("dir");
    let server = Server::start(
        data.path(),
        &["--inbox-hmac", "off", "--max-connections", "2000"],
    );
    let identifier = identifier(&server);
    const SUBSCRIBERS: usize = 250;
    const EACH: usize = 4;
    let tokens: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| token(&server, &identifier, &format!("crowd-{i}")))
        .collect();

    let runtime = runtime();
    let sockets: Vec<Box<Ws>> = runtime.block_on(async {
        let opening: Vec<_> = tokens
            .iter()
            .flat_map(|token| std::iter::repeat_n(token.clone(), EACH))
            .map(|token| {
                let addr = server.addr;
                tokio::spawn(async move { connected(addr, &token).await })
            })
            .collect();
        let mut sockets = Vec::with_capacity(opening.len());
        for task in opening {
            sockets.push(task.await.expect("task"));
        }
        sockets
    });
    assert_eq!(sockets.len(), SUBSCRIBERS * EACH);
    assert_eq!(online_count(&server), SUBSCRIBERS as u64);
    assert_eq!(
        metric(&server, "subscriberd_socket_connections_open"),
        1000.0
    );
    let connected_events = events(&server);
    assert_eq!(
        connected_events.len(),
        SUBSCRIBERS,
        "one flip per subscriber"
    );
    assert!(
        connected_events
            .iter()
            .all(|e| e["cause"] == "connected" && e["isOnline"] == true)
    );

    // All at once: every socket's TCP connection closes.
    let closed_after = now();
    runtime.block_on(async move { drop(sockets) });
    eventually("everyone offline", || online_count(&server) == 0);
    eventually("the gauge at 0", || {
        metric(&server, "subscriberd_socket_connections_open") == 0.0
    });
    // An offline write is readable in the feed once durable.
    eventually("every flip readable", || {
        events(&server).len() >= 2 * SUBSCRIBERS
    });
    let all = events(&server);
    assert_eq!(
        all.len(),
        2 * SUBSCRIBERS,
        "exactly two flips per subscriber"
    );
    for i in 0..SUBSCRIBERS {
        let id = format!("crowd-{i}");
        let mine: Vec<&serde_json::Value> = all
            .iter()
            .filter(|e| e["subscriberId"] == id.as_str())
            .collect();
        assert_eq!(mine.len(), 2, "{id}");
        assert_eq!(
            (&mine[0]["cause"], &mine[1]["cause"]),
            (&"connected".into(), &"disconnected".into())
        );
        let doc = document(&server, &id);
        assert_eq!(doc["isOnline"], false, "{id}");
        let last = time(&doc["lastOnlineAt"]);
        assert!(last >= closed_after, "{id}: {last} before the close");
        assert_eq!(doc["lastOnlineAt"], mine[1]["lastOnlineAt"]);
    }
    assert_eq!(metric(&server, "subscriberd_socket_connections_open"), 0.0);
    assert!(server.terminate().success());
}

#[test]
fn a_server_killed_with_sockets_open_restarts_with_them_offline_at_their_last_renewal() {
    let data = tempfile::tempdir().expect("dir");
    // Renewed every second; a lease of 3 s.
    let args = ["--inbox-hmac", "off", "--connection-lease-secs", "3"];
    let server = Server::start(data.path(), &args);
    let identifier = identifier(&server);
    let ids = ["kill-a", "kill-b", "kill-c"];
    let tokens: Vec<String> = ids
        .iter()
        .map(|id| token(&server, &identifier, id))
        .collect();
    let runtime = runtime();
    let sockets: Vec<Box<Ws>> = runtime.block_on(async {
        futures_util::future::join_all(tokens.iter().map(|t| connected(server.addr, t))).await
    });
    let connected_at: Vec<Timestamp> = ids
        .iter()
        .map(|id| {
            let doc = document(&server, id);
            assert_eq!(doc["isOnline"], true);
            time(&doc["updatedAt"])
        })
        .collect();
    // Long enough for renewals (every second, looked for at least every second).
    std::thread::sleep(Duration::from_millis(3_500));
    let renewed: Vec<Timestamp> = ids
        .iter()
        .map(|id| time(&document(&server, id)["updatedAt"]))
        .collect();
    server.kill();
    let killed = now();
    // The clients still hold their sockets: the server is gone under them.
    let server = Server::start(data.path(), &args);
    for (i, id) in ids.iter().enumerate() {
        let doc = document(&server, id);
        assert_eq!(doc["isOnline"], false, "{id}");
        let last = time(&doc["lastOnlineAt"]);
        assert!(last > connected_at[i], "{id}: renewed after the connect");
        assert!(
            last >= renewed[i],
            "{id}: at or after the renewal seen before the kill"
        );
        assert!(last <= killed, "{id}: not after the kill");
        assert!(doc.get("onlineExpiresAt").is_none());
    }
    eventually("the expiries written", || {
        events(&server).len() == 2 * ids.len()
    });
    let all = events(&server);
    for id in ids {
        let causes: Vec<&serde_json::Value> = all
            .iter()
            .filter(|e| e["subscriberId"] == id)
            .map(|e| &e["cause"])
            .collect();
        assert_eq!(
            causes,
            [
                &serde_json::json!("connected"),
                &serde_json::json!("expired")
            ],
            "{id}"
        );
    }
    drop(sockets);
    assert!(server.terminate().success());
}

#[test]
fn on_postgres_sockets_are_refused_as_unsupported_and_change_nothing() {
    let Some(pg) = testkit::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_database("sockets");
    let data = tempfile::tempdir().expect("dir");
    let server = Server::start(
        data.path(),
        &[
            "--inbox-hmac",
            "off",
            "--backend",
            "postgres",
            "--database-url",
            &url,
        ],
    );
    let identifier = identifier(&server);
    let good = token(&server, &identifier, "ada");
    let before = document(&server, "ada");
    match runtime().block_on(open(server.addr, Some(&good))) {
        Handshake::Refused(got) => {
            assert_eq!(got, "Live connections are not supported on this backend");
        }
        Handshake::Connected(_) => panic!("postgres has no connection presence yet"),
    }
    assert_eq!(document(&server, "ada"), before);
    let series = "subscriberd_socket_handshakes_refused_total{reason=\"unsupported\"}";
    assert_eq!(metric(&server, series), 1.0);
    assert!(server.terminate().success());
    drop(pg);
}

#[test]
fn sigterm_closes_the_sockets_and_their_subscribers_go_offline_as_closed() {
    let data = tempfile::tempdir().expect("dir");
    let args = ["--inbox-hmac", "off"];
    let server = Server::start(data.path(), &args);
    let identifier = identifier(&server);
    let good = token(&server, &identifier, "ada");
    let runtime = runtime();
    let ws = runtime.block_on(connected(server.addr, &good));
    assert_eq!(document(&server, "ada")["isOnline"], true);
    let stopped_after = now();
    assert!(server.terminate().success());
    let server = Server::start(data.path(), &args);
    let doc = document(&server, "ada");
    assert_eq!(doc["isOnline"], false);
    assert!(
        time(&doc["lastOnlineAt"]) >= stopped_after,
        "closed at the shutdown"
    );
    let causes: Vec<serde_json::Value> =
        events(&server).iter().map(|e| e["cause"].clone()).collect();
    assert_eq!(
        causes,
        [
            serde_json::json!("connected"),
            serde_json::json!("disconnected")
        ]
    );
    drop(ws);
    assert!(server.terminate().success());
}
