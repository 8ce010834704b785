//! Crash test: a child process makes idempotent durable writes and is killed
//! with SIGKILL at a random moment, several times. After each kill, every
//! write whose call had returned is present with its record, replaying its
//! key returns the same outcome without executing, and no write exists
//! without its record nor a record without its write.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use subscriber_store::{
    Command, Config, Durability, Idempotency, IdempotencyKey, Store, SubscriberInput, Tenant,
};

const DIR_VAR: &str = "SUBSCRIBER_STORE_CRASH_DIR";
const START_VAR: &str = "SUBSCRIBER_STORE_CRASH_START";
const THREADS: usize = 4;
const ROUNDS: usize = 6;

fn key(thread: usize, i: u64) -> IdempotencyKey {
    IdempotencyKey::new(format!("t{thread}-{i}")).expect("valid key")
}

fn subscriber(thread: usize, i: u64) -> String {
    format!("s{thread}-{}", i % 3)
}

fn command(thread: usize, i: u64) -> Command {
    Command::SetOnline {
        subscriber_id: subscriber(thread, i),
        online: i % 3 != 0,
    }
}

fn open(dir: &Path) -> (Store, Tenant) {
    let store = Store::open(Config::new(dir).durability(Durability::Durable)).expect("open");
    let tenant = store.environments().expect("envs")[0].tenant();
    (store, tenant)
}

/// The child: writes until killed, printing `ack <thread> <i> <version>`
/// after each call returns.
#[test]
#[ignore = "the child process of acknowledged_idempotent_writes_survive_sigkill, which runs it"]
fn crash_child() {
    let dir = std::env::var(DIR_VAR).expect("run by the crash test");
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
                    println!("ack {t} {i} {}", version.0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
}

fn random_millis(low: u64, high: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(low);
    low + h.finish() % (high - low)
}

#[test]
fn acknowledged_idempotent_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(Config::new(dir.path())).expect("open");
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
    let mut starts = [0u64; THREADS];
    let (mut acked_total, mut kills) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let mut child = Process::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "crash_child", "--ignored", "--nocapture"])
            .env(DIR_VAR, dir.path())
            .env(
                START_VAR,
                starts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut acks = Vec::new();
            while let Some(Ok(line)) = lines.next() {
                let parts: Vec<&str> = line.split(' ').collect();
                if let ["ack", t, i, v] = parts[..] {
                    acks.push((
                        t.parse::<usize>().expect("t"),
                        i.parse::<u64>().expect("i"),
                        v.parse::<u64>().expect("v"),
                    ));
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(random_millis(150, 600)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
        let acks = reader.join().expect("reader");
        acked_total += acks.len();

        let (store, tenant) = open(dir.path());
        // Records form a prefix per thread (each thread writes in order).
        let mut versions: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (t, start) in starts.iter_mut().enumerate() {
            let mut i = 0;
            while let Some(done) = store.recorded(&tenant, &key(t, i)).expect("read") {
                let v = done.outcome.expect("document").version.0;
                versions.entry(subscriber(t, i)).or_default().insert(v);
                i += 1;
            }
            for gap in i..i + 16 {
                assert!(
                    store
                        .recorded(&tenant, &key(t, gap))
                        .expect("read")
                        .is_none(),
                    "record t{t}-{gap} exists after a missing one"
                );
            }
            *start = i;
        }
        // Every acknowledged write is there with its record and replays.
        let before: Vec<_> = versions
            .keys()
            .map(|s| store.get(&tenant, s).expect("subscriber"))
            .collect();
        for &(t, i, v) in &acks {
            let replay = store
                .execute_once(&tenant, command(t, i), None, &Idempotency::new(key(t, i)))
                .expect("replay");
            assert!(
                replay.replayed,
                "round {round}: t{t}-{i} acknowledged but not recorded"
            );
            assert_eq!(replay.outcome.expect("document").version.0, v);
        }
        let after: Vec<_> = versions
            .keys()
            .map(|s| store.get(&tenant, s).expect("subscriber"))
            .collect();
        assert_eq!(before, after, "replays must not write");
        // No write without its record, no record without its write: each
        // subscriber's versions 1..=__v each come from exactly one record.
        for (doc, (id, seen)) in after.iter().zip(&versions) {
            let expected: BTreeSet<u64> = (1..=doc.version.0).collect();
            assert_eq!(seen, &expected, "round {round}: versions of {id}");
        }
        eprintln!(
            "round {round}: {} acknowledged, {} recorded",
            acks.len(),
            starts.iter().sum::<u64>()
        );
    }
    eprintln!("{kills} kills, {acked_total} acknowledged writes, 0 lost");
    assert!(acked_total > 0, "the child acknowledged nothing");
}
