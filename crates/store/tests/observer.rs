//! What the store tells an operator's metrics: the observer's calls as
//! writes, flushes, purges, expiries and events happen, the gauges, and
//! `started` once the leases overdue at open are expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use subscriber_store::{
    Config, Durability, Idempotency, IdempotencyKey, ManualClock, Observer, Store, SubscriberInput,
    Timestamp,
};

#[derive(Debug, Default)]
struct Tally {
    rounds: AtomicU64,
    flushed: AtomicU64,
    recorded: AtomicU64,
    purged: AtomicU64,
    expired: AtomicU64,
    appended: AtomicU64,
    events_purged: AtomicU64,
}

impl Observer for Tally {
    fn flush_round(&self, _took: Duration, writes: u64) {
        self.rounds.fetch_add(1, Ordering::SeqCst);
        self.flushed.fetch_add(writes, Ordering::SeqCst);
    }
    fn idempotency_recorded(&self) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
    }
    fn idempotency_purged(&self, records: u64) {
        self.purged.fetch_add(records, Ordering::SeqCst);
    }
    fn leases_expired(&self, leases: u64) {
        self.expired.fetch_add(leases, Ordering::SeqCst);
    }
    fn events_appended(&self, events: u64) {
        self.appended.fetch_add(events, Ordering::SeqCst);
    }
    fn events_purged(&self, events: u64) {
        self.events_purged.fetch_add(events, Ordering::SeqCst);
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

#[test]
fn the_observer_hears_what_happens_and_the_gauges_follow() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let tally = Arc::new(Tally::default());
    let store = Store::open(
        Config::new(dir.path())
            .durability(Durability::Durable)
            .clock(clock.clone())
            .background_expiry(false)
            .idempotency_ttl(Duration::from_secs(60))
            .event_retention(Duration::from_secs(600))
            .observer(tally.clone()),
    )
    .expect("open");
    let tenant = store
        .ensure_environment("Development")
        .expect("env")
        .0
        .tenant();
    for id in ["a", "b", "c"] {
        store
            .upsert(&tenant, SubscriberInput::new(id), None)
            .expect("create");
    }
    let rounds_before = get(&tally.rounds);
    store.heartbeat(&tenant, "a", 5, None).expect("lease");
    store.set_online(&tenant, "b", true, None).expect("online");
    for k in ["k1", "k2"] {
        let once = Idempotency::new(IdempotencyKey::new(k).expect("key"));
        store
            .execute_once(
                &tenant,
                subscriber_store::Command::SetOnline {
                    subscriber_id: "c".into(),
                    online: k == "k1",
                },
                None,
                &once,
            )
            .expect("keyed");
    }
    assert!(get(&tally.rounds) > rounds_before);
    assert!(get(&tally.flushed) >= 7, "every write flushed");
    assert_eq!(get(&tally.recorded), 2);
    assert_eq!(get(&tally.appended), 4, "a, b, c online, c offline");
    let gauges = store.gauges();
    assert_eq!(gauges.idempotency_records, 2);
    assert_eq!(gauges.leases, Some(1));
    assert_eq!(gauges.online, Some(2));
    assert_eq!(gauges.subscribers, Some(3));
    assert!(gauges.flush_rounds >= get(&tally.rounds));

    clock.advance(Duration::from_secs(61));
    assert_eq!(store.expire_due(10).expect("expire"), 1);
    assert_eq!(get(&tally.expired), 1);
    assert_eq!(get(&tally.appended), 5);
    assert_eq!(store.gauges().leases, Some(0));
    assert_eq!(store.purge_expired(10).expect("purge"), 2);
    assert_eq!(get(&tally.purged), 2);
    assert_eq!(store.gauges().idempotency_records, 0);
    clock.advance(Duration::from_secs(600));
    assert_eq!(store.purge_events(100).expect("purge"), 5);
    assert_eq!(get(&tally.events_purged), 5);
    store.delete(&tenant, "a", None).expect("delete");
    assert_eq!(store.gauges().subscribers, Some(2));

    // Reopened, the gauges are counted from the disk.
    drop(store);
    let store = Store::open(Config::new(dir.path()).clock(clock.clone())).expect("reopen");
    let gauges = store.gauges();
    assert_eq!(
        (
            gauges.idempotency_records,
            gauges.leases,
            gauges.online,
            gauges.subscribers
        ),
        (0, Some(0), Some(1), Some(2))
    );
}

#[test]
fn started_turns_true_once_the_leases_overdue_at_open_are_expired() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    {
        let store = Store::open(
            Config::new(dir.path())
                .clock(clock.clone())
                .background_expiry(false),
        )
        .expect("open");
        assert!(store.started(), "nothing to wait for without the thread");
        let tenant = store
            .ensure_environment("Development")
            .expect("env")
            .0
            .tenant();
        for i in 0..3000 {
            let id = format!("u{i}");
            store
                .upsert(&tenant, SubscriberInput::new(&id), None)
                .expect("create");
            store.heartbeat(&tenant, &id, 10, None).expect("lease");
        }
    }
    clock.advance(Duration::from_secs(60)); // every lease overdue
    let store = Store::open(Config::new(dir.path()).clock(clock.clone())).expect("reopen");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.started() {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        store.gauges().leases,
        Some(0),
        "started only once all expired"
    );
    assert_eq!(store.gauges().online, Some(0));
}
