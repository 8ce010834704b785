//! Limits of the running binary (SPEC 8): the open-file limit is raised to
//! the hard one at start and the connection limit kept below it, so a full
//! house of idle clients cannot starve durable writes of descriptors; and
//! stalled request bodies do not hold up a shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{KEY, Reply, Server};

/// The soft and hard "Max open files" of a running process.
fn nofile_of(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in {limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// Descriptors the process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with_nofile(dir.path(), &[], 1024, 4096);
    assert_eq!(
        nofile_of(server.child.id()),
        ("4096".to_owned(), "4096".to_owned()),
        "the server runs with soft limit 4096 (raised from 1024)"
    );
    // 1024 connections fit under 4096: the limit is left as configured.
    let log = server.stderr_until("listening on", Duration::from_secs(1));
    assert!(
        log.iter().any(|l| l.contains("max_connections=1024")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("lowering --max-connections")),
        "{log:#?}"
    );
    assert_eq!(
        server.call("GET", "/v1/health-check", &[], None).status,
        200
    );
}

#[test]
fn a_full_house_of_idle_connections_leaves_descriptors_for_durable_writes() {
    // This process holds 1,100 connections and more.
    let own = rlimit::increase_nofile_limit(4096).expect("raise this test's open-file limit");
    assert!(
        own >= 1300,
        "this test needs an open-file limit of 1300, the hard limit allows {own}"
    );
    let dir = tempfile::tempdir().expect("dir");
    // soft = hard = 1024 and the default --max-connections 1024 (durable);
    // idle connections are not cut off while the test runs.
    let server =
        Server::start_with_nofile(dir.path(), &["--header-timeout-secs", "60"], 1024, 1024);
    let pid = server.child.id();
    let mut first = server.connect();
    let created = first.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    assert_eq!(
        created.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );

    let started = Instant::now();
    // Connected from a few threads: a connect whose SYN the kernel drops
    // under the burst waits a second for its retry.
    let addr = server.addr;
    let idle: Vec<TcpStream> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..10)
            .map(|t| {
                scope.spawn(move || {
                    (0..110)
                        .map(|i| {
                            TcpStream::connect(addr)
                                .unwrap_or_else(|e| panic!("idle connection {t}/{i}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("connecting thread"))
            .collect()
    });
    // Wait until the server has taken them all in: its descriptor count stops moving.
    let mut last = 0;
    let mut steady = 0;
    while steady < 5 && started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
        let now = open_descriptors(pid);
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    eprintln!(
        "{} idle connections opened; the server holds {last} descriptors after {:?}",
        idle.len(),
        started.elapsed()
    );

    for n in 0..5 {
        let body = format!("{{\"isOnline\": {}}}", n % 2 == 0);
        let reply = first.call("PATCH", "/v1/subscribers/u1/online-status", Some(&body));
        assert_eq!(
            reply.status,
            200,
            "durable write {n} with every connection slot taken: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.data()["__v"], n + 1);
    }

    let log = server.stderr_until("lowering --max-connections", Duration::from_secs(1));
    let warning = log
        .iter()
        .find(|l| l.contains("lowering --max-connections from 1024 to"))
        .unwrap_or_else(|| panic!("no warning about lowering the connection limit: {log:#?}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("the open-file limit is 1024"), "{warning}");

    // A connection over the (lowered) limit is answered 503 at once, not
    // left unaccepted for want of a descriptor.
    let mut over = TcpStream::connect(server.addr).expect("connect");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    over.write_all(b"GET /v1/health-check HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    let _ = over.read_to_end(&mut answer);
    let reply = Reply::try_parse(&answer).unwrap_or_else(|| {
        panic!(
            "a connection over the limit got no answer in 5 s: {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    assert_eq!(reply.status, 503);
    drop(idle);
    drop(server);
}

#[test]
fn stalled_bodies_do_not_hold_up_a_shutdown() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Server::start(
        dir.path(),
        &["--body-timeout-secs", "1", "--shutdown-grace-secs", "30"],
    );
    assert_eq!(
        server
            .call(
                "POST",
                "/v1/subscribers",
                &[],
                Some(r#"{"subscriberId":"u1"}"#)
            )
            .status,
        201
    );
    // Three clients announce 100 bytes of body and send one.
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let head = format!(
                "PATCH /v1/subscribers/u1/online-status HTTP/1.1\r\nHost: t\r\nAuthorization: ApiKey {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).expect("send");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.signal_term();
    let status = server.wait_exit(Duration::from_secs(10));
    let elapsed = started.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!("still running 10 s after SIGTERM (grace 30 s): stalled bodies hold up the drain")
    });
    assert!(status.success(), "exit status {status:?}");
    eprintln!("exited {elapsed:?} after SIGTERM with 3 stalled bodies");
    for mut stream in stalled {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let reply = Reply::parse(&answer);
        assert_eq!(reply.json()["statusCode"], 408, "{reply:?}");
        assert_eq!(reply.status, 408);
    }
}
