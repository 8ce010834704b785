//! The store's behaviour through the [`Backend`] seam, run on both
//! backends: the embedded sled store and PostgreSQL (a cluster of its own
//! per test, `testkit::pg`). Versions, idempotency, presence events,
//! leases (a manual clock), the online query and counts, tenancy, and a
//! model test of the feed under concurrent writers and resuming readers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use subscriber_postgres::{Options, PgBackend};
use subscriber_store::{
    Backend, Clock, Command, Config, Entity, Environment, Error, EventCause, Executed, Idempotency,
    IdempotencyKey, ManualClock, ObjectId, OnlineQuery, Precondition, PresenceEvent, ServerKey,
    Store, SubscriberInput, Tenant, Timestamp, Version,
};
use testkit::pg::PgCluster;

/// A backend under test with two environments, and what keeps it alive.
struct Subject {
    name: &'static str,
    backend: Arc<dyn Backend>,
    a: Tenant,
    b: Tenant,
    clock: Arc<ManualClock>,
    _cluster: Option<PgCluster>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Both backends (PostgreSQL only where it is installed), each with
/// `ttl` as the default lease and a manual clock.
async fn subjects(ttl: u32) -> Vec<Subject> {
    subjects_keeping(ttl, DEFAULT_RETENTION).await
}

/// Both backends' default event retention.
const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// As [`subjects`], keeping events for `retention` (each backend's own
/// housekeeping purges them).
async fn subjects_keeping(ttl: u32, retention: Duration) -> Vec<Subject> {
    let mut subjects = Vec::new();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let store = Store::open(
        Config::temporary()
            .clock(clock.clone())
            .presence_ttl_secs(ttl)
            .event_retention(retention),
    )
    .expect("open sled");
    let org = store.create_organization("Acme").expect("org");
    let a = store.create_environment(org.id, "A").expect("A").tenant();
    let b = store.create_environment(org.id, "B").expect("B").tenant();
    subjects.push(Subject {
        name: "sled",
        backend: Arc::new(store),
        a,
        b,
        clock,
        _cluster: None,
    });
    if let Some(cluster) = PgCluster::start() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let mut options = Options::new(cluster.url());
        options.clock = clock.clone();
        options.presence_ttl_secs = ttl;
        options.event_retention = retention;
        options.pool_size = 8;
        let pg = PgBackend::start(options).await.expect("start postgres");
        let org = pg.create_organization("Acme").await.expect("org");
        let a = pg
            .create_environment(org.id, "A")
            .await
            .expect("A")
            .tenant();
        let b = pg
            .create_environment(org.id, "B")
            .await
            .expect("B")
            .tenant();
        subjects.push(Subject {
            name: "postgres",
            backend: Arc::new(pg),
            a,
            b,
            clock,
            _cluster: Some(cluster),
        });
    }
    subjects
}

async fn run(s: &Subject, tenant: &Tenant, command: Command) -> subscriber_store::Result<Executed> {
    s.backend.submit(tenant, command, None, None).await
}

fn online(id: &str, online: bool) -> Command {
    Command::SetOnline {
        subscriber_id: id.into(),
        online,
    }
}

fn create(id: &str) -> Command {
    Command::Upsert {
        input: SubscriberInput::new(id),
        fail_if_exists: false,
    }
}

async fn all_events(s: &Subject, tenant: &Tenant) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = s.backend.events(tenant, after, 7).await.expect("events");
        if page.events.is_empty() {
            return events;
        }
        after = Some(page.next);
        events.extend(page.events);
    }
}

#[test]
fn versions_preconditions_and_presence_events() {
    runtime().block_on(async {
        for s in subjects(0).await {
            let n = s.name;
            let doc = run(&s, &s.a, create("u"))
                .await
                .expect("create")
                .outcome
                .expect("doc");
            assert_eq!(doc.version, Version(0), "{n}");
            for (i, state) in [true, true, false, false, true].into_iter().enumerate() {
                let doc = run(&s, &s.a, online("u", state))
                    .await
                    .expect("write")
                    .outcome
                    .expect("doc");
                assert_eq!(doc.version, Version(i as u64 + 1), "{n}");
                assert_eq!(doc.is_online, Some(state), "{n}");
            }
            // A stale precondition changes nothing.
            let stale = s
                .backend
                .submit(
                    &s.a,
                    online("u", false),
                    Some(Precondition::Version(Version(2))),
                    None,
                )
                .await;
            assert!(
                matches!(stale, Err(Error::VersionConflict { .. })),
                "{n}: {stale:?}"
            );
            assert_eq!(
                s.backend.get(&s.a, "u").await.expect("get").version,
                Version(5),
                "{n}"
            );
            // Flips and the first set emit; repeats do not; deleting an
            // online subscriber does.
            run(
                &s,
                &s.a,
                Command::Delete {
                    subscriber_id: "u".into(),
                },
            )
            .await
            .expect("delete");
            let got: Vec<(bool, u64, EventCause)> = all_events(&s, &s.a)
                .await
                .iter()
                .map(|e| (e.is_online, e.version.0, e.cause))
                .collect();
            assert_eq!(
                got,
                vec![
                    (true, 1, EventCause::Write),
                    (false, 3, EventCause::Write),
                    (true, 5, EventCause::Write),
                    (false, 5, EventCause::Deleted),
                ],
                "{n}"
            );
            assert!(
                matches!(s.backend.get(&s.a, "u").await, Err(Error::NotFound(_))),
                "{n}"
            );
            let missing = run(&s, &s.a, online("u", true)).await;
            assert!(matches!(missing, Err(Error::NotFound(_))), "{n}");
        }
    });
}

#[test]
fn an_idempotency_key_executes_once_and_refuses_another_request() {
    runtime().block_on(async {
        for s in subjects(0).await {
            let n = s.name;
            run(&s, &s.a, create("u")).await.expect("create");
            let key = Idempotency::new(IdempotencyKey::new("k-1").expect("key"));
            let first = s
                .backend
                .submit(&s.a, online("u", true), None, Some(&key))
                .await
                .expect("first");
            let again = s
                .backend
                .submit(&s.a, online("u", true), None, Some(&key))
                .await
                .expect("again");
            assert!(!first.replayed && again.replayed, "{n}");
            assert_eq!(first.outcome, again.outcome, "{n}");
            assert_eq!(
                s.backend.get(&s.a, "u").await.expect("get").version,
                Version(1),
                "{n}"
            );
            let other = s
                .backend
                .submit(&s.a, online("u", false), None, Some(&key))
                .await;
            assert!(
                matches!(other, Err(Error::IdempotencyKeyReused)),
                "{n}: {other:?}"
            );
            // An outcome the write executed to is recorded and replayed.
            let key = Idempotency::new(IdempotencyKey::new("k-2").expect("key"));
            let gone = s
                .backend
                .submit(&s.a, online("nobody", true), None, Some(&key))
                .await
                .expect("404 recorded");
            assert!(matches!(gone.outcome, Err(Error::NotFound(_))), "{n}");
            run(&s, &s.a, create("nobody")).await.expect("create");
            let replay = s
                .backend
                .submit(&s.a, online("nobody", true), None, Some(&key))
                .await
                .expect("replay");
            assert!(
                replay.replayed && matches!(replay.outcome, Err(Error::NotFound(_))),
                "{n}"
            );
            // Keys are per environment.
            run(&s, &s.b, create("u")).await.expect("create in B");
            let key = Idempotency::new(IdempotencyKey::new("k-1").expect("key"));
            let in_b = s
                .backend
                .submit(&s.b, online("u", true), None, Some(&key))
                .await
                .expect("B");
            assert!(!in_b.replayed, "{n}");
        }
    });
}

#[test]
fn leases_expire_once_and_fold_into_later_writes() {
    runtime().block_on(async {
        for s in subjects(30).await {
            let n = s.name;
            for id in ["x", "y"] {
                run(&s, &s.a, create(id)).await.expect("create");
                run(&s, &s.a, online(id, true)).await.expect("online");
            }
            let doc = s.backend.get(&s.a, "x").await.expect("get");
            assert!(doc.online_expires_at().is_some(), "{n}: a lease runs");
            s.clock.advance(Duration::from_secs(31));
            // Every read shows the expiry at once, written or not.
            let read = s.backend.get(&s.a, "x").await.expect("get");
            assert_eq!(
                (read.is_online, read.version),
                (Some(false), Version(2)),
                "{n}"
            );
            // A write after the deadline applies on top of the expiry.
            let doc = run(&s, &s.a, online("x", true))
                .await
                .expect("write")
                .outcome
                .expect("doc");
            assert_eq!(doc.version, Version(3), "{n}");
            // The expirer takes y offline once.
            let mut expired = false;
            for _ in 0..200 {
                let causes: Vec<_> = all_events(&s, &s.a)
                    .await
                    .iter()
                    .filter(|e| e.subscriber_id == "y")
                    .map(|e| e.cause)
                    .collect();
                if causes.contains(&EventCause::Expired) {
                    expired = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(expired, "{n}: y's lease was never expired");
            let events = all_events(&s, &s.a).await;
            let of = |id: &str| -> Vec<(bool, u64, EventCause)> {
                events
                    .iter()
                    .filter(|e| e.subscriber_id == id)
                    .map(|e| (e.is_online, e.version.0, e.cause))
                    .collect()
            };
            assert_eq!(
                of("x"),
                vec![
                    (true, 1, EventCause::Write),
                    (false, 2, EventCause::Expired),
                    (true, 3, EventCause::Write)
                ],
                "{n}"
            );
            assert_eq!(
                of("y"),
                vec![
                    (true, 1, EventCause::Write),
                    (false, 2, EventCause::Expired)
                ],
                "{n}"
            );
            assert_eq!(
                s.backend.get(&s.a, "y").await.expect("y").version,
                Version(2),
                "{n}"
            );
            let stats = s.backend.presence_stats(&s.a).await.expect("stats");
            assert_eq!((stats.online, stats.subscribers), (1, 2), "{n}");
        }
    });
}

#[test]
fn a_wall_clock_stepped_back_does_not_stretch_a_lease() {
    runtime().block_on(async {
        for s in subjects(3).await {
            let n = s.name;
            run(&s, &s.a, create("x")).await.expect("create");
            let beat = run(&s, &s.a, online("x", true))
                .await
                .expect("online")
                .outcome
                .expect("doc");
            let heard = s.clock.now();
            // The wall clock steps back an hour; 2 s pass: still online.
            s.clock.set(heard.saturating_sub(Duration::from_secs(3600)));
            s.clock.advance(Duration::from_secs(2));
            let read = s.backend.get(&s.a, "x").await.expect("get");
            assert_eq!(read.is_online, Some(true), "{n}");
            // The TTL after the heartbeat by the monotonic clock: offline
            // in reads at once, and the expirer writes it once.
            s.clock.advance(Duration::from_millis(1_500));
            let read = s.backend.get(&s.a, "x").await.expect("get");
            assert_eq!(
                (read.is_online, read.version, read.last_online_at),
                (Some(false), Version(2), Some(beat.updated_at)),
                "{n}: {read:?}"
            );
            let mut causes = Vec::new();
            for _ in 0..200 {
                causes = all_events(&s, &s.a)
                    .await
                    .iter()
                    .map(|e| (e.is_online, e.version.0, e.cause))
                    .collect();
                if causes.len() >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                causes,
                vec![
                    (true, 1, EventCause::Write),
                    (false, 2, EventCause::Expired)
                ],
                "{n}: the expiry written once"
            );
            // A heartbeat after the step: its deadline is its clock's
            // reading + TTL, not the document's later updatedAt + TTL.
            run(&s, &s.a, create("y")).await.expect("create");
            let now = s.clock.now();
            let y = run(&s, &s.a, online("y", true))
                .await
                .expect("online")
                .outcome
                .expect("doc");
            assert_eq!(
                y.online_expires_at(),
                Some(now.saturating_add(Duration::from_secs(3))),
                "{n}"
            );
        }
    });
}

#[test]
fn the_online_query_pages_and_windows_and_environments_are_apart() {
    runtime().block_on(async {
        for s in subjects(0).await {
            let n = s.name;
            for i in 0..7 {
                let id = format!("s{i}");
                run(&s, &s.a, create(&id)).await.expect("create");
                run(&s, &s.a, online(&id, true)).await.expect("online");
            }
            run(&s, &s.a, online("s3", false)).await.expect("offline");
            run(&s, &s.a, create("never")).await.expect("create");
            run(&s, &s.b, create("other")).await.expect("create B");
            run(&s, &s.b, online("other", true))
                .await
                .expect("online B");
            let mut seen = Vec::new();
            let mut query = OnlineQuery {
                limit: 2,
                ..Default::default()
            };
            loop {
                let page = s.backend.online(&s.a, &query).await.expect("online");
                seen.extend(page.subscribers.iter().map(|d| d.subscriber_id.clone()));
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, ["s0", "s1", "s2", "s4", "s5", "s6"], "{n}");
            s.clock.advance(Duration::from_secs(60));
            let window = OnlineQuery {
                within_seconds: Some(120),
                limit: 100,
                ..Default::default()
            };
            let page = s.backend.online(&s.a, &window).await.expect("within");
            assert_eq!(
                page.subscribers.len(),
                7,
                "{n}: s3 went offline a minute ago"
            );
            let narrow = OnlineQuery {
                within_seconds: Some(30),
                limit: 100,
                ..Default::default()
            };
            assert_eq!(
                s.backend
                    .online(&s.a, &narrow)
                    .await
                    .expect("within")
                    .subscribers
                    .len(),
                6,
                "{n}"
            );
            let stats = s.backend.presence_stats(&s.a).await.expect("stats");
            assert_eq!((stats.online, stats.subscribers), (6, 8), "{n}");
            let b = s.backend.presence_stats(&s.b).await.expect("stats B");
            assert_eq!((b.online, b.subscribers), (1, 1), "{n}");
            assert!(
                all_events(&s, &s.b)
                    .await
                    .iter()
                    .all(|e| e.subscriber_id == "other"),
                "{n}"
            );
            assert!(
                matches!(s.backend.get(&s.b, "s0").await, Err(Error::NotFound(_))),
                "{n}"
            );
            let bad = OnlineQuery {
                limit: 0,
                ..Default::default()
            };
            assert!(
                matches!(
                    s.backend.online(&s.a, &bad).await,
                    Err(Error::InvalidInput { .. })
                ),
                "{n}"
            );
        }
    });
}

/// After the housekeeping purged every event, the page without a cursor is
/// empty with `next` the last purged seq; passing it back is no
/// `CursorExpired` (nor is waiting there, as a stream does), a cursor below
/// it is, and the page after it holds exactly the next change.
#[test]
fn after_a_full_purge_next_is_the_floor_and_a_reader_reads_on() {
    runtime().block_on(async {
        for s in subjects_keeping(0, Duration::from_secs(60)).await {
            let n = s.name;
            for id in ["p1", "p2"] {
                run(&s, &s.a, create(id)).await.expect("create");
                run(&s, &s.a, online(id, true)).await.expect("write");
            }
            let written = all_events(&s, &s.a).await;
            assert_eq!(written.len(), 2, "{n}");
            let floor = written[1].seq;
            s.clock.advance(Duration::from_secs(61));
            // The backend's own housekeeping purges (PostgreSQL's every 5 s).
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                match s.backend.events(&s.a, Some(0), 10).await {
                    Err(Error::CursorExpired { purged_through, .. }) if purged_through == floor => {
                        break;
                    }
                    Err(Error::CursorExpired { .. }) | Ok(_) => {}
                    Err(e) => panic!("{n}: {e:?}"),
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{n}: 20 s on, the events were not purged"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }

            let page = s.backend.events(&s.a, None, 10).await.expect("page");
            assert!(page.events.is_empty(), "{n}: {page:?}");
            assert_eq!(page.next, floor, "{n}: next is the last purged seq");
            let page = s
                .backend
                .events(&s.a, Some(page.next), 10)
                .await
                .expect("after=next is no CursorExpired");
            assert!(page.events.is_empty(), "{n}: {page:?}");
            assert_eq!(page.next, floor, "{n}");
            for below in [0, floor - 1] {
                let err = s
                    .backend
                    .events(&s.a, Some(below), 10)
                    .await
                    .expect_err("below the floor");
                assert!(
                    matches!(err, Error::CursorExpired { after, purged_through } if after == below && purged_through == floor),
                    "{n}: {err:?}"
                );
            }
            // A stream from now starts at the floor and waits there.
            assert_eq!(s.backend.last_event(&s.a).await.expect("last"), floor, "{n}");
            let notice = s.backend.event_after(&s.a, floor).expect("notice");
            let notice = tokio::spawn(notice);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!notice.is_finished(), "{n}: no event after the floor yet");

            run(&s, &s.a, online("p1", false)).await.expect("write");
            tokio::time::timeout(Duration::from_secs(10), notice)
                .await
                .expect("the notice resolves")
                .expect("notice task");
            let page = s.backend.events(&s.a, Some(floor), 10).await.expect("page");
            assert_eq!(page.events.len(), 1, "{n}: exactly the new event: {page:?}");
            let event = &page.events[0];
            assert!(event.seq > floor, "{n}: {event:?}");
            assert_eq!(
                (event.subscriber_id.as_str(), event.is_online, event.version),
                ("p1", false, Version(2)),
                "{n}"
            );
            assert_eq!(page.next, event.seq, "{n}");
            assert_eq!(all_events(&s, &s.a).await, page.events, "{n}");
        }
    });
}

/// Many writers on few subscribers, readers resuming from random cursors
/// while they write: every reader reads the same gap-free feed in `seq`
/// order, each subscriber's events follow its versions, and the final
/// online set equals the online query and the counts.
#[test]
fn readers_see_exactly_the_committed_changes_in_order() {
    runtime().block_on(async {
        for s in subjects(0).await {
            let n = s.name;
            let s = Arc::new(s);
            const SUBSCRIBERS: usize = 6;
            for i in 0..SUBSCRIBERS {
                run(&s, &s.a, create(&format!("m{i}")))
                    .await
                    .expect("create");
            }
            let mut writers = Vec::new();
            for w in 0..8u64 {
                let s = Arc::clone(&s);
                writers.push(tokio::spawn(async move {
                    let mut state = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    for _ in 0..40 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let id = format!("m{}", (state >> 32) as usize % SUBSCRIBERS);
                        let command = match (state >> 8) % 10 {
                            0 => Command::Delete { subscriber_id: id },
                            1 => create(&id),
                            r => online(&id, r % 2 == 0),
                        };
                        match run(&s, &s.a, command).await {
                            Ok(_) | Err(Error::NotFound(_)) => {}
                            Err(e) => panic!("write failed: {e}"),
                        }
                    }
                }));
            }
            let mut readers = Vec::new();
            for r in 0..3u64 {
                let s = Arc::clone(&s);
                readers.push(tokio::spawn(async move {
                    let mut seen: Vec<u64> = Vec::new();
                    let mut cursor = 0;
                    for round in 0..60u64 {
                        let page = s.backend.events(&s.a, Some(cursor), 5).await.expect("page");
                        for e in &page.events {
                            assert!(e.seq > cursor, "seq {} after cursor {cursor}", e.seq);
                            seen.push(e.seq);
                            cursor = e.seq;
                        }
                        // Now and then resume from an earlier cursor seen.
                        if (round + r) % 7 == 0 && !seen.is_empty() {
                            let back = seen[(round as usize * 31) % seen.len()];
                            seen.retain(|seq| *seq <= back);
                            cursor = back;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seen
                }));
            }
            for w in writers {
                w.await.expect("writer");
            }
            let feed = all_events(&s, &s.a).await;
            let seqs: Vec<u64> = feed.iter().map(|e| e.seq).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{n}: seq order");
            for r in readers {
                let seen = r.await.expect("reader");
                // What a reader saw is a prefix of the final feed.
                assert_eq!(
                    seen.as_slice(),
                    &seqs[..seen.len()],
                    "{n}: a reader saw a gap or a repeat"
                );
            }
            // Per subscriber, the last event agrees with its document's
            // presence (a flip and a first set always append one).
            let mut last: BTreeMap<&str, &PresenceEvent> = BTreeMap::new();
            for e in &feed {
                last.insert(&e.subscriber_id, e);
            }
            let mut online_now = BTreeSet::new();
            let mut existing = 0;
            for i in 0..SUBSCRIBERS {
                let id = format!("m{i}");
                match s.backend.get(&s.a, &id).await {
                    Ok(doc) => {
                        existing += 1;
                        if doc.is_online == Some(true) {
                            online_now.insert(id.clone());
                        }
                        if let Some(event) = last
                            .get(id.as_str())
                            .filter(|e| e.cause != EventCause::Deleted)
                        {
                            if doc.is_online.is_some() {
                                assert_eq!(Some(event.is_online), doc.is_online, "{n}: {id}");
                            }
                        }
                    }
                    Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let listed: BTreeSet<String> = s
                .backend
                .online(
                    &s.a,
                    &OnlineQuery {
                        limit: 1000,
                        ..Default::default()
                    },
                )
                .await
                .expect("online")
                .subscribers
                .into_iter()
                .map(|d| d.subscriber_id)
                .collect();
            assert_eq!(listed, online_now, "{n}");
            let stats = s.backend.presence_stats(&s.a).await.expect("stats");
            assert_eq!(
                (stats.online as usize, stats.subscribers as usize),
                (online_now.len(), existing),
                "{n}"
            );
            assert!(
                feed.len() > 20,
                "{n}: the workload made {} events",
                feed.len()
            );
        }
    });
}

/// A backend for the Inbox checks (SPEC 13): a server key, two
/// environments and a key of the first.
struct InboxSubject {
    name: &'static str,
    backend: Arc<dyn Backend>,
    env: Environment,
    other: Environment,
    secret: String,
    _cluster: Option<PgCluster>,
}

fn server_key() -> ServerKey {
    ServerKey::from_bytes([5; 32])
}

/// What a customer's backend computes: HMAC-SHA256(key, subscriberId).
fn subscriber_hash(secret: &str, subscriber_id: &str) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(subscriber_id.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

async fn inbox_subjects() -> Vec<InboxSubject> {
    let mut subjects = Vec::new();
    let store = Store::open(Config::temporary().server_key(server_key())).expect("open sled");
    let org = store.create_organization("Acme").expect("org");
    let env = store
        .create_environment(org.id, "Development")
        .expect("env");
    let other = store
        .create_environment(org.id, "Production")
        .expect("other");
    let secret = store.issue_key(env.id).expect("key").secret;
    subjects.push(InboxSubject {
        name: "sled",
        backend: Arc::new(store),
        env,
        other,
        secret,
        _cluster: None,
    });
    if let Some(cluster) = PgCluster::start() {
        let mut options = Options::new(cluster.url());
        options.pool_size = 4;
        options.server_key = Some(server_key());
        let pg = PgBackend::start(options).await.expect("start postgres");
        let org = pg.create_organization("Acme").await.expect("org");
        let (env, created) = pg.ensure_environment("Development").await.expect("env");
        assert!(created);
        let other = pg
            .create_environment(org.id, "Production")
            .await
            .expect("other");
        let secret = pg.issue_key(&env).await.expect("key").secret;
        subjects.push(InboxSubject {
            name: "postgres",
            backend: Arc::new(pg),
            env,
            other,
            secret,
            _cluster: Some(cluster),
        });
    }
    subjects
}

#[test]
fn environments_are_found_by_identifier_and_hashes_checked_against_their_keys() {
    runtime().block_on(async {
        for s in inbox_subjects().await {
            let n = s.name;
            let b = &s.backend;
            assert_eq!(s.env.identifier.len(), 12, "{n}");
            assert_ne!(s.env.identifier, s.other.identifier, "{n}");
            assert_eq!(
                b.environment(&s.env.tenant()).await.expect("me"),
                s.env,
                "{n}"
            );
            for env in [&s.env, &s.other] {
                let found = b
                    .environment_by_identifier(&env.identifier)
                    .await
                    .expect("found");
                assert_eq!(found, *env, "{n}");
            }
            for unknown in ["", "not-an-app-id", "x/y", &"a".repeat(300)] {
                assert_eq!(
                    b.environment_by_identifier(unknown).await,
                    Err(Error::NotFound(Entity::Environment)),
                    "{n} {unknown:?}"
                );
            }
            let hash = subscriber_hash(&s.secret, "user-1");
            let matches = |env: ObjectId, id: &'static str, hash: Vec<u8>| {
                let b = Arc::clone(b);
                async move {
                    b.subscriber_hash_matches(env, id, &hash)
                        .await
                        .expect("check")
                }
            };
            assert!(matches(s.env.id, "user-1", hash.clone()).await, "{n}");
            assert!(!matches(s.env.id, "user-2", hash.clone()).await, "{n}");
            assert!(!matches(s.other.id, "user-1", hash.clone()).await, "{n}");
            let forged = subscriber_hash("not-a-key-of-this-store", "user-1");
            assert!(!matches(s.env.id, "user-1", forged).await, "{n}");
            assert!(
                !matches(s.env.id, "user-1", hash[..31].to_vec()).await,
                "{n}"
            );
        }
    });
}

#[test]
fn keys_made_without_a_server_key_are_sealed_when_they_next_authenticate() {
    runtime().block_on(async {
        // sled: a store without the key, reopened with it.
        let dir = tempfile::tempdir().expect("dir");
        let plain = Store::open(Config::new(dir.path())).expect("open");
        let (env, _) = plain.ensure_environment("Development").expect("env");
        let secret = plain.issue_key(env.id).expect("key").secret;
        drop(plain);
        let keyed: Arc<dyn Backend> = Arc::new(
            Store::open(Config::new(dir.path()).server_key(server_key())).expect("reopen"),
        );
        lazy_upgrade_holds("sled", &keyed, &env, &secret).await;
        // PostgreSQL: a server without the key, then one with it.
        let Some(cluster) = PgCluster::start() else {
            return;
        };
        let plain = PgBackend::start(Options::new(cluster.url()))
            .await
            .expect("start");
        let (env, _) = plain.ensure_environment("Development").await.expect("env");
        let secret = plain.issue_key(&env).await.expect("key").secret;
        plain.shutdown();
        let mut options = Options::new(cluster.url());
        options.server_key = Some(server_key());
        let keyed: Arc<dyn Backend> = Arc::new(PgBackend::start(options).await.expect("start"));
        lazy_upgrade_holds("postgres", &keyed, &env, &secret).await;
        let rows = cluster.sql(
            "postgres",
            "SELECT count(*) FROM api_keys WHERE sealed_secret IS NOT NULL",
        );
        assert_eq!(rows, "1");
    });
}

/// Before the key's first use under a server key, its hashes match
/// nothing; after it, they do.
async fn lazy_upgrade_holds(n: &str, b: &Arc<dyn Backend>, env: &Environment, secret: &str) {
    let hash = subscriber_hash(secret, "user-1");
    let before = b.subscriber_hash_matches(env.id, "user-1", &hash).await;
    assert_eq!(before, Ok(false), "{n}: only a digest was kept");
    let tenant = b.resolve_key(secret).await.expect("authenticates");
    assert_eq!(tenant, env.tenant(), "{n}");
    let after = b.subscriber_hash_matches(env.id, "user-1", &hash).await;
    assert_eq!(after, Ok(true), "{n}: sealed at its use");
}

/// The migration to schema 2 gives environments of schema 1 the
/// identifier the sled store derives for its own older environments.
#[test]
fn the_migration_gives_older_environments_the_identifier_sled_derives() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    runtime().block_on(async {
        let url = cluster.create_database("migration");
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        assert_eq!(
            subscriber_postgres::schema::migrate_to(&mut client, 1)
                .await
                .expect("to 1"),
            vec![1]
        );
        let (org, env) = ([1u8; 12], [2u8; 12]);
        client
            .execute(
                "INSERT INTO organizations (id, name, created_at) VALUES ($1, 'Acme', 0)",
                &[&org.as_slice()],
            )
            .await
            .expect("org");
        client
            .execute(
                "INSERT INTO environments (id, organization_id, name, created_at) VALUES ($1, $2, 'Development', 0)",
                &[&env.as_slice(), &org.as_slice()],
            )
            .await
            .expect("env");
        assert_eq!(
            subscriber_postgres::schema::migrate(&mut client)
                .await
                .expect("to the newest"),
            vec![2]
        );
        let identifier: String = client
            .query_one("SELECT identifier FROM environments", &[])
            .await
            .expect("identifier")
            .get(0);
        let id = subscriber_store::rules::id_from_bytes(env);
        assert_eq!(identifier, subscriber_store::rules::legacy_identifier(id));
        let backend = PgBackend::start(Options::new(url)).await.expect("start");
        let found = backend
            .environment_by_identifier(&identifier)
            .await
            .expect("found");
        assert_eq!(found.id, id);
    });
}

/// SPEC 13: a database dump alone reveals no API key.
#[test]
fn the_database_alone_holds_no_api_key() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    runtime().block_on(async {
        let mut options = Options::new(cluster.url());
        options.server_key = Some(server_key());
        let pg = PgBackend::start(options).await.expect("start");
        let (env, _) = pg.ensure_environment("Development").await.expect("env");
        let issued = pg.issue_key(&env).await.expect("key").secret;
        let given = "operator-chosen-key-0123456789";
        pg.add_key(&env, given).await.expect("add");
        let hash = subscriber_hash(given, "u");
        assert_eq!(pg.subscriber_hash_matches(env.id, "u", &hash).await, Ok(true));
        let dump = cluster.sql(
            "postgres",
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM api_keys UNION ALL SELECT * FROM api_keys) t",
        );
        assert!(dump.contains("\\x"), "the rows were read: {dump}");
        for secret in [issued.as_str(), given] {
            let as_hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(!dump.contains(secret), "a key in the clear");
            assert!(!dump.contains(&as_hex), "a key's bytes in the clear");
        }
    });
}
