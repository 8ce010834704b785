//! What a run will do, checked before anything connects: the target, the
//! workload mix, the load and when to stop. Every bad flag is refused here
//! with one line that names it.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{BenchArgs, DurabilityArg, WorkloadArg};

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// A presence write without an idempotency key.
    Presence,
    /// A presence write with a fresh idempotency key.
    PresenceKeyed,
    /// The run's one keyed presence write, sent again and again.
    Replay,
    /// An online presence write with a lease of `ttl_seconds`.
    Heartbeat,
    /// A read of the subscriber.
    Read,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::Presence,
        Op::PresenceKeyed,
        Op::Replay,
        Op::Heartbeat,
        Op::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Presence => "presence",
            Op::PresenceKeyed => "presence-keyed",
            Op::Replay => "replay",
            Op::Heartbeat => "heartbeat",
            Op::Read => "read",
        }
    }

    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether a successful request of this kind writes (unless replayed).
    pub fn writes(self) -> bool {
        self != Op::Read
    }

    /// The position of this kind in per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The requests' kinds and how often each is picked.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Kinds with a weight above zero, and the running total of the
    /// weights up to and including each (the last is the sum).
    cumulative: Vec<(Op, u64)>,
    /// As given, for the summary.
    pub weights: Vec<(Op, u64)>,
    /// Whether the workload was `mixed`.
    pub mixed: bool,
}

impl Mix {
    fn single(op: Op) -> Mix {
        Mix {
            cumulative: vec![(op, 1)],
            weights: vec![(op, 1)],
            mixed: false,
        }
    }

    /// `NAME=WEIGHT,...`, e.g. `read=80,presence=20`.
    pub fn parse(spec: &str) -> Result<Mix, String> {
        let mut weights: Vec<(Op, u64)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, weight)) = part.split_once('=') else {
                return Err(format!(
                    "--mix: {part:?} is not NAME=WEIGHT (e.g. --mix read=80,presence=20)"
                ));
            };
            let (name, weight) = (name.trim(), weight.trim());
            let op = Op::from_name(name).ok_or_else(|| {
                format!(
                    "--mix: unknown workload {name:?} (one of {})",
                    Op::ALL.map(Op::name).join(", ")
                )
            })?;
            let weight: u64 = weight.parse().ok().filter(|w| *w <= 1_000_000).ok_or_else(|| {
                format!("--mix: the weight of {name} must be a whole number from 0 to 1000000, not {weight:?}")
            })?;
            if weights.iter().any(|(seen, _)| *seen == op) {
                return Err(format!("--mix: {name} is given twice"));
            }
            weights.push((op, weight));
        }
        let mut total = 0;
        let cumulative: Vec<(Op, u64)> = weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|&(op, w)| {
                total += w;
                (op, total)
            })
            .collect();
        if cumulative.is_empty() {
            return Err(
                "--mix needs at least one weight above 0, e.g. --mix read=80,presence=20".into(),
            );
        }
        Ok(Mix {
            cumulative,
            weights,
            mixed: true,
        })
    }

    /// The kind for a uniform random `draw`.
    pub fn pick(&self, draw: u64) -> Op {
        match self.cumulative.as_slice() {
            [(op, _)] => *op,
            all => {
                let total = all.last().map_or(1, |(_, t)| *t);
                let point = draw % total;
                all.iter()
                    .find(|(_, upto)| point < *upto)
                    .map_or(Op::Presence, |(op, _)| *op)
            }
        }
    }

    /// Whether a single pick needs a random draw.
    pub fn needs_draw(&self) -> bool {
        self.cumulative.len() > 1
    }

    pub fn contains(&self, op: Op) -> bool {
        self.cumulative.iter().any(|(o, _)| *o == op)
    }

    /// `presence` or `mixed`.
    pub fn workload_name(&self) -> &'static str {
        match (self.mixed, self.weights.first()) {
            (false, Some((op, _))) => op.name(),
            _ => "mixed",
        }
    }
}

/// Where the requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running server.
    Http(HttpTarget),
    /// The store in this process.
    Embedded {
        data: PathBuf,
        durability: DurabilityArg,
        environment: String,
    },
}

#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// As given, without a trailing `/`: for the summary and messages.
    pub url: String,
    /// `host:port`, to resolve and connect to.
    pub authority: String,
    /// The `Host` header.
    pub host_header: String,
    /// A path prefix before `/v1/...`, empty or starting with `/`.
    pub base_path: String,
    pub api_key: String,
    /// The server's data directory on this machine, if given.
    pub data: Option<PathBuf>,
}

/// A checked run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    pub mix: Mix,
    pub ttl_seconds: u32,
    pub subscribers: u64,
    pub id_prefix: String,
    pub cleanup: bool,
    pub connections: usize,
    pub threads: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    /// Requests per second in all, open loop.
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub json: bool,
}

impl Plan {
    pub fn from_args(args: BenchArgs) -> Result<Plan, String> {
        let target = target(&args)?;
        let mix = match (args.workload.map(single), &args.mix) {
            (Some(Some(op)), Some(_)) => {
                return Err(format!(
                    "--mix goes with --workload mixed, not {}",
                    op.name()
                ));
            }
            (Some(Some(op)), None) => Mix::single(op),
            (None | Some(None), Some(spec)) => Mix::parse(spec)?,
            (Some(None), None) => {
                return Err("--workload mixed needs --mix, e.g. --mix read=80,presence=20".into());
            }
            (None, None) => Mix::single(Op::Presence),
        };
        let ttl_seconds = u32::try_from(args.ttl_seconds)
            .ok()
            .filter(|t| *t <= subscriber_store::MAX_TTL_SECONDS)
            .ok_or_else(|| {
                format!(
                    "--ttl-seconds must be from 0 to 86400, not {}",
                    args.ttl_seconds
                )
            })?;
        let subscribers = u64::try_from(args.subscribers)
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                format!(
                    "--subscribers must be from 1 to 1000000, not {}",
                    args.subscribers
                )
            })?;
        if args.id_prefix.len() > 200
            || !args
                .id_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        {
            return Err(format!(
                "--id-prefix {:?}: use at most 200 letters, digits, '-', '_', '.' or '~'",
                args.id_prefix
            ));
        }
        let connections = usize::try_from(args.connections)
            .ok()
            .filter(|c| (1..=100_000).contains(c))
            .ok_or_else(|| {
                format!(
                    "--connections must be from 1 to 100000, not {}",
                    args.connections
                )
            })?;
        let threads = match args.threads {
            None => std::thread::available_parallelism().map_or(2, usize::from),
            Some(t @ 1..=1024) => t as usize,
            Some(t) => return Err(format!("--threads must be from 1 to 1024, not {t}")),
        };
        let duration = args
            .duration
            .as_deref()
            .map(|d| parse_duration("--duration", d))
            .transpose()?;
        let requests = args
            .requests
            .map(|n| {
                u64::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("--requests must be at least 1, not {n}"))
            })
            .transpose()?;
        let duration = match (duration, requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                return Err(format!(
                    "--rate must be a number of requests per second above 0 (at most 10000000), not {rate}"
                ));
            }
        }
        let timeout = parse_duration("--timeout", &args.timeout)?;
        Ok(Plan {
            target,
            mix,
            ttl_seconds,
            subscribers,
            id_prefix: args.id_prefix,
            cleanup: args.cleanup,
            connections,
            threads,
            duration,
            requests,
            rate: args.rate,
            timeout,
            json: args.json,
        })
    }

    /// The id of subscriber `n`.
    pub fn subscriber_id(&self, n: u64) -> String {
        format!("{}{n:07}", self.id_prefix)
    }

    /// Every subscriber id of the run, in order.
    pub fn subscriber_ids(&self) -> Vec<String> {
        (0..self.subscribers)
            .map(|n| self.subscriber_id(n))
            .collect()
    }
}

/// The one kind of request of a workload; `None` for `mixed`.
fn single(workload: WorkloadArg) -> Option<Op> {
    match workload {
        WorkloadArg::Presence => Some(Op::Presence),
        WorkloadArg::PresenceKeyed => Some(Op::PresenceKeyed),
        WorkloadArg::Replay => Some(Op::Replay),
        WorkloadArg::Heartbeat => Some(Op::Heartbeat),
        WorkloadArg::Read => Some(Op::Read),
        WorkloadArg::Mixed => None,
    }
}

fn target(args: &BenchArgs) -> Result<Target, String> {
    match (&args.url, args.embedded) {
        (Some(_), true) => Err(
            "give either --url (a running server) or --embedded (the store in this process), not both"
                .into(),
        ),
        (None, false) => Err(
            "nothing to measure: give --url http://HOST:PORT --api-key KEY (a running server) or --embedded --data DIR"
                .into(),
        ),
        (None, true) => {
            let data = args
                .data
                .clone()
                .ok_or("--embedded needs --data DIR (the store's data directory)")?;
            Ok(Target::Embedded {
                data,
                durability: args.durability.unwrap_or(DurabilityArg::Durable),
                environment: args.environment.clone(),
            })
        }
        (Some(url), false) => {
            if args.durability.is_some() {
                return Err(
                    "--durability applies to --embedded only (a server has its own --durability)"
                        .into(),
                );
            }
            let api_key = args
                .api_key
                .clone()
                .ok_or("--url needs --api-key KEY (or SUBSCRIBERD_BENCH_API_KEY)")?;
            if api_key.is_empty() || !api_key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("--api-key must be visible ASCII characters (no spaces)".into());
            }
            Ok(Target::Http(parse_url(url, api_key, args.data.clone())?))
        }
    }
}

/// `http://host[:port][/prefix]`.
pub fn parse_url(url: &str, api_key: String, data: Option<PathBuf>) -> Result<HttpTarget, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "--url {url:?} has no scheme: write it as http://{}",
            url.trim_end_matches('/')
        ));
    };
    let rest = rest.trim_end_matches('/');
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "--url {url:?}: https is not supported; measure the server's plain HTTP address"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "--url {url:?}: the scheme must be http, not {scheme:?}"
        ));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(format!(
            "--url {url:?}: give the server's address, without a query or fragment"
        ));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "--url {url:?}: no host (e.g. http://127.0.0.1:3000)"
        ));
    }
    let uri: hyper::Uri = format!("http://{authority}/")
        .parse()
        .map_err(|e| format!("--url {url:?} is not a URL: {e}"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("--url {url:?}: no host (e.g. http://127.0.0.1:3000)"))?;
    // The URI parser leaves a malformed port out rather than refusing it.
    let port = match authority.rsplit_once(':') {
        Some((_, port)) if !authority.ends_with(']') => {
            port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("--url {url:?}: the port must be a number from 1 to 65535")
            })?
        }
        _ => 80,
    };
    format!("{path}/v1/subscribers")
        .parse::<hyper::http::uri::PathAndQuery>()
        .map_err(|e| format!("--url {url:?}: bad path: {e}"))?;
    Ok(HttpTarget {
        url: format!("http://{rest}"),
        // An IPv6 host keeps its brackets in `host()`.
        authority: format!("{host}:{port}"),
        host_header: authority.to_owned(),
        base_path: path.to_owned(),
        api_key,
        data,
    })
}

/// `10s`, `1m 30s`, `250ms`, or a bare number of seconds; above zero.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=1e9).contains(&seconds) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        Ok(_) => Err(()),
        Err(_) => humantime::parse_duration(text).map_err(drop),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{flag} {text:?}: give a duration above zero, e.g. 10s, 1m or 500ms"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_picks_in_proportion_to_its_weights() {
        let mix = Mix::parse("read=80, presence=20").unwrap();
        assert!(mix.mixed && mix.needs_draw());
        let reads = (0..100).filter(|&d| mix.pick(d) == Op::Read).count();
        assert_eq!(reads, 80);
        assert_eq!(mix.pick(80), Op::Presence);
        let zero = Mix::parse("read=0,replay=3").unwrap();
        assert!(!zero.needs_draw());
        assert_eq!(zero.pick(7), Op::Replay);
        assert_eq!(zero.weights, vec![(Op::Read, 0), (Op::Replay, 3)]);
    }

    #[test]
    fn a_bad_mix_is_refused_with_its_reason() {
        for (spec, says) in [
            ("read", "is not NAME=WEIGHT"),
            ("reads=1", "unknown workload \"reads\""),
            ("read=x", "whole number"),
            ("read=-1", "whole number"),
            ("read=1,read=2", "given twice"),
            ("read=0", "at least one weight above 0"),
            ("", "at least one weight above 0"),
            ("mixed=1", "unknown workload"),
        ] {
            let error = Mix::parse(spec).unwrap_err();
            assert!(error.contains(says), "{spec}: {error}");
        }
    }

    #[test]
    fn urls_need_the_http_scheme_and_a_host() {
        let t = parse_url("http://127.0.0.1:3000/", "k".into(), None).unwrap();
        assert_eq!(
            (
                t.authority.as_str(),
                t.host_header.as_str(),
                t.base_path.as_str()
            ),
            ("127.0.0.1:3000", "127.0.0.1:3000", "")
        );
        assert_eq!(t.url, "http://127.0.0.1:3000");
        let t = parse_url("HTTP://example.com/api/", "k".into(), None).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("example.com:80", "/api")
        );
        let t = parse_url("http://[::1]:8080", "k".into(), None).unwrap();
        assert_eq!(t.authority, "[::1]:8080");
        for (url, says) in [
            (
                "localhost:3000",
                "has no scheme: write it as http://localhost:3000",
            ),
            ("https://x:1", "https is not supported"),
            ("ftp://x:1", "must be http"),
            ("http://", "no host"),
            ("http://:3000", "no host"),
            ("http://x:1/?a=b", "without a query"),
            ("http://x:notaport", "the port must be a number"),
            ("http://x:0", "the port must be a number"),
        ] {
            let error = parse_url(url, "k".into(), None).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(
            parse_duration("--d", "10s").unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            parse_duration("--d", "1m 30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("--d", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("--d", "2.5").unwrap(),
            Duration::from_millis(2500)
        );
        for bad in ["0", "0s", "-1", "soon", ""] {
            assert!(parse_duration("--d", bad).is_err(), "{bad}");
        }
    }
}
