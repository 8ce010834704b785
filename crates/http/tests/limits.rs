//! Limits: body size (413 before buffering), header read timeout, connection limit.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Reply, TestServer};
use subscriber_http::ServerConfig;

#[test]
fn oversized_body_is_413_before_it_is_read() {
    let s = TestServer::start();
    s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"u1"}"#));
    let body = format!(
        "{{\"isOnline\": true, \"pad\": \"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let auth = s.auth_a();
    let reply = s.send(
        "PATCH",
        "/v1/subscribers/u1/online-status",
        &[("Authorization", &auth), ("idempotency-key", "big")],
        Some(body.as_bytes()),
    );
    reply.error(413, "Request body is larger than 262144 bytes");
    assert_eq!(reply.header("idempotency-key"), Some("big"));

    // Announce 300 KiB and send nothing: the answer cannot depend on reading it.
    let mut stream = TcpStream::connect(s.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let head = format!(
        "PATCH /v1/subscribers/u1/online-status HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        300 * 1024
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(Reply::parse(&answer).status, 413);

    // Chunked with no length: cut off once the stream passes the limit.
    let chunk = "x".repeat(64 * 1024);
    let mut raw = format!(
        "PATCH /v1/subscribers/u1/online-status HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..5 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    assert_eq!(s.send_raw(raw.as_bytes()).status, 413);
    assert_eq!(s.call("GET", "/v1/subscribers/u1", None).data()["__v"], 0);
}

#[test]
fn slow_headers_are_cut_off() {
    let s = TestServer::with_config(ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    let mut stream = TcpStream::connect(s.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut cut_off = false;
    // Sending all of it would take 9 s; the server must hang up long before.
    for byte in b"GET /v1/health-check HTTP/1.1\r\nHost: slow\r\n".iter() {
        if stream.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    if !cut_off {
        // Closed by the server (possibly after a 408): the read ends at once.
        cut_off = stream.read_to_end(&mut Vec::new()).is_ok();
    }
    let elapsed = started.elapsed();
    assert!(
        cut_off,
        "a client sending a byte every 200 ms was not cut off"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "cut off only after {elapsed:?}"
    );
    // Well-behaved clients are still served.
    assert_eq!(s.send("GET", "/v1/health-check", &[], None).status, 200);
}

#[test]
fn connections_over_the_limit_get_503_and_others_still_work() {
    let s = TestServer::with_config(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    });
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let stream = TcpStream::connect(s.addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let over = s.send("GET", "/v1/health-check", &[], None);
    assert_eq!(over.status, 503);
    assert_eq!(over.json()["statusCode"], 503);
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.send("GET", "/v1/health-check", &[], None).status, 200);
}

#[test]
fn idle_connections_holding_every_slot_are_cut_off_and_stop_starving_others() {
    let s = TestServer::with_config(ServerConfig {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    // Four clients connect and send nothing, holding every slot.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(s.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.send("GET", "/v1/health-check", &[], None).status, 503);
    // After the header timeout the server has hung up on them ...
    std::thread::sleep(Duration::from_millis(1500));
    for mut stream in idle.iter() {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = Vec::new();
        assert!(
            stream.read_to_end(&mut buf).is_ok(),
            "idle connection still open"
        );
    }
    // ... so a well-behaved client is served although they never closed.
    assert_eq!(s.send("GET", "/v1/health-check", &[], None).status, 200);
    drop(idle);
}
