//! Shared pieces of the benchmark binaries: the documents every peer writes,
//! a fast random generator, timing loops, latency percentiles, disk flush
//! counts, peak memory and directory sizes. Benchmarks only.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subscriber_store::{ObjectId, Store, Subscriber, SubscriberInput, Tenant, Timestamp, Version};

/// xorshift64*: deterministic per thread, cheap.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

pub fn subscriber_id(i: u64) -> String {
    format!("subscriber-{i:07}")
}

/// The document every peer stores for subscriber `i`: the store's own type,
/// encoded with the same bincode configuration.
pub fn document(i: u64) -> Subscriber {
    let id: ObjectId = "6b0827134eab3109d7d2bfe1".parse().unwrap();
    let now = Timestamp::from_millis(1_795_687_200_000);
    Subscriber {
        id,
        subscriber_id: subscriber_id(i),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        email: Some(Some(format!("user{i}@example.com"))),
        phone: None,
        avatar: None,
        locale: None,
        channels: vec![],
        is_online: None,
        last_online_at: None,
        lease: None,
        organization_id: id,
        environment_id: id,
        created_at: now,
        updated_at: now,
        version: Version(0),
        data: None,
        timezone: None,
    }
}

/// Creates subscribers `0..n` in `store` with the fields of [`document`].
pub fn fill(store: &Store, tenant: &Tenant, n: u64) {
    for i in 0..n {
        let doc = document(i);
        let mut input = SubscriberInput::new(doc.subscriber_id);
        input.first_name = doc.first_name.map(Some);
        input.last_name = doc.last_name.map(Some);
        input.email = doc.email;
        store.upsert(tenant, input, None).unwrap();
    }
}

pub fn encode(doc: &Subscriber) -> Vec<u8> {
    bincode::encode_to_vec(doc, bincode::config::standard()).unwrap()
}

pub fn decode(bytes: &[u8]) -> Subscriber {
    bincode::decode_from_slice(bytes, bincode::config::standard())
        .unwrap()
        .0
}

/// What one measurement produced.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub ops: u64,
    pub seconds: f64,
    /// Per-operation latencies in microseconds (when recorded).
    pub latencies_us: Vec<u32>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    pub fn percentile_us(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[i])
    }
}

/// Runs `op(thread, rng)` on `threads` threads for `duration`, counting
/// operations and (if `record`) timing each.
pub fn timed<F>(threads: usize, duration: Duration, record: bool, op: F) -> Run
where
    F: Fn(usize, &mut Rng) + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let start_line = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let op = Arc::clone(&op);
            let start_line = Arc::clone(&start_line);
            std::thread::spawn(move || {
                let mut rng = Rng::new(t as u64 + 1);
                let mut latencies = Vec::new();
                let mut ops = 0u64;
                start_line.wait();
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    op(t, &mut rng);
                    if record {
                        latencies
                            .push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    ops += 1;
                }
                (ops, latencies)
            })
        })
        .collect();
    start_line.wait();
    let began = Instant::now();
    let mut run = Run::default();
    for h in handles {
        let (ops, latencies) = h.join().unwrap();
        run.ops += ops;
        run.latencies_us.extend(latencies);
    }
    run.seconds = began.elapsed().as_secs_f64();
    run
}

/// Completed disk flush requests of the block device holding `path`
/// (from /proc/diskstats), or `None` where the kernel does not say.
pub fn disk_flushes(path: &Path) -> Option<u64> {
    let out = Command::new("df")
        .arg("--output=source")
        .arg(path)
        .output()
        .ok()?;
    let source = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .to_owned();
    let device = source.rsplit('/').next()?.to_owned();
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    // Flushes are counted on the whole disk: try the device, then without
    // a trailing partition number.
    let whole = device
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_owned();
    for name in [device.as_str(), whole.as_str()] {
        for line in stats.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.get(2) == Some(&name) && parts.len() >= 19 {
                return parts[18].parse().ok();
            }
        }
    }
    None
}

/// Peak resident memory of this process in KiB (VmHWM).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Bytes of all files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&path),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Runs this same binary with `args` in a fresh process and returns its
/// last stdout line: each measurement gets a clean process (sled's
/// concurrency control is process-global, and peak RSS is per process).
pub fn in_child(args: &[String]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// Runs `variant` with `threads` writers on `subscribers` for `seconds` in a
/// child process (`BIN one VARIANT THREADS SUBSCRIBERS MILLIS`) and returns
/// the numbers of its answer line.
pub fn measure_in_child(variant: &str, threads: usize, subscribers: u64, seconds: f64) -> Vec<f64> {
    in_child(&[
        "one".into(),
        variant.into(),
        threads.to_string(),
        subscribers.to_string(),
        ((seconds * 1000.0) as u64).to_string(),
    ])
    .split(' ')
    .map(|x| x.parse().unwrap())
    .collect()
}
