//! A quick measurement of the presence write through the embedded store:
//! relaxed and durable modes, 1/8/64 writer threads, random subscribers.
//! Run with `cargo bench -p subscriber-bench --bench presence_write`. Prints writes/s and, for
//! durable mode, writes per flush round.

use std::time::{Duration, Instant};

use subscriber_store::{
    Command, Config, Durability, Idempotency, IdempotencyKey, Store, SubscriberInput, Tenant,
};

const SUBSCRIBERS: usize = 10_000;

fn setup(mode: Durability) -> (tempfile::TempDir, Store, Tenant) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed)).expect("open");
    let org = store.create_organization("bench").expect("org");
    let tenant = store
        .create_environment(org.id, "bench")
        .expect("env")
        .tenant();
    for i in 0..SUBSCRIBERS {
        store
            .upsert(&tenant, SubscriberInput::new(format!("sub-{i}")), None)
            .expect("create");
    }
    store.flush().expect("flush");
    drop(store);
    let store = Store::open(Config::new(dir.path()).durability(mode)).expect("reopen");
    (dir, store, tenant)
}

fn run(store: &Store, tenant: Tenant, threads: usize, per_thread: usize, keyed: bool) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                for n in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = format!("sub-{}", x % SUBSCRIBERS as u64);
                    if keyed {
                        let key = IdempotencyKey::new(format!("{t}-{n}")).expect("key");
                        let command = Command::SetOnline {
                            subscriber_id: id,
                            online: n % 2 == 0,
                        };
                        store
                            .execute_once(&tenant, command, None, &Idempotency::new(key))
                            .expect("keyed presence write");
                    } else {
                        store
                            .set_online(&tenant, &id, n % 2 == 0, None)
                            .expect("presence write");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    start.elapsed()
}

fn main() {
    println!("mode     key threads  writes  writes/s  writes/flush");
    for (mode, name, total) in [
        (Durability::Relaxed, "relaxed", 200_000),
        (Durability::Durable, "durable", 4_000),
    ] {
        for (threads, keyed) in [1, 8, 64].into_iter().flat_map(|t| [(t, false), (t, true)]) {
            let total = if mode == Durability::Durable && threads == 1 {
                500
            } else {
                total
            };
            let (_dir, store, tenant) = setup(mode);
            let per_thread = total / threads;
            let rounds_before = store.flush_rounds();
            let elapsed = run(&store, tenant, threads, per_thread, keyed);
            let writes = per_thread * threads;
            let rounds = store.flush_rounds() - rounds_before;
            let per_flush = if rounds == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", writes as f64 / rounds as f64)
            };
            println!(
                "{name:8} {:3} {threads:7} {writes:7} {:9.0} {per_flush:>13}",
                if keyed { "yes" } else { "no" },
                writes as f64 / elapsed.as_secs_f64()
            );
            drop(store);
        }
    }
}
