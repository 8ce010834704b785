//! Concurrent writers on one subscriber never lose an update, and durable
//! writers share flushes.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use subscriber_store::{Config, Durability, Store, SubscriberInput, Version};

#[test]
fn eight_threads_times_500_presence_writes_get_every_version_once() {
    let f = common::Fixture::new();
    f.store
        .upsert(&f.tenant, SubscriberInput::new("hot"), None)
        .expect("create");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = f.store.clone();
            let tenant = f.tenant;
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| {
                        store
                            .set_online(&tenant, "hot", (t + i) % 2 == 0, None)
                            .expect("write")
                            .version
                            .0
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for handle in threads {
        let versions = handle.join().expect("thread");
        // Each writer sees its own versions rise.
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        for v in versions {
            assert!(seen.insert(v), "version {v} returned twice");
        }
    }
    assert_eq!(seen, (1..=4000).collect::<BTreeSet<u64>>());
    assert_eq!(
        f.store.get(&f.tenant, "hot").expect("get").version,
        Version(4000)
    );
}

#[test]
fn durable_concurrent_writers_share_flushes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(Config::new(dir.path()).durability(Durability::Durable)).expect("open");
    let org = store.create_organization("o").expect("org");
    let tenant = store.create_environment(org.id, "e").expect("env").tenant();
    for i in 0..16 {
        store
            .upsert(&tenant, SubscriberInput::new(format!("s{i}")), None)
            .expect("create");
    }
    let rounds_before = store.flush_rounds();
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..25 {
                    store
                        .set_online(&tenant, &format!("s{i}"), n % 2 == 0, None)
                        .expect("write");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let rounds = store.flush_rounds() - rounds_before;
    let writes = 16 * 25;
    eprintln!("{writes} durable writes took {rounds} flush rounds");
    assert!(rounds >= 1);
    assert!(
        rounds < writes,
        "group commit should share flushes: {rounds} rounds for {writes} writes"
    );
}

/// Creates, presence writes and deletes racing on one subscriber with the
/// real clock: every document returned has `createdAt <= updatedAt`, and
/// along the versions of one incarnation (one `_id`) times never go back.
#[test]
fn mixed_writers_never_see_times_go_backwards() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed)).expect("open");
    let org = store.create_organization("Acme").expect("org");
    let tenant = store.create_environment(org.id, "D").expect("env").tenant();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut docs = Vec::new();
                for i in 0..3000 {
                    let result = match (t + i) % 5 {
                        0 => store.delete(&tenant, "hot", None),
                        1 | 2 => store.upsert(&tenant, SubscriberInput::new("hot"), None),
                        _ => store.set_online(&tenant, "hot", i % 2 == 0, None),
                    };
                    // A delete returns the last document; misses are 404s.
                    if let Ok(doc) = result {
                        docs.push(doc);
                    }
                }
                docs
            })
        })
        .collect();
    let mut by_incarnation: std::collections::BTreeMap<_, Vec<_>> = Default::default();
    for t in threads {
        for doc in t.join().expect("writer") {
            assert!(doc.created_at <= doc.updated_at, "{doc:?}");
            by_incarnation.entry(doc.id).or_default().push(doc);
        }
    }
    for docs in by_incarnation.values_mut() {
        docs.sort_by_key(|d| d.version);
        for pair in docs.windows(2) {
            assert!(pair[0].updated_at <= pair[1].updated_at, "{pair:?}");
            assert!(pair[0].last_online_at <= pair[1].last_online_at, "{pair:?}");
        }
    }
}
