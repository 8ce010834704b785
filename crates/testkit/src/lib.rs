//! Test support: a raw HTTP/1.1 client that can send anything (malformed,
//! partial or oversized requests) and parse the answer. Tests only.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `method path` with the given headers and body on a new connection
/// (`Connection: close`) and reads the whole answer.
pub fn send(
    addr: SocketAddr,
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
    send_raw(addr, &bytes)
}

/// Writes `bytes` on a new connection and reads until the server closes it.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let answer = exchange(addr, bytes).expect("connect");
    Reply::parse(&answer)
}

/// As [`send`], but `None` when there is no complete answer (the server is
/// down, or died mid-request): for crash tests.
pub fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Reply> {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    let answer = exchange(addr, &bytes).ok()?;
    let reply = Reply::try_parse(&answer)?;
    let length: usize = reply.header("content-length")?.parse().ok()?;
    (reply.body.len() == length).then_some(reply)
}

fn exchange(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    // The server may answer (413, 401) before reading everything we send.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Ok(answer)
}

/// A parsed answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn parse(raw: &[u8]) -> Reply {
        Reply::try_parse(raw)
            .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(raw)))
    }

    /// `None` unless `raw` holds a status line and complete headers.
    pub fn try_parse(raw: &[u8]) -> Option<Reply> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Reply {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
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
