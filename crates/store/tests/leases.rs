//! Presence leases (SPEC section 10) on the embedded store, with the
//! injectable clock and the expiry driven step by step (`expire_due`), plus
//! the store's own expiry thread on a real clock.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{START, config};
use subscriber_store::{
    Command, Config, Durability, Error, Field, Idempotency, IdempotencyKey, InputProblem,
    ManualClock, Precondition, Store, SubscriberInput, Tenant, Timestamp, Version,
};

struct Leases {
    dir: tempfile::TempDir,
    clock: ManualClock,
    store: Store,
    tenant: Tenant,
}

fn manual(default_ttl: u32) -> Config {
    Config::temporary()
        .presence_ttl_secs(default_ttl)
        .background_expiry(false)
}

impl Leases {
    fn new(default_ttl: u32) -> Leases {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(START);
        let store = Store::open(
            config(dir.path(), &clock)
                .presence_ttl_secs(default_ttl)
                .background_expiry(false),
        )
        .expect("open");
        let tenant = store
            .ensure_environment("Development")
            .expect("env")
            .0
            .tenant();
        for i in 0..10 {
            store
                .upsert(&tenant, SubscriberInput::new(format!("u{i}")), None)
                .expect("create");
        }
        Leases {
            dir,
            clock,
            store,
            tenant,
        }
    }

    fn at(&self, millis: u64) -> Timestamp {
        Timestamp::from_millis(START.as_millis() + millis)
    }

    fn set(&self, millis: u64) {
        self.clock.set(self.at(millis));
    }

    fn get(&self, id: &str) -> subscriber_store::Subscriber {
        self.store.get(&self.tenant, id).expect("get")
    }

    /// The feed's events once at least `n` are readable (relaxed mode: an
    /// event is readable after the timer's flush round), or after 10 s.
    fn events(&self, n: usize) -> Vec<subscriber_store::PresenceEvent> {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let page = self.store.events(&self.tenant, None, 100).expect("events");
            if page.events.len() >= n || Instant::now() > give_up {
                return page.events;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_lease_expires_at_its_deadline_as_a_change_of_its_own() {
    let l = Leases::new(0);
    l.set(1_000);
    let online = l
        .store
        .heartbeat(&l.tenant, "u1", 30, None)
        .expect("heartbeat");
    assert_eq!(online.online_expires_at(), Some(l.at(31_000)));
    assert_eq!(online.version, Version(1));

    l.set(30_999);
    assert_eq!(l.get("u1"), online, "not yet due");
    assert_eq!(l.store.expire_due(100).expect("expire"), 0);

    // From the deadline on, reads show the expiry before it is written...
    l.set(31_000);
    let read = l.get("u1");
    assert_eq!(read.is_online, Some(false));
    assert_eq!(read.online_expires_at(), None);
    assert_eq!(read.last_online_at, Some(l.at(1_000)), "the last heartbeat");
    assert_eq!(read.updated_at, l.at(31_000), "the deadline");
    assert_eq!(read.version, Version(2));
    // ...and writing it changes nothing a reader saw.
    l.set(45_000);
    assert_eq!(
        l.store.next_lease_deadline().expect("index"),
        Some(l.at(31_000))
    );
    assert_eq!(l.store.expire_due(100).expect("expire"), 1);
    assert_eq!(l.store.next_lease_deadline().expect("index"), None);
    assert_eq!(l.get("u1"), read);
    assert_eq!(l.store.expire_due(100).expect("again"), 0, "expired once");
    assert_eq!(l.get("u1"), read);
}

#[test]
fn a_heartbeat_before_the_deadline_moves_it() {
    let l = Leases::new(0);
    l.store
        .heartbeat(&l.tenant, "u1", 30, None)
        .expect("heartbeat");
    l.set(29_999);
    let moved = l.store.heartbeat(&l.tenant, "u1", 30, None).expect("again");
    assert_eq!(moved.online_expires_at(), Some(l.at(59_999)));
    l.set(30_000);
    assert_eq!(l.store.expire_due(100).expect("expire"), 0, "stale entry");
    assert_eq!(l.get("u1"), moved);
    l.set(59_999);
    assert_eq!(l.store.expire_due(100).expect("expire"), 1);
    let expired = l.get("u1");
    assert_eq!(expired.last_online_at, Some(l.at(29_999)));
    assert_eq!(expired.version, Version(3));
}

#[test]
fn offline_and_ttl_0_end_the_lease() {
    let l = Leases::new(0);
    l.store
        .heartbeat(&l.tenant, "u1", 30, None)
        .expect("heartbeat");
    let offline = l
        .store
        .set_online(&l.tenant, "u1", false, None)
        .expect("offline");
    assert_eq!(offline.online_expires_at(), None);
    l.store
        .heartbeat(&l.tenant, "u2", 30, None)
        .expect("heartbeat");
    let zero = l.store.heartbeat(&l.tenant, "u2", 0, None).expect("ttl 0");
    assert_eq!(
        (zero.is_online, zero.online_expires_at()),
        (Some(true), None)
    );
    l.set(3_600_000);
    assert_eq!(l.store.expire_due(100).expect("expire"), 0);
    assert_eq!(l.get("u1"), offline);
    assert_eq!(l.get("u2"), zero);
}

#[test]
fn the_default_ttl_applies_to_online_writes_and_a_heartbeat_overrides_it() {
    let l = Leases::new(60);
    let online = l
        .store
        .set_online(&l.tenant, "u1", true, None)
        .expect("online");
    assert_eq!(online.online_expires_at(), Some(l.at(60_000)));
    let own = l
        .store
        .heartbeat(&l.tenant, "u2", 5, None)
        .expect("heartbeat");
    assert_eq!(own.online_expires_at(), Some(l.at(5_000)));
    let none = l
        .store
        .heartbeat(&l.tenant, "u3", 0, None)
        .expect("no lease");
    assert_eq!(none.online_expires_at(), None);
    // An upsert keeps a running lease.
    let mut input = SubscriberInput::new("u1");
    input.first_name = Some(Some("Ada".into()));
    let upserted = l.store.upsert(&l.tenant, input, None).expect("upsert");
    assert_eq!(upserted.online_expires_at(), Some(l.at(60_000)));
    l.set(60_000);
    assert_eq!(l.store.expire_due(100).expect("expire"), 2);
    assert_eq!(l.get("u3").is_online, Some(true));
}

#[test]
fn out_of_range_ttls_are_refused() {
    let l = Leases::new(0);
    let before = l.get("u1");
    assert_eq!(
        l.store.heartbeat(&l.tenant, "u1", 86_401, None),
        Err(Error::InvalidInput {
            field: Field::TtlSeconds,
            problem: InputProblem::NotInRange {
                min: 0,
                max: 86_400
            }
        })
    );
    assert_eq!(l.get("u1"), before, "changes nothing");
    assert!(l.store.heartbeat(&l.tenant, "u1", 86_400, None).is_ok());
    assert!(matches!(
        Store::open(manual(86_401)),
        Err(Error::InvalidInput {
            field: Field::TtlSeconds,
            ..
        })
    ));
}

#[test]
fn after_the_deadline_the_old_version_no_longer_matches_and_a_write_lands_on_the_expiry() {
    let l = Leases::new(0);
    let online = l
        .store
        .heartbeat(&l.tenant, "u1", 10, None)
        .expect("heartbeat");
    l.set(10_000);
    let stale: Option<Precondition> = Some(online.version.into());
    assert_eq!(
        l.store.set_online(&l.tenant, "u1", true, stale),
        Err(Error::VersionConflict {
            expected: online.version.into(),
            current: Some(Version(2)),
        })
    );
    l.set(12_000);
    let back = l
        .store
        .set_online(&l.tenant, "u1", true, Some(Version(2).into()))
        .expect("on the expiry's version");
    assert_eq!(back.version, Version(3));
    assert_eq!(
        back.last_online_at,
        Some(START),
        "the expiry's lastOnlineAt"
    );
    assert_eq!(
        l.store.expire_due(100).expect("expire"),
        0,
        "already applied"
    );
}

#[test]
fn replaying_a_heartbeat_changes_nothing() {
    let l = Leases::new(0);
    let key = IdempotencyKey::new("hb-1").expect("key");
    let once = Idempotency::new(key);
    let command = Command::Heartbeat {
        subscriber_id: "u1".into(),
        ttl_seconds: 10,
    };
    let first = l
        .store
        .execute_once(&l.tenant, command.clone(), None, &once)
        .expect("first");
    l.set(20_000);
    let replay = l
        .store
        .execute_once(&l.tenant, command, None, &once)
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.outcome, first.outcome, "the answer it gave then");
    let now = l.get("u1");
    assert_eq!((now.is_online, now.version), (Some(false), Version(2)));
}

#[test]
fn leases_that_passed_during_downtime_expire_with_their_own_deadlines() {
    let mut l = Leases::new(0);
    for (i, ttl) in [(0, 10), (1, 20), (2, 30), (3, 600)] {
        l.store
            .heartbeat(&l.tenant, &format!("u{i}"), ttl, None)
            .expect("heartbeat");
    }
    l.store.flush().expect("flush");
    let placeholder = Store::open(Config::temporary()).expect("temporary");
    drop(std::mem::replace(&mut l.store, placeholder));
    // Down from 0 s to 100 s: three of the four deadlines pass.
    l.set(100_000);
    l.store = Store::open(config(l.dir.path(), &l.clock).background_expiry(false)).expect("reopen");
    assert_eq!(l.store.expire_due(100).expect("expire"), 3);
    for (i, ttl) in [(0, 10), (1, 20), (2, 30)] {
        let doc = l.get(&format!("u{i}"));
        assert_eq!(doc.is_online, Some(false), "u{i}");
        assert_eq!(
            doc.updated_at,
            l.at(ttl * 1_000),
            "u{i} at its own deadline"
        );
        assert_eq!(doc.version, Version(2));
    }
    let running = l.get("u3");
    assert_eq!(running.online_expires_at(), Some(l.at(600_000)));
}

#[test]
fn the_store_writes_due_expiries_by_itself_and_stops_when_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || {
        Store::open(
            Config::new(dir.path())
                .durability(Durability::Durable)
                .presence_ttl_secs(1),
        )
        .expect("open")
    };
    let store = open();
    let tenant = store
        .ensure_environment("Development")
        .expect("env")
        .0
        .tenant();
    for i in 0..50 {
        let id = format!("u{i}");
        store
            .upsert(&tenant, SubscriberInput::new(id.as_str()), None)
            .expect("create");
        store.set_online(&tenant, &id, true, None).expect("online");
    }
    // The thread writes them within about a second of their deadline.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if store.get(&tenant, "u0").expect("get").is_online == Some(false)
            && store.expire_due(usize::MAX).expect("expire") == 0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        store.expire_due(usize::MAX).expect("expire"),
        0,
        "all written by the thread"
    );
    for i in 0..50 {
        let doc = store.get(&tenant, &format!("u{i}")).expect("get");
        assert_eq!((doc.is_online, doc.version), (Some(false), Version(2)));
    }
    // Closing stops the thread and lets go of the directory at once.
    drop(store);
    let again = open();
    assert_eq!(again.get(&tenant, "u0").expect("get").version, Version(2));
}

#[test]
fn many_writers_and_the_expiry_never_lose_or_double_a_change() {
    let l = Leases::new(0);
    let store = Arc::new(l.store.clone());
    for i in 0..10 {
        store
            .heartbeat(&l.tenant, &format!("u{i}"), 1, None)
            .expect("heartbeat");
    }
    l.set(1_000);
    let expiry = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.expire_due(usize::MAX).expect("expire"))
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            let tenant = l.tenant;
            std::thread::spawn(move || {
                for n in 0..25 {
                    let id = format!("u{}", (t + n) % 10);
                    store.heartbeat(&tenant, &id, 1, None).expect("heartbeat");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let expired = expiry.join().expect("expiry");
    // Every subscriber's lease passed at 1 s: its first write after that
    // applied the expiry first, or the expiry thread wrote it; once each.
    let total: u64 = (0..10).map(|i| l.get(&format!("u{i}")).version.0).sum();
    // Creates are version 0; 10 first heartbeats, 100 more, 10 expiries.
    assert_eq!(total, 10 + 100 + 10, "expiry thread wrote {expired}");
}

/// One hour, the wall clock's step in the clock-step tests.
const HOUR: u64 = 3_600_000;

#[test]
fn a_wall_clock_stepped_back_does_not_stretch_a_lease() {
    let l = Leases::new(0);
    l.set(HOUR);
    let online = l
        .store
        .heartbeat(&l.tenant, "u1", 3, None)
        .expect("heartbeat");
    assert_eq!(online.online_expires_at(), Some(l.at(HOUR + 3_000)));
    // The wall clock steps back an hour; then 2 s pass: still online.
    l.set(0);
    l.clock.advance(Duration::from_secs(2));
    assert_eq!(l.get("u1").is_online, Some(true));
    // 3 s after the heartbeat, as the process measures time: offline,
    // whatever the wall clock says, in reads, counts and the online query.
    l.clock.advance(Duration::from_millis(1_000));
    let read = l.get("u1");
    assert_eq!(read.is_online, Some(false), "{read:?}");
    assert_eq!(read.version, Version(2));
    assert_eq!(read.last_online_at, Some(l.at(HOUR)), "the last heartbeat");
    let stats = l.store.presence_stats(&l.tenant).expect("stats");
    assert_eq!(stats.online, 0);
    let page = l
        .store
        .online(&l.tenant, &subscriber_store::OnlineQuery::default())
        .expect("online");
    assert!(page.subscribers.is_empty(), "{:?}", page.subscribers);
    // The expiry is written: one change, one event, as any expiry.
    assert_eq!(l.store.expire_due(100).expect("expire"), 1);
    let stored = l.get("u1");
    assert_eq!(stored, read, "the expiry written is what reads showed");
    let events = l.events(2);
    let causes: Vec<_> = events.iter().map(|e| (e.is_online, e.cause)).collect();
    assert_eq!(
        causes,
        [
            (true, subscriber_store::EventCause::Write),
            (false, subscriber_store::EventCause::Expired)
        ]
    );
    assert_eq!(l.store.expire_due(100).expect("expire"), 0, "only once");
}

#[test]
fn a_heartbeat_after_a_step_back_sets_its_deadline_from_the_clock() {
    let l = Leases::new(0);
    l.set(HOUR);
    l.store
        .heartbeat(&l.tenant, "u1", 3, None)
        .expect("heartbeat");
    l.set(1_000);
    // The document's times stay where they were (they never go back), but
    // the deadline is the heartbeat's own time plus its TTL.
    let beat = l
        .store
        .heartbeat(&l.tenant, "u1", 3, None)
        .expect("heartbeat");
    assert_eq!(beat.online_expires_at(), Some(l.at(4_000)));
    assert_eq!(beat.updated_at, l.at(HOUR), "times never go back");
    assert_eq!(
        beat.version,
        Version(2),
        "a heartbeat, no expiry in between"
    );
    l.clock.advance(Duration::from_millis(2_999));
    assert_eq!(l.get("u1").is_online, Some(true));
    l.clock.advance(Duration::from_millis(1));
    assert_eq!(l.get("u1").is_online, Some(false));
    assert_eq!(l.store.expire_due(100).expect("expire"), 1);
    let events = l.events(2);
    assert_eq!(events.len(), 2, "online once, expired once: {events:?}");
}

#[test]
fn a_wall_clock_stepped_forward_ends_leases_at_once() {
    let l = Leases::new(0);
    l.store
        .heartbeat(&l.tenant, "u1", 30, None)
        .expect("heartbeat");
    l.set(HOUR);
    assert_eq!(l.get("u1").is_online, Some(false));
    assert_eq!(l.store.expire_due(100).expect("expire"), 1);
    assert_eq!(l.get("u1").updated_at, l.at(30_000), "at its deadline");
}

#[test]
fn at_open_a_deadline_further_than_its_ttl_ahead_is_cut_to_now_plus_ttl() {
    let mut l = Leases::new(0);
    // Written while the wall clock ran an hour ahead.
    l.set(HOUR);
    l.store
        .heartbeat(&l.tenant, "u1", 30, None)
        .expect("heartbeat");
    l.store
        .heartbeat(&l.tenant, "u2", 30, None)
        .expect("heartbeat");
    l.store.flush().expect("flush");
    let placeholder = Store::open(Config::temporary()).expect("temporary");
    drop(std::mem::replace(&mut l.store, placeholder));
    // Restarted with the right time.
    l.set(0);
    l.store = Store::open(config(l.dir.path(), &l.clock).background_expiry(false)).expect("reopen");
    assert_eq!(l.get("u1").online_expires_at(), Some(l.at(30_000)), "cut");
    // A write that keeps the lease (an upsert) stores the cut deadline.
    l.store
        .upsert(
            &l.tenant,
            SubscriberInput {
                first_name: Some(Some("Ada".into())),
                ..SubscriberInput::new("u2")
            },
            None,
        )
        .expect("upsert");
    assert_eq!(l.get("u2").online_expires_at(), Some(l.at(30_000)));
    l.clock.advance(Duration::from_millis(29_999));
    assert_eq!(l.store.expire_due(100).expect("expire"), 0);
    assert_eq!(l.get("u1").is_online, Some(true));
    l.clock.advance(Duration::from_millis(1));
    assert_eq!(l.get("u1").is_online, Some(false));
    assert_eq!(l.store.expire_due(100).expect("expire"), 2);
    for id in ["u1", "u2"] {
        let doc = l.get(id);
        assert_eq!(doc.is_online, Some(false), "{id}");
        assert_eq!(doc.online_expires_at(), None, "{id}");
    }
    // And after another restart the upserted one stays offline.
    l.store.flush().expect("flush");
    let placeholder = Store::open(Config::temporary()).expect("temporary");
    drop(std::mem::replace(&mut l.store, placeholder));
    l.store = Store::open(config(l.dir.path(), &l.clock).background_expiry(false)).expect("reopen");
    assert_eq!(l.get("u2").is_online, Some(false));
    assert_eq!(l.store.expire_due(100).expect("expire"), 0);
}
