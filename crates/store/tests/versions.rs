//! Version preconditions: a write that names another version changes nothing.

mod common;

use common::Fixture;
use subscriber_store::{Entity, Error, SubscriberInput, Version};

#[test]
fn matching_version_applies() {
    let f = Fixture::new();
    f.store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    let doc = f
        .store
        .set_online(&f.tenant, "u1", true, Some(Version(0).into()))
        .expect("matches");
    assert_eq!(doc.version, Version(1));
    let doc = f
        .store
        .upsert(
            &f.tenant,
            SubscriberInput::new("u1"),
            Some(Version(1).into()),
        )
        .expect("matches");
    assert_eq!(doc.version, Version(2));
    f.store
        .delete(&f.tenant, "u1", Some(Version(2).into()))
        .expect("matches");
}

#[test]
fn stale_version_is_a_conflict_with_the_current_version() {
    let f = Fixture::new();
    f.store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    f.store.set_online(&f.tenant, "u1", true, None).expect("v1");
    let before = f.store.get(&f.tenant, "u1").expect("get");
    let conflict = Err(Error::VersionConflict {
        expected: Version(0).into(),
        current: Some(Version(1)),
    });
    assert_eq!(
        f.store
            .set_online(&f.tenant, "u1", false, Some(Version(0).into())),
        conflict
    );
    let mut input = SubscriberInput::new("u1");
    input.first_name = Some(Some("X".into()));
    assert_eq!(
        f.store.upsert(&f.tenant, input, Some(Version(0).into())),
        conflict
    );
    assert_eq!(
        f.store.delete(&f.tenant, "u1", Some(Version(0).into())),
        conflict
    );
    assert_eq!(f.store.get(&f.tenant, "u1").expect("get"), before);
}

#[test]
fn expected_version_on_missing_subscriber() {
    let f = Fixture::new();
    // A create that names a version finds nothing at that version.
    assert_eq!(
        f.store.upsert(
            &f.tenant,
            SubscriberInput::new("u1"),
            Some(Version(0).into())
        ),
        Err(Error::VersionConflict {
            expected: Version(0).into(),
            current: None
        })
    );
    // The presence write and delete report the missing subscriber first.
    assert_eq!(
        f.store
            .set_online(&f.tenant, "u1", true, Some(Version(0).into())),
        Err(Error::NotFound(Entity::Subscriber))
    );
    assert_eq!(
        f.store.delete(&f.tenant, "u1", Some(Version(0).into())),
        Err(Error::NotFound(Entity::Subscriber))
    );
    assert!(f.store.get(&f.tenant, "u1").is_err());
}
