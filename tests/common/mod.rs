//! Starts the built `subscriberd` binary as a user would: on a data
//! directory, port 0, and reads the address it reports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub use testkit::Reply;

pub mod load;

/// The key the tests provision with `SUBSCRIBERD_API_KEY`.
pub const KEY: &str = "test-key-0123456789abcdef";

/// The server key the tests give with `SUBSCRIBERD_SERVER_KEY` (so no key
/// file is left beside their temporary data directories), unless a test
/// sets or removes that variable or `SUBSCRIBERD_SERVER_KEY_FILE` itself.
pub const SERVER_KEY: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// Gives `command` the tests' server key unless it names one of its own.
pub fn with_server_key(command: &mut Command) {
    let named = command
        .get_envs()
        .any(|(name, _)| name == "SUBSCRIBERD_SERVER_KEY" || name == "SUBSCRIBERD_SERVER_KEY_FILE");
    if !named {
        command.env("SUBSCRIBERD_SERVER_KEY", SERVER_KEY);
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    /// Lines before the address, until `stderr` hands them out.
    startup: Mutex<Vec<String>>,
    stderr_lines: mpsc::Receiver<String>,
}

/// The binary, with the tests' server key (see [`SERVER_KEY`]).
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_subscriberd"));
    command.env("SUBSCRIBERD_SERVER_KEY", SERVER_KEY);
    command
}

impl Server {
    /// `subscriberd serve --data DIR --listen 127.0.0.1:0 ARGS...` with the test key.
    pub fn start(data: &Path, args: &[&str]) -> Server {
        Server::start_with(data, args, Some(KEY))
    }

    pub fn start_with(data: &Path, args: &[&str], key: Option<&str>) -> Server {
        Server::launch(binary(), data, args, key)
    }

    /// As [`Server::start`], with the open-file limit (`RLIMIT_NOFILE`) set
    /// to `soft:hard` by `prlimit`, which then runs the server in its own
    /// process (so `child.id()` is the server's pid).
    pub fn start_with_nofile(data: &Path, args: &[&str], soft: u64, hard: u64) -> Server {
        let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("this test needs prlimit (util-linux) to start the server with a given open-file limit; install util-linux")
            });
        let mut command = Command::new(prlimit);
        command
            .arg(format!("--nofile={soft}:{hard}"))
            .arg(env!("CARGO_BIN_EXE_subscriberd"));
        Server::launch(command, data, args, Some(KEY))
    }

    /// `command serve --listen 127.0.0.1:0 --data DIR ARGS...`, waiting for the address.
    pub fn launch(mut command: Command, data: &Path, args: &[&str], key: Option<&str>) -> Server {
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("SUBSCRIBERD_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(key) = key {
            command.env("SUBSCRIBERD_API_KEY", key);
        }
        with_server_key(&mut command);
        let mut child = command.spawn().expect("spawn subscriberd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!("subscriberd did not report an address; stderr: {seen:?}")
                });
            let addr: Option<SocketAddr> = line
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|addr| addr.parse().expect("socket address"));
            seen.push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        let stdout = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let sink = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let mut text = sink.lock().expect("stdout buffer");
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Server {
            child,
            addr,
            stdout,
            startup: Mutex::new(seen),
            stderr_lines: rx,
        }
    }

    /// What the server printed on stdout, once it contains `until` (or after 5 s).
    pub fn stdout(&self, until: &str) -> String {
        for _ in 0..100 {
            let text = self.stdout.lock().expect("stdout buffer").clone();
            if text.contains(until) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stdout.lock().expect("stdout buffer").clone()
    }

    /// Log lines on stderr since the last call (the first call includes
    /// those before the address).
    pub fn stderr(&self) -> Vec<String> {
        let mut lines = std::mem::take(&mut *self.startup.lock().expect("startup lines"));
        lines.extend(self.stderr_lines.try_iter());
        lines
    }

    /// Log lines on stderr since the last call, waiting up to `timeout` for
    /// one that contains `until`.
    pub fn stderr_until(&self, until: &str, timeout: Duration) -> Vec<String> {
        let mut lines = self.stderr();
        let deadline = std::time::Instant::now() + timeout;
        while !lines.iter().any(|l| l.contains(until)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    /// Every stderr line since the last call, through the end of the stream
    /// (call once the process has exited; waits up to `timeout` for it).
    pub fn stderr_to_end(&self, timeout: Duration) -> Vec<String> {
        let mut lines = self.stderr();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => return lines,
            }
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// A persistent (keep-alive) connection to the server.
    pub fn connect(&self) -> KeepAlive {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        KeepAlive { stream }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let auth = format!("ApiKey {KEY}");
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        testkit::send(self.addr, method, path, &all, body.map(str::as_bytes))
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.child.wait().expect("wait")
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 connection kept open across requests, authenticated with [`KEY`].
pub struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    /// Sends a request on this connection and reads its answer (headers,
    /// then `Content-Length` bytes of body).
    pub fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_with(method, path, &[], body)
    }

    /// As [`KeepAlive::call`], with more headers.
    pub fn call_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: ApiKey {KEY}\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            raw.push_str("Content-Type: application/json\r\n");
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        raw.push_str(body.unwrap_or(""));
        self.stream
            .write_all(raw.as_bytes())
            .expect("send on the kept-alive connection");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(reply) = Reply::try_parse(&answer) {
                let length: usize = reply
                    .header("content-length")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if reply.body.len() >= length {
                    return reply;
                }
            }
            let n = self.stream.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "no complete answer to {method} {path} ({e}); got {:?}",
                    String::from_utf8_lossy(&answer)
                )
            });
            assert!(
                n > 0,
                "the server closed the connection during {method} {path}; got {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
    }
}

/// `subscriberd keys ARGS... --data DIR`, which must succeed; its stdout.
pub fn keys(data: &Path, args: &[&str]) -> String {
    let out = binary()
        .arg("keys")
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run subscriberd keys");
    assert!(
        out.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
