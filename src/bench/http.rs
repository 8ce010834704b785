//! The HTTP target: one kept-alive hyper 1 connection per client, driven
//! inside the client's own task (no connection task, no pool, no
//! cross-task wake-ups), with everything fixed about a request built once:
//! paths, bodies, header values. An answer is read for its status and
//! `Idempotency-Replay` header; its body is drained unread.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::plan::{HttpTarget, Op, Plan};
use super::{Call, Client, Failure, Outcome};

type Body = Full<Bytes>;
type Connection = http1::Connection<TokioIo<TcpStream>, Body>;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENCY_REPLAY: HeaderName = HeaderName::from_static("idempotency-replay");

/// What every request of the run is made of, built once.
#[derive(Debug)]
struct Endpoint {
    url: String,
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    json: HeaderValue,
    /// `PATCH .../v1/subscribers/{id}/online-status`, per subscriber.
    presence: Vec<Uri>,
    /// `GET` (and `DELETE`) `.../v1/subscribers/{id}`, per subscriber.
    document: Vec<Uri>,
    /// `POST .../v2/subscribers?failIfExists=true`: an existing subscriber
    /// answers 409 and is left as it is (v1 would upsert it, raising `__v`).
    create: Uri,
    online: Bytes,
    offline: Bytes,
    /// Online with a lease: `ttlSeconds` (SPEC 10).
    heartbeat: Bytes,
    /// The run's replay workload sends this key, always with `online`.
    replay_key: HeaderValue,
    ids: Vec<String>,
    timeout: Duration,
}

/// One connection.
#[derive(Debug)]
pub struct HttpClient {
    endpoint: Arc<Endpoint>,
    open: Option<Open>,
    /// Reset for every request: its deadline. Made on the client's thread.
    timer: Option<Pin<Box<Sleep>>>,
    index: usize,
    /// The last fresh idempotency key, its buffer reused.
    key: String,
}

#[derive(Debug)]
struct Open {
    sender: http1::SendRequest<Body>,
    connection: Pin<Box<Connection>>,
}

/// Resolves the target, checks that the server is there and takes the API
/// key (on a connection of its own), and makes a client per
/// `--connections`; each opens its connection on its own thread
/// ([`Client::connect`]).
pub async fn clients(plan: &Plan, target: &HttpTarget) -> Result<Vec<HttpClient>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target.authority)
        .await
        .map_err(|e| format!("cannot resolve the host of {}: {e}", target.url))?
        .collect();
    let Some(&any) = addrs.first() else {
        return Err(format!("cannot resolve the host of {}", target.url));
    };
    let mut endpoint = endpoint(plan, target, any)?;
    // `localhost` may resolve to ::1 first while the server listens on
    // 127.0.0.1: the first address that takes a connection is used for all.
    let mut first = Err(String::new());
    for addr in addrs {
        endpoint.addr = addr;
        match open(&endpoint).await {
            Ok(open) => {
                first = Ok(open);
                break;
            }
            Err(e) => first = Err(format!("cannot connect to {} ({addr}): {e}", target.url)),
        }
    }
    let endpoint = Arc::new(endpoint);
    let mut probe = HttpClient::new(&endpoint, 0);
    probe.open = Some(first?);
    probe.check().await?;
    drop(probe);
    Ok((0..plan.connections)
        .map(|index| HttpClient::new(&endpoint, index))
        .collect())
}

fn endpoint(plan: &Plan, target: &HttpTarget, addr: SocketAddr) -> Result<Endpoint, String> {
    let uri = |path: String| {
        path.parse::<Uri>()
            .map_err(|e| format!("cannot build the request path {path:?}: {e}"))
    };
    let base = &target.base_path;
    let ids = plan.subscriber_ids();
    let presence = ids
        .iter()
        .map(|id| uri(format!("{base}/v1/subscribers/{id}/online-status")))
        .collect::<Result<_, _>>()?;
    let document = ids
        .iter()
        .map(|id| uri(format!("{base}/v1/subscribers/{id}")))
        .collect::<Result<_, _>>()?;
    let run = run_id();
    Ok(Endpoint {
        url: target.url.clone(),
        addr,
        host: HeaderValue::from_str(&target.host_header)
            .map_err(|_| format!("--url {}: the host is not a valid header", target.url))?,
        auth: HeaderValue::from_str(&format!("ApiKey {}", target.api_key))
            .map_err(|_| "--api-key cannot be sent in a header".to_owned())?,
        json: HeaderValue::from_static("application/json"),
        presence,
        document,
        create: uri(format!("{base}/v2/subscribers?failIfExists=true"))?,
        online: Bytes::from_static(br#"{"isOnline":true}"#),
        offline: Bytes::from_static(br#"{"isOnline":false}"#),
        heartbeat: Bytes::from(format!(
            r#"{{"isOnline":true,"ttlSeconds":{}}}"#,
            plan.ttl_seconds
        )),
        replay_key: HeaderValue::from_str(&format!("bench-{run}-replay"))
            .map_err(|_| "the replay key is not a valid header".to_owned())?,
        ids,
        timeout: plan.timeout,
    })
}

/// Tells this run's idempotency keys from any earlier run's.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos, std::process::id())
}

async fn open(endpoint: &Endpoint) -> Result<Open, String> {
    let stream = tokio::time::timeout(endpoint.timeout, TcpStream::connect(endpoint.addr))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Open {
        sender,
        connection: Box::pin(connection),
    })
}

/// What a request got.
struct Answer {
    status: u16,
    replayed: bool,
    /// Only when asked for.
    body: Bytes,
}

impl HttpClient {
    fn new(endpoint: &Arc<Endpoint>, index: usize) -> HttpClient {
        HttpClient {
            endpoint: Arc::clone(endpoint),
            open: None,
            timer: None,
            index,
            key: String::new(),
        }
    }

    /// The server answers and takes the key: a read of the first subscriber
    /// is 200 or 404, never 401.
    async fn check(&mut self) -> Result<(), String> {
        let e = Arc::clone(&self.endpoint);
        let request = self.request(Method::GET, &e.document[0], None, None);
        let answer = self
            .exchange(request, true)
            .await
            .map_err(|failure| format!("{} did not answer a read: {failure}", e.url))?;
        match answer.status {
            200 | 404 => Ok(()),
            401 => Err(format!(
                "{} refused the API key: {}",
                e.url,
                message(&answer.body)
            )),
            status => Err(format!(
                "{} answered a read of subscriber {} with {status}: {} (is it subscriberd?)",
                e.url,
                e.ids[0],
                message(&answer.body)
            )),
        }
    }

    fn request(
        &self,
        method: Method,
        uri: &Uri,
        body: Option<Bytes>,
        key: Option<HeaderValue>,
    ) -> Request<Body> {
        let e = &*self.endpoint;
        let has_body = body.is_some();
        let mut request = Request::new(Full::new(body.unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, e.host.clone());
        headers.insert(AUTHORIZATION, e.auth.clone());
        if has_body {
            headers.insert(CONTENT_TYPE, e.json.clone());
        }
        if let Some(key) = key {
            headers.insert(IDEMPOTENCY_KEY, key);
        }
        request
    }

    /// A key no request has carried.
    fn fresh_key(&mut self, random: u64) -> HeaderValue {
        super::fresh_key(&mut self.key, random);
        HeaderValue::from_str(&self.key).expect("digits and letters make a valid header")
    }

    /// Sends `request` on the open connection (reopened first if it was
    /// closed) and reads the answer, while driving the connection in this
    /// same task; `keep` keeps the body.
    async fn exchange(&mut self, request: Request<Body>, keep: bool) -> Result<Answer, Failure> {
        if self
            .open
            .as_ref()
            .is_none_or(|open| open.sender.is_closed())
        {
            self.open = None;
            self.open = Some(open(&self.endpoint).await.map_err(|_| Failure::Connect)?);
        }
        let Some(Open { sender, connection }) = self.open.as_mut() else {
            return Err(Failure::Connect);
        };
        let deadline = Instant::now() + self.endpoint.timeout;
        let timer = match &mut self.timer {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key(IDEMPOTENCY_REPLAY);
            let mut body = response.into_body();
            let mut kept = BytesMut::new();
            while let Some(frame) = body.frame().await {
                if let (true, Ok(data)) = (keep, frame?.into_data()) {
                    kept.extend_from_slice(&data);
                }
            }
            Ok::<_, hyper::Error>(Answer {
                status,
                replayed,
                body: kept.freeze(),
            })
        };
        let result = tokio::select! {
            biased;
            answer = answer => answer.map_err(|_| Failure::Connection),
            _ = connection.as_mut() => Err(Failure::Connection),
            () = timer.as_mut() => Err(Failure::Timeout),
        };
        if result.is_err() {
            // Whatever the connection still carries belongs to a request
            // given up on: start the next one on a new connection.
            self.open = None;
        }
        result
    }
}

impl Client for HttpClient {
    async fn connect(&mut self) -> Result<(), String> {
        let e = &self.endpoint;
        self.open = Some(open(e).await.map_err(|error| {
            format!(
                "cannot open connection {} to {} ({}): {error}",
                self.index + 1,
                e.url,
                e.addr
            )
        })?);
        Ok(())
    }

    async fn call(&mut self, call: Call) -> Outcome {
        let e = Arc::clone(&self.endpoint);
        let n = call.subscriber;
        let body = || {
            Some(if call.online {
                e.online.clone()
            } else {
                e.offline.clone()
            })
        };
        let request = match call.op {
            Op::Presence => self.request(Method::PATCH, &e.presence[n], body(), None),
            Op::PresenceKeyed => {
                let key = self.fresh_key(call.random);
                self.request(Method::PATCH, &e.presence[n], body(), Some(key))
            }
            Op::Replay => self.request(
                Method::PATCH,
                &e.presence[0],
                Some(e.online.clone()),
                Some(e.replay_key.clone()),
            ),
            Op::Heartbeat => self.request(
                Method::PATCH,
                &e.presence[n],
                Some(e.heartbeat.clone()),
                None,
            ),
            Op::Read => self.request(Method::GET, &e.document[n], None, None),
        };
        match self.exchange(request, false).await {
            Ok(answer) if (200..300).contains(&answer.status) => Outcome::Ok {
                replayed: answer.replayed,
            },
            Ok(answer) => Outcome::Failed(Failure::Status(answer.status)),
            Err(failure) => Outcome::Failed(failure),
        }
    }

    async fn create(&mut self, n: usize) -> Result<bool, String> {
        let e = Arc::clone(&self.endpoint);
        let id = &e.ids[n];
        let body = Bytes::from(format!(r#"{{"subscriberId":"{id}"}}"#));
        let request = self.request(Method::POST, &e.create, Some(body), None);
        let answer = self
            .exchange(request, true)
            .await
            .map_err(|f| format!("cannot create subscriber {id} on {}: {f}", e.url))?;
        match answer.status {
            201 => Ok(true),
            409 => Ok(false),
            status => Err(format!(
                "cannot create subscriber {id} on {}: {status} {}",
                e.url,
                message(&answer.body)
            )),
        }
    }

    async fn delete(&mut self, n: usize) -> Result<bool, String> {
        let e = Arc::clone(&self.endpoint);
        let id = &e.ids[n];
        let request = self.request(Method::DELETE, &e.document[n], None, None);
        let answer = self
            .exchange(request, true)
            .await
            .map_err(|f| format!("cannot delete subscriber {id} on {}: {f}", e.url))?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(format!(
                "cannot delete subscriber {id} on {}: {status} {}",
                e.url,
                message(&answer.body)
            )),
        }
    }
}

/// The `message` of an error body, or the body itself.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}
