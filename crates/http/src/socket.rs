//! The Inbox's socket (SPEC 13): socket.io (Engine.IO 4, socket.io
//! protocol 5, WebSocket transport) at `/socket.io/`, as `@novu/js`
//! connects it (`io(socketUrl, {transports: ["websocket"], query: {token}})`;
//! a token in the connect packet's `auth` is read first, as Novu does).
//! The handshake checks the session token and opens the subscriber's
//! connection in the store (`Backend::connect`): its presence rules are
//! the store's. A refusal is a socket.io `CONNECT_ERROR` (the client's
//! `connect_error`), and changes nothing.
//!
//! A connection's store guard is held by the TCP connection it came on
//! ([`SocketSlot`], shared by the server's connection and the handshake
//! through the request's extensions): it ends when the socket.io client
//! disconnects or when the WebSocket's TCP connection goes, whichever
//! comes first, so no socket can leave its subscriber online.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};
use subscriber_store::{Backend, BoxFuture, ConnectionGuard, Error, Tenant};

use crate::metrics::{Metrics, Refusal};
use crate::token::{TokenError, TokenKey};

/// The path socket.io clients connect to (socket.io's default).
pub(crate) const PATH: &str = "/socket.io/";

/// Whether a request belongs to the socket endpoint.
pub(crate) fn is_socket_path(path: &str) -> bool {
    path.starts_with(PATH)
}

/// The store connection of the socket on one TCP connection, if any.
/// Cloned into every request of that connection; the server's connection
/// (or, after a WebSocket upgrade, its upgraded stream) closes it on drop.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketSlot(Arc<Mutex<Slot>>);

#[derive(Debug, Default)]
struct Slot {
    open: Option<Open>,
    /// The TCP connection is gone: a handshake that finishes after it
    /// holds nothing.
    gone: bool,
}

impl SocketSlot {
    fn with<T>(&self, f: impl FnOnce(&mut Slot) -> T) -> T {
        match self.0.lock() {
            Ok(mut slot) => f(&mut slot),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Ends the connection held here, if any (its drop is the close): the
    /// socket.io client disconnected.
    pub(crate) fn end(&self) {
        let held = self.with(|slot| slot.open.take());
        drop(held);
    }

    /// The TCP connection is gone: ends the connection held here, and any
    /// handshake still running on it.
    pub(crate) fn close(&self) {
        let held = self.with(|slot| {
            slot.gone = true;
            slot.open.take()
        });
        drop(held);
    }

    fn hold(&self, open: Open) {
        let dropped = self.with(|slot| {
            if slot.gone {
                Some(open)
            } else {
                // A second handshake on one WebSocket replaces the first.
                slot.open.replace(open)
            }
        });
        drop(dropped);
    }
}

/// An open socket: its store connection and its place in the gauge.
#[derive(Debug)]
struct Open {
    _guard: Box<dyn ConnectionGuard>,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.socket(false);
        }
    }
}

/// What the handshake needs.
#[derive(Debug, Clone)]
struct Handshake {
    store: Arc<dyn Backend>,
    token_key: Option<TokenKey>,
    metrics: Option<Arc<Metrics>>,
}

/// The refusal a client sees, and its metric label.
#[derive(Debug)]
struct Refused(Refusal);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Refusal::MissingToken => "Missing token",
            Refusal::InvalidToken | Refusal::ForgedToken => "Invalid token",
            Refusal::ExpiredToken => "Token expired",
            Refusal::OtherEnvironment => "Unknown environment",
            Refusal::UnknownSubscriber => "Subscriber not found",
            Refusal::Unsupported => "Live connections are not supported on this backend",
            Refusal::Failed => "Internal server error",
        })
    }
}

/// A socket endpoint answer's body (an upgrade's, or an Engine.IO error).
pub(crate) type SocketBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

type Call = dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<SocketBody>> + Send + Sync;

/// The socket.io endpoint of one server.
pub(crate) struct Endpoint {
    call: Box<Call>,
    io: SocketIo,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("socket::Endpoint")
    }
}

impl Endpoint {
    /// The endpoint, its handshake checking tokens with `token_key`
    /// (`None`: every handshake is refused) and opening connections in
    /// `store`.
    pub(crate) fn new(
        store: Arc<dyn Backend>,
        token_key: Option<TokenKey>,
        metrics: Option<Arc<Metrics>>,
    ) -> Endpoint {
        let (service, io) = SocketIo::builder()
            .transports([TransportType::Websocket])
            .build_svc();
        let handshake = Handshake {
            store,
            token_key,
            metrics,
        };
        let check = move |socket: SocketRef, TryData(auth): TryData<Auth>| {
            let handshake = handshake.clone();
            async move { handshake.run(&socket, auth.ok()).await }
        };
        io.ns("/", connected.with(check));
        let call = move |request: Request<Incoming>| -> BoxFuture<'static, Response<SocketBody>> {
            let answer = hyper::service::Service::call(&service, request);
            Box::pin(async move {
                match answer.await {
                    Ok(response) => response.map(BodyExt::boxed_unsync),
                    Err(_) => {
                        let mut response =
                            Response::new(http_body_util::Empty::<Bytes>::new().boxed_unsync());
                        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        response
                    }
                }
            })
        };
        Endpoint {
            call: Box::new(call),
            io,
        }
    }

    /// Answers a request under [`PATH`]: a WebSocket upgrade whose
    /// socket.io session lives on in a task of its own.
    pub(crate) fn answer(
        &self,
        request: Request<Incoming>,
    ) -> BoxFuture<'static, Response<SocketBody>> {
        (self.call)(request)
    }

    /// Closes every socket (each client sees a disconnect; each store
    /// connection closes).
    pub(crate) async fn close(&self) {
        self.io.close().await;
    }
}

/// After an accepted handshake: the client's disconnect ends the store
/// connection at once.
fn connected(socket: SocketRef) {
    socket.on_disconnect(|socket: SocketRef| {
        if let Some(slot) = socket.req_parts().extensions.get::<SocketSlot>() {
            slot.end();
        }
    });
}

/// The socket.io connect packet's payload (`io(url, {auth: {token}})`),
/// where socket.io clients other than `@novu/js` put the token (Novu's
/// socket service reads it there first, then the query).
#[derive(Debug, serde::Deserialize)]
struct Auth {
    token: Option<String>,
}

impl Handshake {
    async fn run(&self, socket: &SocketRef, auth: Option<Auth>) -> Result<(), Refused> {
        let outcome = self.open(socket, auth).await;
        if let (Err(Refused(refusal)), Some(metrics)) = (&outcome, &self.metrics) {
            metrics.socket_refused(*refusal);
        }
        match &outcome {
            Ok(()) => tracing::debug!("socket connected"),
            Err(refused) => tracing::info!(reason = refused.0.label(), "socket handshake refused"),
        }
        outcome
    }

    async fn open(&self, socket: &SocketRef, auth: Option<Auth>) -> Result<(), Refused> {
        let parts = socket.req_parts();
        let token = auth
            .and_then(|auth| auth.token)
            .filter(|token| !token.is_empty())
            .or_else(|| parts.uri.query().and_then(token_of))
            .ok_or(Refused(Refusal::MissingToken))?;
        // Without a server key no token is ours (sessions are off too).
        let key = self
            .token_key
            .as_ref()
            .ok_or(Refused(Refusal::InvalidToken))?;
        let session = key.verify(&token, self.store.now()).map_err(|e| match e {
            TokenError::Expired { .. } => Refused(Refusal::ExpiredToken),
            TokenError::Forged => Refused(Refusal::ForgedToken),
            _ => Refused(Refusal::InvalidToken),
        })?;
        let tenant = session.tenant();
        self.check_environment(&tenant).await?;
        let slot = parts
            .extensions
            .get::<SocketSlot>()
            .cloned()
            .ok_or(Refused(Refusal::Failed))?;
        let guard = self
            .store
            .connect(&tenant, &session.subscriber_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) | Error::InvalidInput { .. } => {
                    Refused(Refusal::UnknownSubscriber)
                }
                Error::Unsupported(_) => Refused(Refusal::Unsupported),
                other => {
                    tracing::warn!(error = %other, "socket handshake: the connection failed");
                    Refused(Refusal::Failed)
                }
            })?;
        if let Some(metrics) = &self.metrics {
            metrics.socket(true);
        }
        slot.hold(Open {
            _guard: guard,
            metrics: self.metrics.clone(),
        });
        Ok(())
    }

    /// The token's environment must be one of this store's, of the
    /// token's organization (a token of another store signed with the
    /// same server key names an environment this one does not have).
    async fn check_environment(&self, tenant: &Tenant) -> Result<(), Refused> {
        match self.store.environment(tenant).await {
            Ok(environment) if environment.organization_id == tenant.organization_id() => Ok(()),
            Ok(_) | Err(Error::NotFound(_)) => Err(Refused(Refusal::OtherEnvironment)),
            Err(other) => {
                tracing::warn!(error = %other, "socket handshake: cannot read the environment");
                Err(Refused(Refusal::Failed))
            }
        }
    }
}

/// The `token` parameter of a handshake's query string, percent-decoded
/// (`+` is not a space in a JWT, and socket.io-client encodes with
/// `encodeURIComponent`).
fn token_of(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .and_then(|(_, value)| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .ok()
                .map(|token| token.into_owned())
        })
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store connection that counts its closes.
    #[derive(Debug)]
    struct Counted(Arc<AtomicUsize>);

    impl ConnectionGuard for Counted {}

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn open(closes: &Arc<AtomicUsize>) -> Open {
        Open {
            _guard: Box::new(Counted(Arc::clone(closes))),
            metrics: None,
        }
    }

    #[test]
    fn a_slot_closes_its_connection_once_and_none_after_its_tcp_connection_went() {
        let closes = Arc::new(AtomicUsize::new(0));
        let slot = SocketSlot::default();
        slot.hold(open(&closes));
        assert_eq!(closes.load(Ordering::SeqCst), 0);
        // A second handshake on the WebSocket replaces the first.
        slot.hold(open(&closes));
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        // The client's disconnect, then the TCP connection going.
        slot.end();
        assert_eq!(closes.load(Ordering::SeqCst), 2);
        slot.close();
        assert_eq!(closes.load(Ordering::SeqCst), 2);
        // A handshake that finishes after the TCP connection went holds
        // nothing: its connection closes at once.
        slot.hold(open(&closes));
        assert_eq!(closes.load(Ordering::SeqCst), 3);
        drop(slot);
        assert_eq!(closes.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(
            token_of("EIO=4&transport=websocket&token=a.b.c").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(token_of("token=a%2Eb&x=1").as_deref(), Some("a.b"));
        assert_eq!(token_of("EIO=4&transport=websocket"), None);
        assert_eq!(token_of("token="), None);
        assert_eq!(token_of("tokens=a"), None);
        assert_eq!(token_of("token=%FF"), None);
    }
}
