//! Presence leases (issue 12), embedded, durable mode:
//!
//! `leases heartbeat [subscribers] [seconds] [reps] [--writers W]`: keyed
//! durable writes (a fresh idempotency key each, as the SDKs send) with W
//! writer threads (default 64) on a random one of `subscribers`: the plain
//! presence write (`SetOnline`, random flag; and online only) against the
//! heartbeat (`Heartbeat`, ttl 60 s). Each measurement in its own process,
//! the variants alternating, medians of `reps`. Target: heartbeat >= 0.80x
//! the plain write.
//!
//! `leases expiry [--leases N] [--alone A] [--load-writers W]
//! [--load-subscribers M] [--seconds S]`: N subscribers (default 1,000,000)
//! heartbeat at the same instant T with ttl 60 s (filled in relaxed mode on
//! a `ManualClock` stopped at T, flushed, reopened durable with the expiry
//! thread on and a clock that runs from T + 1 s). A load of W threads
//! (default 32) sends keyed durable heartbeats (ttl 3600 s) to M other
//! subscribers (default 10,000): S seconds without expiry, then the clock
//! jumps past T + 60 s so that all N leases are due at once, until the lease
//! index has no due entry left, then S seconds without expiry again. Then,
//! the load stopped, A more leases (default N / 10, ttl 600 s) fall due
//! with nothing else writing, where every flush round is the expiry's.
//! Reports the time until all are offline, the flush rounds used, and the
//! load's writes/s during the expiry against without. Target: >= 0.5x.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use subscriber_bench::{Rng, measure_in_child, median, subscriber_id, timed};
use subscriber_store::{
    Clock, Command, Config, Durability, Idempotency, IdempotencyKey, ManualClock, Store, Tenant,
    Timestamp,
};

/// The heartbeat bench's variants: label, child variant.
const VARIANTS: [(&str, &str); 3] = [
    ("plain presence write, random isOnline", "plain"),
    ("plain presence write, isOnline true", "plain-online"),
    ("heartbeat, ttlSeconds 60", "heartbeat"),
];

/// T: when the expiry bench's leases start (their deadline is T + 60 s).
const T: u64 = 1_795_687_200_000;
const TTL: u32 = 60;
/// The second group's lease: due after the first group's expiry is over.
const ALONE_TTL: u32 = 600;
const LOAD_TTL: u32 = 3600;
/// Lease entries per batch of the store's expiry thread.
const BATCH: u64 = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("one") => {
            let threads = args[2].parse().unwrap();
            let subscribers = args[3].parse().unwrap();
            let millis = args[4].parse().unwrap();
            one(
                &args[1],
                threads,
                subscribers,
                Duration::from_millis(millis),
            );
        }
        Some("heartbeat") => heartbeat(&args[1..]),
        Some("expiry") => expiry(&args[1..]),
        _ => {
            eprintln!(
                "usage: leases heartbeat [subscribers] [seconds] [reps] [--writers W]\n       \
                 leases expiry [--leases N] [--load-writers W] [--load-subscribers M] [--seconds S]"
            );
            std::process::exit(2);
        }
    }
}

/// The value of `--name VALUE` in `args`, if given.
fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    Some(
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number")),
    )
}

/// `args` without the `--name VALUE` pairs.
fn positional(args: &[String]) -> Vec<&String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a.starts_with("--") {
            skip = true;
        } else {
            out.push(a);
        }
    }
    out
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap()
}

fn heartbeat(args: &[String]) {
    let pos = positional(args);
    let subscribers: u64 = pos.first().map_or(100_000, |a| a.parse().unwrap());
    let seconds: f64 = pos.get(1).map_or(2.0, |a| a.parse().unwrap());
    let reps: usize = pos.get(2).map_or(3, |a| a.parse().unwrap());
    let writers: usize = flag(args, "--writers").unwrap_or(64);
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); VARIANTS.len()];
    for rep in 0..reps {
        // Alternate, and rotate which variant goes first.
        for k in 0..VARIANTS.len() {
            let i = (k + rep) % VARIANTS.len();
            samples[i].push(measure_in_child(
                VARIANTS[i].1,
                writers,
                subscribers,
                seconds,
            ));
        }
    }
    // Each column's median over the reps (ops/s, p50, p99, rounds/write).
    let medians: Vec<[f64; 4]> = samples
        .iter()
        .map(|runs| {
            let col = |f: &dyn Fn(&Vec<f64>) -> f64| median(runs.iter().map(f).collect());
            [
                col(&|v| v[0] / v[1]),
                col(&|v| v[2]),
                col(&|v| v[3]),
                col(&|v| v[4] / v[0]),
            ]
        })
        .collect();
    let plain = medians[0][0];
    let online = medians[1][0];
    let beat = medians[2][0];
    println!(
        "| write, keyed, durable, {writers} writers | writes/s | p50 (µs) | p99 (µs) | flush rounds / write | ÷ plain (random isOnline) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for ((label, _), m) in VARIANTS.iter().zip(&medians) {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.3} | {:.2}x |",
            m[0],
            m[1],
            m[2],
            m[3],
            m[0] / plain
        );
    }
    let verdict = |ratio: f64| {
        if ratio >= 0.80 {
            format!("{ratio:.3}x, met")
        } else {
            format!("{ratio:.3}x, **missed**")
        }
    };
    println!();
    println!(
        "Target heartbeat >= 0.80x the plain presence write: against random isOnline {}; against isOnline true {}.",
        verdict(beat / plain),
        verdict(beat / online)
    );
}

/// One heartbeat-bench measurement in this (child) process: prints
/// `ops seconds p50_us p99_us flush_rounds`.
fn one(variant: &str, threads: usize, subscribers: u64, duration: Duration) {
    let dir = bench_dir();
    {
        let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed)).unwrap();
        let org = store.create_organization("bench").unwrap();
        store.create_environment(org.id, "bench").unwrap();
        let tenant = store.environments().unwrap()[0].tenant();
        subscriber_bench::fill(&store, &tenant, subscribers);
        store.flush().unwrap();
    }
    let store = Store::open(Config::new(dir.path()).durability(Durability::Durable)).unwrap();
    let tenant = store.environments().unwrap()[0].tenant();
    let variant = variant.to_owned();
    let rounds = store.flush_rounds();
    let writer = store.clone();
    let counter = Arc::new(AtomicU64::new(0));
    let mut run = timed(threads, duration, true, move |t, rng: &mut Rng| {
        let subscriber_id = subscriber_id(rng.below(subscribers));
        let command = match variant.as_str() {
            "plain" => Command::SetOnline {
                subscriber_id,
                online: rng.below(2) == 0,
            },
            "plain-online" => Command::SetOnline {
                subscriber_id,
                online: true,
            },
            "heartbeat" => Command::Heartbeat {
                subscriber_id,
                ttl_seconds: TTL,
            },
            other => panic!("unknown variant {other}"),
        };
        let seq = counter.fetch_add(1, Ordering::Relaxed);
        let key = IdempotencyKey::new(format!("bench-{t}-{seq}")).unwrap();
        writer
            .execute_once(&tenant, command, None, &Idempotency::new(key))
            .unwrap();
    });
    let rounds = store.flush_rounds() - rounds;
    let (p50, p99) = (run.percentile_us(0.5), run.percentile_us(0.99));
    println!("{} {} {p50} {p99} {rounds}", run.ops, run.seconds);
}

/// A clock that runs at the system's pace from `start` and can be moved
/// forward: heartbeats under load get a new deadline every millisecond, as
/// with the real clock (a stopped clock would let a repeated heartbeat keep
/// its deadline and skip the index write).
#[derive(Debug)]
struct RunningClock {
    start: u64,
    began: Instant,
    jumped: AtomicU64,
}

impl RunningClock {
    fn new(start: Timestamp) -> Self {
        RunningClock {
            start: start.as_millis(),
            began: Instant::now(),
            jumped: AtomicU64::new(0),
        }
    }

    fn jump(&self, by: Duration) {
        self.jumped
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for RunningClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(
            self.start
                + self.began.elapsed().as_millis() as u64
                + self.jumped.load(Ordering::SeqCst),
        )
    }
}

/// The subscribers whose leases fall due under the load, those that fall
/// due with nothing else writing, and the load's.
fn lease_id(i: u64) -> String {
    format!("lease-{i:07}")
}

fn alone_id(i: u64) -> String {
    format!("alone-{i:07}")
}

fn load_id(i: u64) -> String {
    format!("load-{i:07}")
}

/// Runs `f(i)` for `0..n` on every core.
fn parallel(n: u64, f: impl Fn(u64) + Sync) {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get() as u64);
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            s.spawn(move || {
                let mut i = t;
                while i < n {
                    f(i);
                    i += threads;
                }
            });
        }
    });
}

fn expiry(args: &[String]) {
    let leases: u64 = flag(args, "--leases").unwrap_or(1_000_000);
    let alone: u64 = flag(args, "--alone").unwrap_or(leases / 10).max(1);
    let load_writers: usize = flag(args, "--load-writers").unwrap_or(32);
    let load_subscribers: u64 = flag(args, "--load-subscribers").unwrap_or(10_000);
    let seconds: f64 = flag(args, "--seconds").unwrap_or(3.0);
    let dir = bench_dir();

    // Every lease starts at T: a stopped clock gives each group one deadline.
    let began = Instant::now();
    {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T)));
        let store = Store::open(
            Config::new(dir.path())
                .durability(Durability::Relaxed)
                .clock(clock),
        )
        .unwrap();
        let org = store.create_organization("bench").unwrap();
        let tenant = store.create_environment(org.id, "bench").unwrap().tenant();
        let create = |id: &str| {
            let mut input = subscriber_store::SubscriberInput::new(id);
            input.first_name = Some(Some("Ada".into()));
            input.last_name = Some(Some("Lovelace".into()));
            store.upsert(&tenant, input, None).unwrap();
        };
        parallel(load_subscribers, |i| create(&load_id(i)));
        parallel(leases, |i| {
            create(&lease_id(i));
            store.heartbeat(&tenant, &lease_id(i), TTL, None).unwrap();
        });
        parallel(alone, |i| {
            create(&alone_id(i));
            store
                .heartbeat(&tenant, &alone_id(i), ALONE_TTL, None)
                .unwrap();
        });
        store.flush().unwrap();
    }
    let populate = began.elapsed().as_secs_f64();

    let clock = Arc::new(RunningClock::new(Timestamp::from_millis(T + 1_000)));
    let began = Instant::now();
    let store = Store::open(
        Config::new(dir.path())
            .durability(Durability::Durable)
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .background_expiry(true),
    )
    .unwrap();
    let reopen = began.elapsed().as_secs_f64();
    let tenant = store.environments().unwrap()[0].tenant();
    let deadline = |ttl: u32| Timestamp::from_millis(T + u64::from(ttl) * 1000);
    assert_eq!(store.next_lease_deadline().unwrap(), Some(deadline(TTL)));

    // The load: keyed durable heartbeats with a long lease.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..load_writers)
        .map(|t| {
            let (store, stop, ops) = (store.clone(), Arc::clone(&stop), Arc::clone(&ops));
            // Named, for profiles.
            std::thread::Builder::new()
                .name("heartbeat-load".into())
                .spawn(move || {
                    load_thread(&store, &tenant, t, load_subscribers, &stop, &ops);
                })
                .unwrap()
        })
        .collect();

    // A window of the load: (writes/s, flush rounds/s).
    let window = |length: Duration| {
        let (o, r, t) = (
            ops.load(Ordering::Relaxed),
            store.flush_rounds(),
            Instant::now(),
        );
        std::thread::sleep(length);
        let secs = t.elapsed().as_secs_f64();
        (
            (ops.load(Ordering::Relaxed) - o) as f64 / secs,
            (store.flush_rounds() - r) as f64 / secs,
        )
    };
    // Moves the clock just past `to` and waits until the lease index has
    // no due entry left: (seconds, flush rounds, load writes, seconds until
    // the first flush round: with nothing else writing, the end of the
    // expiry thread's nap and first batch). The time is when the last due
    // entry left the index (its batch's flush round ends just after);
    // `settle` (nothing else writing) waits for that round to count it.
    let fall_due = |to: Timestamp, settle: bool| {
        let (o, r, t) = (
            ops.load(Ordering::Relaxed),
            store.flush_rounds(),
            Instant::now(),
        );
        let by = to.as_millis() + 1 - store.now().as_millis();
        clock.jump(Duration::from_millis(by));
        let mut first_round = None;
        loop {
            if first_round.is_none() && store.flush_rounds() > r {
                first_round = Some(t.elapsed().as_secs_f64());
            }
            match store.next_lease_deadline().unwrap() {
                Some(next) if next <= store.now() => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => break,
            }
        }
        let secs = t.elapsed().as_secs_f64();
        if settle {
            // The last batch leaves the index before its flush round ends.
            let mut rounds = store.flush_rounds();
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = store.flush_rounds();
                if now == rounds {
                    break;
                }
                rounds = now;
            }
        }
        (
            secs,
            store.flush_rounds() - r,
            ops.load(Ordering::Relaxed) - o,
            first_round.unwrap_or(secs),
        )
    };

    std::thread::sleep(Duration::from_millis(500));
    let (before, before_rounds) = window(Duration::from_secs_f64(seconds));
    // All N leases due at once, under the load.
    let (loaded_secs, loaded_rounds, loaded_ops, _) = fall_due(deadline(TTL), false);
    let during = loaded_ops as f64 / loaded_secs;
    let (after, after_rounds) = window(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    // The second group, with nothing else writing: every flush round is
    // the expiry's.
    let (alone_secs, alone_rounds, _, alone_first) = fall_due(deadline(ALONE_TTL), true);
    // Reads show a passed lease as expired whether or not it was written;
    // a sanity check only.
    for id in [lease_id(0), lease_id(leases - 1), alone_id(alone - 1)] {
        assert_eq!(store.get(&tenant, &id).unwrap().is_online, Some(false));
    }

    let without = (before + after) / 2.0;
    let ratio = during / without;
    println!(
        "| leases falling due at once | time until all are offline | expiries/s | flush rounds | flush rounds / expired lease |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {leases}, under the load | {loaded_secs:.1} s | {:.0} | {loaded_rounds} (the load's too) | {:.4} |",
        leases as f64 / loaded_secs,
        loaded_rounds as f64 / leases as f64
    );
    // After its first batch (the nap's end unknown otherwise).
    let alone_rate = if alone > BATCH && alone_secs > alone_first {
        format!(
            "{:.0} after the first batch",
            (alone - BATCH) as f64 / (alone_secs - alone_first)
        )
    } else {
        format!("{:.0}", alone as f64 / alone_secs)
    };
    println!(
        "| {alone}, nothing else writing | {alone_secs:.1} s ({:.2} s after the first batch's round) | {alone_rate} | {alone_rounds} | {:.4} |",
        alone_secs - alone_first,
        alone_rounds as f64 / alone as f64
    );
    println!();
    println!(
        "| load: {load_writers} threads, keyed durable heartbeats | writes/s | flush rounds/s |"
    );
    println!("|---|---:|---:|");
    println!("| without expiry, before | {before:.0} | {before_rounds:.0} |");
    println!(
        "| during the expiry of {leases} leases | {during:.0} | {:.0} |",
        loaded_rounds as f64 / loaded_secs
    );
    println!("| without expiry, after | {after:.0} | {after_rounds:.0} |");
    println!("| during ÷ mean of without | {ratio:.2}x | |");
    println!();
    println!(
        "Setup: {} subscribers created and {} heartbeats in relaxed mode in {populate:.0} s, reopened durable in {reopen:.1} s; \
         times run from the clock's jump and include up to 1 s of the expiry thread's nap. \
         Target: the load during the expiry >= 0.5x without: {}.",
        leases + alone + load_subscribers,
        leases + alone,
        if ratio >= 0.5 {
            format!("{ratio:.3}x, met")
        } else {
            format!("{ratio:.3}x, **missed**")
        }
    );
}

fn load_thread(
    store: &Store,
    tenant: &Tenant,
    t: usize,
    subscribers: u64,
    stop: &AtomicBool,
    ops: &AtomicU64,
) {
    let mut rng = Rng::new(t as u64 + 1);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let command = Command::Heartbeat {
            subscriber_id: load_id(rng.below(subscribers)),
            ttl_seconds: LOAD_TTL,
        };
        seq += 1;
        let key = IdempotencyKey::new(format!("load-{t}-{seq}")).unwrap();
        store
            .execute_once(tenant, command, None, &Idempotency::new(key))
            .unwrap();
        ops.fetch_add(1, Ordering::Relaxed);
    }
}
