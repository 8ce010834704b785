//! The presence feed's fan-out over HTTP (issue 13): how long an event takes
//! to reach many live readers of `GET /v1/presence/events`.
//!
//! `sse_fanout --url http://ADDR --key KEY --readers 1000 --seconds 10
//! --rate 200 --subscribers 1000 [--connections 16] [--prefix subscriber-]
//! [--drain 10]` opens `--readers` server-sent event streams (each from
//! now), waits until every one has its 200 headers, then writes presence
//! flips at `--rate` writes/s for `--seconds` (open loop: write i is due at
//! i / rate whatever the answers; spread over `--connections` keep-alive
//! connections). Write i flips subscriber `i mod --subscribers` (ids
//! `PREFIX%07d`, as `populate` makes them), to the opposite of its current
//! `isOnline` (read before the run), so every write appends exactly one
//! event; the next free connection takes the next due write, and a
//! subscriber's write waits for its previous one's answer, so its writes
//! stay in order. Each reader records every event it parses (seq,
//! subscriber, `__v`, receive time); once every write is answered and
//! every reader has all events (or `--drain` seconds pass), the streams are
//! closed and each event is matched to its write by (subscriberId, `__v`),
//! the `__v` the write's 200 answer carried.
//!
//! The delivery lag is the receive time minus the instant the write's 200
//! arrived; an event that arrived before its write's 200 (the event is
//! readable once its flush round is durable, the answer travels separately)
//! is measured from the moment the write was sent instead, and counted.
//! Per reader, seqs must be strictly increasing and every acknowledged
//! write's event must arrive exactly once. The readers, the writers and the
//! server share the machine's cores: the lag includes the readers' own
//! scheduling. Prints a Markdown table and a line with the p99.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};

#[derive(Debug, Clone)]
struct Args {
    host: String,
    key: String,
    readers: usize,
    seconds: f64,
    rate: f64,
    subscribers: u64,
    connections: usize,
    prefix: String,
    drain: f64,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter().position(|a| a == name).map(|i| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .clone()
        })
    };
    let num = |name: &str, default: f64| {
        get(name).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("{name}: a number"))
        })
    };
    let url = get("--url").expect("--url http://ADDR");
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let args = Args {
        host,
        key: get("--key").expect("--key KEY"),
        readers: num("--readers", 1000.0) as usize,
        seconds: num("--seconds", 10.0),
        rate: num("--rate", 200.0),
        subscribers: num("--subscribers", 1000.0) as u64,
        connections: num("--connections", 16.0) as usize,
        prefix: get("--prefix").unwrap_or_else(|| "subscriber-".into()),
        drain: num("--drain", 10.0),
    };
    assert!(args.subscribers >= 1 && args.connections >= 1 && args.rate > 0.0);
    args
}

/// Nanoseconds since the run's origin.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ns(self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// One event as a reader saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    seq: u64,
    subscriber: u64,
    version: u64,
    at_ns: u64,
}

/// One write as its connection saw it.
#[derive(Debug, Clone, Copy)]
struct Written {
    subscriber: u64,
    /// `data.__v` of the 200 answer.
    version: u64,
    due_ns: u64,
    sent_ns: u64,
    acked_ns: u64,
}

#[derive(Debug, Default)]
struct WriterReport {
    writes: Vec<Written>,
    failed: u64,
    /// 200 answers whose `__v` was not the one after the previous write's.
    version_surprises: u64,
    /// 200 answers whose `isOnline` was not the value sent.
    not_flipped: u64,
}

#[derive(Debug, Default)]
struct ReaderReport {
    /// The stream's 200 headers arrived.
    opened: bool,
    seen: Vec<Seen>,
    unparsed: u64,
    /// The stream ended (or failed) before it was closed by us.
    ended_early: Option<String>,
}

async fn connect(host: &str) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn subscriber_id(args: &Args, index: u64) -> String {
    format!("{}{index:07}", args.prefix)
}

/// `(isOnline, __v)` of a subscriber document answer.
fn online_and_version(body: &[u8]) -> Option<(Option<bool>, u64)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = value.get("data")?;
    let version = data.get("__v")?.as_u64()?;
    Some((
        data.get("isOnline").and_then(serde_json::Value::as_bool),
        version,
    ))
}

async fn request(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    args: &Args,
    method: &str,
    path: &str,
    body: Option<&'static str>,
) -> Result<(StatusCode, Bytes, u64), String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, &args.host)
        .header(header::AUTHORIZATION, format!("ApiKey {}", args.key));
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from_static(body.unwrap_or("").as_bytes())))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let headers_at = Instant::now();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes, headers_at.elapsed().as_nanos() as u64))
}

/// A written subscriber's state, shared by the writer connections.
#[derive(Debug, Clone, Copy)]
struct Sub {
    online: bool,
    version: u64,
    /// A write to it is in flight: the next one waits, so that each write
    /// flips it and its `__v` follow in order.
    busy: bool,
}

type Subs = Arc<std::sync::Mutex<HashMap<u64, Sub>>>;
type Jobs = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(u64, u64)>>>;

/// One writer connection: reads the state of the subscribers `owned`, then
/// takes the next due write (write number, subscriber) from the shared
/// queue whenever it is free, so a slow answer holds up only its own
/// connection.
async fn writer(
    args: Arc<Args>,
    clock: Clock,
    owned: Vec<u64>,
    subs: Subs,
    ready: mpsc::Sender<Result<(), String>>,
    jobs: Jobs,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut sender = match connect(&args.host).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("writer connect: {e}"))).await;
            return report;
        }
    };
    for &j in &owned {
        let path = format!("/v1/subscribers/{}", subscriber_id(&args, j));
        match request(&mut sender, &args, "GET", &path, None).await {
            Ok((StatusCode::OK, body, _)) => {
                let (online, version) = online_and_version(&body).expect("a subscriber document");
                // Never set: the first write sets it to true (an event too).
                let online = online.unwrap_or(false);
                subs.lock().unwrap().insert(
                    j,
                    Sub {
                        online,
                        version,
                        busy: false,
                    },
                );
            }
            Ok((status, body, _)) => {
                let _ = ready
                    .send(Err(format!(
                        "GET {path}: {status} {}",
                        String::from_utf8_lossy(&body)
                    )))
                    .await;
                return report;
            }
            Err(e) => {
                let _ = ready.send(Err(format!("GET {path}: {e}"))).await;
                return report;
            }
        }
    }
    let _ = ready.send(Ok(())).await;
    drop(ready);
    let rate = args.rate;
    loop {
        let job = jobs.lock().await.recv().await;
        let Some((i, j)) = job else { break };
        let (online, version) = loop {
            {
                let mut subs = subs.lock().unwrap();
                let sub = subs.get_mut(&j).expect("read before the run");
                if !sub.busy {
                    sub.busy = true;
                    break (sub.online, sub.version);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let target = !online;
        let body: &'static str = if target {
            r#"{"isOnline": true}"#
        } else {
            r#"{"isOnline": false}"#
        };
        let path = format!("/v1/subscribers/{}/online-status", subscriber_id(&args, j));
        let sent_ns = clock.ns();
        let answer = request(&mut sender, &args, "PATCH", &path, Some(body)).await;
        let mut now = (online, version);
        let broken = answer.is_err();
        match answer {
            Ok((StatusCode::OK, bytes, since_headers)) => {
                let acked_ns = clock.ns() - since_headers;
                if let Some((now_online, new_version)) = online_and_version(&bytes) {
                    if new_version != version + 1 {
                        report.version_surprises += 1;
                    }
                    if now_online != Some(target) {
                        report.not_flipped += 1;
                    }
                    now = (now_online.unwrap_or(target), new_version);
                    report.writes.push(Written {
                        subscriber: j,
                        version: new_version,
                        due_ns: (i as f64 / rate * 1e9) as u64,
                        sent_ns,
                        acked_ns,
                    });
                } else {
                    report.failed += 1;
                }
            }
            Ok((status, bytes, _)) => {
                report.failed += 1;
                eprintln!("PATCH {path}: {status} {}", String::from_utf8_lossy(&bytes));
            }
            Err(e) => {
                report.failed += 1;
                eprintln!("PATCH {path}: {e}");
            }
        }
        {
            let mut subs = subs.lock().unwrap();
            let sub = subs.get_mut(&j).expect("read before the run");
            (sub.online, sub.version, sub.busy) = (now.0, now.1, false);
        }
        if broken {
            match connect(&args.host).await {
                Ok(s) => sender = s,
                Err(e) => {
                    eprintln!("writer reconnect: {e}");
                    return report;
                }
            }
        }
    }
    report
}

/// The value of `"name":"..."` (a string without escapes) in `json`.
fn string_field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let start = json.find(name)? + name.len();
    let rest = &json[start..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The unsigned number after `name` in `json`.
fn number_field(json: &str, name: &str) -> Option<u64> {
    let start = json.find(name)? + name.len();
    let rest = &json[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// (seq, subscriber index, `__v`) of one event's `data:` JSON.
fn parse_event(json: &str, prefix: &str) -> Option<(u64, u64, u64)> {
    let seq = string_field(json, "\"seq\":\"")?.parse().ok()?;
    let id = string_field(json, "\"subscriberId\":\"")?;
    let subscriber = id.strip_prefix(prefix)?.parse().ok()?;
    let version = number_field(json, "\"__v\":")?;
    Some((seq, subscriber, version))
}

/// One reader: opens the stream, says when its headers are in, then
/// records every event until `stop`.
async fn reader(
    args: Arc<Args>,
    clock: Clock,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Result<(), String>>,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> ReaderReport {
    let mut report = ReaderReport::default();
    let permit = gate.acquire_owned().await.expect("the gate stays open");
    let opened = async {
        let stream = TcpStream::connect(&args.host)
            .await
            .map_err(|e| format!("reader connect: {e}"))?;
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .uri("/v1/presence/events")
            .header(header::HOST, &args.host)
            .header(header::AUTHORIZATION, format!("ApiKey {}", args.key))
            .header(header::ACCEPT, "text/event-stream")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
        }
        Ok(response.into_body())
    }
    .await;
    drop(permit);
    let mut body = match opened {
        Ok(body) => {
            report.opened = true;
            let _ = ready.send(Ok(())).await;
            body
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone())).await;
            report.ended_early = Some(e);
            return report;
        }
    };
    drop(ready);
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stop.wait_for(|s| *s) => break,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                report.ended_early = Some(e.to_string());
                break;
            }
            None => {
                report.ended_early = Some("the stream ended".into());
                break;
            }
        };
        let at_ns = clock.ns();
        buffer.extend_from_slice(&data);
        // Complete events end with an empty line.
        let mut consumed = 0;
        while let Some(end) = buffer[consumed..].windows(2).position(|w| w == b"\n\n") {
            let block = &buffer[consumed..consumed + end];
            consumed += end + 2;
            let Ok(text) = std::str::from_utf8(block) else {
                report.unparsed += 1;
                continue;
            };
            let Some(json) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                // A comment (keep-alive) or an event without data.
                continue;
            };
            match parse_event(json, &args.prefix) {
                Some((seq, subscriber, version)) => {
                    report.seen.push(Seen {
                        seq,
                        subscriber,
                        version,
                        at_ns,
                    });
                    received.fetch_add(1, Ordering::Relaxed);
                }
                None => report.unparsed += 1,
            }
        }
        buffer.drain(..consumed);
    }
    report
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

fn main() {
    let args = Arc::new(parse_args());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Arc<Args>) {
    let clock = Clock(Instant::now());
    let planned = (args.rate * args.seconds).ceil() as u64;

    // Writers first: each reads its subscribers' state before any reader
    // opens, so nothing is written while the readers connect.
    let used = args.subscribers.min(planned.max(1));
    let (ready_tx, mut ready_rx) = mpsc::channel(args.connections);
    let subs: Subs = Arc::default();
    let (job_sender, job_receiver) = mpsc::unbounded_channel();
    let jobs: Jobs = Arc::new(tokio::sync::Mutex::new(job_receiver));
    let mut writers = Vec::new();
    for c in 0..args.connections {
        let owned: Vec<u64> = (0..used)
            .filter(|j| j % args.connections as u64 == c as u64)
            .collect();
        writers.push(tokio::spawn(writer(
            args.clone(),
            clock,
            owned,
            subs.clone(),
            ready_tx.clone(),
            jobs.clone(),
        )));
    }
    drop(ready_tx);
    while let Some(r) = ready_rx.recv().await {
        if let Err(e) = r {
            eprintln!("sse_fanout: {e}");
            std::process::exit(1);
        }
    }

    // Readers: at most 64 opening at once, so the listen backlog holds.
    let opening = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(args.readers.max(1));
    let mut readers = Vec::new();
    for _ in 0..args.readers {
        readers.push(tokio::spawn(reader(
            args.clone(),
            clock,
            gate.clone(),
            ready_tx.clone(),
            received.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ready_tx);
    let (mut connected, mut refused) = (0usize, Vec::new());
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => connected += 1,
            Err(e) => refused.push(e),
        }
    }
    let open_secs = opening.elapsed().as_secs_f64();
    if !refused.is_empty() {
        eprintln!(
            "sse_fanout: {} readers could not open their stream, first: {} \
             (too many open files? raise `ulimit -n`; the server's --max-connections)",
            refused.len(),
            refused[0]
        );
    }
    if connected == 0 {
        std::process::exit(1);
    }

    // The open loop: write i is due at i / rate from now.
    let writes_start = clock.ns();
    let start = tokio::time::Instant::now();
    let mut late_ns = 0u64;
    for i in 0..planned {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due).await;
        late_ns = late_ns.max(due.elapsed().as_nanos() as u64);
        let j = i % args.subscribers;
        let _ = job_sender.send((i, j));
    }
    drop(job_sender);
    let mut writes = WriterReport::default();
    for w in writers {
        let r = w.await.expect("writer task");
        writes.writes.extend(r.writes);
        writes.failed += r.failed;
        writes.version_surprises += r.version_surprises;
        writes.not_flipped += r.not_flipped;
    }
    let writes_secs = (clock.ns() - writes_start) as f64 / 1e9;
    let acked = writes.writes.len() as u64;

    // Drain: until every reader has every event, or --drain seconds.
    let expected = acked * connected as u64;
    let drain_end = Instant::now() + Duration::from_secs_f64(args.drain);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A little longer, so that a duplicate would show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let mut reports = Vec::new();
    for r in readers {
        reports.push(r.await.expect("reader task"));
    }

    // Match events to writes.
    let index: HashMap<(u64, u64), usize> = writes
        .writes
        .iter()
        .enumerate()
        .map(|(k, w)| ((w.subscriber, w.version), k))
        .collect();
    let mut lags = Vec::with_capacity(expected as usize);
    let mut from_send = Vec::with_capacity(expected as usize);
    let mut last_reader = vec![0u64; writes.writes.len()];
    let (mut delivered, mut lost, mut duplicated, mut unexpected, mut disordered) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut before_ack, mut gaps, mut complete, mut unparsed) = (0u64, 0u64, 0usize, 0u64);
    let mut ended_early = Vec::new();
    for report in reports.iter().filter(|r| r.opened) {
        if let Some(e) = &report.ended_early {
            ended_early.push(e.clone());
        }
        unparsed += report.unparsed;
        let mut got = vec![false; writes.writes.len()];
        let mut previous: Option<u64> = None;
        let mut in_order = true;
        for seen in &report.seen {
            delivered += 1;
            if let Some(p) = previous {
                if seen.seq <= p {
                    disordered += 1;
                    in_order = false;
                } else {
                    gaps += seen.seq - p - 1;
                }
            }
            previous = Some(previous.map_or(seen.seq, |p| p.max(seen.seq)));
            let Some(&k) = index.get(&(seen.subscriber, seen.version)) else {
                unexpected += 1;
                continue;
            };
            if got[k] {
                duplicated += 1;
                in_order = false;
                continue;
            }
            got[k] = true;
            let w = &writes.writes[k];
            from_send.push(seen.at_ns.saturating_sub(w.sent_ns));
            let lag = if seen.at_ns >= w.acked_ns {
                seen.at_ns - w.acked_ns
            } else {
                before_ack += 1;
                seen.at_ns.saturating_sub(w.sent_ns)
            };
            lags.push(lag);
            last_reader[k] = last_reader[k].max(lag);
        }
        let missing = got.iter().filter(|g| !**g).count() as u64;
        lost += missing;
        if missing == 0 && in_order {
            complete += 1;
        }
    }
    lags.sort_unstable();
    from_send.sort_unstable();
    last_reader.sort_unstable();
    let mut write_latency: Vec<u64> = writes
        .writes
        .iter()
        .map(|w| w.acked_ns - w.sent_ns)
        .collect();
    write_latency.sort_unstable();
    let send_delay = writes
        .writes
        .iter()
        .map(|w| w.sent_ns.saturating_sub(writes_start + w.due_ns))
        .max()
        .unwrap_or(0);

    println!("| SSE fan-out | value |");
    println!("|---|---:|");
    println!(
        "| readers connected (all 200 before the first write) | {connected} of {} in {open_secs:.2} s |",
        args.readers
    );
    println!(
        "| writes acknowledged (200) | {acked} of {planned} in {writes_secs:.2} s ({:.0}/s); failed {} |",
        acked as f64 / writes_secs.max(1e-9),
        writes.failed
    );
    println!(
        "| write latency, sent to 200: p50 / p99 (ms) | {} / {} |",
        ms(percentile(&write_latency, 50.0)),
        ms(percentile(&write_latency, 99.0))
    );
    println!(
        "| open loop: latest send after its due time (ms) | {} |",
        ms(send_delay.max(late_ns))
    );
    println!("| events expected (writes × readers) | {expected} |");
    println!(
        "| events delivered: all / matched to a write | {delivered} / {} |",
        lags.len()
    );
    println!(
        "| lost / duplicated / out of seq order / not from a write | {lost} / {duplicated} / {disordered} / {unexpected} |"
    );
    println!("| readers with every event once, seqs increasing | {complete} of {connected} |");
    println!("| seq gaps seen (SPEC allows gaps) | {gaps} |");
    println!(
        "| delivery lag after the write's 200: p50 / p90 / p99 / max (ms) | {} / {} / {} / {} |",
        ms(percentile(&lags, 50.0)),
        ms(percentile(&lags, 90.0)),
        ms(percentile(&lags, 99.0)),
        ms(lags.last().copied().unwrap_or(0))
    );
    println!(
        "| per write, until the last reader had it: p50 / p99 (ms) | {} / {} |",
        ms(percentile(&last_reader, 50.0)),
        ms(percentile(&last_reader, 99.0))
    );
    println!(
        "| events received before their write's 200 (lag above measured from the send) | {before_ack} |"
    );
    println!(
        "| for comparison, every event from its write's send: p50 / p99 (ms) | {} / {} |",
        ms(percentile(&from_send, 50.0)),
        ms(percentile(&from_send, 99.0))
    );
    if writes.version_surprises + writes.not_flipped + unparsed > 0 {
        println!(
            "| answers with an unexpected __v / not flipped; unparsed events | {} / {} ; {unparsed} |",
            writes.version_surprises, writes.not_flipped
        );
    }
    if !ended_early.is_empty() {
        println!(
            "| streams ended before the end (first cause) | {} ({}) |",
            ended_early.len(),
            ended_early[0]
        );
    }
    println!();
    println!(
        "Delivery lag p99 with {connected} readers at {:.0} writes/s: {} ms (p50 {} ms, max {} ms); {lost} of {expected} events lost, {duplicated} duplicated.",
        args.rate,
        ms(percentile(&lags, 99.0)),
        ms(percentile(&lags, 50.0)),
        ms(lags.last().copied().unwrap_or(0))
    );
}
