//! The presence write: isOnline, lastOnlineAt, updatedAt and __v rules.

mod common;

use std::time::Duration;

use common::Fixture;
use subscriber_store::{Entity, Error, SubscriberInput, Version};

fn fixture_with(id: &str) -> Fixture {
    let f = Fixture::new();
    f.store
        .upsert(&f.tenant, SubscriberInput::new(id), None)
        .expect("create");
    f
}

#[test]
fn going_online_sets_flag_and_keeps_last_online_at_unset() {
    let f = fixture_with("u1");
    f.clock.advance(Duration::from_secs(1));
    let doc = f
        .store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    assert_eq!(doc.is_online, Some(true));
    assert_eq!(doc.last_online_at, None);
    assert_eq!(doc.updated_at, f.ms(1_000));
    assert_eq!(doc.version, Version(1));
}

#[test]
fn going_offline_stamps_last_online_at() {
    let f = fixture_with("u1");
    f.store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    f.clock.advance(Duration::from_secs(60));
    let doc = f
        .store
        .set_online(&f.tenant, "u1", false, None)
        .expect("offline");
    assert_eq!(doc.is_online, Some(false));
    assert_eq!(doc.last_online_at, Some(f.ms(60_000)));
    assert_eq!(doc.version, Version(2));
}

#[test]
fn first_offline_write_on_never_set_presence_stamps_last_online_at() {
    let f = fixture_with("u1");
    f.clock.advance(Duration::from_secs(3));
    let doc = f
        .store
        .set_online(&f.tenant, "u1", false, None)
        .expect("offline");
    assert_eq!(doc.last_online_at, Some(f.ms(3_000)));
}

#[test]
fn offline_twice_keeps_last_online_at() {
    let f = fixture_with("u1");
    f.store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    f.clock.advance(Duration::from_secs(10));
    f.store
        .set_online(&f.tenant, "u1", false, None)
        .expect("offline");
    f.clock.advance(Duration::from_secs(50));
    let doc = f
        .store
        .set_online(&f.tenant, "u1", false, None)
        .expect("offline again");
    assert_eq!(doc.last_online_at, Some(f.ms(10_000)));
    assert_eq!(doc.updated_at, f.ms(60_000));
    assert_eq!(doc.version, Version(3));
}

#[test]
fn going_online_keeps_previous_last_online_at() {
    let f = fixture_with("u1");
    f.clock.advance(Duration::from_secs(10));
    f.store
        .set_online(&f.tenant, "u1", false, None)
        .expect("offline");
    f.clock.advance(Duration::from_secs(10));
    let doc = f
        .store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    assert_eq!(doc.last_online_at, Some(f.ms(10_000)));
    assert_eq!(doc.is_online, Some(true));
}

#[test]
fn presence_write_returns_what_get_reads() {
    let f = fixture_with("u1");
    let written = f
        .store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    assert_eq!(f.store.get(&f.tenant, "u1").expect("get"), written);
}

#[test]
fn presence_write_to_missing_subscriber_is_not_found() {
    let f = Fixture::new();
    assert_eq!(
        f.store.set_online(&f.tenant, "ghost", true, None),
        Err(Error::NotFound(Entity::Subscriber))
    );
    assert!(f.store.get(&f.tenant, "ghost").is_err());
}

#[test]
fn presence_write_with_invalid_id_is_invalid_input() {
    let f = Fixture::new();
    let err = f
        .store
        .set_online(&f.tenant, "", true, None)
        .expect_err("empty id");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
}

#[test]
fn times_never_go_backwards_when_the_clock_steps_back() {
    let f = fixture_with("u1");
    f.clock.advance(Duration::from_secs(60));
    let offline = f
        .store
        .set_online(&f.tenant, "u1", false, None)
        .expect("v1");
    assert_eq!(offline.last_online_at, Some(f.ms(60_000)));
    // The wall clock is corrected by a minute and a half.
    f.clock.set(subscriber_store::Timestamp::from_millis(
        common::START.as_millis() - 30_000,
    ));
    let online = f.store.set_online(&f.tenant, "u1", true, None).expect("v2");
    assert!(online.updated_at >= offline.updated_at, "{online:?}");
    let offline_again = f
        .store
        .set_online(&f.tenant, "u1", false, None)
        .expect("v3");
    assert!(offline_again.last_online_at >= offline.last_online_at);
    assert!(offline_again.updated_at >= online.updated_at);
    let upserted = f
        .store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("v4");
    assert!(upserted.updated_at >= offline_again.updated_at);
    assert!(upserted.created_at <= upserted.updated_at);
    assert_eq!(upserted.version, Version(4));
}
