//! Embedded presence writes in relaxed mode against raw sled on the same
//! documents: (a) get, decode, modify, encode, insert; (b) compare_and_swap.
//! Random subscriber per write; 1, 2 and 64 writer threads; our store with
//! and without an idempotency key; then keyed writes whose records expire
//! after 1 s (as fast as they are written: every write purges) against
//! records kept. Each measurement runs in its own process.
//!
//! `embedded [subscribers] [seconds] [reps]` prints a markdown table.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use subscriber_bench::{
    Rng, decode, document, encode, measure_in_child, median, subscriber_id, timed,
};
use subscriber_store::{
    Command, Config, Durability, Idempotency, IdempotencyKey, Store, Timestamp,
};

const VARIANTS: [&str; 4] = ["raw-rmw", "raw-cas", "ours", "ours-key"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("one") {
        let threads = args[2].parse().unwrap();
        let subscribers = args[3].parse().unwrap();
        let millis = args[4].parse().unwrap();
        let run = one(
            &args[1],
            threads,
            subscribers,
            Duration::from_millis(millis),
        );
        println!("{} {}", run.ops, run.seconds);
        return;
    }
    let subscribers: u64 = args.first().map_or(100_000, |a| a.parse().unwrap());
    let seconds: f64 = args.get(1).map_or(2.0, |a| a.parse().unwrap());
    let reps: usize = args.get(2).map_or(3, |a| a.parse().unwrap());
    println!(
        "| writers | raw sled get+insert (w/s) | raw sled CAS (w/s) | ours, no key (w/s) | no key / CAS | ours, with key (w/s) | key / CAS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for threads in [1usize, 2, 64] {
        let mut rates = Vec::new();
        for variant in VARIANTS {
            let samples = (0..reps)
                .map(|_| {
                    let v = measure_in_child(variant, threads, subscribers, seconds);
                    v[0] / v[1]
                })
                .collect();
            rates.push(median(samples));
        }
        println!(
            "| {threads} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0} | {:.0}% |",
            rates[0],
            rates[1],
            rates[2],
            100.0 * rates[2] / rates[1],
            rates[3],
            100.0 * rates[3] / rates[1]
        );
    }
    println!();
    println!(
        "| writers | with key, records kept 24 h (w/s) | with key, records expiring after 1 s (w/s) | expiring / kept |"
    );
    println!("|---:|---:|---:|---:|");
    for threads in [1usize, 64] {
        let mut rates = Vec::new();
        for variant in ["ours-key", "ours-key-expiring"] {
            let samples = (0..reps)
                .map(|_| {
                    let v = measure_in_child(variant, threads, subscribers, seconds.max(3.0));
                    v[0] / v[1]
                })
                .collect();
            rates.push(median(samples));
        }
        println!(
            "| {threads} | {:.0} | {:.0} | {:.2}x |",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
    }
}

fn one(
    variant: &str,
    threads: usize,
    subscribers: u64,
    duration: Duration,
) -> subscriber_bench::Run {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::from_millis(1_795_687_200_000);
    match variant {
        "raw-rmw" | "raw-cas" => {
            let db = sled::Config::new()
                .path(dir.path())
                .flush_every_ms(Some(500))
                .open()
                .unwrap();
            let tree = db.open_tree("subscribers").unwrap();
            for i in 0..subscribers {
                tree.insert(subscriber_id(i), encode(&document(i))).unwrap();
            }
            let cas = variant == "raw-cas";
            timed(threads, duration, false, move |_, rng: &mut Rng| {
                let n = rng.below(subscribers);
                let key = subscriber_id(n);
                let online = n % 2 == 0;
                loop {
                    let old = tree.get(&key).unwrap().unwrap();
                    let mut doc = decode(&old);
                    doc.set_online(online, 0, now);
                    let new = encode(&doc);
                    if !cas {
                        tree.insert(&key, new).unwrap();
                        break;
                    }
                    if tree
                        .compare_and_swap(&key, Some(old), Some(new))
                        .unwrap()
                        .is_ok()
                    {
                        break;
                    }
                }
            })
        }
        "ours" | "ours-key" | "ours-key-expiring" => {
            // Expiring: records live 1 s, so after the first second they
            // expire as fast as they are written and every keyed write
            // purges (the steady state of a server up for a day).
            let ttl = if variant == "ours-key-expiring" {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(86_400)
            };
            let store = Store::open(
                Config::new(dir.path())
                    .durability(Durability::Relaxed)
                    .flush_interval(Duration::from_millis(500))
                    .idempotency_ttl(ttl),
            )
            .unwrap();
            let org = store.create_organization("bench").unwrap();
            let tenant = store.create_environment(org.id, "bench").unwrap().tenant();
            subscriber_bench::fill(&store, &tenant, subscribers);
            let keyed = variant != "ours";
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            timed(threads, duration, false, move |t, rng: &mut Rng| {
                let n = rng.below(subscribers);
                let id = subscriber_id(n);
                let online = n % 2 == 0;
                if keyed {
                    let seq = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let key = IdempotencyKey::new(format!("bench-{t}-{seq}")).unwrap();
                    let command = Command::SetOnline {
                        subscriber_id: id,
                        online,
                    };
                    store
                        .execute_once(&tenant, command, None, &Idempotency::new(key))
                        .unwrap();
                } else {
                    store.set_online(&tenant, &id, online, None).unwrap();
                }
            })
        }
        other => panic!("unknown variant {other}"),
    }
}
