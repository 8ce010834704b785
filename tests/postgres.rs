//! The PostgreSQL backend across processes (SPEC 12): two `subscriberd
//! serve --backend postgres` on one database keep `__v` consecutive, run an
//! idempotency key once, keep tenants apart and expire each lease once; and
//! the binary stops with one clear line when the database is unreachable or
//! at a schema it cannot serve. Each test runs its own PostgreSQL cluster
//! (tests skip with one line where PostgreSQL is not installed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{KEY, Reply, Server};
use serde_json::Value;
use testkit::pg::PgCluster;
use testkit::{EventStream, Next, SseItem};

/// `subscriberd serve --backend postgres` on `url`, provisioning `key`
/// into `environment` (the default, `Development`, when `None`).
struct PgServer {
    server: Server,
    /// `--data` (ignored by the postgres backend, but the flag is given).
    _data: tempfile::TempDir,
}

impl std::ops::Deref for PgServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

fn serve(url: &str, key: &str, environment: Option<&str>, args: &[&str]) -> PgServer {
    let data = tempfile::tempdir().expect("data dir");
    let mut command = common::binary();
    command.env_remove("SUBSCRIBERD_ENVIRONMENT");
    if let Some(environment) = environment {
        command.env("SUBSCRIBERD_ENVIRONMENT", environment);
    }
    let mut all = vec!["--backend", "postgres", "--database-url", url];
    all.extend_from_slice(args);
    let server = Server::launch(command, data.path(), &all, Some(key));
    PgServer {
        server,
        _data: data,
    }
}

/// Two servers on `url`, started at the same moment (they migrate and
/// provision concurrently), with `(key, environment)` each.
fn serve_two(url: &str, tenants: [(&str, Option<&str>); 2], args: &[&str]) -> [PgServer; 2] {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let [a, b] = tenants.map(|(key, environment)| {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                serve(url, key, environment, args)
            })
        });
        [
            a.join().expect("start server A"),
            b.join().expect("start server B"),
        ]
    })
}

/// A request authenticated with `key`, on a new connection.
fn call(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let auth = format!("ApiKey {key}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    testkit::send(addr, method, path, &all, body.map(str::as_bytes))
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn replayed(reply: &Reply) -> bool {
    reply.header("idempotency-replay") == Some("true")
}

/// `POST /v1/subscribers` that must create `id` (201); its document.
fn create(addr: SocketAddr, key: &str, id: &str) -> Value {
    let body = format!("{{\"subscriberId\":\"{id}\"}}");
    let reply = call(addr, key, "POST", "/v1/subscribers", &[], Some(&body));
    assert_eq!(reply.status, 201, "create {id}: {}", text(&reply));
    reply.data()
}

/// The whole presence feed of `key`'s environment, paged with `after`;
/// asserts `seq` strictly increasing across pages.
fn feed(addr: SocketAddr, key: &str) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut after = "0".to_owned();
    loop {
        let path = format!("/v1/presence/events?after={after}&limit=1000");
        let reply = call(addr, key, "GET", &path, &[], None);
        assert_eq!(reply.status, 200, "{path}: {}", text(&reply));
        let data = reply.data();
        let page = data["events"].as_array().expect("events").clone();
        if page.is_empty() {
            assert_eq!(data["next"], after.as_str(), "next of an empty page");
            break;
        }
        after = data["next"].as_str().expect("next").to_owned();
        assert_eq!(
            page.last().map(|e| e["seq"].clone()),
            Some(Value::from(after.as_str())),
            "next is the page's last seq"
        );
        events.extend(page);
    }
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| {
            e["seq"]
                .as_str()
                .expect("seq is a string")
                .parse()
                .expect("seq is decimal")
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not strictly increasing: {seqs:?}"
    );
    events
}

fn stats(addr: SocketAddr, key: &str) -> (u64, u64) {
    let reply = call(addr, key, "GET", "/v1/presence/stats", &[], None);
    assert_eq!(reply.status, 200, "{}", text(&reply));
    let data = reply.data();
    (
        data["online"].as_u64().expect("online"),
        data["subscribers"].as_u64().expect("subscribers"),
    )
}

fn version(doc: &Value) -> u64 {
    doc["__v"].as_u64().expect("__v")
}

#[test]
fn two_servers_serialise_one_subscriber() {
    const CLIENTS: usize = 64;
    const WRITES: usize = 10;
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("t_serialise");
    let servers = serve_two(&url, [(KEY, None), (KEY, None)], &[]);
    let addrs = [servers[0].addr, servers[1].addr];
    assert_eq!(version(&create(addrs[0], KEY, "s")), 0);

    let barrier = Barrier::new(CLIENTS);
    let answers: Vec<(u64, bool)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let barrier = &barrier;
                let addr = addrs[client % 2];
                scope.spawn(move || {
                    barrier.wait();
                    (0..WRITES)
                        .map(|n| {
                            let online = (client + n) % 2 == 0;
                            let key = format!("serial-{client}-{n}");
                            let body = format!("{{\"isOnline\":{online}}}");
                            let reply = call(
                                addr,
                                KEY,
                                "PATCH",
                                "/v1/subscribers/s/online-status",
                                &[("idempotency-key", &key)],
                                Some(&body),
                            );
                            assert_eq!(reply.status, 200, "{key}: {}", text(&reply));
                            assert!(!replayed(&reply), "{key}: a fresh key replayed");
                            let doc = reply.data();
                            assert_eq!(doc["isOnline"], online, "{key}: {doc}");
                            (version(&doc), online)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("client"))
            .collect()
    });

    let total = (CLIENTS * WRITES) as u64;
    let by_version: BTreeMap<u64, bool> = answers.iter().copied().collect();
    assert_eq!(
        by_version.len(),
        answers.len(),
        "two successful writes saw the same __v"
    );
    assert_eq!(
        by_version.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "the __v seen by the writers are not exactly 1..={total}"
    );
    // An event for each version whose presence differs from the one before
    // (the first set, from unset, counts).
    let mut flips = Vec::new();
    let mut before = None;
    for (v, online) in &by_version {
        if before != Some(*online) {
            flips.push((*v, *online));
        }
        before = Some(*online);
    }
    for addr in addrs {
        let events = feed(addr, KEY);
        let seen: Vec<(u64, bool)> = events
            .iter()
            .map(|e| {
                assert_eq!(e["subscriberId"], "s", "{e}");
                assert_eq!(e["cause"], "write", "{e}");
                (version(e), e["isOnline"].as_bool().expect("isOnline"))
            })
            .collect();
        assert_eq!(
            seen.len(),
            flips.len(),
            "events in the feed vs presence flips in the answers"
        );
        assert_eq!(seen, flips, "the feed disagrees with the answers");
        let doc = call(addr, KEY, "GET", "/v1/subscribers/s", &[], None).data();
        assert_eq!(version(&doc), total);
        assert_eq!(doc["isOnline"], by_version[&total]);
    }
}

#[test]
fn one_key_to_both_servers_executes_once() {
    const ROUNDS: u64 = 20;
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("t_once");
    let servers = serve_two(&url, [(KEY, None), (KEY, None)], &[]);
    let addrs = [servers[0].addr, servers[1].addr];
    create(addrs[0], KEY, "s");
    let path = "/v1/subscribers/s/online-status";

    for round in 1..=ROUNDS {
        let key = format!("both-{round}");
        let body = format!("{{\"isOnline\":{}}}", round % 2 == 0);
        let barrier = Barrier::new(2);
        let replies: Vec<Reply> = std::thread::scope(|scope| {
            let sent: Vec<_> = addrs
                .iter()
                .map(|addr| {
                    let (barrier, key, body) = (&barrier, &key, &body);
                    scope.spawn(move || {
                        barrier.wait();
                        call(
                            *addr,
                            KEY,
                            "PATCH",
                            path,
                            &[("idempotency-key", key)],
                            Some(body),
                        )
                    })
                })
                .collect();
            sent.into_iter()
                .map(|s| s.join().expect("client"))
                .collect()
        });
        for reply in &replies {
            assert_eq!(reply.status, 200, "round {round}: {}", text(reply));
            assert_eq!(reply.header("idempotency-key"), Some(key.as_str()));
        }
        assert_eq!(
            replies[0].body, replies[1].body,
            "round {round}: the two answers differ"
        );
        let executed = replies.iter().filter(|r| !replayed(r)).count();
        assert_eq!(
            executed, 1,
            "round {round}: {executed} of the two answers executed (not replays)"
        );
        assert_eq!(version(&replies[0].data()), round, "round {round}");
    }
    for addr in addrs {
        let doc = call(addr, KEY, "GET", "/v1/subscribers/s", &[], None).data();
        assert_eq!(version(&doc), ROUNDS, "one version per round");
    }

    // The key of round 1 (`false`) once more: on the other server, with
    // another body, a 422; with its own body, its answer of then.
    let reuse = call(
        addrs[1],
        KEY,
        "PATCH",
        path,
        &[("idempotency-key", "both-1")],
        Some("{\"isOnline\":true}"),
    );
    reuse.error(
        422,
        "Request with key \"both-1\" is being reused for a different body",
    );
    let again = call(
        addrs[1],
        KEY,
        "PATCH",
        path,
        &[("idempotency-key", "both-1")],
        Some("{\"isOnline\":false}"),
    );
    assert_eq!(again.status, 200, "{}", text(&again));
    assert!(replayed(&again));
    assert_eq!(
        version(&again.data()),
        1,
        "the replay answers what happened then"
    );
    let doc = call(addrs[0], KEY, "GET", "/v1/subscribers/s", &[], None).data();
    assert_eq!(
        version(&doc),
        ROUNDS,
        "nothing was written by the 422 or the replay"
    );
}

#[test]
fn tenancy_holds_across_servers() {
    const KA: &str = "tenant-key-A-0123456789abcdef";
    const KB: &str = "tenant-key-B-0123456789abcdef";
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("t_tenancy");
    let servers = serve_two(&url, [(KA, Some("A")), (KB, Some("B"))], &[]);
    let (a, b) = (servers[0].addr, servers[1].addr);

    // KA through server B lives in environment A, as through server A.
    let x = create(b, KA, "x");
    let env_a = x["_environmentId"].clone();
    assert_eq!(create(a, KA, "a-only")["_environmentId"], env_a);
    let b_only = create(a, KB, "b-only");
    assert_ne!(
        b_only["_environmentId"], env_a,
        "KB writes into environment A"
    );
    assert_eq!(
        create(b, KB, "b-two")["_environmentId"],
        b_only["_environmentId"]
    );

    // One idempotency key in both environments: two writes, no replay
    // and no 422 across them.
    let online = Some("{\"isOnline\":true}");
    let key = [("idempotency-key", "shared-key")];
    let xa = call(
        b,
        KA,
        "PATCH",
        "/v1/subscribers/x/online-status",
        &key,
        online,
    );
    assert_eq!(xa.status, 200, "{}", text(&xa));
    assert_eq!(version(&xa.data()), 1);
    let bb = call(
        a,
        KB,
        "PATCH",
        "/v1/subscribers/b-only/online-status",
        &key,
        online,
    );
    assert_eq!(bb.status, 200, "{}", text(&bb));
    assert!(!replayed(&bb), "KB replayed environment A's record");
    assert_eq!(bb.data()["subscriberId"], "b-only");

    // KB sees nothing of environment A, on either server.
    for addr in [a, b] {
        for path in [
            "/v1/subscribers/x",
            "/v2/subscribers/x",
            "/v1/subscribers/a-only",
        ] {
            call(addr, KB, "GET", path, &[], None).error(404, "Subscriber not found");
        }
        call(
            addr,
            KB,
            "PATCH",
            "/v1/subscribers/x/online-status",
            &[],
            Some("{\"isOnline\":false}"),
        )
        .error(404, "Subscriber not found");
        call(addr, KB, "DELETE", "/v1/subscribers/x", &[], None).error(404, "Subscriber not found");

        let events = feed(addr, KB);
        let ids: Vec<&Value> = events.iter().map(|e| &e["subscriberId"]).collect();
        assert_eq!(ids, ["b-only"], "KB's feed");
        let page = call(addr, KB, "GET", "/v1/presence/online", &[], None).data();
        let ids: Vec<&Value> = page["subscribers"]
            .as_array()
            .expect("subscribers")
            .iter()
            .map(|s| &s["subscriberId"])
            .collect();
        assert_eq!(ids, ["b-only"], "KB's online list");
        let within = call(
            addr,
            KB,
            "GET",
            "/v1/presence/online?within=3600",
            &[],
            None,
        )
        .data();
        assert_eq!(within["subscribers"].as_array().map(Vec::len), Some(1));
        assert_eq!(stats(addr, KB), (1, 2), "KB's stats");

        let events = feed(addr, KA);
        let ids: Vec<&Value> = events.iter().map(|e| &e["subscriberId"]).collect();
        assert_eq!(ids, ["x"], "KA's feed");
        assert_eq!(stats(addr, KA), (1, 2), "KA's stats");
    }

    // A subscriber `x` of environment B is a document of its own.
    let xb = create(a, KB, "x");
    assert_eq!(version(&xb), 0);
    assert_ne!(xb["_id"], x["_id"]);
    let xa = call(b, KA, "GET", "/v1/subscribers/x", &[], None).data();
    assert_eq!(
        (version(&xa), xa["isOnline"].clone()),
        (1, Value::Bool(true))
    );
    assert_eq!(xa["_id"], x["_id"]);
}

/// `subscriberd ARGS...` run to its end (killed after 15 s): exit success,
/// stdout, stderr.
fn run(args: &[&str]) -> (bool, String, String) {
    let mut child = common::binary()
        .args(args)
        .env_remove("SUBSCRIBERD_DATABASE_URL")
        .env_remove("SUBSCRIBERD_API_KEY")
        .env("SUBSCRIBERD_API_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn subscriberd");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out).expect("stdout");
    }
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).expect("stderr");
    }
    let status =
        status.unwrap_or_else(|| panic!("subscriberd {args:?} still ran after 15 s: {err}"));
    (status.success(), out, err)
}

/// Runs `subscriberd serve` (or `migrate`) on `url`, which must fail with
/// one last line `subscriberd: ...` containing `expected`.
fn refused(command: &[&str], url: &str, expected: &str) {
    let data = tempfile::tempdir().expect("data dir");
    let data = data.path().to_str().expect("utf-8 path");
    let mut args = command.to_vec();
    if command[0] == "serve" {
        args.extend([
            "--listen",
            "127.0.0.1:0",
            "--data",
            data,
            "--backend",
            "postgres",
        ]);
    }
    args.extend(["--database-url", url]);
    let (success, _, stderr) = run(&args);
    assert!(!success, "{args:?} succeeded; stderr: {stderr}");
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    assert!(
        last.is_some_and(|l| l.starts_with("subscriberd: ") && l.contains(expected)),
        "{args:?}: the last line of stderr is not `subscriberd: ...{expected}...`:\n{stderr}"
    );
}

#[test]
fn start_errors_are_one_clear_line() {
    let Some(pg) = PgCluster::start() else { return };

    // Nobody listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    refused(&["serve"], &nowhere, "cannot reach the database");
    refused(&["migrate"], &nowhere, "cannot reach the database");

    // A schema newer than this build: refused, and left as it was.
    let newer = pg.create_database("t_newer");
    pg.sql(
        "t_newer",
        "CREATE TABLE subscriberd_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO subscriberd_schema VALUES (99)",
    );
    refused(&["serve"], &newer, "newer than this subscriberd");
    refused(
        &["serve", "--migrate", "off"],
        &newer,
        "newer than this subscriberd",
    );
    refused(&["migrate"], &newer, "newer than this subscriberd");
    assert_eq!(
        pg.sql(
            "t_newer",
            "SELECT string_agg(version::text, ',') || ' ' || (to_regclass('subscribers') IS NULL) FROM subscriberd_schema"
        ),
        "99 true",
        "a newer database was written"
    );

    // --migrate off on an empty database, then `subscriberd migrate`.
    let empty = pg.create_database("t_migrate");
    refused(
        &["serve", "--migrate", "off"],
        &empty,
        "run `subscriberd migrate`",
    );
    assert_eq!(
        pg.sql(
            "t_migrate",
            "SELECT to_regclass('subscriberd_schema') IS NULL"
        ),
        "t",
        "--migrate off created the schema table"
    );
    let (success, out, err) = run(&["migrate", "--database-url", &empty]);
    assert!(success, "migrate: {err}");
    assert!(
        out.contains("Applied migrations [1, 2]"),
        "first migrate: {out}"
    );
    let (success, out, err) = run(&["migrate", "--database-url", &empty]);
    assert!(success, "migrate again: {err}");
    assert!(out.contains("up to date"), "second migrate: {out}");
    let server = serve(&empty, KEY, None, &["--migrate", "off"]);
    assert_eq!(version(&create(server.addr, KEY, "after-migrate")), 0);
    assert_eq!(
        pg.sql("t_migrate", "SELECT count(*) FROM subscriberd_schema"),
        "2"
    );
}

#[test]
fn leases_expire_once_across_servers() {
    const SUBSCRIBERS: usize = 50;
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("t_leases");
    let servers = serve_two(&url, [(KEY, None), (KEY, None)], &[]);
    let addrs = [servers[0].addr, servers[1].addr];

    // Each subscriber created on one server, set online with a 1 s lease
    // on the other; the answer's heartbeat time and deadline kept.
    let mut leases = BTreeMap::new();
    for i in 0..SUBSCRIBERS {
        let id = format!("lease-{i:02}");
        assert_eq!(version(&create(addrs[i % 2], KEY, &id)), 0);
        let reply = call(
            addrs[(i + 1) % 2],
            KEY,
            "PATCH",
            &format!("/v1/subscribers/{id}/online-status"),
            &[("idempotency-key", &format!("online-{id}"))],
            Some("{\"isOnline\":true,\"ttlSeconds\":1}"),
        );
        assert_eq!(reply.status, 200, "{id}: {}", text(&reply));
        let doc = reply.data();
        assert_eq!(version(&doc), 1);
        let deadline = doc["onlineExpiresAt"].clone();
        assert!(deadline.is_string(), "no lease: {doc}");
        leases.insert(id, (doc["updatedAt"].clone(), deadline));
    }

    // Until every expiry is written (no lease left in the table), both
    // processes' expirers racing for the same leases.
    let pending = "SELECT count(*) FROM subscribers WHERE lease_deadline IS NOT NULL";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let online = stats(addrs[0], KEY).0;
        let left = pg.sql("t_leases", pending);
        if online == 0 && left == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "15 s on: {online} online, {left} leases not written as expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stats(addrs[1], KEY), (0, SUBSCRIBERS as u64));

    let events = feed(addrs[1], KEY);
    let mut per_subscriber: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for event in &events {
        let id = event["subscriberId"].as_str().expect("subscriberId");
        per_subscriber.entry(id.to_owned()).or_default().push(event);
    }
    assert_eq!(
        per_subscriber.keys().collect::<BTreeSet<_>>(),
        leases.keys().collect::<BTreeSet<_>>()
    );
    for (id, (heartbeat, lease_end)) in &leases {
        let mine = &per_subscriber[id];
        let causes: Vec<&Value> = mine.iter().map(|e| &e["cause"]).collect();
        assert_eq!(causes, ["write", "expired"], "{id}: {mine:?}");
        let expired = mine[1];
        assert_eq!(version(expired), 2, "{id}: {expired}");
        assert_eq!(expired["isOnline"], false, "{id}");
        assert_eq!(
            &expired["at"], lease_end,
            "{id}: the expiry is at the deadline"
        );
        assert_eq!(
            &expired["lastOnlineAt"], heartbeat,
            "{id}: lastOnlineAt is the last heartbeat"
        );
        for addr in addrs {
            let doc = call(
                addr,
                KEY,
                "GET",
                &format!("/v1/subscribers/{id}"),
                &[],
                None,
            )
            .data();
            assert_eq!(version(&doc), 2, "{id}: {doc}");
            assert_eq!(doc["isOnline"], false, "{id}");
            assert!(doc.get("onlineExpiresAt").is_none(), "{id}: {doc}");
            assert_eq!(&doc["updatedAt"], lease_end, "{id}");
        }
    }
    assert_eq!(events.len(), 2 * SUBSCRIBERS);
    assert_eq!(
        pg.sql(
            "t_leases",
            "SELECT count(*) FROM subscribers WHERE version = 2"
        ),
        SUBSCRIBERS.to_string(),
        "stored versions"
    );
}

/// Retention on the postgres backend: events older than
/// `--event-retention-secs` are purged by the housekeeping (every 5 s), a
/// cursor before them (also `after=0`) is then 410, and the reader that
/// kept up reads on.
#[test]
fn old_events_are_purged_and_older_cursors_are_410() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("t_retention");
    let server = serve(&url, KEY, None, &["--event-retention-secs", "1"]);
    create(server.addr, KEY, "r");
    for online in [true, false, true] {
        let reply = call(
            server.addr,
            KEY,
            "PATCH",
            "/v1/subscribers/r/online-status",
            &[],
            Some(&format!("{{\"isOnline\":{online}}}")),
        );
        assert_eq!(reply.status, 200, "{}", text(&reply));
    }
    let events = feed(server.addr, KEY);
    assert_eq!(events.len(), 3);
    let last = events[2]["seq"].as_str().expect("seq").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = call(
            server.addr,
            KEY,
            "GET",
            "/v1/presence/events?after=0",
            &[],
            None,
        );
        if reply.status == 410 {
            let error = reply.json();
            assert_eq!(error["statusCode"], 410, "{error}");
            break;
        }
        assert_eq!(reply.status, 200, "{}", text(&reply));
        assert!(Instant::now() < deadline, "20 s on, nothing was purged");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pg.sql("t_retention", "SELECT count(*) FROM events"), "0");
    // Without after: an empty page whose next is the last purged seq.
    let reply = call(server.addr, KEY, "GET", "/v1/presence/events", &[], None);
    assert_eq!(reply.status, 200, "{}", text(&reply));
    assert_eq!(
        reply.data(),
        serde_json::json!({"events": [], "next": last}),
        "next is the retention floor"
    );
    // The reader that read everything (or passes that next back) reads on,
    // and sees the next change; so do streams from there and from now.
    let path = format!("/v1/presence/events?after={last}");
    let reply = call(server.addr, KEY, "GET", &path, &[], None);
    assert_eq!(reply.status, 200, "{}", text(&reply));
    assert_eq!(reply.data()["events"], serde_json::json!([]));
    let auth = format!("ApiKey {KEY}");
    let sse = [
        ("Authorization", auth.as_str()),
        ("Accept", "text/event-stream"),
    ];
    let open = |path: &str| {
        EventStream::open(server.addr, path, &sse)
            .unwrap_or_else(|reply| panic!("{path}: no stream: {} {}", reply.status, text(&reply)))
    };
    let mut streams = [open(&path), open("/v1/presence/events")];
    let reply = call(
        server.addr,
        KEY,
        "PATCH",
        "/v1/subscribers/r/online-status",
        &[],
        Some("{\"isOnline\":false}"),
    );
    assert_eq!(reply.status, 200, "{}", text(&reply));
    let reply = call(server.addr, KEY, "GET", &path, &[], None);
    assert_eq!(reply.status, 200, "{}", text(&reply));
    let next = reply.data()["events"].clone();
    assert_eq!(next.as_array().map(Vec::len), Some(1), "{next}");
    assert_eq!(next[0]["isOnline"], false);
    for stream in &mut streams {
        match stream.next_event(Duration::from_secs(10)) {
            Next::Item(SseItem::Event { id, data, .. }) => {
                assert_eq!(Some(id.as_str()), next[0]["seq"].as_str());
                let event: Value = serde_json::from_str(&data).expect("data is JSON");
                assert_eq!(event, next[0]);
            }
            other => panic!("expected the new event, got {other:?}"),
        }
    }
}
