//! Closing and reopening the store keeps every document, tenant and key.

mod common;

use common::Fixture;
use subscriber_store::{Config, Data, Durability, Store, SubscriberInput, Version};

#[test]
fn reopen_keeps_documents_tenants_and_keys() {
    let mut f = Fixture::new();
    let key = f.store.issue_key(f.tenant.environment_id()).expect("key");
    let mut input = SubscriberInput::new("u1");
    input.data = Some(Some(
        Data::from_value(&serde_json::json!({"k": [1, 2]})).expect("data"),
    ));
    f.store.upsert(&f.tenant, input, None).expect("create");
    f.store
        .upsert(&f.tenant, SubscriberInput::new("u2"), None)
        .expect("create");
    let u1 = f
        .store
        .set_online(&f.tenant, "u1", false, None)
        .expect("offline");
    f.store.delete(&f.tenant, "u2", None).expect("delete");

    f.reopen();

    assert_eq!(f.store.get(&f.tenant, "u1").expect("u1 survives"), u1);
    assert!(f.store.get(&f.tenant, "u2").is_err());
    assert_eq!(
        f.store.resolve_key(&key.secret).expect("key survives"),
        f.tenant
    );
    assert_eq!(f.store.environments().expect("envs").len(), 1);
    let next = f
        .store
        .set_online(&f.tenant, "u1", true, None)
        .expect("write");
    assert_eq!(next.version, Version(2));
}

#[test]
fn durable_writes_survive_reopen_without_explicit_flush() {
    let dir = tempfile::tempdir().expect("dir");
    let (tenant, written) = {
        let store =
            Store::open(Config::new(dir.path()).durability(Durability::Durable)).expect("open");
        let org = store.create_organization("o").expect("org");
        let tenant = store.create_environment(org.id, "e").expect("env").tenant();
        store
            .upsert(&tenant, SubscriberInput::new("u"), None)
            .expect("create");
        let written = store.set_online(&tenant, "u", true, None).expect("online");
        assert!(
            store.flush_rounds() >= 1,
            "durable writes waited for a flush"
        );
        (tenant, written)
    };
    let store = Store::open(Config::new(dir.path())).expect("reopen");
    assert_eq!(store.get(&tenant, "u").expect("survives"), written);
}

#[test]
fn second_open_of_a_live_directory_is_a_clear_error() {
    let f = Fixture::new();
    let err = Store::open(Config::new(f.dir.path())).expect_err("locked");
    assert!(
        matches!(err, subscriber_store::Error::Storage(_)),
        "{err:?}"
    );
}

#[test]
fn corrupt_record_is_an_error_not_a_panic() {
    let f = Fixture::new();
    // Put garbage where a document would be, through a raw sled handle on a copy.
    drop(f.store);
    {
        let raw = sled::Config::new()
            .path(f.dir.path())
            .segment_size(4 * 1024 * 1024);
        // sled lets go of its lock a moment after the store is dropped.
        let db = (0..200)
            .find_map(|_| {
                let db = raw.open().ok();
                if db.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                db
            })
            .expect("raw sled");
        let tree = db.open_tree("subscribers").expect("tree");
        let mut key = f.tenant.environment_id().as_bytes().to_vec();
        key.extend_from_slice(b"broken");
        tree.insert(key, &[1u8, 0xff, 0xff, 0xff][..])
            .expect("insert");
        let mut key = f.tenant.environment_id().as_bytes().to_vec();
        key.extend_from_slice(b"future");
        tree.insert(key, &[200u8, 0][..]).expect("insert");
        db.flush().expect("flush");
    }
    let store = Store::open(common::config(f.dir.path(), &f.clock)).expect("reopen");
    for id in ["broken", "future"] {
        let err = store.get(&f.tenant, id).expect_err("corrupt");
        assert!(
            matches!(err, subscriber_store::Error::Corrupt(_)),
            "{err:?}"
        );
        let err = store
            .set_online(&f.tenant, id, true, None)
            .expect_err("corrupt");
        assert!(
            matches!(err, subscriber_store::Error::Corrupt(_)),
            "{err:?}"
        );
    }
}

#[test]
fn damaged_or_missing_database_is_refused_not_served_empty() {
    let mut f = Fixture::new();
    f.store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    f.reopen();
    let placeholder = Store::open(Config::temporary()).expect("temporary store");
    drop(std::mem::replace(&mut f.store, placeholder));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = f.dir.path().join("db");
    let good = std::fs::read(&log).expect("log");
    // Random bytes (sled may detect them, or read them as an empty log),
    // an empty log, and no log at all: never an empty store served as if new.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for damage in [Some(noise), Some(Vec::new()), None] {
        match &damage {
            Some(bytes) => std::fs::write(&log, bytes).expect("damage the log"),
            None => std::fs::remove_file(&log).expect("remove the log"),
        }
        let err = Store::open(common::config(f.dir.path(), &f.clock)).expect_err("damaged");
        assert!(
            matches!(err, subscriber_store::Error::Corrupt(_)),
            "{err:?}"
        );
        std::fs::write(&log, &good).expect("restore the log");
    }
    let store = Store::open(common::config(f.dir.path(), &f.clock)).expect("restored");
    assert!(store.get(&f.tenant, "u1").is_ok());
}
