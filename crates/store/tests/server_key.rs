//! SPEC 13 in the store: environments carry a public application
//! identifier (also the ones made before identifiers, upgraded at open),
//! API keys are kept sealed under the server key for the Inbox's HMAC
//! check (older keys sealed when they next authenticate), and the data
//! directory alone holds no key.

mod common;

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subscriber_store::{Config, Durability, Entity, Error, ManualClock, ServerKey, Store, rules};

fn server_key() -> ServerKey {
    ServerKey::from_bytes([42; 32])
}

fn open(dir: &Path, key: Option<ServerKey>) -> Store {
    let clock = ManualClock::new(common::START);
    let mut config = Config::new(dir)
        .durability(Durability::Durable)
        .clock(Arc::new(clock));
    if let Some(key) = key {
        config = config.server_key(key);
    }
    Store::open(config).expect("open")
}

/// What a customer's backend computes: lowercase hex HMAC-SHA256.
fn subscriber_hash(secret: &str, subscriber_id: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(subscriber_id.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Every file under `dir` (sled's log, blobs, conf, the identity file).
fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push(bytes);
        }
    }
    out
}

/// The store's sled database opened raw, as an older build left it.
fn raw_sled(dir: &Path) -> sled::Db {
    let raw = sled::Config::new().path(dir).segment_size(4 * 1024 * 1024);
    // sled lets go of its lock a moment after the store is dropped.
    (0..200)
        .find_map(|_| {
            let db = raw.open().ok();
            if db.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            db
        })
        .expect("raw sled")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn environments_get_distinct_url_safe_identifiers_found_by_lookup() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), None);
    let org = store.create_organization("Acme").expect("org");
    let a = store.create_environment(org.id, "Development").expect("a");
    let b = store.create_environment(org.id, "Production").expect("b");
    for env in [&a, &b] {
        assert_eq!(env.identifier.len(), 12, "{}", env.identifier);
        assert!(
            env.identifier
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{}",
            env.identifier
        );
        assert_eq!(
            store
                .environment_by_identifier(&env.identifier)
                .expect("found"),
            *env
        );
    }
    assert_ne!(a.identifier, b.identifier);
    let missing = Err(Error::NotFound(Entity::Environment));
    let long = "a".repeat(65);
    for unknown in ["", "nope-nope-no", "Ab/de", &long, "päp"] {
        assert_eq!(
            store.environment_by_identifier(unknown),
            missing,
            "{unknown:?}"
        );
    }
    // Stable: the same after a restart.
    drop(store);
    let store = open(dir.path(), None);
    assert_eq!(store.environment(a.id).expect("a").identifier, a.identifier);
    assert_eq!(
        store.environment_by_identifier(&b.identifier).expect("b"),
        b
    );
}

#[test]
fn environments_from_before_identifiers_get_one_at_open() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), None);
    let (env, _) = store.ensure_environment("Development").expect("env");
    drop(store);
    // Rewrite its record as the first format stored it (no identifier)
    // and drop its index entry, as a database of an older build holds.
    {
        let db = raw_sled(dir.path());
        let environments = db.open_tree("environments").expect("tree");
        let mut v1 = vec![1u8];
        v1.extend_from_slice(env.id.as_bytes());
        v1.extend_from_slice(env.organization_id.as_bytes());
        v1.push(env.name.len() as u8);
        v1.extend_from_slice(env.name.as_bytes());
        v1.push(5); // created_at, varint
        environments
            .insert(env.id.as_bytes(), v1)
            .expect("write format 1");
        db.open_tree("environment_identifiers")
            .expect("tree")
            .clear()
            .expect("clear");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), None);
    let upgraded = store.environment(env.id).expect("reads");
    assert_eq!(upgraded.identifier, rules::legacy_identifier(env.id));
    assert_ne!(upgraded.identifier, env.identifier);
    assert_eq!(
        store
            .environment_by_identifier(&upgraded.identifier)
            .expect("found by the identifier open wrote")
            .id,
        env.id
    );
    drop(store);
    // Written in format 2 at that open, and the same ever after.
    {
        let db = raw_sled(dir.path());
        let record = db
            .open_tree("environments")
            .expect("tree")
            .get(env.id.as_bytes())
            .expect("read")
            .expect("present");
        assert_eq!(record[0], 2);
    }
    let store = open(dir.path(), None);
    assert_eq!(
        store.environment(env.id).expect("reads").identifier,
        upgraded.identifier
    );
}

#[test]
fn a_subscriber_hash_made_with_any_key_of_the_environment_matches() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), Some(server_key()));
    let org = store.create_organization("Acme").expect("org");
    let a = store.create_environment(org.id, "A").expect("a");
    let b = store.create_environment(org.id, "B").expect("b");
    let first = store.issue_key(a.id).expect("key").secret;
    let second = "operator-chosen-key-0123456789";
    store.add_key(a.id, second).expect("add");
    let of_b = store.issue_key(b.id).expect("key b").secret;
    for secret in [first.as_str(), second] {
        let hash = subscriber_hash(secret, "user-1");
        assert!(
            store
                .subscriber_hash_matches(a.id, "user-1", &hash)
                .expect("check")
        );
        assert!(
            !store
                .subscriber_hash_matches(a.id, "user-2", &hash)
                .expect("check")
        );
        assert!(
            !store
                .subscriber_hash_matches(b.id, "user-1", &hash)
                .expect("check")
        );
    }
    let foreign = subscriber_hash(&of_b, "user-1");
    assert!(
        !store
            .subscriber_hash_matches(a.id, "user-1", &foreign)
            .expect("check")
    );
    assert!(
        !store
            .subscriber_hash_matches(a.id, "user-1", &[])
            .expect("check")
    );
    // A revoked key's hashes stop matching.
    let id = store
        .keys(Some(a.id))
        .expect("keys")
        .into_iter()
        .find(|k| first.ends_with(&k.hint))
        .expect("the first key")
        .id;
    store.revoke_key(id).expect("revoke");
    let hash = subscriber_hash(&first, "user-1");
    assert!(
        !store
            .subscriber_hash_matches(a.id, "user-1", &hash)
            .expect("check")
    );
    // Another server key opens none of them.
    drop(store);
    let other = open(dir.path(), Some(ServerKey::from_bytes([7; 32])));
    let hash = subscriber_hash(second, "user-1");
    assert!(
        !other
            .subscriber_hash_matches(a.id, "user-1", &hash)
            .expect("check")
    );
    drop(other);
    // Nor does a store without one.
    let none = open(dir.path(), None);
    assert!(
        !none
            .subscriber_hash_matches(a.id, "user-1", &hash)
            .expect("check")
    );
    assert!(none.resolve_key(second).is_ok());
}

#[test]
fn keys_made_without_a_server_key_are_sealed_when_they_next_authenticate() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), None);
    let (env, _) = store.ensure_environment("Development").expect("env");
    let secret = store.issue_key(env.id).expect("key").secret;
    let hash = subscriber_hash(&secret, "user-1");
    drop(store);

    let store = open(dir.path(), Some(server_key()));
    // Only a digest so far: nothing to check the hash against.
    assert!(
        !store
            .subscriber_hash_matches(env.id, "user-1", &hash)
            .expect("check")
    );
    let tenant = store.resolve_key(&secret).expect("authenticates");
    assert_eq!(tenant.environment_id(), env.id);
    assert!(
        store
            .subscriber_hash_matches(env.id, "user-1", &hash)
            .expect("check")
    );
    // Kept across a restart (the close flushes it).
    drop(store);
    let store = open(dir.path(), Some(server_key()));
    assert!(
        store
            .subscriber_hash_matches(env.id, "user-1", &hash)
            .expect("check")
    );
    // An operator's key given again at start is sealed at once too.
    drop(store);
    let plain = open(dir.path(), None);
    let given = "provisioned-at-every-start-0123";
    plain
        .add_key(env.id, given)
        .expect("add without a server key");
    drop(plain);
    let store = open(dir.path(), Some(server_key()));
    store.add_key(env.id, given).expect("add again");
    let hash = subscriber_hash(given, "user-9");
    assert!(
        store
            .subscriber_hash_matches(env.id, "user-9", &hash)
            .expect("check")
    );
}

#[test]
fn the_data_directory_alone_holds_no_api_key() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), Some(server_key()));
    let (env, _) = store.ensure_environment("Development").expect("env");
    let issued = store.issue_key(env.id).expect("key").secret;
    let given = "operator-chosen-key-0123456789";
    store.add_key(env.id, given).expect("add");
    // And one sealed lazily.
    drop(store);
    let plain = open(dir.path(), None);
    let late = plain.issue_key(env.id).expect("key").secret;
    drop(plain);
    let store = open(dir.path(), Some(server_key()));
    store.resolve_key(&late).expect("authenticates");
    let hash = subscriber_hash(&late, "u");
    assert!(
        store
            .subscriber_hash_matches(env.id, "u", &hash)
            .expect("sealed")
    );
    store.flush().expect("flush");
    let copy = files(dir.path());
    assert!(!copy.is_empty());
    for secret in [issued.as_str(), given, late.as_str()] {
        assert!(
            !copy.iter().any(|file| contains(file, secret.as_bytes())),
            "the data directory holds a key in the clear"
        );
    }
    // Nor the server key.
    let text = server_key().to_hex();
    assert!(!copy.iter().any(|file| contains(file, &[42; 32])));
    assert!(!copy.iter().any(|file| contains(file, text.as_bytes())));
}
