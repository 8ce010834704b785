//! The progress line on stderr while a run goes, with the current rate:
//! only when stderr is a terminal, so logs and pipes get the summary alone.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::load::Counters;
use super::plan::Plan;
use super::report::grouped;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);
/// The current rate is the rate over this last stretch.
const WINDOW: Duration = Duration::from_secs(1);

/// A progress line, or nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// What the tasks of a phase count with.
#[derive(Debug, Clone)]
pub struct Handle(Option<ProgressBar>);

impl Handle {
    pub fn inc(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

fn visible() -> bool {
    std::io::stderr().is_terminal()
}

fn bar(length: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl Progress {
    /// A counting line for creating or deleting `total` subscribers.
    pub fn counter(label: &'static str, total: u64) -> Progress {
        if !visible() {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let bar = bar(total, "{prefix} [{bar:30}] {pos}/{len} ({per_sec})");
        bar.set_prefix(label);
        Progress {
            bar: Some(bar),
            ticker: None,
        }
    }

    /// The measured phase's line: how far along (requests or time), the
    /// rate over the last second, errors so far.
    pub fn run(plan: &Plan, counters: Arc<Counters>, start: Instant) -> Progress {
        if !visible() {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let by_requests = plan.requests.filter(|_| plan.duration.is_none());
        let length = by_requests.unwrap_or_else(|| {
            plan.duration
                .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        let bar = bar(length, "{prefix} [{bar:30}] {msg}");
        bar.set_prefix(plan.mix.workload_name());
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (bar, stop) = (bar.clone(), Arc::clone(&stop));
            let duration = plan.duration;
            std::thread::spawn(move || {
                let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let done = counters.done.load(Ordering::Relaxed);
                    let failed = counters.failed.load(Ordering::Relaxed);
                    samples.push_back((now, done));
                    while samples.len() > 2
                        && samples
                            .get(1)
                            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
                    {
                        samples.pop_front();
                    }
                    let rate = match samples.front() {
                        Some((t, n)) if now > *t => {
                            (done - n) as f64 / now.duration_since(*t).as_secs_f64()
                        }
                        _ => 0.0,
                    };
                    let elapsed = now.duration_since(start);
                    let position = match by_requests {
                        Some(_) => done,
                        None => u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    };
                    let so_far = match (by_requests, duration) {
                        (Some(total), _) => {
                            format!("{}/{} requests", grouped(done), grouped(total))
                        }
                        (None, Some(d)) => format!(
                            "{:.1}/{:.0} s, {} requests",
                            elapsed.as_secs_f64().min(d.as_secs_f64()),
                            d.as_secs_f64(),
                            grouped(done)
                        ),
                        (None, None) => format!("{} requests", grouped(done)),
                    };
                    bar.set_position(position);
                    bar.set_message(format!(
                        "{so_far}, {} requests/s, {} errors",
                        grouped(rate.round() as u64),
                        grouped(failed)
                    ));
                    std::thread::sleep(TICK);
                }
            })
        };
        Progress {
            bar: Some(bar),
            ticker: Some((stop, ticker)),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle(self.bar.clone())
    }

    /// Clears the line: the summary follows.
    pub fn finish(self) {
        if let Some((stop, ticker)) = self.ticker {
            stop.store(true, Ordering::Relaxed);
            let _ = ticker.join();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
