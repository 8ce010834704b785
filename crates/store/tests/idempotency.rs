//! Exactly-once writes: replay, reuse with another request, concurrency,
//! expiry and purge, what is and is not recorded, scope.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::Fixture;
use subscriber_store::{
    Command, Entity, Error, Idempotency, IdempotencyKey, KeyProblem, SubscriberInput, Version,
};

fn once(key: &str) -> Idempotency {
    Idempotency::new(IdempotencyKey::new(key).expect("valid key"))
}

fn online(id: &str, online: bool) -> Command {
    Command::SetOnline {
        subscriber_id: id.into(),
        online,
    }
}

fn with_subscribers(ids: &[&str]) -> Fixture {
    let f = Fixture::new();
    for id in ids {
        f.store
            .upsert(&f.tenant, SubscriberInput::new(*id), None)
            .expect("create");
    }
    f
}

#[test]
fn same_key_same_request_executes_once_and_replays_identically() {
    let mut f = with_subscribers(&["u1"]);
    let key = once("k-1");
    let first = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("first");
    assert!(!first.replayed);
    assert_eq!(first.outcome.as_ref().expect("doc").version, Version(1));

    f.clock.advance(Duration::from_secs(30));
    let again = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.outcome, first.outcome);
    assert_eq!(again.executed_at, first.executed_at);
    assert_eq!(
        f.store.get(&f.tenant, "u1").expect("get").version,
        Version(1)
    );

    f.reopen();
    let after_restart = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("replay after reopen");
    assert!(after_restart.replayed);
    assert_eq!(after_restart.outcome, first.outcome);
    assert_eq!(
        f.store.get(&f.tenant, "u1").expect("get").version,
        Version(1)
    );
}

#[test]
fn replay_answers_what_happened_then_even_after_later_changes() {
    let f = with_subscribers(&["u1"]);
    let key = once("k");
    let first = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("first");
    f.store
        .set_online(&f.tenant, "u1", false, None)
        .expect("later write");
    f.store.delete(&f.tenant, "u1", None).expect("delete");
    let replay = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.outcome, first.outcome);
}

#[test]
fn same_key_with_another_request_is_refused_and_writes_nothing() {
    let f = with_subscribers(&["u1", "u2"]);
    let key = once("k");
    f.store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("first");
    let before = (
        f.store.get(&f.tenant, "u1").expect("u1"),
        f.store.get(&f.tenant, "u2").expect("u2"),
    );
    let others = [
        (online("u2", true), None),
        (online("u1", false), None),
        (online("u1", true), Some(Version(1).into())),
        (
            Command::Upsert {
                input: SubscriberInput::new("u1"),
                fail_if_exists: false,
            },
            None,
        ),
        (
            Command::Delete {
                subscriber_id: "u1".into(),
            },
            None,
        ),
    ];
    for (command, expected) in others {
        assert_eq!(
            f.store
                .execute_once(&f.tenant, command.clone(), expected.clone(), &key),
            Err(Error::IdempotencyKeyReused),
            "{command:?}"
        );
    }
    let after = (
        f.store.get(&f.tenant, "u1").expect("u1"),
        f.store.get(&f.tenant, "u2").expect("u2"),
    );
    assert_eq!(before, after);
}

#[test]
fn the_named_request_identifies_it_not_the_command() {
    let f = with_subscribers(&["u1"]);
    let key = IdempotencyKey::new("k").expect("key");
    let body = serde_json::json!({"isOnline": true, "extra": {"b": 1, "a": 2}});
    let a = Idempotency::for_request(key.clone(), &["PATCH", "/r", "u1"], &body);
    // The same body with its keys in another order is the same request.
    let reordered = serde_json::json!({"extra": {"a": 2, "b": 1}, "isOnline": true});
    let same = Idempotency::for_request(key.clone(), &["PATCH", "/r", "u1"], &reordered);
    let b = Idempotency::for_request(key, &["PATCH", "/other", "u1"], &body);
    f.store
        .execute_once(&f.tenant, online("u1", true), None, &a)
        .expect("first");
    assert_eq!(
        f.store
            .execute_once(&f.tenant, online("u1", true), None, &b),
        Err(Error::IdempotencyKeyReused)
    );
    assert!(
        f.store
            .execute_once(&f.tenant, online("u1", true), None, &same)
            .expect("replay")
            .replayed
    );
}

#[test]
fn sixty_four_threads_with_one_key_execute_once() {
    let f = with_subscribers(&["u1"]);
    let start = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let store = f.store.clone();
            let tenant = f.tenant;
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                store
                    .execute_once(&tenant, online("u1", true), None, &once("same"))
                    .expect("answer")
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    let first = &results[0].outcome;
    assert!(results.iter().all(|r| &r.outcome == first));
    assert_eq!(first.as_ref().expect("doc").version, Version(1));
    assert_eq!(
        f.store.get(&f.tenant, "u1").expect("get").version,
        Version(1)
    );
}

#[test]
fn expired_record_executes_afresh_and_purge_removes_old_records() {
    let f = with_subscribers(&["u1"]);
    for i in 0..10 {
        f.store
            .execute_once(
                &f.tenant,
                online("u1", i % 2 == 0),
                None,
                &once(&format!("k{i}")),
            )
            .expect("write");
    }
    assert_eq!(f.store.idempotency_record_count().expect("count"), 10);

    // Just before expiry the record still replays.
    f.clock.advance(Duration::from_secs(24 * 3600 - 1));
    let replay = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &once("k0"))
        .expect("replay");
    assert!(replay.replayed);

    // At expiry it is as if absent: executes again, __v moves.
    f.clock.advance(Duration::from_secs(1));
    let fresh = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &once("k0"))
        .expect("fresh");
    assert!(!fresh.replayed);
    assert_eq!(fresh.outcome.expect("doc").version, Version(11));

    // The fresh write purged a bounded batch on its way out; purge the rest.
    assert!(f.store.idempotency_record_count().expect("count") < 11);
    let purged = f.store.purge_expired(usize::MAX).expect("purge");
    assert!(purged > 0);
    // Only the fresh k0 record is left.
    assert_eq!(f.store.idempotency_record_count().expect("count"), 1);
    assert!(
        f.store
            .recorded(&f.tenant, &IdempotencyKey::new("k0").expect("key"))
            .expect("read")
            .is_some()
    );
    assert!(
        f.store
            .recorded(&f.tenant, &IdempotencyKey::new("k5").expect("key"))
            .expect("read")
            .is_none()
    );
}

#[test]
fn not_found_outcome_is_recorded_and_replayed() {
    let f = Fixture::new();
    let key = once("k");
    let first = f
        .store
        .execute_once(&f.tenant, online("ghost", true), None, &key)
        .expect("executed");
    assert_eq!(first.outcome, Err(Error::NotFound(Entity::Subscriber)));
    // The subscriber appears afterwards; the key still answers what happened then.
    f.store
        .upsert(&f.tenant, SubscriberInput::new("ghost"), None)
        .expect("create");
    let replay = f
        .store
        .execute_once(&f.tenant, online("ghost", true), None, &key)
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.outcome, Err(Error::NotFound(Entity::Subscriber)));
    assert_eq!(
        f.store.get(&f.tenant, "ghost").expect("get").version,
        Version(0)
    );
}

#[test]
fn version_conflict_and_already_exists_are_recorded() {
    let f = with_subscribers(&["u1"]);
    let conflict = f
        .store
        .execute_once(
            &f.tenant,
            online("u1", true),
            Some(Version(9).into()),
            &once("a"),
        )
        .expect("executed");
    assert_eq!(
        conflict.outcome,
        Err(Error::VersionConflict {
            expected: Version(9).into(),
            current: Some(Version(0))
        })
    );
    let create = Command::Upsert {
        input: SubscriberInput::new("u1"),
        fail_if_exists: true,
    };
    let exists = f
        .store
        .execute_once(&f.tenant, create.clone(), None, &once("b"))
        .expect("executed");
    assert_eq!(
        exists.outcome,
        Err(Error::AlreadyExists {
            current: Version(0)
        })
    );
    for (key, command, expected) in [
        ("a", online("u1", true), Some(Version(9).into())),
        ("b", create, None),
    ] {
        let replay = f
            .store
            .execute_once(&f.tenant, command, expected, &once(key))
            .expect("replay");
        assert!(replay.replayed, "{key}");
    }
}

#[test]
fn rejected_input_is_not_recorded_so_a_corrected_retry_executes() {
    let f = with_subscribers(&["u1"]);
    let key = once("k");
    let bad = f
        .store
        .execute_once(&f.tenant, online("", true), None, &key)
        .expect_err("invalid id");
    assert!(matches!(bad, Error::InvalidInput { .. }), "{bad:?}");
    assert_eq!(f.store.idempotency_record_count().expect("count"), 0);
    let good = f
        .store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("corrected");
    assert!(!good.replayed);
    assert_eq!(good.outcome.expect("doc").version, Version(1));
}

#[test]
fn keys_are_scoped_by_environment() {
    let f = with_subscribers(&["u1"]);
    let org = f.store.create_organization("other").expect("org");
    let b = f
        .store
        .create_environment(org.id, "B")
        .expect("env")
        .tenant();
    f.store
        .upsert(&b, SubscriberInput::new("u1"), None)
        .expect("create in B");
    let key = once("shared-key");
    f.store
        .execute_once(&f.tenant, online("u1", true), None, &key)
        .expect("A");
    let in_b = f
        .store
        .execute_once(&b, online("u1", true), None, &key)
        .expect("B");
    assert!(!in_b.replayed, "a key of environment A is unknown in B");
    assert_eq!(
        in_b.outcome.expect("doc").environment_id,
        b.environment_id()
    );
    assert!(
        f.store
            .recorded(&b, &IdempotencyKey::new("only-a").expect("key"))
            .expect("read")
            .is_none()
    );
}

#[test]
fn key_syntax_is_checked() {
    assert!(IdempotencyKey::new("a").is_ok());
    assert!(IdempotencyKey::new("~".repeat(255)).is_ok());
    assert!(IdempotencyKey::new("\"quoted-is-fine\"").is_ok());
    let cases = [
        (String::new(), KeyProblem::Empty),
        ("x".repeat(256), KeyProblem::TooLong),
        ("has space".into(), KeyProblem::NotVisibleAscii),
        ("tab\t".into(), KeyProblem::NotVisibleAscii),
        ("ünï".into(), KeyProblem::NotVisibleAscii),
        ("del\u{7f}".into(), KeyProblem::NotVisibleAscii),
    ];
    for (key, problem) in cases {
        assert_eq!(
            IdempotencyKey::new(key.clone()),
            Err(Error::InvalidIdempotencyKey(problem)),
            "{key:?}"
        );
    }
}

#[test]
fn concurrent_keyed_writes_share_transactions_and_each_is_recorded() {
    let ids = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let f = with_subscribers(&ids);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let store = f.store.clone();
            let tenant = f.tenant;
            std::thread::spawn(move || {
                (0..50)
                    .map(|n| {
                        let id = ids[(t + n) % ids.len()];
                        let key = format!("t{t}-{n}");
                        let done = store
                            .execute_once(&tenant, online(id, n % 2 == 0), None, &once(&key))
                            .expect("write");
                        assert!(!done.replayed);
                        (id, key, n % 2 == 0, done.outcome.expect("doc").version.0)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_subscriber: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    let mut all = Vec::new();
    for t in threads {
        for (id, key, on, v) in t.join().expect("thread") {
            by_subscriber.entry(id).or_default().push(v);
            all.push((id, key, on, v));
        }
    }
    for (id, mut versions) in by_subscriber {
        versions.sort_unstable();
        let current = f.store.get(&f.tenant, id).expect("get").version.0;
        assert_eq!(versions, (1..=current).collect::<Vec<_>>(), "{id}");
    }
    assert_eq!(f.store.idempotency_record_count().expect("count"), 32 * 50);
    for (id, key, on, v) in all {
        let replay = f
            .store
            .execute_once(&f.tenant, online(id, on), None, &once(&key))
            .expect("replay");
        assert!(replay.replayed);
        assert_eq!(replay.outcome.expect("doc").version.0, v);
    }
}

/// A clock that jumps a day ahead and back (an NTP correction) must not
/// leave the purge waiting for the far future: records written after the
/// correction are purged once they expire, by the writes that follow.
#[test]
fn purge_keeps_up_after_the_clock_jumps_ahead_and_back() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = subscriber_store::ManualClock::new(common::START);
    let store = subscriber_store::Store::open(
        common::config(dir.path(), &clock).idempotency_ttl(Duration::from_secs(1)),
    )
    .expect("open");
    let org = store.create_organization("Acme").expect("org");
    let tenant = store.create_environment(org.id, "D").expect("env").tenant();
    store
        .upsert(&tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    let write = |key: String| {
        store
            .execute_once(&tenant, online("u1", true), None, &once(&key))
            .expect("write");
    };
    write("before".into());
    clock.advance(Duration::from_secs(25 * 3600));
    write("during".into()); // purges with the clock a day ahead
    clock.set(common::START);
    for i in 0..150 {
        write(format!("after-{i}"));
    }
    assert!(store.idempotency_record_count().expect("count") >= 150);
    // Every record written after the correction has expired; 40 more
    // writes purge 4 each on their way out.
    clock.advance(Duration::from_secs(2));
    for i in 0..40 {
        write(format!("later-{i}"));
    }
    let left = store.idempotency_record_count().expect("count");
    assert!(
        left <= 42,
        "{left} records left: the purge stalled after the clock correction"
    );
}
