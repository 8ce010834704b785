//! Real PostgreSQL clusters for integration tests: each [`PgCluster`] is an
//! `initdb` of its own in a temporary directory, served on a free loopback
//! port, which a test can crash (`kill -9`), restart, replicate and promote.
//! Only the binaries of an installed PostgreSQL are needed (Debian's package
//! `postgresql`, which `scripts/test` installs as root).

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The line printed, once per test, when PostgreSQL is not installed.
const SKIPPED: &str = "skipped: PostgreSQL is not installed (scripts/test installs it as root)";

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(50);

/// A PostgreSQL cluster of its own: initdb in a temporary directory, the
/// server on a free 127.0.0.1 port, run as the `postgres` user when we are
/// root (initdb refuses root), stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// The directory of the PostgreSQL binaries.
    bin: PathBuf,
    /// The temporary directory: holds `data`, the server's log and its
    /// Unix socket; removed on drop.
    root: PathBuf,
    /// The data directory, `root/data`.
    data: PathBuf,
    /// The loopback port the server listens on.
    port: u16,
    /// Whether the binaries run as the `postgres` user (we are root).
    as_postgres: bool,
    /// Whether the server was started and not stopped or killed since.
    running: bool,
}

impl PgCluster {
    /// Where the binaries are (the newest /usr/lib/postgresql/*/bin with initdb, or `PG_BIN` env var), or None.
    pub fn binaries() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("PG_BIN") {
            let bin = PathBuf::from(bin);
            return bin.join("initdb").is_file().then_some(bin);
        }
        fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<f64>().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, bin)| bin)
    }

    /// Starts a new primary. When PostgreSQL is not installed: if env `CI` is set,
    /// panics (CI installs it, so missing is a failure); otherwise prints ONE line
    /// to stderr "skipped: PostgreSQL is not installed (scripts/test installs it as root)"
    /// and returns None. Callers do `let Some(pg) = PgCluster::start() else { return };`
    pub fn start() -> Option<PgCluster> {
        Self::start_with(&[])
    }

    /// Same, with extra `postgresql.conf` lines appended before the first start
    /// (e.g. "synchronous_commit = on").
    pub fn start_with(conf: &[&str]) -> Option<PgCluster> {
        let Some(bin) = Self::binaries() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "PostgreSQL is not installed, and CI is set: scripts/test installs it as root"
                );
            }
            eprintln!("{SKIPPED}");
            return None;
        };
        let mut cluster = Self::new_dir(bin);
        cluster.run_ok(
            cluster
                .command("initdb")
                .arg("-D")
                .arg(&cluster.data)
                .args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .arg("--locale=C"),
        );
        fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all all trust\n\
             host all all 127.0.0.1/32 trust\n\
             local replication all trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        let mut lines = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{}'", cluster.root.display()),
            "fsync = on".to_owned(),
            "max_connections = 200".to_owned(),
            "wal_level = replica".to_owned(),
            "max_wal_senders = 10".to_owned(),
            "shared_buffers = 128MB".to_owned(),
            "log_min_messages = warning".to_owned(),
            "logging_collector = off".to_owned(),
        ];
        lines.extend(conf.iter().map(|line| (*line).to_owned()));
        cluster.append_conf("postgresql.conf", &lines);
        cluster.first_start();
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth on loopback).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// `postgres://postgres@127.0.0.1:PORT/DBNAME`
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The loopback port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh database, returns its url (each test can use its own database on one cluster).
    pub fn create_database(&self, name: &str) -> String {
        let quoted = name.replace('"', "\"\"");
        self.sql("postgres", &format!("CREATE DATABASE \"{quoted}\""));
        self.url_for(name)
    }

    /// Runs SQL with psql -At (as the postgres user, over TCP to this port), returns trimmed stdout; panics with psql's stderr on failure.
    pub fn sql(&self, db: &str, query: &str) -> String {
        let output = self
            .command("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-U", "postgres", "-p", &self.port.to_string(), "-d", db])
            .args(["-c", query])
            .output()
            .expect("run psql");
        if !output.status.success() {
            panic!(
                "psql on port {} (database {db}) failed: {query}\n{}",
                self.port,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// SIGKILL the postmaster (and its children: kill the process group or `pkill -9 -P`), like a machine dying; waits until the port is closed.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // Stopped first, so that it cannot fork a child between the
            // listing of its children and the kill.
            signal("-STOP", &[pid]);
            let mut pids = children_of(pid);
            pids.push(pid);
            signal("-KILL", &pids);
            let deadline = Instant::now() + Duration::from_secs(10);
            while pids.iter().any(|pid| alive(*pid)) {
                if Instant::now() > deadline {
                    panic!(
                        "processes {pids:?} of the cluster on port {} survived SIGKILL",
                        self.port
                    );
                }
                std::thread::sleep(POLL);
            }
        }
        self.wait_port_closed();
        self.running = false;
    }

    /// Clean stop (pg_ctl stop -m fast).
    pub fn stop(&mut self) {
        self.run_ok(
            self.command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
        );
        self.wait_port_closed();
        self.running = false;
    }

    /// Start again on the same data directory and same port (after kill9 or stop); waits until it accepts connections.
    pub fn restart(&mut self) {
        if self.postmaster_pid().is_some_and(|pid| !alive(pid)) {
            // Left by a kill -9: PostgreSQL would take the pid, were it
            // reused (or a zombie), for a running postmaster.
            let _ = fs::remove_file(self.data.join("postmaster.pid"));
            let _ = fs::remove_file(self.root.join(format!(".s.PGSQL.{}.lock", self.port)));
        }
        if let Err(log) = self.pg_ctl_start() {
            panic!(
                "restart of the cluster on port {} failed:\n{log}",
                self.port
            );
        }
    }

    /// A streaming standby of this primary on its own free port: pg_basebackup -R -X stream from this cluster
    /// into a new temp dir (application_name set to `standby` in primary_conninfo), started; when `synchronous`,
    /// sets `synchronous_standby_names = 'standby'` on the primary (ALTER SYSTEM + pg_reload_conf) and waits until
    /// pg_stat_replication shows it as sync. Returns the standby as a PgCluster (its own Drop cleans it up).
    pub fn standby(&self, synchronous: bool) -> PgCluster {
        let mut standby = Self::new_dir(self.bin.clone());
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name=standby",
            self.port
        );
        standby.run_ok(
            standby
                .command("pg_basebackup")
                .args(["-d", &conninfo, "-D"])
                .arg(&standby.data)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
        );
        // Written last in postgresql.auto.conf, which comes after
        // postgresql.conf, so they win over what was copied from the primary;
        // a synchronous_standby_names copied from it would make the standby,
        // once promoted, wait for a standby of its own on every commit.
        standby.append_conf(
            "postgresql.auto.conf",
            &[
                format!("primary_conninfo = '{conninfo}'"),
                "synchronous_standby_names = ''".to_owned(),
                format!("unix_socket_directories = '{}'", standby.root.display()),
            ],
        );
        standby.first_start();

        if synchronous {
            self.sql(
                "postgres",
                "ALTER SYSTEM SET synchronous_standby_names = 'standby'",
            );
            self.sql("postgres", "SELECT pg_reload_conf()");
        }
        let wanted = if synchronous {
            "streaming sync"
        } else {
            "streaming "
        };
        let query = "SELECT state || ' ' || sync_state FROM pg_stat_replication \
                     WHERE application_name = 'standby'";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.sql("postgres", query);
            if states.lines().any(|line| line.starts_with(wanted)) {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the standby on port {} is not {wanted:?} after 30 s \
                     (pg_stat_replication: {states:?}); its log:\n{}",
                    standby.port,
                    standby.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
        standby
    }

    /// Promotes a standby (SELECT pg_promote(true, 30)); waits until `SELECT pg_is_in_recovery()` is false.
    pub fn promote(&self) {
        let promoted = self.sql("postgres", "SELECT pg_promote(true, 30)");
        assert_eq!(
            promoted,
            "t",
            "pg_promote on port {} failed; log:\n{}",
            self.port,
            self.log_tail()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            if Instant::now() > deadline {
                panic!("port {} still in recovery 30 s after promotion", self.port);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether it accepts connections now.
    pub fn is_up(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            && self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-t", "5"])
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success())
    }

    /// A new temporary directory (owned by `postgres` when we are root),
    /// with a free port chosen but no data directory yet.
    fn new_dir(bin: PathBuf) -> PgCluster {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let root = std::env::temp_dir().join(format!(
            "testkit-pg-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let cluster = PgCluster {
            data: root.join("data"),
            root,
            bin,
            port: free_port(),
            as_postgres: is_root(),
            running: false,
        };
        if cluster.as_postgres {
            // initdb refuses to run as root: the directory is postgres'
            // (the temporary directory above it must be traversable).
            run_ok_plain(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&cluster.root),
            );
        }
        run_ok_plain(Command::new("chmod").arg("755").arg(&cluster.root));
        cluster
    }

    /// Starts the server for the first time; when its port was taken in
    /// the meantime, starts it again on another one.
    fn first_start(&mut self) {
        for attempt in 1..=5 {
            self.append_conf("postgresql.conf", &[format!("port = {}", self.port)]);
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(log) if attempt < 5 && log.contains("already in use") => {
                    let _ = fs::remove_file(self.root.join("log"));
                    self.port = free_port();
                }
                Err(log) => panic!("PostgreSQL on port {} did not start:\n{log}", self.port),
            }
        }
    }

    /// `pg_ctl start`, waiting until the server accepts connections; the
    /// error is pg_ctl's output and the tail of the server's log.
    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if !output.status.success() {
            return Err(format!(
                "{}{}\n--- log tail ---\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            ));
        }
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.is_up() {
            if Instant::now() > deadline {
                return Err(format!(
                    "not accepting connections; log tail:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// A command running the binary `name` of this installation, as the
    /// `postgres` user when we are root, in the cluster's directory.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.root).env("HOME", &self.root);
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
            "PGSERVICE",
        ] {
            command.env_remove(var);
        }
        command
    }

    /// Runs `command`, panicking with its output and the log's tail on failure.
    fn run_ok(&self, command: &mut Command) {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
        if !output.status.success() {
            panic!(
                "{command:?} failed:\n{}\n--- log tail ---\n{}",
                describe(&output),
                self.log_tail()
            );
        }
    }

    /// Appends `lines` to the configuration file `file` of the data directory.
    fn append_conf(&self, file: &str, lines: &[String]) {
        let path = self.data.join(file);
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        writeln!(conf, "\n# testkit::pg\n{}", lines.join("\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The postmaster's pid, from the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits (10 s at most) until the port refuses connections.
    fn wait_port_closed(&self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            if Instant::now() > deadline {
                panic!("port {} still accepts connections after 10 s", self.port);
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last 40 lines of the server's log.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.root.join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running || self.postmaster_pid().is_some_and(alive) {
            let stopped = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "10", "stop"])
                .output()
                .is_ok_and(|output| output.status.success());
            match self.postmaster_pid() {
                Some(pid) if !stopped => {
                    let mut pids = children_of(pid);
                    pids.push(pid);
                    signal("-KILL", &pids);
                }
                _ => {}
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("Uid line in /proc/self/status");
    uid.split_whitespace().nth(1) == Some("0")
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// A process's state letter and parent pid, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (a zombie, dead but not yet reaped by
/// its parent, is not).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Sends `kill`'s `signal` (e.g. "-KILL") to `pids`, ignoring failures
/// (a process may already be gone).
fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .output();
}

/// Runs `command`, panicking with its output on failure.
fn run_ok_plain(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    if !output.status.success() {
        panic!("{command:?} failed:\n{}", describe(&output));
    }
}

/// A failed command's exit status, stdout and stderr.
fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_a_parent() {
        let (_, ppid) = stat(std::process::id()).expect("own stat");
        assert!(alive(std::process::id()));
        assert!(ppid > 0);
        assert!(!alive(u32::MAX));
    }
}
