//! Starts the built `subscriberd` binary as a user would: on a data
//! directory, port 0, and reads the address it reports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub use testkit::Reply;

/// The key the tests provision with `SUBSCRIBERD_API_KEY`.
pub const KEY: &str = "test-key-0123456789abcdef";

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr_lines: mpsc::Receiver<String>,
}

pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_subscriberd"))
}

impl Server {
    /// `subscriberd serve --data DIR --listen 127.0.0.1:0 ARGS...` with the test key.
    pub fn start(data: &Path, args: &[&str]) -> Server {
        Server::start_with(data, args, Some(KEY))
    }

    pub fn start_with(data: &Path, args: &[&str], key: Option<&str>) -> Server {
        let mut command = binary();
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
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().expect("address");
                break addr.parse().expect("socket address");
            }
            seen.push(line);
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

    /// Log lines on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr_lines.try_iter().collect()
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
