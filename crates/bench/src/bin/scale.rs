//! The relaxed single-writer presence write at 10,000, 100,000 and
//! 1,000,000 subscribers: writes/s (should stay nearly flat), bytes on disk
//! per subscriber and peak RSS, each size in its own process.
//!
//! `scale [seconds]` prints a markdown table.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use subscriber_bench::{Rng, dir_bytes, in_child, peak_rss_kib, subscriber_id, timed};
use subscriber_store::{Config, Durability, Store};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("one") {
        let subscribers: u64 = args[1].parse().unwrap();
        let millis: u64 = args[2].parse().unwrap();
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
        let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed)).unwrap();
        let org = store.create_organization("bench").unwrap();
        let tenant = store.create_environment(org.id, "bench").unwrap().tenant();
        subscriber_bench::fill(&store, &tenant, subscribers);
        store.flush().unwrap();
        let writer = store.clone();
        let run = timed(
            1,
            Duration::from_millis(millis),
            false,
            move |_, rng: &mut Rng| {
                let n = rng.below(subscribers);
                writer
                    .set_online(&tenant, &subscriber_id(n), n % 2 == 0, None)
                    .unwrap();
            },
        );
        store.flush().unwrap();
        let bytes = dir_bytes(dir.path());
        println!(
            "{} {} {} {}",
            run.per_second(),
            bytes,
            peak_rss_kib(),
            subscribers
        );
        return;
    }
    let seconds: f64 = args.first().map_or(3.0, |a| a.parse().unwrap());
    println!(
        "| subscribers | writes/s | vs 10,000 | bytes on disk / subscriber | peak RSS (MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut base = None;
    for n in [10_000u64, 100_000, 1_000_000] {
        let line = in_child(&[
            "one".into(),
            n.to_string(),
            ((seconds * 1000.0) as u64).to_string(),
        ]);
        let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let base_rate = *base.get_or_insert(v[0]);
        println!(
            "| {n} | {:.0} | {:.0}% | {:.0} | {:.0} |",
            v[0],
            100.0 * v[0] / base_rate,
            v[1] / n as f64,
            v[2] / 1024.0
        );
    }
}
