//! The PostgreSQL harness against real clusters: a committed row survives
//! `kill -9` and restart; a synchronous standby receives every commit and,
//! promoted after its primary is killed, takes writes. Skipped (one line on
//! stderr) where PostgreSQL is not installed, unless `CI` is set.

use std::time::{Duration, Instant};

use testkit::pg::PgCluster;

/// Polls `query` on `db` of `pg` (10 s at most) until it returns `expected`.
fn eventually(pg: &PgCluster, db: &str, query: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = pg.sql(db, query);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query} on port {} returned {got:?}, not {expected:?}, for 10 s",
            pg.port()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn committed_row_survives_kill9_and_restart() {
    let Some(mut pg) = PgCluster::start() else {
        return;
    };
    assert!(pg.is_up());
    let url = pg.create_database("crash");
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/crash", pg.port())
    );
    assert_eq!(pg.url(), pg.url_for("postgres"));
    assert_eq!(pg.sql("crash", "SHOW fsync"), "on");

    pg.sql("crash", "CREATE TABLE t (id int PRIMARY KEY, name text)");
    pg.sql("crash", "INSERT INTO t VALUES (1, 'kept')");
    let port = pg.port();
    pg.kill9();
    assert!(!pg.is_up(), "still up after kill9");

    pg.restart();
    assert!(pg.is_up());
    assert_eq!(pg.port(), port);
    assert_eq!(pg.sql("crash", "SELECT id, name FROM t"), "1|kept");

    // A clean stop and a second restart keep it too, and writes go on.
    pg.stop();
    assert!(!pg.is_up(), "still up after stop");
    pg.restart();
    pg.sql("crash", "INSERT INTO t VALUES (2, 'after')");
    assert_eq!(pg.sql("crash", "SELECT count(*) FROM t"), "2");
}

#[test]
fn start_with_appends_configuration() {
    let Some(pg) = PgCluster::start_with(&["synchronous_commit = remote_write"]) else {
        return;
    };
    assert_eq!(
        pg.sql("postgres", "SHOW synchronous_commit"),
        "remote_write"
    );
    assert_eq!(pg.sql("postgres", "SHOW max_connections"), "200");
    assert_eq!(pg.sql("postgres", "SHOW wal_level"), "replica");
    // Errors panic with psql's message.
    let error = std::panic::catch_unwind(|| pg.sql("postgres", "SELECT * FROM missing"))
        .expect_err("a query on a missing table must fail");
    let message = error
        .downcast_ref::<String>()
        .expect("panic message is a String");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn synchronous_standby_replicates_and_takes_over() {
    let Some(mut primary) = PgCluster::start() else {
        return;
    };
    primary.create_database("app");
    primary.sql("app", "CREATE TABLE t (id int PRIMARY KEY)");

    let standby = primary.standby(true);
    assert_ne!(standby.port(), primary.port());
    assert_eq!(
        primary.sql(
            "postgres",
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'"
        ),
        "sync"
    );
    assert_eq!(standby.sql("postgres", "SELECT pg_is_in_recovery()"), "t");

    primary.sql("app", "INSERT INTO t VALUES (1)");
    eventually(&standby, "app", "SELECT count(*) FROM t WHERE id = 1", "1");

    primary.kill9();
    assert!(!primary.is_up());
    standby.promote();
    assert_eq!(standby.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    standby.sql("app", "INSERT INTO t VALUES (2)");
    assert_eq!(
        standby.sql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "1,2"
    );
}

#[test]
fn asynchronous_standby_follows() {
    let Some(primary) = PgCluster::start() else {
        return;
    };
    primary.sql("postgres", "CREATE TABLE t (answer int)");
    let standby = primary.standby(false);
    assert_eq!(
        primary.sql(
            "postgres",
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'"
        ),
        "async"
    );
    primary.sql("postgres", "INSERT INTO t VALUES (42)");
    eventually(
        &standby,
        "postgres",
        "SELECT string_agg(answer::text, ',') FROM t",
        "42",
    );
}
