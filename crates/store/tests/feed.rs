//! The presence feed and queries (SPEC section 11) through the embedded API:
//! which changes append events and what they say, reading and waiting,
//! retention, the online query and the counts, tenancy, and a model test
//! of the feed under concurrent writers, expiries, deletes and readers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use subscriber_store::{
    Command, Config, Durability, Error, EventCause, Field, ManualClock, OnlineQuery, PresenceEvent,
    Store, SubscriberInput, Tenant, Timestamp,
};

fn store_at(clock: &Arc<ManualClock>) -> (Store, Tenant) {
    open(
        Config::temporary()
            .clock(clock.clone())
            .background_expiry(false),
    )
}

/// A store opened with `config`, its Development environment, and in it a
/// subscriber `a` (its creation appends no event).
fn open_with_a(config: Config) -> (Store, Tenant) {
    let (store, tenant) = open(config);
    store
        .upsert(&tenant, SubscriberInput::new("a"), None)
        .expect("create");
    (store, tenant)
}

fn open(config: Config) -> (Store, Tenant) {
    let store = Store::open(config).expect("open");
    let tenant = store
        .ensure_environment("Development")
        .expect("env")
        .0
        .tenant();
    (store, tenant)
}

fn all_events(store: &Store, tenant: &Tenant) -> Vec<PresenceEvent> {
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store.events(tenant, after, 3).expect("events");
        if page.events.is_empty() {
            return events;
        }
        after = Some(page.next);
        events.extend(page.events);
    }
}

fn summary(events: &[PresenceEvent]) -> Vec<(String, bool, u64, EventCause, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e.subscriber_id.clone(),
                e.is_online,
                e.version.0,
                e.cause,
                e.at.as_millis(),
            )
        })
        .collect()
}

fn ms(t: u64) -> Timestamp {
    Timestamp::from_millis(t)
}

#[test]
fn presence_changes_append_events_and_nothing_else_does() {
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, tenant) = store_at(&clock);
    store
        .upsert(&tenant, SubscriberInput::new("a"), None)
        .expect("create");
    store.set_online(&tenant, "a", true, None).expect("online"); // v1: event
    clock.set(ms(2_000));
    store.heartbeat(&tenant, "a", 10, None).expect("heartbeat"); // v2: stays online
    store
        .set_online(&tenant, "a", false, None)
        .expect("offline"); // v3: event
    store
        .set_online(&tenant, "a", false, None)
        .expect("offline"); // v4: none
    store
        .upsert(&tenant, SubscriberInput::new("a"), None)
        .expect("upsert"); // v5: none
    store
        .upsert(&tenant, SubscriberInput::new("b"), None)
        .expect("create");
    store
        .set_online(&tenant, "b", false, None)
        .expect("first set"); // v1: event
    clock.set(ms(3_000));
    store.heartbeat(&tenant, "b", 5, None).expect("lease"); // v2: event, deadline 8 s
    clock.set(ms(9_000));
    // After the deadline: the expiry (v3, at the deadline) and the write (v4).
    store
        .set_online(&tenant, "b", true, None)
        .expect("online again");
    clock.set(ms(10_000));
    store.delete(&tenant, "b", None).expect("delete"); // online: event, last version
    store.delete(&tenant, "a", None).expect("delete offline"); // none
    assert_eq!(
        summary(&all_events(&store, &tenant)),
        vec![
            ("a".into(), true, 1, EventCause::Write, 1_000),
            ("a".into(), false, 3, EventCause::Write, 2_000),
            ("b".into(), false, 1, EventCause::Write, 2_000),
            ("b".into(), true, 2, EventCause::Write, 3_000),
            ("b".into(), false, 3, EventCause::Expired, 8_000),
            ("b".into(), true, 4, EventCause::Write, 9_000),
            ("b".into(), false, 4, EventCause::Deleted, 10_000),
        ]
    );
    let events = all_events(&store, &tenant);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let deleted = events.last().expect("deleted event");
    assert_eq!(deleted.last_online_at, Some(ms(10_000)));
    let expired = &events[4];
    assert_eq!(
        expired.last_online_at,
        Some(ms(3_000)),
        "the last heartbeat"
    );
}

#[test]
fn the_expiry_thread_and_expire_due_append_expired_events() {
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, tenant) = store_at(&clock);
    for id in ["x", "y"] {
        store
            .upsert(&tenant, SubscriberInput::new(id), None)
            .expect("create");
        store.heartbeat(&tenant, id, 2, None).expect("lease");
    }
    clock.set(ms(5_000));
    assert_eq!(store.expire_due(10).expect("expire"), 2);
    let events = all_events(&store, &tenant);
    assert_eq!(
        summary(&events[2..]),
        vec![
            ("x".into(), false, 2, EventCause::Expired, 3_000),
            ("y".into(), false, 2, EventCause::Expired, 3_000),
        ]
    );
}

#[test]
fn pages_follow_the_cursor_rules() {
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, tenant) = store_at(&clock);
    let empty = store.events(&tenant, None, 100).expect("empty");
    assert_eq!((empty.events.len(), empty.next), (0, 0));
    assert_eq!(
        store.events(&tenant, Some(42), 100).expect("beyond").next,
        42
    );
    store
        .upsert(&tenant, SubscriberInput::new("a"), None)
        .expect("create");
    for i in 0..5 {
        store
            .set_online(&tenant, "a", i % 2 == 0, None)
            .expect("write");
    }
    let first = store.events(&tenant, None, 2).expect("page");
    assert_eq!(first.events.len(), 2);
    assert_eq!(first.next, first.events[1].seq);
    let rest = store.events(&tenant, Some(first.next), 100).expect("rest");
    assert_eq!(rest.events.len(), 3);
    let last = rest.next;
    assert_eq!(store.last_event(&tenant).expect("last"), last);
    let beyond = store.events(&tenant, Some(last + 10), 100).expect("beyond");
    assert!(beyond.events.is_empty());
    assert_eq!(beyond.next, last + 10);
    for limit in [0, 1001] {
        let err = store.events(&tenant, None, limit).expect_err("limit");
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: Field::Limit,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn retention_purges_oldest_first_and_refuses_older_cursors() {
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, tenant) = open_with_a(
        Config::temporary()
            .clock(clock.clone())
            .background_expiry(false)
            .event_retention(Duration::from_secs(60)),
    );
    store.set_online(&tenant, "a", true, None).expect("write"); // at 1 s
    clock.set(ms(30_000));
    store.set_online(&tenant, "a", false, None).expect("write"); // at 30 s
    clock.set(ms(61_000));
    assert_eq!(store.purge_events(100).expect("purge"), 1);
    assert_eq!(store.purge_events(100).expect("purge"), 0);
    let kept = all_events(&store, &tenant);
    assert_eq!(kept.len(), 1);
    let first = kept[0].seq;
    for after in [0, first - 2] {
        let err = store.events(&tenant, Some(after), 10).expect_err("purged");
        assert!(matches!(err, Error::CursorExpired { .. }), "{err:?}");
    }
    assert_eq!(
        store
            .events(&tenant, Some(first - 1), 10)
            .expect("ok")
            .events,
        kept
    );
    clock.set(ms(100_000));
    assert_eq!(store.purge_events(100).expect("purge"), 1);
    let page = store.events(&tenant, None, 10).expect("empty");
    assert!(page.events.is_empty());
}

/// After a purge of every event, `next` of the page without a cursor is
/// the last purged seq (the retention floor): a poller that passes it back
/// missed nothing, so it is no 410, and the page after it holds exactly
/// the events written since. A cursor below the floor is still refused.
#[test]
fn after_a_full_purge_next_is_the_floor_and_a_poller_reads_on() {
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, tenant) = open_with_a(
        Config::temporary()
            .clock(clock.clone())
            .background_expiry(false)
            .event_retention(Duration::from_secs(60)),
    );
    store.set_online(&tenant, "a", true, None).expect("write");
    store.set_online(&tenant, "a", false, None).expect("write");
    let written = all_events(&store, &tenant);
    assert_eq!(written.len(), 2);
    let floor = written[1].seq;
    clock.set(ms(62_000));
    assert_eq!(store.purge_events(100).expect("purge"), 2);

    let page = store.events(&tenant, None, 10).expect("without a cursor");
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, floor, "next is the last purged seq");
    let page = store
        .events(&tenant, Some(page.next), 10)
        .expect("after=next is no 410");
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, floor);
    for below in [0, floor - 1] {
        let err = store
            .events(&tenant, Some(below), 10)
            .expect_err("below the floor");
        assert!(
            matches!(err, Error::CursorExpired { after, purged_through } if after == below && purged_through == floor),
            "{err:?}"
        );
    }
    // A stream from now starts at the floor, and is not refused there.
    assert_eq!(store.last_event(&tenant).expect("last"), floor);

    store.set_online(&tenant, "a", true, None).expect("write");
    let page = store.events(&tenant, Some(floor), 10).expect("after=next");
    assert_eq!(page.events.len(), 1, "{page:?}");
    let event = &page.events[0];
    assert!(event.seq > floor);
    assert!(event.is_online);
    assert_eq!(event.version.0, 3);
    assert_eq!(page.next, event.seq);
    assert_eq!(
        store.events(&tenant, None, 10).expect("page").events,
        page.events
    );
}

/// The floor survives a reopen: after every event was purged, the reopened
/// store neither hands out a seq at or below it again nor starts a reader
/// from now below it.
#[test]
fn after_a_full_purge_and_a_reopen_seqs_continue_above_the_floor() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let config = || {
        Config::new(dir.path())
            .clock(clock.clone())
            .background_expiry(false)
            .event_retention(Duration::from_secs(60))
    };
    let (tenant, floor) = {
        let (store, tenant) = open_with_a(config());
        store.set_online(&tenant, "a", true, None).expect("write");
        store.set_online(&tenant, "a", false, None).expect("write");
        let floor = store.last_event(&tenant).expect("last");
        clock.set(ms(62_000));
        assert_eq!(store.purge_events(100).expect("purge"), 2);
        store.flush().expect("flush");
        (tenant, floor)
    };
    let store = Store::open(config()).expect("reopen");
    assert_eq!(store.last_event(&tenant).expect("last"), floor);
    let page = store.events(&tenant, None, 10).expect("without a cursor");
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, floor);
    store.set_online(&tenant, "a", true, None).expect("write");
    let page = store.events(&tenant, Some(floor), 10).expect("after=next");
    assert_eq!(page.events.len(), 1, "{page:?}");
    assert!(page.events[0].seq > floor, "{page:?}");
    assert_eq!(page.events[0].version.0, 3);
    assert_eq!(page.next, page.events[0].seq);
}

#[test]
fn waiting_for_the_next_event_blocks_until_one_is_readable() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, tenant) = open_with_a(Config::new(dir.path()).durability(Durability::Durable));
    let last = store.last_event(&tenant).expect("last");
    assert!(
        !store
            .wait_for_event(&tenant, last, Duration::from_millis(50))
            .expect("wait")
    );
    let waiter = {
        let (store, tenant) = (store.clone(), tenant);
        std::thread::spawn(move || store.wait_for_event(&tenant, last, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(50));
    // Committed, and its writer drops the wait without waiting: the dropped
    // wait asks for the round, so the event still becomes readable.
    let pending = store
        .commit(
            &tenant,
            Command::SetOnline {
                subscriber_id: "a".into(),
                online: true,
            },
            None,
        )
        .expect("commit");
    drop(pending);
    assert!(
        waiter.join().expect("waiter").expect("wait"),
        "woken by the event"
    );
    let page = store.events(&tenant, Some(last), 10).expect("events");
    assert_eq!(page.events.len(), 1);
}

#[test]
fn the_event_notice_future_resolves_when_an_event_is_readable() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, tenant) = store_at(&clock);
    store
        .upsert(&tenant, SubscriberInput::new("a"), None)
        .expect("create");
    let mut notice = store.event_after(&tenant, 0).expect("notice");
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(std::pin::Pin::new(&mut notice).poll(&mut cx).is_pending());
    store.set_online(&tenant, "a", true, None).expect("write");
    assert!(flag.0.load(Ordering::SeqCst), "woken");
    assert_eq!(
        std::pin::Pin::new(&mut notice).poll(&mut cx),
        Poll::Ready(())
    );
}

#[test]
fn the_online_query_is_lease_aware_paged_and_windowed() {
    let clock = Arc::new(ManualClock::new(ms(1_000_000)));
    let (store, tenant) = store_at(&clock);
    for i in 0..10 {
        store
            .upsert(&tenant, SubscriberInput::new(format!("u{i}")), None)
            .expect("create");
    }
    for i in [1, 3, 5, 7] {
        store
            .set_online(&tenant, &format!("u{i}"), true, None)
            .expect("online");
    }
    store.heartbeat(&tenant, "u9", 10, None).expect("lease");
    store.set_online(&tenant, "u2", true, None).expect("online");
    store
        .set_online(&tenant, "u2", false, None)
        .expect("offline at 1000 s");
    clock.set(ms(1_005_000));
    let ids = |q: &OnlineQuery| -> (Vec<String>, Option<String>) {
        let page = store.online(&tenant, q).expect("online");
        (
            page.subscribers
                .into_iter()
                .map(|d| d.subscriber_id)
                .collect(),
            page.next,
        )
    };
    assert_eq!(
        ids(&OnlineQuery::default()).0,
        ["u1", "u3", "u5", "u7", "u9"]
    );
    let q = OnlineQuery {
        limit: 2,
        ..Default::default()
    };
    assert_eq!(ids(&q), (vec!["u1".into(), "u3".into()], Some("u3".into())));
    let q = OnlineQuery {
        limit: 2,
        after: Some("u3".into()),
        ..Default::default()
    };
    assert_eq!(ids(&q), (vec!["u5".into(), "u7".into()], Some("u7".into())));
    let q = OnlineQuery {
        limit: 2,
        after: Some("u7".into()),
        ..Default::default()
    };
    assert_eq!(ids(&q), (vec!["u9".into()], None));
    // The lease of u9 runs out at 1010 s: offline from then, expiry
    // written or not; its last heartbeat (1000 s) is its lastOnlineAt.
    clock.set(ms(1_010_000));
    assert_eq!(ids(&OnlineQuery::default()).0, ["u1", "u3", "u5", "u7"]);
    let stats = store.presence_stats(&tenant).expect("stats");
    assert_eq!((stats.online, stats.subscribers), (4, 10));
    let within = |secs| OnlineQuery {
        within_seconds: Some(secs),
        ..Default::default()
    };
    assert_eq!(
        ids(&within(60)).0,
        ["u1", "u2", "u3", "u5", "u7", "u9"],
        "online now, or last online at most 60 s ago"
    );
    assert_eq!(ids(&within(5)).0, ["u1", "u3", "u5", "u7"]);
    store.expire_due(10).expect("expire");
    assert_eq!(ids(&within(60)).0, ["u1", "u2", "u3", "u5", "u7", "u9"]);
    let stats = store.presence_stats(&tenant).expect("stats");
    assert_eq!((stats.online, stats.subscribers), (4, 10));
    store.delete(&tenant, "u3", None).expect("delete");
    store.delete(&tenant, "u2", None).expect("delete");
    assert_eq!(ids(&within(60)).0, ["u1", "u5", "u7", "u9"]);
    let stats = store.presence_stats(&tenant).expect("stats");
    assert_eq!((stats.online, stats.subscribers), (3, 8));
    for (q, field) in [
        (
            OnlineQuery {
                limit: 0,
                ..Default::default()
            },
            Field::Limit,
        ),
        (
            OnlineQuery {
                limit: 1001,
                ..Default::default()
            },
            Field::Limit,
        ),
        (within(0), Field::Within),
        (within(2_592_001), Field::Within),
        (
            OnlineQuery {
                after: Some(" ".into()),
                ..Default::default()
            },
            Field::After,
        ),
    ] {
        let err = store.online(&tenant, &q).expect_err("bad query");
        assert!(
            matches!(&err, Error::InvalidInput { field: f, .. } if *f == field),
            "{err:?}"
        );
    }
}

#[test]
fn environments_never_see_each_others_presence() {
    let clock = Arc::new(ManualClock::new(ms(1_000)));
    let (store, a) = store_at(&clock);
    let org = store.create_organization("Other").expect("org");
    let b = store
        .create_environment(org.id, "Production")
        .expect("env")
        .tenant();
    for (tenant, id) in [(&a, "shared"), (&b, "shared"), (&b, "only-b")] {
        store
            .upsert(tenant, SubscriberInput::new(id), None)
            .expect("create");
        store.set_online(tenant, id, true, None).expect("online");
    }
    let events_a = all_events(&store, &a);
    let events_b = all_events(&store, &b);
    assert_eq!(events_a.len(), 1);
    assert_eq!(events_b.len(), 2);
    let online_a = store.online(&a, &OnlineQuery::default()).expect("online");
    assert_eq!(online_a.subscribers.len(), 1);
    assert_eq!(online_a.subscribers[0].environment_id, a.environment_id());
    let stats_b = store.presence_stats(&b).expect("stats");
    assert_eq!((stats_b.online, stats_b.subscribers), (2, 2));
    let stats_a = store.presence_stats(&a).expect("stats");
    assert_eq!((stats_a.online, stats_a.subscribers), (1, 1));
}

#[test]
fn with_the_feed_off_the_calls_say_so_and_turning_it_on_rebuilds() {
    let dir = tempfile::tempdir().expect("dir");
    let tenant = {
        let (store, tenant) = open_with_a(Config::new(dir.path()).presence_feed(false));
        store.set_online(&tenant, "a", true, None).expect("online");
        assert_eq!(store.events(&tenant, None, 10), Err(Error::FeedOff));
        assert_eq!(
            store.online(&tenant, &OnlineQuery::default()).map(|_| ()),
            Err(Error::FeedOff)
        );
        assert_eq!(
            store.presence_stats(&tenant).map(|_| ()),
            Err(Error::FeedOff)
        );
        tenant
    };
    let store = Store::open(Config::new(dir.path())).expect("reopen with the feed");
    let online = store
        .online(&tenant, &OnlineQuery::default())
        .expect("online");
    assert_eq!(online.subscribers.len(), 1, "the index was rebuilt");
    let stats = store.presence_stats(&tenant).expect("stats");
    assert_eq!((stats.online, stats.subscribers), (1, 1));
    assert!(
        store
            .events(&tenant, None, 10)
            .expect("events")
            .events
            .is_empty()
    );
}

/// The model test: writers (each owning its subscribers, so each knows its
/// documents' whole history), an expirer and a moving clock, and readers
/// that resume from random cursors they saw. Each reader sees every event
/// once, in seq order; re-reading after any cursor gives the same events;
/// the feed holds exactly the changes of every document's history; the
/// online query and the counts match the last events.
#[test]
fn readers_see_exactly_the_committed_changes_in_order() {
    const WRITERS: usize = 4;
    const OWNED: usize = 4;
    const OPS: usize = 250;
    const READERS: usize = 3;
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(ms(1_000_000)));
    let config = Config::new(dir.path())
        .durability(Durability::Durable)
        .clock(clock.clone())
        .background_expiry(false);
    let store = Store::open(config).expect("open");
    let tenant = store
        .ensure_environment("Development")
        .expect("env")
        .0
        .tenant();
    let done = Arc::new(AtomicBool::new(false));
    // The feed's last seq once everything is written (0 until then).
    let final_seq = Arc::new(std::sync::atomic::AtomicU64::new(0));

    // Each writer's log: per subscriber, per incarnation, the presence of
    // every version a write of the writer returned, and the version its
    // delete saw (a version missing from both is an expiry).
    type Life = (Vec<(u64, Option<bool>)>, Option<u64>);
    type History = BTreeMap<String, Vec<Life>>;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, tenant) = (store.clone(), tenant);
            std::thread::spawn(move || {
                let mut history: History = BTreeMap::new();
                let mut rng = w as u64 * 7919 + 17;
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for o in 0..OWNED {
                    let id = format!("w{w}-{o}");
                    store
                        .upsert(&tenant, SubscriberInput::new(&id), None)
                        .expect("create");
                    history.entry(id).or_default().push((vec![(0, None)], None));
                }
                for _ in 0..OPS {
                    let id = format!("w{w}-{}", next() % OWNED as u64);
                    let doc = match next() % 10 {
                        0 => {
                            let gone = store.delete(&tenant, &id, None).expect("delete");
                            let lives = history.get_mut(&id).expect("owned");
                            lives.last_mut().expect("a life").1 = Some(gone.version.0);
                            store
                                .upsert(&tenant, SubscriberInput::new(&id), None)
                                .expect("create")
                        }
                        1..=3 => store
                            .heartbeat(&tenant, &id, 1 + (next() % 3) as u32, None)
                            .expect("heartbeat"),
                        4..=6 => store.set_online(&tenant, &id, true, None).expect("online"),
                        _ => store
                            .set_online(&tenant, &id, false, None)
                            .expect("offline"),
                    };
                    let lives = history.get_mut(&id).expect("owned");
                    if doc.version.0 == 0 {
                        lives.push((Vec::new(), None));
                    }
                    let life = lives.last_mut().expect("a life");
                    life.0.push((doc.version.0, doc.is_online));
                }
                history
            })
        })
        .collect();
    let ticker = {
        let (clock, done) = (clock.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                clock.advance(Duration::from_millis(200));
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let expirer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                store.expire_due(64).expect("expire");
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (store, tenant, final_seq) = (store.clone(), tenant, final_seq.clone());
            std::thread::spawn(move || {
                let mut log: Vec<PresenceEvent> = Vec::new();
                let mut rng = r as u64 * 31 + 5;
                let mut resumed = 0;
                loop {
                    let after = log.last().map_or(0, |e| e.seq);
                    let last = final_seq.load(Ordering::SeqCst);
                    if last > 0 && after >= last {
                        break;
                    }
                    let page = store
                        .events(&tenant, Some(after), 1 + (r as u32 * 40))
                        .expect("page");
                    let empty = page.events.is_empty();
                    log.extend(page.events);
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                    if !log.is_empty() && rng % 7 == 0 {
                        // Reconnect from a random cursor already seen: the
                        // same events follow it.
                        let i = (rng >> 33) as usize % log.len();
                        let cursor = log[i].seq;
                        let again = store.events(&tenant, Some(cursor), 1000).expect("again");
                        let expected: Vec<_> = log[i + 1..].iter().take(1000).cloned().collect();
                        let got: Vec<_> = again.events.into_iter().take(expected.len()).collect();
                        assert_eq!(got, expected, "reader {r} resuming after {cursor}");
                        resumed += 1;
                    }
                    if empty {
                        let _ = store.wait_for_event(&tenant, after, Duration::from_millis(20));
                    }
                }
                (log, resumed)
            })
        })
        .collect();

    let histories: Vec<History> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    // Every lease runs out; the expiries are written.
    clock.advance(Duration::from_secs(10));
    while store.expire_due(1024).expect("expire") > 0 {}
    done.store(true, Ordering::SeqCst);
    ticker.join().expect("ticker");
    expirer.join().expect("expirer");
    // An acknowledged write's event becomes readable with the round that
    // made it durable, but only once every smaller seq is readable too: a
    // last write, read back, marks the end (readable is a prefix).
    store
        .upsert(&tenant, SubscriberInput::new("zz-last"), None)
        .expect("create");
    store
        .set_online(&tenant, "zz-last", true, None)
        .expect("last write");
    let mut last = store.last_event(&tenant).expect("last");
    while store
        .events(&tenant, Some(last.saturating_sub(1)), 10)
        .expect("events")
        .events
        .last()
        .is_none_or(|e| e.subscriber_id != "zz-last")
    {
        store
            .wait_for_event(&tenant, last, Duration::from_secs(5))
            .expect("wait");
        last = store.last_event(&tenant).expect("last");
    }
    final_seq.store(last, Ordering::SeqCst);
    let logs: Vec<_> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();

    let feed = all_events(&store, &tenant);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq), "seq order");
    let (sentinel, feed) = feed.split_last().expect("events");
    assert_eq!(sentinel.subscriber_id, "zz-last");
    for (r, (log, resumed)) in logs.iter().enumerate() {
        let (_, log) = log.split_last().expect("events");
        let first_difference = log.iter().zip(feed).position(|(a, b)| a != b);
        assert!(
            log.len() == feed.len() && first_difference.is_none(),
            "reader {r} saw the whole feed once, in order: {} events read, {} in the feed, first difference at {first_difference:?}",
            log.len(),
            feed.len()
        );
        assert!(*resumed > 0, "reader {r} never resumed");
    }

    // The expected events, from each document's history.
    let mut expected: BTreeMap<String, Vec<(u64, bool, EventCause)>> = BTreeMap::new();
    let mut online_now = BTreeSet::new();
    let mut subscribers = 0;
    for history in &histories {
        for (id, lives) in history {
            let doc = store.get(&tenant, id).expect("alive at the end");
            subscribers += 1;
            let events = expected.entry(id.clone()).or_default();
            for (n, (life, deleted_at)) in lives.iter().enumerate() {
                let last = n + 1 == lives.len();
                let end = match deleted_at {
                    Some(v) => *v,
                    None => doc.version.0,
                };
                let known: BTreeMap<u64, Option<bool>> = life.iter().copied().collect();
                let mut presence: Option<bool> = None;
                for v in 1..=end {
                    // A version the writer did not see is an expiry.
                    let (now, cause) = match known.get(&v) {
                        Some(p) => (*p, EventCause::Write),
                        None => (Some(false), EventCause::Expired),
                    };
                    if now.is_some() && now != presence {
                        events.push((v, now == Some(true), cause));
                    }
                    presence = now;
                }
                if !last && presence == Some(true) {
                    events.push((end, false, EventCause::Deleted));
                }
                if last && presence == Some(true) {
                    online_now.insert(id.clone());
                }
            }
            assert_eq!(
                doc.is_online == Some(true),
                online_now.contains(id),
                "{id}: the document"
            );
        }
    }
    let mut actual: BTreeMap<String, Vec<(u64, bool, EventCause)>> = BTreeMap::new();
    for e in feed {
        actual.entry(e.subscriber_id.clone()).or_default().push((
            e.version.0,
            e.is_online,
            e.cause,
        ));
    }
    expected.retain(|_, events| !events.is_empty());
    assert_eq!(
        actual, expected,
        "the feed holds exactly the committed changes"
    );

    let mut listed = BTreeSet::new();
    let mut query = OnlineQuery {
        limit: 3,
        ..Default::default()
    };
    loop {
        let page = store.online(&tenant, &query).expect("online");
        listed.extend(page.subscribers.into_iter().map(|d| d.subscriber_id));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    online_now.insert("zz-last".into());
    subscribers += 1;
    assert_eq!(listed, online_now, "the online query");
    let stats = store.presence_stats(&tenant).expect("stats");
    assert_eq!(
        (stats.online, stats.subscribers),
        (online_now.len() as u64, subscribers),
        "the counts"
    );
    let causes: BTreeMap<&str, usize> = feed.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e.cause.as_str()).or_default() += 1;
        m
    });
    assert_eq!(causes.len(), 3, "every cause was exercised: {causes:?}");
    eprintln!(
        "{} events {causes:?}, {} online at the end, readers resumed {:?} times",
        feed.len(),
        online_now.len(),
        logs.iter().map(|l| l.1).collect::<Vec<_>>()
    );
}

fn raw_sled(dir: &std::path::Path) -> sled::Db {
    let raw = sled::Config::new().path(dir).segment_size(4 * 1024 * 1024);
    // sled lets go of its lock a moment after the store is dropped.
    (0..200)
        .find_map(|_| {
            let db = raw.open().ok();
            if db.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            db
        })
        .expect("raw sled")
}

/// sled keeps a prefix of its log, and an event is written before its
/// change: a crash can leave an event whose change is gone. Opening drops it.
#[test]
fn opening_drops_events_whose_change_was_lost() {
    let dir = tempfile::tempdir().expect("dir");
    let (tenant, key) = {
        let (store, tenant) = open_with_a(Config::new(dir.path()));
        store.set_online(&tenant, "a", true, None).expect("online");
        let mut key = tenant.environment_id().as_bytes().to_vec();
        key.extend_from_slice(b"a");
        (tenant, key)
    };
    let at_v1 = {
        let db = raw_sled(dir.path());
        let doc = db
            .open_tree("subscribers")
            .expect("tree")
            .get(&key)
            .expect("get");
        doc.expect("document")
    };
    {
        let store = Store::open(Config::new(dir.path())).expect("reopen");
        store
            .set_online(&tenant, "a", false, None)
            .expect("offline");
        assert_eq!(all_events(&store, &tenant).len(), 2);
    }
    {
        // The second change lost, its event kept.
        let db = raw_sled(dir.path());
        db.open_tree("subscribers")
            .expect("tree")
            .insert(&key, at_v1)
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = Store::open(Config::new(dir.path())).expect("reopen");
    let events = all_events(&store, &tenant);
    assert_eq!(summary(&events).len(), 1, "{events:?}");
    assert!(events[0].is_online);
    // The next change follows the kept event (a lost event was never
    // readable: its change was not durable).
    store
        .set_online(&tenant, "a", false, None)
        .expect("offline");
    let events = all_events(&store, &tenant);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].version.0, 2);
}

#[test]
fn relaxed_mode_makes_events_readable_with_its_background_flush() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, tenant) = open_with_a(
        Config::new(dir.path())
            .durability(Durability::Relaxed)
            .flush_interval(Duration::from_millis(50)),
    );
    store.set_online(&tenant, "a", true, None).expect("online");
    assert!(
        store
            .wait_for_event(&tenant, 0, Duration::from_secs(5))
            .expect("wait")
    );
    assert_eq!(all_events(&store, &tenant).len(), 1);
}
