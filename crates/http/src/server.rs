//! Accepting connections: one task per connection, a connection limit, a
//! header read timeout, and graceful shutdown that ends event streams and
//! drains in-flight requests for a bounded time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use subscriber_store::Backend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use http_body_util::Either;

use crate::error::ApiError;
use crate::handlers::{self, Context};
use crate::metrics::Metrics;
use crate::socket::{Endpoint, SocketSlot};

/// Every answer's body: the API's (a whole JSON body or an event stream)
/// or the socket endpoint's. An enum of its own rather than a nested
/// `Either`, whose error conversion the compiler cannot prove for every
/// lifetime inside the connection's task.
enum Answer {
    Api(Either<http_body_util::Full<bytes::Bytes>, crate::stream::EventStream>),
    Socket(crate::socket::SocketBody),
}

impl hyper::body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            Answer::Api(body) => std::pin::Pin::new(body).poll_frame(cx),
            Answer::Socket(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Api(body) => body.is_end_stream(),
            Answer::Socket(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Answer::Api(body) => body.size_hint(),
            Answer::Socket(body) => body.size_hint(),
        }
    }
}

/// The metrics' and log lines' route of every request to the socket endpoint.
const SOCKET_ROUTE: &str = crate::socket::PATH;

/// A connection's stream with what lives as long as it: its permit under
/// the connection limit, and the store connection of a socket opened on
/// it. After a WebSocket upgrade the socket's task owns it, so both last
/// until the WebSocket's TCP connection is gone.
#[derive(Debug)]
struct Held {
    stream: tokio::net::TcpStream,
    slot: SocketSlot,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slot.close();
    }
}

impl tokio::io::AsyncRead for Held {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Held {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Limits and timeouts of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted; larger gets 413 before it is read.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body once its headers
    /// are in; slower gets 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// The longest silence on a presence event stream before it sends a
    /// comment line (SPEC section 11: 15 s).
    pub event_stream_keep_alive: Duration,
    /// Where requests, connections and the store are counted (`None`: no
    /// metrics).
    pub metrics: Option<Arc<Metrics>>,
    /// Whether this listener answers `GET /metrics` (off when metrics have
    /// a listener of their own).
    pub metrics_route: bool,
    /// After a shutdown signal, how long the server keeps accepting (with
    /// `/ready` at 503, so a load balancer stops sending) before it drains.
    pub drain_delay: Duration,
    /// The Inbox session (SPEC 13).
    pub inbox: InboxConfig,
}

/// How `POST /v1/inbox/session` answers.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// Signs the session tokens (derived from the server key: every server
    /// of a store is given the same). `None`: the route answers 404.
    pub token_key: Option<crate::token::TokenKey>,
    /// Whether a session needs a valid `subscriberHash` (default `true`).
    pub hmac: bool,
    /// How long a session token is valid (default 24 h).
    pub token_ttl: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            token_key: None,
            hmac: true,
            token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 256 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
            event_stream_keep_alive: Duration::from_secs(15),
            metrics: None,
            metrics_route: true,
            drain_delay: Duration::ZERO,
            inbox: InboxConfig::default(),
        }
    }
}

/// A 503 in the error shape, written straight to the socket with no
/// request read: to a connection over the limit, or while starting.
fn unavailable(message: &str, at: subscriber_store::Timestamp) -> Vec<u8> {
    let error = ApiError::new(hyper::StatusCode::SERVICE_UNAVAILABLE, message);
    let body = error.body("", at).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// While `until` runs (the store opening: recovering its journal and
/// feed), answers every connection on `listener` with a 503 in the error
/// shape, so a readiness probe sees "starting" rather than a refused
/// connection; returns what `until` returns.
pub async fn answer_starting<T>(listener: &TcpListener, until: impl Future<Output = T>) -> T {
    use subscriber_store::Clock;
    tokio::pin!(until);
    loop {
        tokio::select! {
            done = &mut until => return done,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let now = subscriber_store::SystemClock.now();
                let answer = unavailable("Starting: recovering the store, retry shortly", now);
                tokio::spawn(async move {
                    // Take in the request first: closing with it unread
                    // would reset the connection before the client reads.
                    let mut request = [0u8; 8192];
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        tokio::io::AsyncReadExt::read(&mut stream, &mut request),
                    )
                    .await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}

/// Serves `GET /metrics` alone on its own listener (`--metrics-listen`)
/// until `shutdown` completes.
///
/// # Errors
/// Only if the listener itself fails.
pub async fn serve_metrics(
    listener: TcpListener,
    store: impl Into<Arc<dyn Backend>>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let store: Arc<dyn Backend> = store.into();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (store, metrics) = (Arc::clone(&store), Arc::clone(&metrics));
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let found =
                request.method() == hyper::Method::GET && request.uri().path() == "/metrics";
            let mut reply = if found {
                let mut reply =
                    hyper::Response::new(http_body_util::Full::new(metrics.render(store.as_ref())));
                reply.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                reply
            } else {
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"only GET /metrics is served here\n",
                )))
            };
            if !found {
                *reply.status_mut() = hyper::StatusCode::NOT_FOUND;
            }
            async move { Ok::<_, std::convert::Infallible>(reply) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// Serves HTTP on an already-bound listener until `shutdown` completes, then
/// stops accepting, ends the presence event streams (each with its final
/// chunk), lets in-flight requests finish (up to `config.shutdown_grace`)
/// and returns.
///
/// # Errors
/// Only if the listener itself fails; per-connection errors are logged.
pub async fn serve(
    listener: TcpListener,
    store: impl Into<Arc<dyn Backend>>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // Event streams never end by themselves: they watch this and end when
    // it turns true, so the drain below is not held up by them.
    let (stopping, stop) = watch::channel(false);
    let state = Arc::new(Context {
        store: store.into(),
        openapi: crate::openapi::document_bytes(),
        config,
        stop,
        draining: std::sync::atomic::AtomicBool::new(false),
    });
    let metrics = state.config.metrics.clone();
    let sockets = Arc::new(Endpoint::new(
        Arc::clone(&state.store),
        state.config.inbox.token_key.clone(),
        metrics.clone(),
    ));
    // After the signal: `/ready` says 503 while connections are still
    // taken, for `drain_delay`; then the drain.
    let mut drain_after: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    // The drain: every connection task holds a receiver and shuts its
    // connection down gracefully when this sends; the drain is over when
    // every receiver is gone. (hyper-util's `GracefulShutdown` does this
    // for connections without upgrades, not for ours.)
    let (drain, draining) = watch::channel(());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown, if drain_after.is_none() => {
                state.draining.store(true, std::sync::atomic::Ordering::Release);
                let delay = state.config.drain_delay;
                if delay.is_zero() {
                    break;
                }
                tracing::info!(?delay, "not ready: accepting for the drain delay, then draining");
                drain_after = Some(Box::pin(tokio::time::sleep(delay)));
                continue;
            }
            () = async {
                match drain_after.as_mut() {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            }, if drain_after.is_some() => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; answering 503");
            if let Some(metrics) = &metrics {
                metrics.connection_refused();
            }
            let answer = unavailable("Too many connections, retry shortly", state.store.now());
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let sockets = Arc::clone(&sockets);
        // A socket opened on this connection ends with it (socket.rs).
        let slot = SocketSlot::default();
        let stream = Held {
            stream,
            slot: slot.clone(),
            _permit: permit,
        };
        let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let state = Arc::clone(&state);
            let sockets = Arc::clone(&sockets);
            let slot = slot.clone();
            async move {
                let started = Instant::now();
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let metrics = state.config.metrics.clone();
                if crate::socket::is_socket_path(&path) {
                    request.extensions_mut().insert(slot);
                    let reply = sockets.answer(request).await.map(Answer::Socket);
                    if let Some(metrics) = &metrics {
                        metrics.request(
                            SOCKET_ROUTE,
                            &method,
                            reply.status().as_u16(),
                            started.elapsed(),
                        );
                    }
                    tracing::info!(
                        %method,
                        path = SOCKET_ROUTE,
                        status = reply.status().as_u16(),
                        latency_us = started.elapsed().as_micros() as u64,
                        "request"
                    );
                    return Ok::<_, std::convert::Infallible>(reply);
                }
                // The route template, or one value for a path no route
                // answers with this method (404 and 405 alike).
                let route = crate::router::route(&method, &path)
                    .map_or("unmatched", |matched| matched.pattern);
                let reply = handlers::handle(state, request).await.map(Answer::Api);
                if let Some(metrics) = metrics {
                    metrics.request(route, &method, reply.status().as_u16(), started.elapsed());
                }
                tracing::info!(
                    %method,
                    %path,
                    status = reply.status().as_u16(),
                    latency_us = started.elapsed().as_micros() as u64,
                    replay = reply.headers().contains_key("idempotency-replay"),
                    "request"
                );
                Ok::<_, std::convert::Infallible>(reply)
            }
        });
        // With upgrades: a socket's WebSocket takes the stream over (and
        // with it the permit and the slot) once its handshake is answered.
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut drain_signal = draining.clone();
        let metrics = metrics.clone();
        if let Some(metrics) = &metrics {
            metrics.connection_opened();
        }
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = drain_signal.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            drop(drain_signal);
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            if let Some(metrics) = &metrics {
                metrics.connection_closed();
            }
        });
    }
    drop(listener);
    stopping.send_replace(true);
    // Every socket is closed (its client sees a disconnect and may
    // reconnect elsewhere): its subscriber's connection ends with it.
    if tokio::time::timeout(state.config.shutdown_grace, sockets.close())
        .await
        .is_err()
    {
        tracing::warn!("sockets did not close in time");
    }
    let grace = state.config.shutdown_grace;
    drop(draining);
    drain.send_replace(());
    if tokio::time::timeout(grace, drain.closed()).await.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish in time; closing them"
        );
    }
    Ok(())
}
