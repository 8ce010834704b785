//! The crash workload of the store's own tests (tests/crash.rs kills it,
//! tests/power_cut.rs cuts its power): threads making durable idempotent
//! presence writes in a child process, and the checks after a restart.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::thread::JoinHandle;

use std::sync::Arc;

use subscriber_store::{
    Clock, Command, Config, Durability, Idempotency, IdempotencyKey, ManualClock, Store,
    SubscriberInput, SystemClock, Tenant, Timestamp,
};

pub const THREADS: usize = 4;
const DIR_VAR: &str = "SUBSCRIBER_STORE_CRASH_DIR";
const START_VAR: &str = "SUBSCRIBER_STORE_CRASH_START";

pub fn key(thread: usize, i: u64) -> IdempotencyKey {
    IdempotencyKey::new(format!("t{thread}-{i}")).expect("valid key")
}

pub fn subscriber(thread: usize, i: u64) -> String {
    format!("s{thread}-{}", i % 3)
}

/// Online writes are heartbeats with an hour-long lease (so the index of
/// deadlines is written on the way; nothing expires during a test), one in
/// three goes offline.
pub fn command(thread: usize, i: u64) -> Command {
    if i % 3 == 0 {
        Command::SetOnline {
            subscriber_id: subscriber(thread, i),
            online: false,
        }
    } else {
        Command::Heartbeat {
            subscriber_id: subscriber(thread, i),
            ttl_seconds: 3_600,
        }
    }
}

/// After a crash, every document that holds a lease still has its deadline
/// in the index: with a clock past every deadline, the expiry writes exactly
/// one expiry per such document. Closes `store`, then runs the expiry on a
/// copy of the directory, which stays as it was.
pub fn check_leases(store: Store, tenant: &Tenant, dir: &Path, context: &str) {
    let mut leased = 0;
    for t in 0..THREADS {
        for n in 0..3 {
            let doc = store.get(tenant, &format!("s{t}-{n}")).expect("subscriber");
            leased += usize::from(doc.online_expires_at().is_some());
        }
    }
    drop(store);
    let copy = tempfile::tempdir().expect("dir");
    copy_dir(dir, copy.path());
    let later = Timestamp::from_millis(store_now_ms() + 2 * 3_600 * 1_000);
    let clock = ManualClock::new(later);
    let store = Store::open(
        Config::new(copy.path())
            .durability(Durability::Durable)
            .clock(Arc::new(clock))
            .background_expiry(false),
    )
    .expect("reopen later");
    assert_eq!(
        store.expire_due(usize::MAX).expect("expire"),
        leased,
        "{context}: a document holds a lease the index does not know"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn store_now_ms() -> u64 {
    SystemClock.now().as_millis()
}

pub fn open(dir: &Path) -> (Store, Tenant) {
    let store = Store::open(Config::new(dir).durability(Durability::Durable)).expect("open");
    let tenant = store.environments().expect("envs")[0].tenant();
    (store, tenant)
}

pub fn random_below(n: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n
}

/// An environment and the subscribers the writers use, made durable.
pub fn seed(dir: &Path) {
    let store = Store::open(Config::new(dir)).expect("open");
    let org = store.create_organization("crash").expect("org");
    let env = store.create_environment(org.id, "crash").expect("env");
    for t in 0..THREADS {
        for n in 0..3 {
            store
                .upsert(
                    &env.tenant(),
                    SubscriberInput::new(format!("s{t}-{n}")),
                    None,
                )
                .expect("create");
        }
    }
}

/// The child's side: writes from [`THREADS`] threads until killed,
/// printing `ack <thread> <i> <version>` after each call returns.
pub fn write_until_killed() {
    let dir = std::env::var(DIR_VAR).expect("run by a crash test");
    let starts: Vec<u64> = std::env::var(START_VAR)
        .expect("start indexes")
        .split(',')
        .map(|s| s.parse().expect("number"))
        .collect();
    let (store, tenant) = open(Path::new(&dir));
    println!("ready");
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let start = starts[t];
            std::thread::spawn(move || {
                for i in start.. {
                    let once = Idempotency::new(key(t, i));
                    let done = store
                        .execute_once(&tenant, command(t, i), None, &once)
                        .expect("write");
                    let version = done.outcome.expect("document").version;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {t} {i} {}", version.0).expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
}

/// An acknowledged write: thread, index, the `__v` it returned.
pub type Ack = (usize, u64, u64);

/// A running child: its process and what it has printed.
pub struct Writer {
    pub child: Child,
    reader: JoinHandle<(Vec<Ack>, Vec<String>)>,
}

impl Writer {
    /// Runs the `#[ignore]`d test `child_test` of this test binary (which
    /// calls [`write_until_killed`]) on `dir`, each thread starting at its
    /// index in `starts`. `stop` lines (`stopped at ...`) are sent on
    /// `stops` as they are printed.
    pub fn spawn(
        child_test: &str,
        dir: &Path,
        starts: &[u64; THREADS],
        env: &[(&str, String)],
        stops: Option<std::sync::mpsc::Sender<String>>,
    ) -> Writer {
        let mut child = Process::new(std::env::current_exe().expect("test binary"));
        child
            .args(["--exact", child_test, "--ignored", "--nocapture"])
            .env(DIR_VAR, dir)
            .env(
                START_VAR,
                starts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            child.env(name, value);
        }
        let mut child = child.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let (mut acks, mut others) = (Vec::new(), Vec::new());
            while let Some(Ok(line)) = lines.next() {
                let parts: Vec<&str> = line.split(' ').collect();
                if let ["ack", t, i, v] = parts[..] {
                    acks.push((
                        t.parse::<usize>().expect("t"),
                        i.parse::<u64>().expect("i"),
                        v.parse::<u64>().expect("v"),
                    ));
                } else {
                    if line.starts_with("stopped at") {
                        if let Some(stops) = &stops {
                            let _ = stops.send(line.clone());
                        }
                    }
                    others.push(line);
                }
            }
            (acks, others)
        });
        Writer { child, reader }
    }

    /// SIGKILL, then what it acknowledged and its other lines.
    pub fn kill(mut self) -> (Vec<Ack>, Vec<String>) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.reader.join().expect("reader")
    }
}

/// After a crash: every acknowledged write is there with its record and
/// replays without writing; records form a prefix per thread; no write
/// without its record, no record without its write (each subscriber's
/// versions 1..=__v come from exactly one record each). Moves `starts` past
/// the recorded writes and returns how many are recorded.
pub fn check(
    store: &Store,
    tenant: &Tenant,
    starts: &mut [u64; THREADS],
    acks: &[Ack],
    context: &str,
) -> u64 {
    let mut versions: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (t, start) in starts.iter_mut().enumerate() {
        let mut i = 0;
        while let Some(done) = store.recorded(tenant, &key(t, i)).expect("read") {
            let v = done.outcome.expect("document").version.0;
            versions.entry(subscriber(t, i)).or_default().insert(v);
            i += 1;
        }
        for gap in i..i + 16 {
            assert!(
                store
                    .recorded(tenant, &key(t, gap))
                    .expect("read")
                    .is_none(),
                "{context}: record t{t}-{gap} exists after a missing one"
            );
        }
        *start = i;
    }
    let before: Vec<_> = versions
        .keys()
        .map(|s| store.get(tenant, s).expect("subscriber"))
        .collect();
    for &(t, i, v) in acks {
        let replay = store
            .execute_once(tenant, command(t, i), None, &Idempotency::new(key(t, i)))
            .expect("replay");
        assert!(
            replay.replayed,
            "{context}: t{t}-{i} acknowledged but not recorded"
        );
        assert_eq!(replay.outcome.expect("document").version.0, v);
    }
    let after: Vec<_> = versions
        .keys()
        .map(|s| store.get(tenant, s).expect("subscriber"))
        .collect();
    assert_eq!(before, after, "{context}: replays must not write");
    for (doc, (id, seen)) in after.iter().zip(&versions) {
        let expected: BTreeSet<u64> = (1..=doc.version.0).collect();
        assert_eq!(seen, &expected, "{context}: versions of {id}");
    }
    starts.iter().sum()
}
