//! Crash test: a child process makes idempotent durable writes and is killed
//! with SIGKILL at a random moment, several times. After each kill, every
//! write whose call had returned is present with its record, replaying its
//! key returns the same outcome without executing, and no write exists
//! without its record nor a record without its write. The presence feed
//! holds exactly one event per recorded write, and every event a reader in
//! the child read before the kill survives it.

mod writer;

use std::time::Duration;

use writer::{THREADS, Writer};

const ROUNDS: usize = 6;

/// The child: writes until killed.
#[test]
#[ignore = "the child process of acknowledged_idempotent_writes_survive_sigkill, which runs it"]
fn crash_child() {
    writer::write_until_killed();
}

#[test]
fn acknowledged_idempotent_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    writer::seed(dir.path());
    let mut starts = [0u64; THREADS];
    let mut cursor = 0;
    let mut events_seen = 0;
    let (mut acked_total, mut kills) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let child = Writer::spawn("crash_child", dir.path(), &starts, &[], None);
        std::thread::sleep(Duration::from_millis(150 + writer::random_below(450)));
        let (acks, lines) = child.kill();
        let seen = writer::seen_events(&lines);
        events_seen += seen.len();
        kills += 1;
        acked_total += acks.len();

        let (store, tenant) = writer::open(dir.path());
        let recorded = writer::check(
            &store,
            &tenant,
            &mut starts,
            &acks,
            &format!("round {round}"),
        );
        cursor = writer::check_feed(&store, &tenant, &seen, cursor, &format!("round {round}"));
        eprintln!(
            "round {round}: {} acknowledged, {recorded} recorded, {} events read before the kill, feed at {cursor}",
            acks.len(),
            seen.len()
        );
        writer::check_leases(store, &tenant, dir.path(), &format!("round {round}"));
    }
    eprintln!(
        "{kills} kills, {acked_total} acknowledged writes, 0 lost; {events_seen} events read live"
    );
    assert!(acked_total > 0, "the child acknowledged nothing");
    assert!(events_seen > 0, "the child's reader read nothing");
}
