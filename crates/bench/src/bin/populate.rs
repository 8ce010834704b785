//! Fills a data directory for the HTTP benchmarks: `populate DIR N KEY`
//! creates the Development environment, registers KEY and upserts N
//! subscribers (`subscriber-0000000`...), directly through the store.
#![allow(clippy::unwrap_used)]

use subscriber_bench::document;
use subscriber_store::{Config, Durability, Store, SubscriberInput};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, n, key) = (&args[0], args[1].parse::<u64>().unwrap(), &args[2]);
    let store = Store::open(Config::new(dir).durability(Durability::Relaxed)).unwrap();
    let (env, _) = store.ensure_environment("Development").unwrap();
    store.add_key(env.id, key).unwrap();
    let tenant = env.tenant();
    for i in 0..n {
        let doc = document(i);
        let mut input = SubscriberInput::new(doc.subscriber_id);
        input.first_name = doc.first_name;
        input.last_name = doc.last_name;
        input.email = doc.email;
        store.upsert(&tenant, input, None).unwrap();
    }
    store.flush().unwrap();
}
