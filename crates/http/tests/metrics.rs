//! `GET /metrics` cardinality (SPEC 9): every label takes its values from a
//! set fixed at build time, so no request, with or without a key, can add
//! a series: methods outside the API's are `other`, routes are templates,
//! unmatched paths are one value.

mod common;

use common::TestServer;

/// A small xorshift generator: random enough for method names and paths,
/// reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An extension method hyper accepts: `X`, then 4 to 8 letters and
    /// digits, one of them a digit, so it is never one of the API's.
    fn method(&mut self) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let len = 4 + self.below(5) as usize;
        let mut name = String::from("X");
        for _ in 0..len {
            name.push(CHARS[self.below(CHARS.len() as u64) as usize] as char);
        }
        name.push(char::from(b'0' + self.below(10) as u8));
        name
    }

    /// A path no route matches.
    fn unmatched_path(&mut self) -> String {
        format!("/r{}/x{}", self.next() % 1_000_000, self.next() % 1_000)
    }

    /// A path a route matches, for a method it does not answer.
    fn known_path(&mut self) -> String {
        let id = self.next() % 1_000_000;
        match self.below(4) {
            0 => format!("/v1/subscribers/s{id}"),
            1 => format!("/v2/subscribers/s{id}"),
            2 => format!("/v1/subscribers/s{id}/online-status"),
            _ => "/v1/presence/online".to_owned(),
        }
    }
}

fn scrape(s: &TestServer) -> String {
    let reply = s.send("GET", "/metrics", &[], None);
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body).expect("utf-8 metrics")
}

/// The series of the request counter and of the latency histogram.
fn series(text: &str) -> (usize, usize) {
    let requests = text
        .lines()
        .filter(|l| l.starts_with("subscriberd_http_requests_total{"))
        .count();
    let histogram = text
        .lines()
        .filter(|l| l.starts_with("subscriberd_http_request_duration_seconds_count{"))
        .count();
    (requests, histogram)
}

/// The sum of the request counter's series with `method="other"`.
fn other_requests(text: &str) -> i64 {
    text.lines()
        .filter(|l| {
            l.starts_with("subscriberd_http_requests_total{") && l.contains(r#"method="other""#)
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("not a count: {l}"))
        })
        .sum()
}

#[test]
fn random_methods_and_paths_add_no_series() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let s = TestServer::start();
    let auth = s.auth_a();
    // One of each kind first, so the `other` and `unmatched` series exist,
    // and a scrape, so /metrics' own series does.
    for with_key in [false, true] {
        let headers: Vec<(&str, &str)> = if with_key {
            vec![("Authorization", &auth)]
        } else {
            Vec::new()
        };
        let (m, p) = (rng.method(), rng.unmatched_path());
        assert_eq!(s.send(&m, &p, &headers, None).status, 404, "{m} {p}");
        let (m, p) = (rng.method(), rng.known_path());
        assert_eq!(s.send(&m, &p, &headers, None).status, 405, "{m} {p}");
    }
    scrape(&s);

    let before = scrape(&s);
    let sent = 2_000;
    for i in 0..sent {
        let method = rng.method();
        let path = if i % 2 == 0 {
            rng.unmatched_path()
        } else {
            rng.known_path()
        };
        let headers: Vec<(&str, &str)> = if i % 3 == 0 {
            vec![("Authorization", &auth)]
        } else {
            Vec::new()
        };
        let status = s.send(&method, &path, &headers, None).status;
        assert!(
            status == 404 || status == 405,
            "{method} {path}: {status} (seed {seed})"
        );
    }
    let after = scrape(&s);
    assert_eq!(
        series(&after),
        series(&before),
        "(request series, histogram series) grew with {sent} random methods and paths (seed {seed})"
    );
    assert_eq!(
        other_requests(&after) - other_requests(&before),
        sent,
        "every request with a method outside the API's counts as method=\"other\" (seed {seed})"
    );
}
