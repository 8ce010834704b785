//! The presence queries' cost against the number of subscribers (issue 13):
//! `presence query --small 10000 --large 1000000 --online 100 --seconds 2`
//! fills a store with each number of subscribers (100 online, 100 more
//! offline within the last minute), reopens it (the counts' scan at open
//! is timed), then times the online query (a page of 100), the same with
//! `within` 3600 s, the counts, and a page of 100 events, each repeated for
//! `--seconds`. Prints a Markdown table with the large/small ratios and the
//! verdict on the target: flat (large <= 2x small).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use subscriber_store::{Config, Durability, OnlineQuery, Store, SubscriberInput};

struct Costs {
    open_ms: f64,
    online_us: f64,
    within_us: f64,
    stats_us: f64,
    events_us: f64,
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .map_or(default, |i| args[i + 1].parse().expect("a number"))
}

/// The median time of one call of `f`, repeated for `seconds`, in µs.
fn time(seconds: f64, mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let start = Instant::now();
        f();
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn measure(n: u64, online: u64, seconds: f64) -> Costs {
    let base =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).unwrap();
    {
        let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed)).unwrap();
        let tenant = store.ensure_environment("Development").unwrap().0.tenant();
        let threads = 2;
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = store.clone();
                s.spawn(move || {
                    for i in (t..n).step_by(threads as usize) {
                        let mut input = SubscriberInput::new(format!("subscriber-{i:07}"));
                        input.first_name = Some(Some(format!("First{i}")));
                        input.email = Some(Some(format!("user{i}@example.com")));
                        store.upsert(&tenant, input, None).unwrap();
                    }
                });
            }
        });
        // Spread over the id space: 100 online, 100 offline a moment ago.
        let step = n / (2 * online);
        for k in 0..2 * online {
            let id = format!("subscriber-{:07}", k * step);
            store.set_online(&tenant, &id, true, None).unwrap();
            if k % 2 == 1 {
                store.set_online(&tenant, &id, false, None).unwrap();
            }
        }
        store.flush().unwrap();
    }
    let opened = Instant::now();
    let store = Store::open(Config::new(dir.path()).durability(Durability::Durable)).unwrap();
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    let tenant = store.environment_named("Development").unwrap().tenant();
    let page = store.online(&tenant, &OnlineQuery::default()).unwrap();
    assert_eq!(page.subscribers.len() as u64, online.min(100));
    let stats = store.presence_stats(&tenant).unwrap();
    assert_eq!((stats.online, stats.subscribers), (online, n));
    let within = OnlineQuery {
        within_seconds: Some(3600),
        ..Default::default()
    };
    assert_eq!(
        store.online(&tenant, &within).unwrap().subscribers.len(),
        100
    );
    let online_us = time(seconds, || {
        store.online(&tenant, &OnlineQuery::default()).unwrap();
    });
    let within_us = time(seconds, || {
        store.online(&tenant, &within).unwrap();
    });
    let stats_us = time(seconds, || {
        store.presence_stats(&tenant).unwrap();
    });
    let events_us = time(seconds, || {
        store.events(&tenant, None, 100).unwrap();
    });
    Costs {
        open_ms,
        online_us,
        within_us,
        stats_us,
        events_us,
    }
}

/// `presence open --subscribers N`: N subscribers, each online with a lease
/// and a keyed heartbeat's record (everything the store rebuilds in memory
/// at open: leases, online indexes, counts, record expiry), then the open
/// timed in a fresh process with its resident memory before and after.
fn open_cost(args: &[String]) {
    let n = arg(args, "--subscribers", 1_000_000);
    let base =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).unwrap();
    let filled = Instant::now();
    {
        let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed)).unwrap();
        let tenant = store.ensure_environment("Development").unwrap().0.tenant();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let store = store.clone();
                s.spawn(move || {
                    for i in (t..n).step_by(2) {
                        let id = format!("subscriber-{i:07}");
                        store
                            .upsert(&tenant, SubscriberInput::new(id.clone()), None)
                            .unwrap();
                        let key = subscriber_store::IdempotencyKey::new(format!("k-{i}")).unwrap();
                        let command = subscriber_store::Command::Heartbeat {
                            subscriber_id: id,
                            ttl_seconds: 3600,
                        };
                        store
                            .execute_once(
                                &tenant,
                                command,
                                None,
                                &subscriber_store::Idempotency::new(key),
                            )
                            .unwrap();
                    }
                });
            }
        });
        store.flush().unwrap();
    }
    eprintln!("filled {n} in {:.1} s", filled.elapsed().as_secs_f64());
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .arg("open-child")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    println!(
        "| subscribers (each online with a lease and a record) | open (ms) | resident memory before / after open (MiB) | per subscriber (bytes) |"
    );
    println!("|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.0} | {:.0} / {:.0} | {:.0} |",
        v[0],
        v[1] / 1024.0,
        v[2] / 1024.0,
        (v[2] - v[1]) * 1024.0 / n as f64
    );
}

/// VmRSS in KiB.
fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn open_child(dir: &str) {
    let before = rss_kib();
    let opened = Instant::now();
    let store = Store::open(Config::new(dir).durability(Durability::Durable)).unwrap();
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    let after = rss_kib();
    let tenant = store.environment_named("Development").unwrap().tenant();
    let stats = store.presence_stats(&tenant).unwrap();
    assert_eq!(stats.online, stats.subscribers, "all online");
    println!("{open_ms} {before} {after}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("open") => return open_cost(&args),
        Some("open-child") => return open_child(&args[1]),
        _ => {}
    }
    assert_eq!(
        args.first().map(String::as_str),
        Some("query"),
        "usage: presence query [--small N] [--large N] [--online N] [--seconds S] | presence open [--subscribers N]"
    );
    let small = arg(&args, "--small", 10_000);
    let large = arg(&args, "--large", 1_000_000);
    let online = arg(&args, "--online", 100);
    let seconds = arg(&args, "--seconds", 2) as f64;
    let filled = Instant::now();
    let a = measure(small, online, seconds);
    let b = measure(large, online, seconds);
    let ratio = |x: f64, y: f64| y / x;
    println!(
        "| {online} online, {online} offline within the last minute | {small} subscribers | {large} subscribers | ratio |"
    );
    println!("|---|---:|---:|---:|");
    let rows = [
        (
            "online query, page of 100 (µs, median)",
            a.online_us,
            b.online_us,
        ),
        (
            "online query within 3600 s, page of 100 (µs)",
            a.within_us,
            b.within_us,
        ),
        ("counts: `presence_stats` (µs)", a.stats_us, b.stats_us),
        ("events, page of 100 (µs)", a.events_us, b.events_us),
        ("open, counting every subscriber (ms)", a.open_ms, b.open_ms),
    ];
    for (name, x, y) in rows {
        println!("| {name} | {x:.1} | {y:.1} | {:.2}x |", ratio(x, y));
    }
    println!();
    let worst = ratio(a.online_us, b.online_us).max(ratio(a.within_us, b.within_us));
    let verdict = if worst <= 2.0 { "met" } else { "**missed**" };
    println!(
        "Target: the online query's cost flat from {small} to {large} subscribers (at most 2x): worst {worst:.2}x, {verdict}. (The open's count is a full scan, by design: it is linear.) Total {:.0} s.",
        filled.elapsed().as_secs_f64()
    );
}
