//! Test support: a raw HTTP/1.1 client that can send anything (malformed,
//! partial or oversized requests) and parse the answer, and a client of
//! server-sent event streams that decodes the chunked body itself. Tests only.
#![allow(clippy::unwrap_used)]

pub mod pg;

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

/// One item of a server-sent event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event: its `id`, `event` and `data` fields (empty when absent).
    Event {
        id: String,
        event: String,
        data: String,
    },
    /// A comment line (`: text`), without the colon and the space.
    Comment(String),
}

/// What [`EventStream::next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Item(SseItem),
    /// Nothing within the timeout; the stream is still open.
    Timeout,
    /// The body ended properly: the final zero-length chunk arrived.
    End,
    /// The connection closed or failed before the final chunk.
    Broken(String),
}

/// A client of a `text/event-stream` answer over one raw connection: it
/// decodes the chunked body itself, so a test can tell a clean end (the
/// final chunk) from a reset or a cut connection.
#[derive(Debug)]
pub struct EventStream {
    stream: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Received, not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked, not yet handed out.
    body: Vec<u8>,
    ended: bool,
}

impl EventStream {
    /// `GET path` with the headers (add `Accept: text/event-stream`
    /// yourself). A 200 gives the stream; any other answer is read whole
    /// and returned as the error.
    pub fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventStream, Reply> {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(raw.as_bytes()).expect("send the request");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let split = loop {
            if let Some(split) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break split;
            }
            let n = stream.read(&mut buf).expect("read the answer's head");
            assert!(n > 0, "closed before the answer's head: {received:?}");
            received.extend_from_slice(&buf[..n]);
        };
        let head = Reply::parse(&received[..split + 4]);
        if head.status != 200 {
            let _ = stream.read_to_end(&mut received);
            return Err(Reply::parse(&received));
        }
        assert_eq!(
            head.header("transfer-encoding"),
            Some("chunked"),
            "an event stream is chunked: {:?}",
            head.headers
        );
        Ok(EventStream {
            stream,
            status: head.status,
            headers: head.headers,
            raw: received[split + 4..].to_vec(),
            body: Vec::new(),
            ended: false,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next event or comment, waiting up to `timeout` for it.
    pub fn next(&mut self, timeout: Duration) -> Next {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Err(problem) = self.dechunk() {
                return Next::Broken(problem);
            }
            if let Some(item) = self.item() {
                return Next::Item(item);
            }
            if self.ended {
                return Next::End;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Next::Broken(format!(
                        "closed before the final chunk; pending {:?}",
                        String::from_utf8_lossy(&self.raw)
                    ));
                }
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Timeout;
                }
                Err(e) => return Next::Broken(e.to_string()),
            }
        }
    }

    /// The next event (comments skipped), or what ended the wait.
    pub fn next_event(&mut self, timeout: Duration) -> Next {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.next(left) {
                Next::Item(SseItem::Comment(_)) => continue,
                other => return other,
            }
        }
    }

    /// Moves complete chunks from `raw` to `body`; an error for bytes that
    /// are not chunked encoding.
    fn dechunk(&mut self) -> Result<(), String> {
        while !self.ended {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return Ok(());
            };
            let line = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("not a chunk size: {line:?}"))?;
            let start = line_end + 2;
            if size == 0 {
                // The last chunk, then (no trailers) an empty line.
                if self.raw.len() < start + 2 {
                    return Ok(());
                }
                if &self.raw[start..start + 2] != b"\r\n" {
                    return Err("trailers after the last chunk".into());
                }
                self.raw.drain(..start + 2);
                self.ended = true;
                return Ok(());
            }
            if self.raw.len() < start + size + 2 {
                return Ok(());
            }
            if &self.raw[start + size..start + size + 2] != b"\r\n" {
                return Err("a chunk does not end with CRLF".into());
            }
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
        Ok(())
    }

    /// One complete block (up to a blank line) of the body, parsed.
    fn item(&mut self) -> Option<SseItem> {
        let end = self.body.windows(2).position(|w| w == b"\n\n")?;
        let block = String::from_utf8_lossy(&self.body[..end]).into_owned();
        self.body.drain(..end + 2);
        let mut fields = (String::new(), String::new(), Vec::new());
        let mut comment = None;
        for line in block.split('\n') {
            if let Some(text) = line.strip_prefix(':') {
                comment = Some(text.strip_prefix(' ').unwrap_or(text).to_owned());
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match name {
                "id" => fields.0 = value,
                "event" => fields.1 = value,
                "data" => fields.2.push(value),
                _ => {}
            }
        }
        match (comment, fields) {
            (Some(text), (id, event, data))
                if id.is_empty() && event.is_empty() && data.is_empty() =>
            {
                Some(SseItem::Comment(text))
            }
            (_, (id, event, data)) => Some(SseItem::Event {
                id,
                event,
                data: data.join("\n"),
            }),
        }
    }

    /// After [`Next::End`]: whether the server then closes the connection
    /// (EOF with nothing more), within `timeout`.
    pub fn closed_after_end(&mut self, timeout: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok() && rest.is_empty() && self.raw.is_empty()
    }
}
