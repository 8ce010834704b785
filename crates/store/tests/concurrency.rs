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
