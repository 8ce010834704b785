//! The write path stopped or failed at named steps (the `fail` crate's
//! failpoints, compiled in for this crate's tests). Each test holds a
//! `FailScenario`, which serialises them: failpoints are process-wide.

use std::sync::Arc;
use std::time::{Duration, Instant};

use subscriber_store::{
    Command, Config, Durability, Idempotency, IdempotencyKey, Store, SubscriberInput, Tenant,
    Version,
};

fn durable_store(dir: &std::path::Path) -> (Store, Tenant) {
    let store = Store::open(Config::new(dir).durability(Durability::Durable)).expect("open");
    let org = store.create_organization("Acme").expect("org");
    let tenant = store
        .create_environment(org.id, "Development")
        .expect("env")
        .tenant();
    store
        .upsert(&tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    (store, tenant)
}

fn online(online: bool) -> Command {
    Command::SetOnline {
        subscriber_id: "u1".into(),
        online,
    }
}

fn key(k: &str) -> Idempotency {
    Idempotency::new(IdempotencyKey::new(k).expect("key"))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A writer has committed its write and record and released the key's lock,
/// but not yet waited for the disk: a replay that arrives then must still
/// answer only once the write is durable (a flush round must run for it).
#[test]
fn a_replay_waits_for_the_write_it_reports_to_be_durable() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("dir");
    let (store, tenant) = durable_store(dir.path());
    let store = Arc::new(store);
    let rounds_before = store.flush_rounds();

    fail::cfg("execute_once::before_durable", "pause").expect("failpoint");
    let writer = {
        let (store, tenant) = (Arc::clone(&store), tenant);
        std::thread::spawn(move || store.execute_once(&tenant, online(true), None, &key("k")))
    };
    let record_key = IdempotencyKey::new("k").expect("key");
    wait_until("the writer's record is visible", || {
        store
            .recorded(&tenant, &record_key)
            .expect("read")
            .is_some()
    });
    assert_eq!(store.flush_rounds(), rounds_before, "no round ran yet");

    let replay = store
        .execute_once(&tenant, online(true), None, &key("k"))
        .expect("replay");
    assert!(replay.replayed);
    assert!(
        store.flush_rounds() > rounds_before,
        "the replay answered before any flush round covered the write it reports"
    );

    fail::remove("execute_once::before_durable");
    let first = writer.join().expect("writer").expect("write");
    assert_eq!(first.outcome, replay.outcome);
    scenario.teardown();
}

/// A flush round fails (fdatasync error): the writer gets a storage error,
/// the store reports that it cannot write until it has reopened its
/// database, and then a retry with the same key is answered (replayed if
/// the write reached the disk, else executed) instead of the old error.
#[test]
fn a_failed_flush_round_does_not_condemn_the_retries() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("dir");
    let (store, tenant) = durable_store(dir.path());

    fail::cfg("durability::sync", "1*return").expect("failpoint");
    let failed = store.execute_once(&tenant, online(true), None, &key("k"));
    assert!(
        matches!(&failed, Err(subscriber_store::Error::Storage(m)) if m.contains("injected")),
        "{failed:?}"
    );

    // Retries of the same key: the first after the failure reopens the
    // database; none keeps answering the old error.
    let retry = store
        .execute_once(&tenant, online(true), None, &key("k"))
        .expect("the retry is answered");
    let doc = retry.outcome.expect("document");
    assert_eq!(doc.is_online, Some(true));
    assert!(doc.version == Version(1), "{doc:?}");
    store.check_writable().expect("writable again");
    let again = store
        .execute_once(&tenant, online(true), None, &key("k"))
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.outcome, Ok(doc));
    // Unrelated writes work too, and everything survives a reopen.
    store.set_online(&tenant, "u1", false, None).expect("write");
    drop(store);
    let reopened = Store::open(Config::new(dir.path())).expect("reopen");
    assert_eq!(
        reopened.get(&tenant, "u1").expect("get").version,
        Version(2)
    );
    scenario.teardown();
}
