//! Delete: afterwards absent everywhere; a later create starts over.

mod common;

use common::Fixture;
use subscriber_store::{Entity, Error, SubscriberInput, Version};

#[test]
fn deleted_subscriber_is_absent() {
    let f = Fixture::new();
    let created = f
        .store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    f.store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    let last = f.store.delete(&f.tenant, "u1", None).expect("delete");
    assert_eq!(last.id, created.id);
    assert_eq!(last.version, Version(1));
    let missing = Err(Error::NotFound(Entity::Subscriber));
    assert_eq!(f.store.get(&f.tenant, "u1"), missing);
    assert_eq!(f.store.set_online(&f.tenant, "u1", false, None), missing);
    assert_eq!(f.store.delete(&f.tenant, "u1", None), missing);
}

#[test]
fn create_after_delete_starts_a_new_document() {
    let f = Fixture::new();
    let first = f
        .store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    f.store
        .set_online(&f.tenant, "u1", true, None)
        .expect("online");
    f.store.delete(&f.tenant, "u1", None).expect("delete");
    let second = f
        .store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create again");
    assert_eq!(second.version, Version(0));
    assert_ne!(second.id, first.id);
    assert_eq!(second.is_online, None);
}
