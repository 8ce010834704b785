//! Accepting connections: one task per connection, a connection limit, a
//! header read timeout, and graceful shutdown that ends event streams and
//! drains in-flight requests for a bounded time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use subscriber_store::Store;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::error::ApiError;
use crate::handlers::{self, Context};

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
        }
    }
}

/// The answer to a connection over the limit: a 503 in the error shape,
/// written straight to the socket (no request has been read).
fn overloaded(store: &Store) -> Vec<u8> {
    let error = ApiError::new(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        "Too many connections, retry shortly",
    );
    let body = error.body("", store.now()).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
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
    store: Store,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // Event streams never end by themselves: they watch this and end when
    // it turns true, so the drain below is not held up by them.
    let (stopping, stop) = watch::channel(false);
    let state = Arc::new(Context {
        store,
        openapi: crate::openapi::document_bytes(),
        config,
        stop,
    });
    let graceful = GracefulShutdown::new();
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
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; answering 503");
            let answer = overloaded(&state.store);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service = service_fn(move |request| {
            let state = Arc::clone(&state);
            async move {
                let started = Instant::now();
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let reply = handlers::handle(state, request).await;
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
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    stopping.send_replace(true);
    let grace = state.config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish in time; closing them"
        );
    }
    Ok(())
}
