//! Fills a data directory for the HTTP benchmarks: `populate DIR N KEY`
//! creates the Development environment, registers KEY and upserts N
//! subscribers (`subscriber-0000000`...), directly through the store.
#![allow(clippy::unwrap_used)]

use subscriber_store::{Config, Durability, Store};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, n, key) = (&args[0], args[1].parse::<u64>().unwrap(), &args[2]);
    let store = Store::open(Config::new(dir).durability(Durability::Relaxed)).unwrap();
    let (env, _) = store.ensure_environment("Development").unwrap();
    store.add_key(env.id, key).unwrap();
    let tenant = env.tenant();
    subscriber_bench::fill(&store, &tenant, n);
    store.flush().unwrap();
}
