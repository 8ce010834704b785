//! `subscriberd bench`: the load tool the store ships with. It measures a
//! running server over HTTP (`http.rs`) or the store in this process
//! (`embedded.rs`) with the same driver (`load.rs`): create the subscribers,
//! run the workload, optionally delete them, and print a summary
//! (`report.rs`). It knows nothing of the store's rules: it counts answers.

mod disk;
mod embedded;
mod http;
mod load;
mod plan;
mod progress;
mod report;
mod workers;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::cli::BenchArgs;
use plan::{Op, Plan, Target};
use progress::Progress;
use workers::Workers;

/// One request of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub op: Op,
    /// Which subscriber (an index into the run's ids).
    pub subscriber: usize,
    /// The presence to write (presence and keyed writes).
    pub online: bool,
    /// Random bits for a fresh idempotency key.
    pub random: u64,
}

/// A fresh idempotency key in the shape `@novu/api` sends: the time in
/// milliseconds and 9 random base-36 characters (time-ordered keys, as the
/// store sees from real clients).
pub fn fresh_key(out: &mut String, random: u64) {
    use std::fmt::Write;
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    out.clear();
    let _ = write!(out, "{millis}");
    let mut rest = random;
    for _ in 0..9 {
        out.push(char::from(DIGITS[(rest % 36) as usize]));
        rest /= 36;
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx (embedded: the call succeeded); `replayed` when the answer
    /// was the recorded one of an earlier request with the same key.
    Ok {
        replayed: bool,
    },
    Failed(Failure),
}

/// Why a request failed, as the summary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// A non-2xx answer.
    Status(u16),
    /// The connection could not be (re)opened.
    Connect,
    /// The connection broke before the answer was complete.
    Connection,
    /// No answer within --timeout.
    Timeout,
    /// Embedded: the store's error, by kind.
    Store(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(code) => write!(f, "{code}"),
            Failure::Connect => f.write_str("connect"),
            Failure::Connection => f.write_str("connection"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Store(kind) => f.write_str(kind),
        }
    }
}

/// One connection to the target (embedded: one concurrent caller). Each
/// has at most one request in flight, and runs on one thread.
pub trait Client: Send + 'static {
    /// Opens the connection, on the thread the client will run on.
    fn connect(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Sends one request and waits for its outcome.
    fn call(&mut self, call: Call) -> impl Future<Output = Outcome> + Send;

    /// Creates subscriber `n` unless it exists, leaving an existing one as
    /// it is: `Ok(true)` if created.
    fn create(&mut self, n: usize) -> impl Future<Output = Result<bool, String>> + Send;

    /// Deletes subscriber `n` if it exists: `Ok(true)` if it did.
    fn delete(&mut self, n: usize) -> impl Future<Output = Result<bool, String>> + Send;

    /// The store's completed group-commit rounds, when it is in this process.
    fn flush_rounds(&self) -> Option<u64> {
        None
    }

    /// Called once all is done (the embedded store flushes).
    fn close(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Runs `subscriberd bench`.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let plan = Plan::from_args(args)?;
    // Many connections need many descriptors, as the server does.
    crate::limits::raise_nofile_limit();
    let workers = Workers::start(plan.threads)?;
    // This thread only starts the phases and waits for them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let interrupted = watch_interrupt();
        match &plan.target {
            Target::Http(target) => {
                let clients = http::clients(&plan, target).await?;
                let data = target.data.as_deref();
                measure(&plan, &workers, clients, data, &interrupted).await
            }
            Target::Embedded { data, .. } => {
                let clients = embedded::open(&plan)?;
                measure(&plan, &workers, clients, Some(data), &interrupted).await
            }
        }
    });
    // A client still blocked on a dead connection must not hold the exit.
    drop(workers);
    runtime.shutdown_background();
    let (summary, cleanup) = result?;
    report::print(&summary, plan.json)?;
    cleanup
}

/// Set on the first SIGINT (the run stops early and reports what it did);
/// a second one exits at once.
fn watch_interrupt() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            set.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    flag
}

/// Creates the subscribers, runs the workload, deletes them if asked.
/// Returns the summary, and the cleanup's failure if it failed (after the
/// summary, which is still worth printing).
async fn measure<C: Client>(
    plan: &Plan,
    workers: &Workers,
    clients: Vec<C>,
    data: Option<&Path>,
    interrupted: &Arc<AtomicBool>,
) -> Result<(report::Summary, Result<(), String>), String> {
    let clients = connect(workers, clients).await?;
    let (clients, created) =
        each_subscriber(plan, workers, clients, Phase::Create, interrupted).await?;
    let rounds_before = clients.first().and_then(Client::flush_rounds);
    let disk_before = data.and_then(disk::flushes);
    let (clients, run) = load::run(plan, workers, clients, Arc::clone(interrupted)).await;
    let rounds = clients
        .first()
        .and_then(Client::flush_rounds)
        .zip(rounds_before)
        .map(|(after, before)| after.saturating_sub(before));
    let disk = data
        .and_then(disk::flushes)
        .zip(disk_before)
        .map(|((device, after), (_, before))| (device, after.saturating_sub(before)));
    let mut summary = report::Summary::new(plan, run, created, rounds, disk);
    let (clients, cleanup) = if plan.cleanup {
        // Deleting after an interrupted run is still wanted: a fresh flag.
        let not_interrupted = Arc::new(AtomicBool::new(false));
        match each_subscriber(plan, workers, clients, Phase::Delete, &not_interrupted).await {
            Ok((clients, deleted)) => {
                summary.deleted = Some(deleted);
                (clients, Ok(()))
            }
            Err(e) => (Vec::new(), Err(e)),
        }
    } else {
        (clients, Ok(()))
    };
    let cleanup = cleanup.and(clients.first().map_or(Ok(()), Client::close));
    Ok((summary, cleanup))
}

/// Opens every client's connection on its thread.
async fn connect<C: Client>(workers: &Workers, clients: Vec<C>) -> Result<Vec<C>, String> {
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            workers.spawn(index, async move {
                let result = client.connect().await;
                (client, result)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (client, result) = task
            .await
            .map_err(|e| format!("a connecting task failed: {e}"))?;
        result?;
        clients.push(client);
    }
    Ok(clients)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Create,
    Delete,
}

/// Creates (or deletes) every subscriber of the run, spread over the
/// clients; returns them with how many were created (deleted).
async fn each_subscriber<C: Client>(
    plan: &Plan,
    workers: &Workers,
    clients: Vec<C>,
    phase: Phase,
    interrupted: &Arc<AtomicBool>,
) -> Result<(Vec<C>, u64), String> {
    let total = plan.subscribers;
    let label = match phase {
        Phase::Create => "creating subscribers",
        Phase::Delete => "deleting subscribers",
    };
    let progress = Progress::counter(label, total);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            let (next, failed, interrupted) = (
                Arc::clone(&next),
                Arc::clone(&failed),
                Arc::clone(interrupted),
            );
            let bar = progress.handle();
            workers.spawn(index, async move {
                let mut done = 0u64;
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return (client, Ok(done));
                    }
                    if interrupted.load(Ordering::Relaxed) {
                        return (client, Err("interrupted".to_owned()));
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return (client, Ok(done));
                    }
                    let n = n as usize;
                    let result = match phase {
                        Phase::Create => client.create(n).await,
                        Phase::Delete => client.delete(n).await,
                    };
                    match result {
                        Ok(counted) => done += u64::from(counted),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return (client, Err(e));
                        }
                    }
                    bar.inc();
                }
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    let mut done = 0;
    let mut error = None;
    for task in tasks {
        let (client, result) = task
            .await
            .map_err(|e| format!("a {label} task failed: {e}"))?;
        clients.push(client);
        match result {
            Ok(n) => done += n,
            Err(e) => error = error.or(Some(e)),
        }
    }
    progress.finish();
    match error {
        Some(e) => Err(e),
        None => Ok((clients, done)),
    }
}
