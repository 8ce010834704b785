//! Presence from live connections (SPEC 13) on the embedded store:
//! `Store::connect` and its guards, the grace, the renewal, an explicit
//! presence write against them, the lease running out when renewals stop,
//! and a restart ending the previous run's connections. Manual clock; the
//! renewals and closes are driven step by step (`tend_connections`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{START, config};
use subscriber_store::{
    Config, Durability, Error, EventCause, ManualClock, PresenceEvent, Store, Subscriber,
    SubscriberInput, Tenant, Timestamp,
};

struct Live {
    dir: tempfile::TempDir,
    clock: ManualClock,
    store: Store,
    tenant: Tenant,
}

impl Live {
    fn new(grace_secs: u64) -> Live {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(START);
        let store = Store::open(Live::config(dir.path(), &clock, grace_secs)).expect("open");
        let tenant = store
            .ensure_environment("Development")
            .expect("env")
            .0
            .tenant();
        for id in ["ada", "bob"] {
            store
                .upsert(&tenant, SubscriberInput::new(id), None)
                .expect("create");
        }
        Live {
            dir,
            clock,
            store,
            tenant,
        }
    }

    fn config(dir: &std::path::Path, clock: &ManualClock, grace_secs: u64) -> Config {
        config(dir, clock)
            .durability(Durability::Durable)
            .background_expiry(false)
            .connection_lease_secs(30)
            .disconnect_grace(Duration::from_secs(grace_secs))
    }

    fn at(&self, millis: u64) -> Timestamp {
        Timestamp::from_millis(START.as_millis() + millis)
    }

    fn advance(&self, millis: u64) {
        self.clock.advance(Duration::from_millis(millis));
    }

    fn get(&self, id: &str) -> Subscriber {
        self.store.get(&self.tenant, id).expect("get")
    }

    fn connect(&self, id: &str) -> subscriber_store::Connection {
        self.store.connect(&self.tenant, id).expect("connect")
    }

    /// The readable events once there are at least `n` (or after 10 s):
    /// an event is readable once durable, and the offline write of a
    /// dropped guard is made durable by the commit thread, awaited by nobody.
    fn events(&self, n: usize) -> Vec<PresenceEvent> {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let page = self.store.events(&self.tenant, None, 1000).expect("events");
            if page.events.len() >= n || Instant::now() > give_up {
                return page.events;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A durable write of its own: its flush round covers every write
    /// committed before it, whose events are then readable.
    fn sync(&self) {
        self.store
            .upsert(&self.tenant, SubscriberInput::new("sync"), None)
            .expect("a durable write");
    }

    fn flips(&self, n: usize) -> Vec<(String, bool, EventCause)> {
        self.events(n)
            .into_iter()
            .map(|e| (e.subscriber_id, e.is_online, e.cause))
            .collect()
    }
}

#[test]
fn a_subscriber_is_online_while_one_of_its_connections_is_open() {
    let live = Live::new(0);
    let first = live.connect("ada");
    let doc = live.get("ada");
    assert_eq!(doc.is_online, Some(true));
    assert_eq!(doc.version.0, 1);
    // The connection's lease runs while it is open.
    assert_eq!(doc.online_expires_at(), Some(live.at(30_000)));
    let second = live.connect("ada");
    assert_eq!(live.store.open_connections(), 2);
    // A further connection writes nothing.
    assert_eq!(live.get("ada").version.0, 1);

    live.advance(1_000);
    drop(first);
    let doc = live.get("ada");
    assert_eq!(doc.is_online, Some(true), "one connection is still open");
    assert_eq!(doc.version.0, 1);
    assert_eq!(live.store.open_connections(), 1);

    live.advance(1_000);
    drop(second);
    let doc = live.get("ada");
    assert_eq!(doc.is_online, Some(false));
    assert_eq!(doc.last_online_at, Some(live.at(2_000)), "the close time");
    assert_eq!(doc.online_expires_at(), None);
    assert_eq!(doc.version.0, 2);
    assert_eq!(live.store.open_connections(), 0);
    // Another subscriber was never touched.
    assert_eq!(live.get("bob").is_online, None);
}

#[test]
fn the_feed_holds_exactly_the_two_flips_with_their_causes() {
    let live = Live::new(0);
    let a = live.connect("ada");
    let b = live.connect("ada");
    // Renewals every third of the lease write no event.
    for _ in 0..3 {
        live.advance(10_000);
        assert_eq!(live.store.tend_connections().expect("tend"), 1);
    }
    drop(a);
    live.advance(500);
    drop(b);
    let events = live.events(2);
    assert_eq!(
        live.flips(2),
        [
            ("ada".to_owned(), true, EventCause::Connected),
            ("ada".to_owned(), false, EventCause::Disconnected),
        ]
    );
    let offline = &events[1];
    assert_eq!(offline.last_online_at, Some(live.at(30_500)));
    assert_eq!(offline.at, live.at(30_500));
    assert_eq!(offline.version, live.get("ada").version);
    // Three renewals moved the lease and the version, not the presence.
    assert_eq!(events[0].version.0, 1);
    assert_eq!(offline.version.0, 5);
}

#[test]
fn a_reconnect_within_the_grace_changes_nothing_and_the_grace_then_ends_it() {
    let live = Live::new(5);
    let tab = live.connect("ada");
    live.advance(1_000);
    drop(tab);
    live.advance(4_000);
    assert_eq!(live.store.tend_connections().expect("tend"), 0);
    let before = live.get("ada");
    assert_eq!(before.is_online, Some(true), "within the grace");

    // A page reload: the new connection finds the presence held.
    let reloaded = live.connect("ada");
    live.advance(10_000);
    assert_eq!(live.get("ada").version, before.version);
    assert_eq!(live.flips(1).len(), 1);

    // Closed for good: online through the grace, then offline with the
    // close time.
    drop(reloaded);
    let closed_at = live.at(15_000);
    live.advance(4_999);
    live.store.tend_connections().expect("tend");
    assert_eq!(live.get("ada").is_online, Some(true));
    live.advance(1);
    live.store.tend_connections().expect("tend");
    let doc = live.get("ada");
    assert_eq!(doc.is_online, Some(false));
    assert_eq!(doc.last_online_at, Some(closed_at));
    assert_eq!(
        live.flips(2),
        [
            ("ada".to_owned(), true, EventCause::Connected),
            ("ada".to_owned(), false, EventCause::Disconnected),
        ]
    );
}

#[test]
fn when_renewals_stop_the_lease_runs_out_at_the_last_renewal() {
    let live = Live::new(0);
    let tab = live.connect("ada");
    live.advance(10_000);
    live.store.tend_connections().expect("renewal");
    // Renewals stop (a hung or dead process): 30 s after the last one the
    // subscriber reads offline, its last renewal the last time online.
    live.advance(29_999);
    assert_eq!(live.get("ada").is_online, Some(true));
    live.advance(1);
    let doc = live.get("ada");
    assert_eq!(doc.is_online, Some(false));
    assert_eq!(doc.last_online_at, Some(live.at(10_000)));
    assert_eq!(doc.updated_at, live.at(40_000), "the deadline");
    assert_eq!(live.store.expire_due(10).expect("expire"), 1);
    assert_eq!(live.get("ada"), doc);
    // The close of a connection whose lease ran out writes nothing more.
    drop(tab);
    assert_eq!(live.get("ada"), doc);
    assert_eq!(
        live.flips(2),
        [
            ("ada".to_owned(), true, EventCause::Connected),
            ("ada".to_owned(), false, EventCause::Expired),
        ]
    );
}

#[test]
fn a_restart_ends_the_previous_runs_connections_at_their_last_renewal() {
    let mut live = Live::new(0);
    let ada = live.connect("ada");
    live.advance(10_000);
    live.store.tend_connections().expect("renewal");
    live.advance(5_000);
    let bob = live.connect("bob");
    live.advance(2_000);
    // The store goes away with both connections open (as in a crash: the
    // guards outlive it and close nothing), and opens again at 17 s.
    live.store.flush().expect("flush");
    let placeholder = Store::open(Config::temporary()).expect("temporary store");
    drop(std::mem::replace(&mut live.store, placeholder));
    live.store = open_again(&live);
    for (id, last_renewal) in [("ada", 10_000), ("bob", 15_000)] {
        let doc = live.get(id);
        assert_eq!(doc.is_online, Some(false), "{id}");
        assert_eq!(doc.last_online_at, Some(live.at(last_renewal)), "{id}");
        assert_eq!(doc.updated_at, live.at(17_000), "{id}: ended at the open");
    }
    assert_eq!(live.store.expire_due(10).expect("expire"), 2);
    drop((ada, bob));
    let flips = live.flips(4);
    assert_eq!(flips.len(), 4);
    assert!(
        flips[2..]
            .iter()
            .all(|(_, online, cause)| !online && *cause == EventCause::Expired)
    );
    assert_eq!(live.store.open_connections(), 0);
    // The new run's connections work as ever.
    let again = live.connect("ada");
    assert_eq!(live.get("ada").is_online, Some(true));
    drop(again);
    assert_eq!(live.get("ada").is_online, Some(false));
}

/// Opens the store on `live`'s directory, waiting while the dropped one's
/// sled still holds its lock.
fn open_again(live: &Live) -> Store {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(Live::config(live.dir.path(), &live.clock, 0)) {
            Ok(store) => return store,
            Err(e) if Instant::now() < give_up => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

#[test]
fn an_explicit_presence_write_wins_until_the_next_connection_change() {
    let live = Live::new(0);
    let tab = live.connect("ada");
    live.store
        .set_online(&live.tenant, "ada", false, None)
        .expect("PATCH offline");
    // The renewal finds the presence no longer held: nothing is written.
    live.advance(10_000);
    assert_eq!(live.store.tend_connections().expect("tend"), 1);
    let doc = live.get("ada");
    assert_eq!(doc.is_online, Some(false));
    assert_eq!(doc.version.0, 2);
    // A new connection is a change: online again.
    let other = live.connect("ada");
    assert_eq!(live.get("ada").is_online, Some(true));
    drop(tab);
    drop(other);
    assert_eq!(live.get("ada").is_online, Some(false));
    let causes: Vec<EventCause> = live.events(4).iter().map(|e| e.cause).collect();
    assert_eq!(
        causes,
        [
            EventCause::Connected,
            EventCause::Write,
            EventCause::Connected,
            EventCause::Disconnected
        ]
    );
}

#[test]
fn a_connection_to_a_missing_subscriber_is_refused_and_not_counted() {
    let live = Live::new(0);
    assert!(matches!(
        live.store.connect(&live.tenant, "nobody"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        live.store.connect(&live.tenant, ""),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(live.store.open_connections(), 0);
    assert!(live.events(0).is_empty());
}

#[test]
fn an_out_of_range_connection_lease_is_refused_at_open() {
    for bad in [0, 86_401] {
        let opened = Store::open(Config::temporary().connection_lease_secs(bad));
        assert!(matches!(opened, Err(Error::InvalidInput { .. })), "{bad}");
    }
}

#[test]
fn many_threads_connecting_and_closing_leave_exact_counts() {
    let live = Arc::new(Live::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                for round in 0..50 {
                    let id = if (t + round) % 2 == 0 { "ada" } else { "bob" };
                    let a = live.connect(id);
                    let b = live.connect(id);
                    drop(a);
                    drop(b);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(live.store.open_connections(), 0);
    live.sync();
    for id in ["ada", "bob"] {
        let doc = live.get(id);
        assert_eq!(doc.is_online, Some(false), "{id}");
        // Every event of a subscriber alternates: on, off, on, off...
        let mine: Vec<bool> = live
            .events(0)
            .into_iter()
            .filter(|e| e.subscriber_id == id)
            .map(|e| e.is_online)
            .collect();
        assert!(!mine.is_empty());
        assert!(
            mine.iter().enumerate().all(|(i, on)| *on == (i % 2 == 0)),
            "{id}: {mine:?}"
        );
    }
}
