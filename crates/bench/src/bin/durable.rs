//! Durable (power-loss safe) presence writes against their peers, 1, 8 and
//! 64 writers, random subscriber per write:
//! - ours: `Durability::Durable` (group commit of sled flush + fdatasync);
//! - sled-flush: raw sled get/modify/insert, then `flush()` + fdatasync of
//!   its log, per write;
//! - sqlite: rusqlite (bundled) WAL with synchronous=FULL, the same
//!   read-modify-write in one transaction per write;
//! - fsync: the raw rate of a 4 KiB write + fdatasync on the same disk.
//!
//! Reports writes/s, p50/p99 latency and disk flushes per acknowledged write
//! (/proc/diskstats). Each measurement runs in its own process.
//!
//! `durable [subscribers] [seconds]` prints a markdown table and, with
//! `--csv FILE`, the writes/s per writer count for the plot.
#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use subscriber_bench::{
    Rng, decode, disk_flushes, document, encode, measure_in_child, subscriber_id, timed,
};
use subscriber_store::{Config, Durability, Store, Timestamp};

const VARIANTS: [&str; 4] = ["ours", "sled-flush", "sqlite", "fsync"];
const WRITERS: [usize; 3] = [1, 8, 64];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--sqlite-version") {
        println!("{}", rusqlite::version());
        return;
    }
    if args.first().map(String::as_str) == Some("one") {
        let threads = args[2].parse().unwrap();
        let subscribers = args[3].parse().unwrap();
        let millis = args[4].parse().unwrap();
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
        let (mut run, flushes) = one(
            &args[1],
            threads,
            subscribers,
            Duration::from_millis(millis),
            dir.path(),
        );
        let (p50, p99) = (run.percentile_us(0.5), run.percentile_us(0.99));
        println!(
            "{} {} {p50} {p99} {}",
            run.ops,
            run.seconds,
            flushes.map_or(-1.0, |f| f as f64)
        );
        return;
    }
    let csv = args
        .iter()
        .position(|a| a == "--csv")
        .map(|i| args[i + 1].clone());
    let positional: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && Some(*a) != csv.as_ref())
        .collect();
    let subscribers: u64 = positional.first().map_or(100_000, |a| a.parse().unwrap());
    let seconds: f64 = positional.get(1).map_or(3.0, |a| a.parse().unwrap());
    println!(
        "| variant | writers | writes/s | p50 (µs) | p99 (µs) | disk flushes / write | ours ÷ this |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut table: Vec<(String, usize, f64)> = Vec::new();
    let mut rows = Vec::new();
    for threads in WRITERS {
        for variant in VARIANTS {
            let v = measure_in_child(variant, threads, subscribers, seconds);
            let rate = v[0] / v[1];
            let per_write = if v[4] < 0.0 {
                "n/a".to_string()
            } else {
                format!("{:.3}", v[4] / v[0])
            };
            table.push((variant.to_string(), threads, rate));
            rows.push((variant, threads, rate, v[2], v[3], per_write));
        }
    }
    for (variant, threads, rate, p50, p99, per_write) in rows {
        let ours = table
            .iter()
            .find(|(v, t, _)| v == "ours" && *t == threads)
            .unwrap()
            .2;
        let ratio = if variant == "ours" {
            "1.00".to_string()
        } else {
            format!("{:.2}", ours / rate)
        };
        println!(
            "| {variant} | {threads} | {rate:.0} | {p50:.0} | {p99:.0} | {per_write} | {ratio} |"
        );
    }
    if let Some(path) = csv {
        let mut out = String::from("writers");
        for v in VARIANTS {
            out.push(' ');
            out.push_str(v);
        }
        out.push('\n');
        for threads in WRITERS {
            out.push_str(&threads.to_string());
            for v in VARIANTS {
                let rate = table
                    .iter()
                    .find(|(n, t, _)| n == v && *t == threads)
                    .unwrap()
                    .2;
                out.push_str(&format!(" {rate:.0}"));
            }
            out.push('\n');
        }
        std::fs::write(path, out).unwrap();
    }
}

fn one(
    variant: &str,
    threads: usize,
    subscribers: u64,
    duration: Duration,
    dir: &std::path::Path,
) -> (subscriber_bench::Run, Option<u64>) {
    let now = Timestamp::from_millis(1_795_687_200_000);
    let measure = |f: &dyn Fn() -> subscriber_bench::Run| {
        let before = disk_flushes(dir);
        let run = f();
        let after = disk_flushes(dir);
        let flushes = before.zip(after).map(|(b, a)| a - b);
        (run, flushes)
    };
    match variant {
        "ours" => {
            {
                let store = Store::open(Config::new(dir).durability(Durability::Relaxed)).unwrap();
                let org = store.create_organization("bench").unwrap();
                store.create_environment(org.id, "bench").unwrap();
                let tenant = store.environments().unwrap()[0].tenant();
                subscriber_bench::fill(&store, &tenant, subscribers);
                store.flush().unwrap();
            }
            let store = Store::open(Config::new(dir).durability(Durability::Durable)).unwrap();
            let tenant = store.environments().unwrap()[0].tenant();
            measure(&|| {
                let store = store.clone();
                timed(threads, duration, true, move |_, rng: &mut Rng| {
                    let n = rng.below(subscribers);
                    store
                        .set_online(&tenant, &subscriber_id(n), n % 2 == 0, None)
                        .unwrap();
                })
            })
        }
        "sled-flush" => {
            let db = sled::Config::new()
                .path(dir)
                .flush_every_ms(None)
                .open()
                .unwrap();
            let tree = db.open_tree("subscribers").unwrap();
            for i in 0..subscribers {
                tree.insert(subscriber_id(i), encode(&document(i))).unwrap();
            }
            db.flush().unwrap();
            let log = Arc::new(File::open(dir.join("db")).unwrap());
            measure(&|| {
                let (db, tree, log) = (db.clone(), tree.clone(), Arc::clone(&log));
                timed(threads, duration, true, move |_, rng: &mut Rng| {
                    let n = rng.below(subscribers);
                    let key = subscriber_id(n);
                    let mut doc = decode(&tree.get(&key).unwrap().unwrap());
                    doc.set_online(n % 2 == 0, 0, now);
                    tree.insert(&key, encode(&doc)).unwrap();
                    db.flush().unwrap();
                    log.sync_data().unwrap();
                })
            })
        }
        "sqlite" => {
            let path = dir.join("bench.sqlite");
            {
                let mut conn = rusqlite::Connection::open(&path).unwrap();
                conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                conn.pragma_update(None, "synchronous", "FULL").unwrap();
                conn.execute(
                    "CREATE TABLE subscribers (id TEXT PRIMARY KEY, doc BLOB NOT NULL)",
                    [],
                )
                .unwrap();
                let tx = conn.transaction().unwrap();
                {
                    let mut insert = tx
                        .prepare("INSERT INTO subscribers (id, doc) VALUES (?1, ?2)")
                        .unwrap();
                    for i in 0..subscribers {
                        insert
                            .execute(rusqlite::params![subscriber_id(i), encode(&document(i))])
                            .unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            let connections: Vec<Mutex<rusqlite::Connection>> = (0..threads)
                .map(|_| {
                    let conn = rusqlite::Connection::open(&path).unwrap();
                    conn.pragma_update(None, "synchronous", "FULL").unwrap();
                    conn.busy_timeout(Duration::from_secs(30)).unwrap();
                    Mutex::new(conn)
                })
                .collect();
            let connections = Arc::new(connections);
            measure(&|| {
                let connections = Arc::clone(&connections);
                timed(threads, duration, true, move |t, rng: &mut Rng| {
                    let n = rng.below(subscribers);
                    let key = subscriber_id(n);
                    let mut conn = connections[t].lock().unwrap();
                    let tx = conn
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .unwrap();
                    let bytes: Vec<u8> = tx
                        .query_row("SELECT doc FROM subscribers WHERE id = ?1", [&key], |row| {
                            row.get(0)
                        })
                        .unwrap();
                    let mut doc = decode(&bytes);
                    doc.set_online(n % 2 == 0, 0, now);
                    tx.execute(
                        "UPDATE subscribers SET doc = ?1 WHERE id = ?2",
                        rusqlite::params![encode(&doc), key],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                })
            })
        }
        "fsync" => {
            let file = Arc::new(
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(dir.join("raw"))
                    .unwrap(),
            );
            file.set_len(64 * 4096).unwrap();
            file.sync_all().unwrap();
            measure(&|| {
                let file = Arc::clone(&file);
                timed(threads, duration, true, move |t, rng: &mut Rng| {
                    let block = [rng.below(256) as u8; 4096];
                    file.write_all_at(&block, t as u64 * 4096).unwrap();
                    file.sync_data().unwrap();
                })
            })
        }
        other => panic!("unknown variant {other}"),
    }
}
