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
/// deadlines is written on the way; nothing expires during a test); each
/// subscriber alternates online and offline, so every write flips its
/// presence and appends one event to the feed.
pub fn command(thread: usize, i: u64) -> Command {
    if !online_at(i) {
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

/// Whether write `i` of a thread goes online.
pub fn online_at(i: u64) -> bool {
    (i / 3) % 2 == 0
}

/// An event a reader in the child printed: seq, subscriber, `__v`, online.
pub type SeenEvent = (u64, String, u64, bool);

/// The events among a child's other lines.
pub fn seen_events(lines: &[String]) -> Vec<SeenEvent> {
    lines
        .iter()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[..] {
                ["event", seq, sub, v, online] => Some((
                    seq.parse().expect("seq"),
                    sub.to_owned(),
                    v.parse().expect("v"),
                    online == "true",
                )),
                _ => None,
            }
        })
        .collect()
}

/// After a crash: the feed holds one event per recorded write (each flips
/// presence), in `seq` order, each subscriber's in version order
/// alternating online and offline; every event a reader saw before the
/// crash is there, unchanged; a reader resuming from `cursor` reads the
/// feed's tail; the online query and the counts agree with the feed.
/// Returns the last seq.
pub fn check_feed(
    store: &Store,
    tenant: &Tenant,
    seen: &[SeenEvent],
    cursor: u64,
    context: &str,
) -> u64 {
    let mut feed = Vec::new();
    let mut after = None;
    loop {
        let page = store.events(tenant, after, 1000).expect("events");
        if page.events.is_empty() {
            break;
        }
        after = Some(page.next);
        feed.extend(page.events);
    }
    assert!(
        feed.windows(2).all(|w| w[0].seq < w[1].seq),
        "{context}: seqs out of order"
    );
    let mut by_subscriber: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for event in &feed {
        by_subscriber
            .entry(event.subscriber_id.clone())
            .or_default()
            .push((event.version.0, event.is_online));
    }
    let mut online = BTreeSet::new();
    for t in 0..THREADS {
        for n in 0..3 {
            let id = format!("s{t}-{n}");
            let doc = store.get(tenant, &id).expect("subscriber");
            let events = by_subscriber.remove(&id).unwrap_or_default();
            let expected: Vec<(u64, bool)> = (1..=doc.version.0).map(|v| (v, v % 2 == 1)).collect();
            assert_eq!(events, expected, "{context}: the events of {id}");
            if doc.is_online == Some(true) {
                online.insert(id);
            }
        }
    }
    assert!(by_subscriber.is_empty(), "{context}: events of nobody");
    for (seq, sub, v, is_online) in seen {
        let event = feed
            .iter()
            .find(|e| e.seq == *seq)
            .unwrap_or_else(|| panic!("{context}: event {seq}, read before the crash, is gone"));
        assert_eq!(
            (&event.subscriber_id, event.version.0, event.is_online),
            (sub, *v, *is_online),
            "{context}: event {seq} changed"
        );
    }
    let tail = store.events(tenant, Some(cursor), 1000).expect("resume");
    let expected_tail: Vec<_> = feed.iter().filter(|e| e.seq > cursor).take(1000).collect();
    assert_eq!(
        tail.events.iter().collect::<Vec<_>>(),
        expected_tail,
        "{context}: a reader resuming after {cursor}"
    );
    let mut listed = BTreeSet::new();
    let mut query = subscriber_store::OnlineQuery {
        limit: 5,
        ..Default::default()
    };
    loop {
        let page = store.online(tenant, &query).expect("online");
        listed.extend(page.subscribers.into_iter().map(|doc| doc.subscriber_id));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, online, "{context}: the online query");
    let stats = store.presence_stats(tenant).expect("stats");
    assert_eq!(
        (stats.online, stats.subscribers),
        (online.len() as u64, (THREADS * 3) as u64),
        "{context}: the counts"
    );
    feed.last().map_or(0, |e| e.seq)
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
    {
        // A reader of the feed: prints every event it reads (the parent
        // checks they all survive the crash).
        let (store, tenant) = (store.clone(), tenant);
        std::thread::spawn(move || {
            let mut after = store.last_event(&tenant).expect("last event");
            loop {
                let page = store.events(&tenant, Some(after), 1000).expect("events");
                let mut out = std::io::stdout().lock();
                for e in &page.events {
                    writeln!(
                        out,
                        "event {} {} {} {}",
                        e.seq, e.subscriber_id, e.version.0, e.is_online
                    )
                    .expect("stdout");
                }
                out.flush().expect("stdout");
                drop(out);
                after = page.next;
                if page.events.is_empty() {
                    let _ =
                        store.wait_for_event(&tenant, after, std::time::Duration::from_millis(100));
                }
            }
        });
    }
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
