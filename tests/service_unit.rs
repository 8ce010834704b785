//! `contrib/subscriberd.service`, the systemd unit we ship: the hardening
//! directives a distribution would ship are there, `systemd-analyze verify`
//! accepts it (where installed), and `subscriberd serve` needs nothing else
//! to run under it: started as the unit starts it (its `ExecStart`, its
//! `Environment=` and nothing more, its working directory, umask and
//! open-file limit, the state directory a fresh temporary one), it serves,
//! prints a first key for the journal, and SIGTERM stops it with status 0
//! within the unit's `TimeoutStopSec`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::binary;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/subscriberd.service");

/// Where the unit expects the binary.
const INSTALLED_BINARY: &str = "/usr/local/bin/subscriberd";

/// The `PATH` systemd gives a system service.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

/// A unit file's assignments in order: (section, key, value), continuation
/// lines joined, comments left out.
struct Unit {
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn read() -> Unit {
        let text = std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("read {UNIT}: {e}"));
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for line in text.lines() {
            let line = line.trim();
            if pending.is_empty()
                && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
            {
                continue;
            }
            if let Some(rest) = line.strip_suffix('\\') {
                pending.push_str(rest);
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let whole = std::mem::take(&mut pending);
            if let Some(name) = whole.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let (key, value) = whole
                .split_once('=')
                .unwrap_or_else(|| panic!("{UNIT}: not an assignment: {whole:?}"));
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        Unit { entries }
    }

    /// The value in force: the last assignment of `key` in `[Service]`.
    fn service(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// The `Environment=` assignments of `[Service]`, in order.
    fn environment(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == "Environment")
            .flat_map(|(_, _, v)| split_words(v))
            .map(|word| {
                let (name, value) = word
                    .split_once('=')
                    .unwrap_or_else(|| panic!("Environment= item without '=': {word:?}"));
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// A variable as the unit sets it.
    fn env(&self, name: &str) -> Option<String> {
        self.environment()
            .into_iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// systemd's splitting of an `Environment=` value: words separated by
/// spaces, a word may be quoted ("..." or '...'), backslash escapes.
fn split_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                word.extend(chars.next());
                in_word = true;
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (c, _) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unterminated quote in {value:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// A systemd time span in seconds: `30`, `30s`, `2min`, `1min 30s`.
fn seconds(span: &str) -> u64 {
    split_words(span)
        .iter()
        .map(|part| {
            let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("not a time span: {span:?}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "m" | "min" => n * 60,
                other => panic!("unit {other:?} in time span {span:?}"),
            }
        })
        .sum()
}

#[test]
fn the_unit_has_the_hardening_a_distribution_ships() {
    let unit = Unit::read();
    let expected = [
        ("Type", "simple"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("StateDirectory", "subscriberd"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("LimitNOFILE", "65536"),
        ("UMask", "0077"),
    ];
    for (key, value) in expected {
        assert_eq!(unit.service(key), Some(value), "{UNIT}: {key}=");
    }
    // A dedicated user, fixed or dynamic, never root.
    let user = unit.service("User");
    assert!(
        unit.service("DynamicUser") == Some("yes") || user.is_some_and(|u| u != "root" && u != "0"),
        "{UNIT}: a dedicated user (User= or DynamicUser=yes), got User={user:?}"
    );
    // ProtectSystem=strict leaves only the state directory writable: the
    // data directory must be inside it.
    let data = unit
        .env("SUBSCRIBERD_DATA")
        .unwrap_or_else(|| panic!("{UNIT}: Environment=SUBSCRIBERD_DATA=..."));
    assert!(
        data.starts_with("/var/lib/subscriberd/"),
        "the data directory {data} is not in the state directory /var/lib/subscriberd"
    );
    // systemd's SIGKILL comes after TimeoutStopSec: the drain delay, the
    // grace period and a margin for the final flush must fit.
    let grace = unit
        .env("SUBSCRIBERD_SHUTDOWN_GRACE_SECS")
        .map_or(10, |v| v.parse().expect("grace seconds"));
    let drain = unit
        .env("SUBSCRIBERD_DRAIN_DELAY_SECS")
        .map_or(0, |v| v.parse().expect("drain delay seconds"));
    let stop = seconds(unit.service("TimeoutStopSec").expect("TimeoutStopSec="));
    assert!(
        stop >= drain + grace + 5,
        "TimeoutStopSec={stop} leaves no room after drain delay {drain} s + grace {grace} s"
    );
    assert_eq!(
        unit.entries
            .iter()
            .find(|(s, k, _)| s == "Install" && k == "WantedBy")
            .map(|(_, _, v)| v.as_str()),
        Some("multi-user.target")
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (the unit is not verified)");
        return;
    }
    // verify checks that ExecStart's program exists: point it at the built one.
    let dir = tempfile::tempdir().expect("dir");
    let text = std::fs::read_to_string(UNIT).expect("read the unit");
    let built = binary()
        .get_program()
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    assert!(text.contains(INSTALLED_BINARY));
    let copy = dir.path().join("subscriberd.service");
    std::fs::write(&copy, text.replace(INSTALLED_BINARY, &built)).expect("write the copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt directives are only warnings ("ignoring"): any
    // line about our unit fails the test.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("subscriberd.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{stderr}",
        out.status
    );
}

/// `value` with the unit's paths and address made local to the test: the
/// state directory becomes `state`, a listen address port 0.
fn localized(name: &str, value: &str, state: &Path) -> String {
    if name.ends_with("LISTEN") {
        return "127.0.0.1:0".to_owned();
    }
    match value.strip_prefix("/var/lib/subscriberd") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", state.display())
        }
        _ => value.to_owned(),
    }
}

#[test]
fn serve_runs_under_the_unit_with_nothing_else() {
    let unit = Unit::read();
    let root = tempfile::tempdir().expect("dir");
    // What StateDirectory= makes: /var/lib/subscriberd, mode 0700, empty.
    let state: PathBuf = root.path().join("subscriberd");
    std::fs::create_dir(&state).expect("state directory");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // ExecStart, the installed binary replaced by the built one. Plain
    // words only, so splitting on spaces is what systemd does.
    let exec = unit.service("ExecStart").expect("ExecStart=");
    assert!(
        !exec.contains(['"', '\'', '$', '%', '\\']),
        "ExecStart= with quotes, variables or specifiers: extend this test ({exec})"
    );
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_BINARY), "ExecStart={exec}");
    let mut args = Vec::new();
    let mut previous = "";
    for word in words {
        let flag = previous.trim_start_matches('-').to_uppercase();
        args.push(localized(&flag, word, &state));
        previous = word;
    }

    // The environment systemd gives it: PATH, STATE_DIRECTORY and the
    // unit's Environment= lines (the optional EnvironmentFile=- is the
    // operator's: absent here, as after an install).
    let mut command = Command::new("/bin/sh");
    command.env_clear().env("PATH", SERVICE_PATH);
    command.env("STATE_DIRECTORY", &state);
    for (name, value) in unit.environment() {
        command.env(&name, localized(&name, &value, &state));
    }
    let workdir = unit.service("WorkingDirectory").map_or_else(
        || PathBuf::from("/"),
        |w| PathBuf::from(localized("", w, &state)),
    );
    // UMask= and LimitNOFILE= as systemd applies them before the exec (the
    // limit only where this process may set it); `exec` keeps the pid.
    let umask = unit.service("UMask").expect("UMask=");
    let nofile = unit.service("LimitNOFILE").expect("LimitNOFILE=");
    command
        .arg("-c")
        .arg(format!(
            "umask {umask} && {{ ulimit -n {nofile} 2>/dev/null || true; }} && exec \"$0\" \"$@\""
        ))
        .arg(binary().get_program())
        .args(&args)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start subscriberd as the unit does");
    let pid = child.id();

    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdout = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stdout);
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut text = sink.lock().expect("stdout");
            text.push_str(&line);
            text.push('\n');
        }
    });

    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("subscriberd under the unit did not start; stderr: {log:#?}")
            });
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.parse().expect("socket address"));
        log.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };

    let health = testkit::send(addr, "GET", "/v1/health-check", &[], None);
    assert_eq!(
        health.status, 200,
        "GET /v1/health-check: {:?}",
        health.body
    );
    // Ready once the leases overdue at open are written (none here).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = testkit::send(addr, "GET", "/ready", &[], None);
        if ready.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GET /ready still {} after 10 s: {:?}",
            ready.status,
            ready.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // No key was provisioned: the first start printed one on stdout (the
    // journal, under systemd), and it works.
    let deadline = Instant::now() + Duration::from_secs(5);
    let key = loop {
        let text = stdout.lock().expect("stdout").clone();
        let key = text
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned);
        if let Some(key) = key {
            assert!(text.contains("Created the"), "{text}");
            break key;
        }
        assert!(Instant::now() < deadline, "no key on stdout: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let auth = format!("ApiKey {key}");
    let created = testkit::send(
        addr,
        "POST",
        "/v1/subscribers",
        &[("Authorization", &auth)],
        Some(br#"{"subscriberId":"under-systemd"}"#),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);

    // systemd stops it with SIGTERM and waits TimeoutStopSec before SIGKILL.
    let stop = Duration::from_secs(seconds(
        unit.service("TimeoutStopSec").expect("TimeoutStopSec="),
    ));
    let sent = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if sent.elapsed() > stop {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit within TimeoutStopSec ({stop:?}) of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "SIGTERM exits 0 under the unit, got {status:?}"
    );
    log.extend(lines.iter());
    let trouble: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains("ERROR"))
        .collect();
    assert!(trouble.is_empty(), "warnings under the unit: {trouble:#?}");

    // Everything it wrote is in the state directory and, with UMask=0077,
    // its own: nothing readable by group or others.
    let data = PathBuf::from(localized(
        "",
        &unit.env("SUBSCRIBERD_DATA").expect("SUBSCRIBERD_DATA"),
        &state,
    ));
    assert!(data.is_dir(), "no data directory at {}", data.display());
    assert!(
        !data.join("admin.sock").exists(),
        "admin.sock removed on a clean stop"
    );
    let mut open = Vec::new();
    let mut stack = vec![state.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.permissions().mode() & 0o077 != 0 {
                open.push(format!(
                    "{:o} {}",
                    meta.permissions().mode(),
                    path.display()
                ));
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(open.is_empty(), "files open to group or others: {open:#?}");
}
