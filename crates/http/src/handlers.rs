//! One function per kind of request. Each extracts its inputs, makes one
//! store call and renders the outcome; presence rules, versions and
//! idempotency bookkeeping live in the store.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use subscriber_store::{Backend, Command, Idempotency, Subscriber, Tenant, Timestamp};
use tokio::sync::watch;

use crate::ServerConfig;
use crate::error::{ApiError, from_store};
use crate::extract;
use crate::router::{self, Endpoint, Matched};
use crate::stream::{self, EventStream, Feed};
use crate::wire::{
    self, Envelope, EnvironmentDto, EventPageDto, OnlinePageDto, StatsDto, SubscriberDto,
};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub store: Arc<dyn Backend>,
    pub config: ServerConfig,
    pub openapi: Bytes,
    /// Turns true when the server shuts down: event streams end then.
    pub stop: watch::Receiver<bool>,
    /// Set when a shutdown begins: `/ready` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
}

/// A whole JSON answer, or a presence event stream.
pub(crate) type Reply = Response<Either<Full<Bytes>, EventStream>>;

const JSON: &str = "application/json; charset=utf-8";

fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

pub(crate) fn error_reply(error: &ApiError, path: &str, at: Timestamp) -> Reply {
    let body = serde_json::to_vec(&error.body(path, at)).unwrap_or_default();
    let mut response = json_reply(error.status, body.into());
    if let Some(allow) = error.allow().and_then(|a| HeaderValue::from_str(a).ok()) {
        response.headers_mut().insert(hyper::header::ALLOW, allow);
    }
    // The rest of the body was never read: the connection cannot carry
    // another request.
    if matches!(
        error.status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A document's `data` as the raw JSON it was stored as.
fn raw_data(doc: &Subscriber) -> Result<Option<Box<RawValue>>, ApiError> {
    doc.data
        .as_ref()
        .map(|data| RawValue::from_string(data.as_json().to_owned()))
        .transpose()
        .map_err(|e| ApiError::internal(&e))
}

/// `{"data": ...}`, 200.
fn data_reply(data: impl Serialize) -> Result<Reply, ApiError> {
    data_status_reply(StatusCode::OK, data)
}

/// `{"data": ...}` with `status`.
pub(crate) fn data_status_reply(
    status: StatusCode,
    data: impl Serialize,
) -> Result<Reply, ApiError> {
    let body = serde_json::to_vec(&Envelope { data }).map_err(|e| ApiError::internal(&e))?;
    Ok(json_reply(status, body.into()))
}

/// `{"data": document}` with its `ETag`.
fn document_reply(status: StatusCode, doc: &Subscriber) -> Result<Reply, ApiError> {
    let data = raw_data(doc)?;
    let body = serde_json::to_vec(&Envelope {
        data: SubscriberDto::new(doc, data.as_deref()),
    })
    .map_err(|e| ApiError::internal(&e))?;
    let mut response = json_reply(status, body.into());
    let etag = HeaderValue::from_str(&format!("\"{}\"", doc.version))
        .map_err(|e| ApiError::internal(&e))?;
    response.headers_mut().insert(ETAG, etag);
    Ok(response)
}

/// Answers one request. Never panics; every failure is a reply.
pub(crate) async fn handle(state: Arc<Context>, request: Request<Incoming>) -> Reply {
    let path = request.uri().path().to_owned();
    match dispatch(&state, request, &path).await {
        Ok(reply) => reply,
        Err(error) => error_reply(&error, &path, state.store.now()),
    }
}

async fn dispatch(
    state: &Context,
    request: Request<Incoming>,
    path: &str,
) -> Result<Reply, ApiError> {
    let matched = router::route(request.method(), path)?;
    match matched.endpoint {
        Endpoint::HealthCheck => return health(&state.store).await,
        Endpoint::Ready => return ready(state).await,
        Endpoint::Metrics => return metrics(state),
        Endpoint::OpenApi => return Ok(json_reply(StatusCode::OK, state.openapi.clone())),
        // The Inbox has no API key: the body names the environment.
        Endpoint::InboxSession => return crate::inbox::session(state, request).await,
        _ => {}
    }
    let tenant = extract::tenant(request.headers(), state.store.as_ref()).await?;
    let subscriber_id = matched
        .raw_subscriber_id
        .map(extract::subscriber_id)
        .transpose()?;
    match (matched.endpoint, subscriber_id) {
        (Endpoint::Retrieve, Some(id)) => {
            let doc = state
                .store
                .get(&tenant, &id)
                .await
                .map_err(|e| from_store(&e, None))?;
            document_reply(StatusCode::OK, &doc)
        }
        (Endpoint::Delete, Some(id)) => {
            let expected = extract::if_match(request.headers())?;
            let command = Command::Delete { subscriber_id: id };
            state
                .store
                .submit(&tenant, command, expected, None)
                .await
                .and_then(|executed| executed.outcome)
                .map_err(|e| from_store(&e, None))?;
            Ok(json_reply(
                StatusCode::OK,
                Bytes::from_static(br#"{"data":{"acknowledged":true,"status":"deleted"}}"#),
            ))
        }
        (Endpoint::PresenceEvents, None) => events(state, &request, tenant).await,
        (Endpoint::PresenceOnline, None) => {
            let query = extract::online_query(request.uri().query())?;
            let page = state
                .store
                .online(&tenant, &query)
                .await
                .map_err(|e| from_store(&e, None))?;
            let data = page
                .subscribers
                .iter()
                .map(raw_data)
                .collect::<Result<Vec<_>, _>>()?;
            data_reply(OnlinePageDto::new(&page, &data))
        }
        (Endpoint::EnvironmentMe, None) => {
            let env = state
                .store
                .environment(&tenant)
                .await
                .map_err(|e| from_store(&e, None))?;
            data_reply(EnvironmentDto::new(&env))
        }
        (Endpoint::PresenceStats, None) => {
            let stats = state
                .store
                .presence_stats(&tenant)
                .await
                .map_err(|e| from_store(&e, None))?;
            data_reply(StatsDto::new(stats))
        }
        (_, id) => write(state, request, path, &matched, tenant, id).await,
    }
}

/// A page of the presence feed, or with `Accept: text/event-stream` the
/// feed live: from `Last-Event-ID`, else `after`, else the newest event.
/// The stream's first page is read before the answer, so a cursor older
/// than the retention is a 410 rather than a stream.
async fn events(
    state: &Context,
    request: &Request<Incoming>,
    tenant: Tenant,
) -> Result<Reply, ApiError> {
    let query = extract::events_query(request.uri().query())?;
    // Checked on every request of the route, though only a stream reads it.
    let last_seen = extract::last_event_id(request.headers())?;
    let store = &state.store;
    if !extract::wants_event_stream(request.headers()) {
        let page = store
            .events(&tenant, query.after, query.limit)
            .await
            .map_err(|e| from_store(&e, None))?;
        return data_reply(EventPageDto::new(&page));
    }
    let start = match last_seen.or(query.after) {
        Some(seq) => seq,
        None => store
            .last_event(&tenant)
            .await
            .map_err(|e| from_store(&e, None))?,
    };
    let first = store
        .events(&tenant, Some(start), query.limit)
        .await
        .map_err(|e| from_store(&e, None))?;
    let feed = Feed {
        store: Arc::clone(store),
        tenant,
        first,
        limit: query.limit,
        keep_alive: state.config.event_stream_keep_alive,
        metrics: state.config.metrics.clone(),
    };
    let mut response = Response::new(Either::Right(stream::start(feed, state.stop.clone())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise hold events back in its buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// 200 while the store can write; 503 while a storage failure keeps it from
/// writing (the check itself may reopen the database, so it runs where
/// blocking is allowed).
async fn health(store: &Arc<dyn Backend>) -> Result<Reply, ApiError> {
    let probe = Arc::clone(store);
    match tokio::task::spawn_blocking(move || probe.check_writable())
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        Ok(()) => Ok(json_reply(
            StatusCode::OK,
            Bytes::from_static(br#"{"data":{"status":"ok"}}"#),
        )),
        Err(e) => {
            tracing::warn!(cause = %e, "health check: the store cannot write");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store cannot write; see the server log",
            ))
        }
    }
}

/// 200 once the server can take writes: the store has started (the leases
/// overdue at open are expired) and can write, and the server is not
/// draining after SIGTERM; else 503 saying which.
async fn ready(state: &Context) -> Result<Reply, ApiError> {
    let unready = |why: &str| Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why));
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return unready("Draining: the server is shutting down");
    }
    if !state.store.started() {
        return unready("Starting: expiring the leases that ran out while the server was down");
    }
    let probe = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || probe.check_writable())
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        Ok(()) => Ok(json_reply(
            StatusCode::OK,
            Bytes::from_static(br#"{"data":{"status":"ready"}}"#),
        )),
        Err(e) => {
            tracing::warn!(cause = %e, "readiness: the store cannot write");
            unready("The store cannot write; see the server log")
        }
    }
}

/// The Prometheus text exposition, where this listener serves it.
fn metrics(state: &Context) -> Result<Reply, ApiError> {
    match (&state.config.metrics, state.config.metrics_route) {
        (Some(metrics), true) => {
            let mut reply = json_reply(StatusCode::OK, metrics.render(state.store.as_ref()));
            reply.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            Ok(reply)
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Metrics are not served here (see --metrics and --metrics-listen)",
        )),
    }
}

/// The presence write and the creates: the routes that take a body and an
/// idempotency key.
async fn write(
    state: &Context,
    request: Request<Incoming>,
    path: &str,
    matched: &Matched<'_>,
    tenant: Tenant,
    subscriber_id: Option<String>,
) -> Result<Reply, ApiError> {
    let key = extract::idempotency_header(request.headers())?;
    let echo = key.as_ref().map(|(shown, _)| shown.clone());
    let mut reply = match submit_write(state, request, matched, tenant, subscriber_id, key).await {
        Ok(reply) => reply,
        Err(error) => error_reply(&error, path, state.store.now()),
    };
    if let Some(value) = echo.and_then(|k| HeaderValue::from_str(&k).ok()) {
        reply.headers_mut().insert("idempotency-key", value);
    }
    Ok(reply)
}

/// The write itself, once its key is known: read and check the body, make
/// the command, submit it, await its durability and render the outcome.
async fn submit_write(
    state: &Context,
    request: Request<Incoming>,
    matched: &Matched<'_>,
    tenant: Tenant,
    subscriber_id: Option<String>,
    key: Option<(String, subscriber_store::IdempotencyKey)>,
) -> Result<Reply, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = extract::body(
        &parts.headers,
        body,
        state.config.max_body_bytes,
        state.config.body_read_timeout,
    )
    .await?;
    let json = wire::parse_json(&bytes)?;
    let (command, status) = match (matched.endpoint, &subscriber_id) {
        (Endpoint::UpdateOnlineStatus, Some(id)) => {
            let presence = wire::presence(&json)?;
            // An offline write ends any lease: its ttlSeconds was checked
            // and is ignored.
            let command = match presence {
                wire::Presence {
                    online: true,
                    ttl_seconds: Some(ttl_seconds),
                } => Command::Heartbeat {
                    subscriber_id: id.clone(),
                    ttl_seconds,
                },
                wire::Presence { online, .. } => Command::SetOnline {
                    subscriber_id: id.clone(),
                    online,
                },
            };
            (command, StatusCode::OK)
        }
        (endpoint, _) => {
            let input = wire::create_body(&json, &bytes)?;
            let fail_if_exists = match endpoint {
                Endpoint::CreateV2 => extract::fail_if_exists(parts.uri.query())?,
                _ => false,
            };
            let command = Command::Upsert {
                input,
                fail_if_exists,
            };
            (command, StatusCode::CREATED)
        }
    };
    let expected = extract::if_match(&parts.headers)?;

    let store = &state.store;
    let idempotency = key.as_ref().map(|(_, checked)| {
        // What identifies the request (SPEC section 6); the store hashes it.
        let request = [
            parts.method.as_str(),
            matched.pattern,
            subscriber_id.as_deref().unwrap_or_default(),
            parts.uri.query().unwrap_or_default(),
        ];
        // The path as sent, so a replayed error quotes the first request's.
        Idempotency::for_request(checked.clone(), &request, &json)
            .with_annotation(parts.uri.path().as_bytes())
    });
    let shown_key = key.map(|(shown, _)| shown);
    // The write commits in memory here, on this task (microseconds, no
    // disk), and the task then awaits its flush without holding a thread.
    let executed = store
        .submit(&tenant, command, expected, idempotency.as_ref())
        .await
        .map_err(|e| from_store(&e, shown_key.as_deref()))?;

    let mut reply = match &executed.outcome {
        Ok(doc) => document_reply(status, doc)?,
        // An outcome the write executed to (404, 412, 409): rendered with the
        // time it executed and the path it was sent to, so a replay's body is
        // the same bytes.
        Err(e) => {
            let path = match std::str::from_utf8(&executed.annotation) {
                Ok(recorded) if !recorded.is_empty() => recorded,
                _ => parts.uri.path(),
            };
            error_reply(
                &from_store(e, shown_key.as_deref()),
                path,
                executed.executed_at,
            )
        }
    };
    if executed.replayed {
        reply
            .headers_mut()
            .insert("idempotency-replay", HeaderValue::from_static("true"));
    }
    if let Some(metrics) = &state.config.metrics {
        metrics.write(match (executed.replayed, &shown_key) {
            (true, _) => "replay",
            (false, Some(_)) => "keyed",
            (false, None) => "plain",
        });
    }
    Ok(reply)
}
