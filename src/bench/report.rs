//! The summary of a run, as text to paste or as one JSON object
//! (`--json`): the same figures either way.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::load::{OpCount, Run};
use super::plan::{Op, Plan, Target};
use crate::cli::DurabilityArg;

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// `http://...`, or `embedded <dir> (durable)`.
    pub target: String,
    /// One workload's name, or `mixed`.
    pub workload: &'static str,
    /// The weights of the kinds of request.
    pub mix: BTreeMap<&'static str, u64>,
    pub connections: usize,
    pub threads: usize,
    /// Open loop: the requests per second asked for.
    pub rate: Option<f64>,
    pub subscribers: u64,
    /// Of `subscribers`, how many this run created (the others existed).
    pub subscribers_created: u64,
    pub seconds: f64,
    /// Requests answered or failed: `ok + errors`.
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Failed requests by HTTP status (`404`), by transport failure
    /// (`connect`, `connection`, `timeout`), or embedded by the store's error.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Successful answers that were replays of an earlier request's.
    pub replayed: u64,
    /// Successful writes that executed (not replays).
    pub writes: u64,
    pub requests_per_second: f64,
    pub latency_us: Latency,
    /// Per kind of request.
    pub operations: BTreeMap<&'static str, OpCount>,
    /// Embedded: the store's group-commit rounds (one sled flush and one
    /// fdatasync each) during the run; 0 in relaxed mode.
    pub flush_rounds: Option<u64>,
    pub flush_rounds_per_write: Option<f64>,
    /// The disk holding the data directory, when known.
    pub disk: Option<String>,
    /// Flush requests that disk completed during the run (all processes).
    pub disk_flushes: Option<u64>,
    pub disk_flushes_per_write: Option<f64>,
    /// Stopped early by SIGINT.
    pub interrupted: bool,
    /// With --cleanup: subscribers deleted afterwards.
    pub deleted: Option<u64>,
}

impl Summary {
    pub fn new(
        plan: &Plan,
        run: Run,
        created: u64,
        flush_rounds: Option<u64>,
        disk: Option<(String, u64)>,
    ) -> Summary {
        let stats = &run.stats;
        let mut operations = BTreeMap::new();
        let (mut requests, mut ok, mut replayed, mut writes) = (0, 0, 0, 0);
        for op in Op::ALL {
            let count = stats.per_op[op.index()];
            requests += count.requests;
            ok += count.ok;
            replayed += count.replayed;
            if op.writes() {
                writes += count.ok - count.replayed;
            }
            if count.requests > 0 || plan.mix.contains(op) {
                operations.insert(op.name(), count);
            }
        }
        let seconds = run.elapsed.as_secs_f64();
        let per_write = |n: u64| (writes > 0).then(|| n as f64 / writes as f64);
        let h = &stats.latency_us;
        let target = match &plan.target {
            Target::Http(http) => http.url.clone(),
            Target::Embedded {
                data, durability, ..
            } => format!(
                "embedded {} ({})",
                data.display(),
                match durability {
                    DurabilityArg::Durable => "durable",
                    DurabilityArg::Relaxed => "relaxed",
                }
            ),
        };
        Summary {
            target,
            workload: plan.mix.workload_name(),
            mix: plan
                .mix
                .weights
                .iter()
                .map(|(op, w)| (op.name(), *w))
                .collect(),
            connections: plan.connections,
            threads: plan.threads,
            rate: plan.rate,
            subscribers: plan.subscribers,
            subscribers_created: created,
            seconds,
            requests,
            ok,
            errors: requests - ok,
            errors_by_status: stats
                .failures
                .iter()
                .map(|(failure, n)| (failure.to_string(), *n))
                .collect(),
            replayed,
            writes,
            requests_per_second: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            latency_us: Latency {
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p99_9: h.value_at_quantile(0.999),
                max: h.max(),
                mean: (h.mean() * 10.0).round() / 10.0,
            },
            operations,
            flush_rounds,
            flush_rounds_per_write: flush_rounds.and_then(per_write),
            disk_flushes_per_write: disk.as_ref().and_then(|(_, n)| per_write(*n)),
            disk_flushes: disk.as_ref().map(|(_, n)| *n),
            disk: disk.map(|(name, _)| name),
            interrupted: run.interrupted,
            deleted: None,
        }
    }

    /// The text summary, one figure a line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("  {label:<13} {value}\n"));
        };
        let loop_kind = match self.rate {
            Some(rate) => format!("open loop at {} requests/s", grouped(rate.round() as u64)),
            None => "closed loop".into(),
        };
        let head = format!(
            "subscriberd bench: {} on {}, {} connections, {} threads, {loop_kind}{}\n",
            self.workload,
            self.target,
            self.connections,
            self.threads,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        line(
            "subscribers",
            format!(
                "{} ({} created, {} existed)",
                grouped(self.subscribers),
                grouped(self.subscribers_created),
                grouped(self.subscribers - self.subscribers_created)
            ),
        );
        line(
            "requests",
            format!(
                "{} in {:.2} s: {} ok, {} errors",
                grouped(self.requests),
                self.seconds,
                grouped(self.ok),
                grouped(self.errors)
            ),
        );
        if !self.errors_by_status.is_empty() {
            let errors: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(status, n)| format!("{status}: {}", grouped(*n)))
                .collect();
            line("errors", errors.join(", "));
        }
        line(
            "throughput",
            format!(
                "{} requests/s",
                grouped(self.requests_per_second.round() as u64)
            ),
        );
        let l = &self.latency_us;
        line(
            "latency",
            format!(
                "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p99_9),
                ms(l.max)
            ),
        );
        if self.operations.len() > 1 {
            let parts: Vec<String> = self
                .operations
                .iter()
                .map(|(name, c)| format!("{name} {} ({} ok)", grouped(c.requests), grouped(c.ok)))
                .collect();
            line("by kind", parts.join(", "));
        }
        if self.operations.keys().any(|name| *name != "read") {
            line(
                "writes",
                format!(
                    "{} executed, {} replayed",
                    grouped(self.writes),
                    grouped(self.replayed)
                ),
            );
        }
        let mut flushes = Vec::new();
        if let Some(rounds) = self.flush_rounds {
            flushes.push(match self.flush_rounds_per_write {
                Some(per) => format!(
                    "group commit {per:.3} per write ({} rounds)",
                    grouped(rounds)
                ),
                None => format!("group commit {} rounds", grouped(rounds)),
            });
        }
        if let (Some(disk), Some(n)) = (&self.disk, self.disk_flushes) {
            flushes.push(match self.disk_flushes_per_write {
                Some(per) => format!("disk {disk} {per:.3} per write ({} flushes)", grouped(n)),
                None => format!("disk {disk} {} flushes", grouped(n)),
            });
        }
        if !flushes.is_empty() {
            line("flushes", flushes.join("; "));
        }
        if let Some(deleted) = self.deleted {
            line(
                "cleanup",
                format!("{} subscribers deleted", grouped(deleted)),
            );
        }
        head + &out
    }
}

/// Prints the summary on stdout.
pub fn print(summary: &Summary, json: bool) -> Result<(), String> {
    let text = if json {
        let mut text = serde_json::to_string(summary)
            .map_err(|e| format!("cannot render the summary: {e}"))?;
        text.push('\n');
        text
    } else {
        summary.text()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the summary: {e}"))
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as milliseconds, with the digits that matter.
fn ms(micros: u64) -> String {
    let millis = micros as f64 / 1000.0;
    if millis < 10.0 {
        format!("{millis:.2} ms")
    } else if millis < 100.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn latencies_keep_their_significant_digits() {
        assert_eq!(ms(431), "0.43 ms");
        assert_eq!(ms(12_345), "12.3 ms");
        assert_eq!(ms(123_456), "123 ms");
    }
}
