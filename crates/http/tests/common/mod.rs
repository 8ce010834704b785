//! Test helpers: a server on port 0 over a temporary store with two
//! environments (A and B) and a key for each, and a raw HTTP/1.1 client that
//! can send anything (including malformed requests).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use subscriber_http::{ServerConfig, serve};
use subscriber_store::{Config, Durability, Store, Tenant};

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Store,
    pub key_a: String,
    pub key_b: String,
    pub tenant_a: Tenant,
    pub tenant_b: Tenant,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with_config(ServerConfig::default())
    }

    pub fn with_config(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(Config::new(dir.path()).durability(Durability::Relaxed))
            .expect("open store");
        let org = store.create_organization("Acme").expect("org");
        let env_a = store.create_environment(org.id, "A").expect("env A");
        let env_b = store.create_environment(org.id, "B").expect("env B");
        let key_a = store.issue_key(env_a.id).expect("key A").secret;
        let key_b = store.issue_key(env_b.id).expect("key B").secret;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = store.clone();
        let thread = std::thread::spawn(move || {
            runtime
                .block_on(serve(listener, served, config, async {
                    let _ = rx.await;
                }))
                .expect("serve");
        });
        TestServer {
            addr,
            store,
            key_a,
            key_b,
            tenant_a: env_a.tenant(),
            tenant_b: env_b.tenant(),
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn auth_a(&self) -> String {
        format!("ApiKey {}", self.key_a)
    }

    pub fn auth_b(&self) -> String {
        format!("ApiKey {}", self.key_b)
    }

    /// A request with key A and a JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = self.auth_a();
        self.send(
            method,
            path,
            &[("Authorization", &auth)],
            body.map(str::as_bytes),
        )
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            raw.push_str("Content-Type: application/json\r\n");
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
        }
        self.send_raw(&bytes)
    }

    pub fn send_raw(&self, bytes: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        // The server may answer (413, 401) before reading everything we send.
        let _ = stream.write_all(bytes);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        Reply::parse(&answer)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn parse(raw: &[u8]) -> Reply {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The document of a `{"data": ...}` answer.
    pub fn data(&self) -> serde_json::Value {
        let body = self.json();
        let object = body.as_object().expect("object");
        assert_eq!(object.len(), 1, "the envelope has only `data`: {body}");
        body["data"].clone()
    }

    /// Asserts the error shape and returns the body.
    pub fn error(&self, status: u16, message: &str) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert_eq!(body["statusCode"], status);
        assert_eq!(body["message"], message, "{body}");
        assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(body["path"].is_string());
        assert!(body["error"].is_string());
        assert_eq!(
            self.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        body
    }
}
