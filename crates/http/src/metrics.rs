//! Prometheus metrics (`GET /metrics`): what the server counts per request
//! and connection, what the store tells its [`Observer`], and the store's
//! [`Gauges`](subscriber_store::Gauges) read at each scrape. The registry
//! and the text exposition format are the `prometheus` crate's.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use subscriber_store::{Backend, Observer};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of one server, in one registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    writes: IntCounterVec,
    inbox_sessions: IntCounterVec,
    connections_open: IntGauge,
    connections_refused: IntCounter,
    sockets_open: IntGauge,
    sockets_refused: IntCounterVec,
    event_stream_readers: IntGauge,
    flush_rounds: IntCounter,
    flush_seconds: Histogram,
    flush_writes: Histogram,
    storage_errors: IntCounter,
    idempotency_written: IntCounter,
    idempotency_purged: IntCounter,
    idempotency_records: IntGauge,
    leases_expired: IntCounter,
    leases: IntGauge,
    events_appended: IntCounter,
    events_purged: IntCounter,
    subscribers: IntGauge,
    online: IntGauge,
    pool_in_use: IntGauge,
    pool_waiting: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A metric could not be made or registered (a programming error: names
/// are fixed), as a message.
fn failed(e: &prometheus::Error) -> String {
    format!("cannot register a metric: {e}")
}

impl Metrics {
    /// Registers every metric in a new registry.
    ///
    /// # Errors
    /// A message if a metric cannot be registered.
    pub fn new() -> Result<Metrics, String> {
        let registry = Registry::new();
        let r = &registry;
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ];
        let metrics = Metrics {
            requests: counter_vec(
                r,
                "subscriberd_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
                &["route", "method", "status"],
            )?,
            request_seconds: histogram_vec(
                r,
                "subscriberd_http_request_duration_seconds",
                "Time from a request's headers to its answer's headers, by route pattern.",
                &["route"],
                latency.clone(),
            )?,
            writes: counter_vec(
                r,
                "subscriberd_writes_total",
                "Subscriber writes answered, by kind: plain (no idempotency key), keyed (executed), replay (answered from the record).",
                &["kind"],
            )?,
            inbox_sessions: counter_vec(
                r,
                "subscriberd_inbox_sessions_total",
                "Inbox sessions (POST /v1/inbox/session) by outcome: created (a token issued), unknown_application, bad_hash (missing or wrong subscriberHash), invalid (a malformed body), failed (an internal error).",
                &["outcome"],
            )?,
            connections_open: gauge(
                r,
                "subscriberd_connections_open",
                "HTTP connections being served.",
            )?,
            connections_refused: counter(
                r,
                "subscriberd_connections_refused_total",
                "Connections answered 503 because the connection limit was reached.",
            )?,
            sockets_open: gauge(
                r,
                "subscriberd_socket_connections_open",
                "Inbox socket.io connections open (each counted in the store's connection presence).",
            )?,
            sockets_refused: counter_vec(
                r,
                "subscriberd_socket_handshakes_refused_total",
                "Inbox socket.io handshakes refused, by reason: missing_token, invalid_token (not one of ours), forged_token, expired_token, other_environment (no such environment here), unknown_subscriber, unsupported (a backend without connection presence), failed (an internal error).",
                &["reason"],
            )?,
            event_stream_readers: gauge(
                r,
                "subscriberd_event_stream_readers",
                "Presence event streams (server-sent events) open.",
            )?,
            flush_rounds: counter(
                r,
                "subscriberd_flush_rounds_total",
                "Flush rounds (sled flush plus fdatasync) completed.",
            )?,
            flush_seconds: histogram(
                r,
                "subscriberd_flush_duration_seconds",
                "How long each flush round took.",
                latency,
            )?,
            flush_writes: histogram(
                r,
                "subscriberd_flush_writes",
                "Writes each flush round made durable.",
                prometheus::exponential_buckets(1.0, 2.0, 12).map_err(|e| failed(&e))?,
            )?,
            storage_errors: counter(
                r,
                "subscriberd_storage_errors_total",
                "Storage failures met (the store reopens its database after one).",
            )?,
            idempotency_written: counter(
                r,
                "subscriberd_idempotency_records_written_total",
                "Idempotency records stored by keyed writes.",
            )?,
            idempotency_purged: counter(
                r,
                "subscriberd_idempotency_records_purged_total",
                "Expired idempotency records purged.",
            )?,
            idempotency_records: gauge(
                r,
                "subscriberd_idempotency_records",
                "Idempotency records kept (expired ones not yet purged included).",
            )?,
            leases_expired: counter(
                r,
                "subscriberd_leases_expired_total",
                "Presence leases expired by the store.",
            )?,
            leases: gauge(
                r,
                "subscriberd_leases",
                "Subscribers holding a presence lease (pending expiry).",
            )?,
            events_appended: counter(
                r,
                "subscriberd_events_appended_total",
                "Presence events appended to the feeds.",
            )?,
            events_purged: counter(
                r,
                "subscriberd_events_purged_total",
                "Presence events purged after the retention.",
            )?,
            subscribers: gauge(r, "subscriberd_subscribers", "Subscribers stored.")?,
            online: gauge(
                r,
                "subscriberd_subscribers_online",
                "Subscribers whose stored presence is online.",
            )?,
            pool_in_use: gauge(
                r,
                "subscriberd_db_pool_in_use",
                "Database connections in use (postgres backend; 0 on sled).",
            )?,
            pool_waiting: gauge(
                r,
                "subscriberd_db_pool_waiting",
                "Requests waiting for a database connection (postgres backend; 0 on sled).",
            )?,
            registry,
        };
        // Every outcome is a series from the start, so a rate is defined
        // before the first refusal.
        for outcome in SessionOutcome::ALL {
            metrics.inbox_sessions.with_label_values(&[outcome.label()]);
        }
        for refusal in Refusal::ALL {
            metrics
                .sockets_refused
                .with_label_values(&[refusal.label()]);
        }
        Ok(metrics)
    }

    /// An Inbox socket connected (`true`) or closed (`false`).
    pub(crate) fn socket(&self, opened: bool) {
        if opened {
            self.sockets_open.inc();
        } else {
            self.sockets_open.dec();
        }
    }

    /// Counts a refused socket handshake by its reason.
    pub(crate) fn socket_refused(&self, refusal: Refusal) {
        self.sockets_refused
            .with_label_values(&[refusal.label()])
            .inc();
    }

    /// Counts an Inbox session request by its outcome.
    pub(crate) fn inbox_session(&self, outcome: SessionOutcome) {
        self.inbox_sessions
            .with_label_values(&[outcome.label()])
            .inc();
    }

    /// Counts an answered request. `route` is a route template or
    /// `unmatched`; the method and status become labels from fixed sets
    /// ([`method_label`], [`status_label`]), so no request adds a series.
    pub(crate) fn request(
        &self,
        route: &'static str,
        method: &Method,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .with_label_values(&[route, method_label(method), status_label(status)])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Counts a subscriber write by kind (`plain`, `keyed`, `replay`).
    pub(crate) fn write(&self, kind: &str) {
        self.writes.with_label_values(&[kind]).inc();
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub(crate) fn stream_opened(&self) {
        self.event_stream_readers.inc();
    }

    pub(crate) fn stream_closed(&self) {
        self.event_stream_readers.dec();
    }

    /// The text exposition of every metric, the store's gauges read now.
    pub fn render(&self, store: &dyn Backend) -> Bytes {
        let gauges = store.gauges();
        let level = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.idempotency_records
            .set(level(gauges.idempotency_records));
        if let Some(leases) = gauges.leases {
            self.leases.set(level(leases));
        }
        if let Some(subscribers) = gauges.subscribers {
            self.subscribers.set(level(subscribers));
        }
        if let Some(online) = gauges.online {
            self.online.set(level(online));
        }
        if let Some(in_use) = gauges.pool_in_use {
            self.pool_in_use.set(level(in_use));
        }
        if let Some(waiting) = gauges.pool_waiting {
            self.pool_waiting.set(level(waiting));
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        Bytes::from(out)
    }
}

impl Observer for Metrics {
    fn flush_round(&self, took: Duration, writes: u64) {
        self.flush_rounds.inc();
        self.flush_seconds.observe(took.as_secs_f64());
        self.flush_writes.observe(writes as f64);
    }

    fn storage_error(&self) {
        self.storage_errors.inc();
    }

    fn idempotency_recorded(&self) {
        self.idempotency_written.inc();
    }

    fn idempotency_purged(&self, records: u64) {
        self.idempotency_purged.inc_by(records);
    }

    fn leases_expired(&self, leases: u64) {
        self.leases_expired.inc_by(leases);
    }

    fn events_appended(&self, events: u64) {
        self.events_appended.inc_by(events);
    }

    fn events_purged(&self, events: u64) {
        self.events_purged.inc_by(events);
    }
}

/// How an Inbox session request ended: the label values of
/// `subscriberd_inbox_sessions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionOutcome {
    Created,
    UnknownApplication,
    BadHash,
    Invalid,
    Failed,
}

impl SessionOutcome {
    const ALL: [SessionOutcome; 5] = [
        SessionOutcome::Created,
        SessionOutcome::UnknownApplication,
        SessionOutcome::BadHash,
        SessionOutcome::Invalid,
        SessionOutcome::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            SessionOutcome::Created => "created",
            SessionOutcome::UnknownApplication => "unknown_application",
            SessionOutcome::BadHash => "bad_hash",
            SessionOutcome::Invalid => "invalid",
            SessionOutcome::Failed => "failed",
        }
    }
}

/// Why a socket handshake was refused: the label values of
/// `subscriberd_socket_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    MissingToken,
    InvalidToken,
    ForgedToken,
    ExpiredToken,
    OtherEnvironment,
    UnknownSubscriber,
    Unsupported,
    Failed,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::MissingToken,
        Refusal::InvalidToken,
        Refusal::ForgedToken,
        Refusal::ExpiredToken,
        Refusal::OtherEnvironment,
        Refusal::UnknownSubscriber,
        Refusal::Unsupported,
        Refusal::Failed,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::InvalidToken => "invalid_token",
            Refusal::ForgedToken => "forged_token",
            Refusal::ExpiredToken => "expired_token",
            Refusal::OtherEnvironment => "other_environment",
            Refusal::UnknownSubscriber => "unknown_subscriber",
            Refusal::Unsupported => "unsupported",
            Refusal::Failed => "failed",
        }
    }
}

/// A method as a label: the API's own methods, every other one `other`
/// (a method is any token a client sends, so its name is never a label).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// A status code as a label without allocating.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        412 => "412",
        413 => "413",
        415 => "415",
        422 => "422",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, String> {
    let metric = IntCounter::new(name, help).map_err(|e| failed(&e))?;
    r.register(Box::new(metric.clone()))
        .map_err(|e| failed(&e))?;
    Ok(metric)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, String> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).map_err(|e| failed(&e))?;
    r.register(Box::new(metric.clone()))
        .map_err(|e| failed(&e))?;
    Ok(metric)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, String> {
    let metric = IntGauge::new(name, help).map_err(|e| failed(&e))?;
    r.register(Box::new(metric.clone()))
        .map_err(|e| failed(&e))?;
    Ok(metric)
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram, String> {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .map_err(|e| failed(&e))?;
    r.register(Box::new(metric.clone()))
        .map_err(|e| failed(&e))?;
    Ok(metric)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, String> {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .map_err(|e| failed(&e))?;
    r.register(Box::new(metric.clone()))
        .map_err(|e| failed(&e))?;
    Ok(metric)
}
