//! The measured phase: each client sends its next request as soon as the
//! last is answered (closed loop) or at its scheduled time (open loop,
//! `--rate`), until the duration or the request budget is spent, and
//! records every latency in an HDR histogram. Open loop measures from the
//! scheduled time, so a stall counts against every request it delays.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::plan::{Mix, Op, Plan};
use super::progress::Progress;
use super::workers::Workers;
use super::{Call, Client, Failure, Outcome};

/// Latencies are recorded in microseconds, up to a minute (longer ones
/// count as a minute), with 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Requests answered so far, for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// Per kind of request.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct OpCount {
    pub requests: u64,
    pub ok: u64,
    pub replayed: u64,
}

thread_local! {
    /// The latencies of the clients on this thread: one histogram per
    /// thread rather than per client, so that with many connections
    /// recording stays in the CPU cache (one is about 140 KB).
    static LATENCY_US: RefCell<Histogram<u64>> = RefCell::new(histogram());
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant, valid histogram bounds")
}

fn record_latency(latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    LATENCY_US.with_borrow_mut(|h| h.saturating_record(micros));
}

/// What the clients saw.
#[derive(Debug)]
pub struct Stats {
    pub latency_us: Histogram<u64>,
    pub per_op: [OpCount; Op::ALL.len()],
    pub failures: BTreeMap<Failure, u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            latency_us: histogram(),
            per_op: [OpCount::default(); Op::ALL.len()],
            failures: BTreeMap::new(),
        }
    }

    /// Counts a request (its latency goes to the thread's histogram).
    fn record(&mut self, op: Op, outcome: Outcome) {
        let count = &mut self.per_op[op.index()];
        count.requests += 1;
        match outcome {
            Outcome::Ok { replayed } => {
                count.ok += 1;
                count.replayed += u64::from(replayed);
            }
            Outcome::Failed(failure) => *self.failures.entry(failure).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Stats) {
        self.add_latencies(&other.latency_us);
        for (mine, theirs) in self.per_op.iter_mut().zip(other.per_op) {
            mine.requests += theirs.requests;
            mine.ok += theirs.ok;
            mine.replayed += theirs.replayed;
        }
        for (failure, n) in other.failures {
            *self.failures.entry(failure).or_default() += n;
        }
    }

    fn add_latencies(&mut self, other: &Histogram<u64>) {
        self.latency_us
            .add(other)
            .expect("histograms of the same bounds add up");
    }
}

/// The measured phase's result.
#[derive(Debug)]
pub struct Run {
    pub stats: Stats,
    pub elapsed: Duration,
    /// Stopped early by SIGINT.
    pub interrupted: bool,
}

/// What every client reads to know what to send and when to stop.
#[derive(Debug)]
struct Schedule {
    start: Instant,
    deadline: Option<Instant>,
    budget: Option<u64>,
    claimed: AtomicU64,
    /// Open loop: the time between two requests of the whole run.
    spacing: Option<Duration>,
    connections: u64,
    mix: Mix,
    subscribers: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

/// Runs the workload on every client at once; returns them with what they saw.
pub async fn run<C: Client>(
    plan: &Plan,
    workers: &Workers,
    clients: Vec<C>,
    interrupted: Arc<AtomicBool>,
) -> (Vec<C>, Run) {
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let schedule = Arc::new(Schedule {
        start,
        deadline: plan.duration.map(|d| start + d),
        budget: plan.requests,
        claimed: AtomicU64::new(0),
        spacing: plan.rate.map(|rate| Duration::from_secs_f64(1.0 / rate)),
        connections: clients.len() as u64,
        mix: plan.mix.clone(),
        subscribers: plan.subscribers,
        stop: Arc::clone(&interrupted),
        counters: Arc::clone(&counters),
    });
    let progress = Progress::run(plan, counters, start);
    let seed = seed();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            workers.spawn(
                index,
                drive(client, index as u64, Arc::clone(&schedule), seed),
            )
        })
        .collect();
    let mut stats = Stats::new();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A task ends only by returning (nothing in it panics or is aborted).
        if let Ok((client, theirs)) = task.await {
            clients.push(client);
            stats.merge(theirs);
        }
    }
    let elapsed = start.elapsed();
    for thread in 0..workers.len() {
        let taken = workers.spawn(thread, async {
            LATENCY_US.with_borrow_mut(|h| std::mem::replace(h, histogram()))
        });
        if let Ok(latencies) = taken.await {
            stats.add_latencies(&latencies);
        }
    }
    progress.finish();
    let run = Run {
        stats,
        elapsed,
        interrupted: interrupted.load(Ordering::Relaxed),
    };
    (clients, run)
}

/// One client's loop.
async fn drive<C: Client>(
    mut client: C,
    index: u64,
    schedule: Arc<Schedule>,
    seed: u64,
) -> (C, Stats) {
    let s = &*schedule;
    let mut stats = Stats::new();
    let mut rng = Rng::new(seed ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut sent: u64 = 0;
    loop {
        if s.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(budget) = s.budget {
            if s.claimed.fetch_add(1, Ordering::Relaxed) >= budget {
                break;
            }
        }
        let began = match s.spacing {
            Some(spacing) => {
                // This client's share of a fixed schedule: every
                // `connections`-th slot, starting at its own.
                let slot = index + sent * s.connections;
                let at = s.start + spacing.mul_f64(slot as f64);
                if s.deadline.is_some_and(|deadline| at >= deadline) {
                    break;
                }
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                at
            }
            None => {
                let now = Instant::now();
                if s.deadline.is_some_and(|deadline| now >= deadline) {
                    break;
                }
                now
            }
        };
        let call = pick(s, &mut rng);
        let outcome = client.call(call).await;
        record_latency(began.elapsed());
        stats.record(call.op, outcome);
        s.counters.done.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Failed(_)) {
            s.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        sent += 1;
    }
    (client, stats)
}

fn pick(s: &Schedule, rng: &mut Rng) -> Call {
    let op = if s.mix.needs_draw() {
        s.mix.pick(rng.next())
    } else {
        s.mix.pick(0)
    };
    let draw = rng.next();
    let random = rng.next();
    match op {
        // The run's one request, the same every time.
        Op::Replay => Call {
            op,
            subscriber: 0,
            online: true,
            random,
        },
        _ => Call {
            op,
            subscriber: ((draw >> 1) % s.subscribers) as usize,
            online: draw & 1 == 1,
            random,
        },
    }
}

/// A seed that differs between runs.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// xorshift64*: cheap, and each client has its own.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stats_add_up_across_clients() {
        let mut a = Stats::new();
        a.record(Op::Presence, Outcome::Ok { replayed: false });
        a.record(Op::Replay, Outcome::Ok { replayed: true });
        let mut b = Stats::new();
        b.record(Op::Presence, Outcome::Failed(Failure::Status(404)));
        b.latency_us.saturating_record(100);
        b.latency_us.saturating_record(u64::MAX);
        a.merge(b);
        assert_eq!(a.latency_us.len(), 2);
        assert!(a.latency_us.max() >= MAX_LATENCY_US * 99 / 100);
        assert_eq!(a.per_op[Op::Presence.index()].requests, 2);
        assert_eq!(a.per_op[Op::Presence.index()].ok, 1);
        assert_eq!(a.per_op[Op::Replay.index()].replayed, 1);
        assert_eq!(a.failures[&Failure::Status(404)], 1);
    }
}
