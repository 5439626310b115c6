//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (tests run the binary from there, as a user would).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `relstat ARGS...` run from the repository root.
pub fn relstat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relstat"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("relstat runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A peer program the tests need. Locally a missing peer skips the test
/// with a message; in CI (`CI=true`) it fails: `scripts/install-peers.sh`
/// must have installed it.
pub fn peer(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is not installed; scripts/install-peers.sh installs it");
        }
        eprintln!("SKIPPED: {name} is not installed (run scripts/install-peers.sh)");
    }
    found
}

/// Runs `promtool check metrics` on an exposition; returns its findings.
pub fn promtool_check_metrics(promtool: &Path, exposition: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.success() && text.trim().is_empty(), text)
}

/// A temporary directory with a file in it.
pub fn temp_file(name: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body); `None` when nothing
/// answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `f` every 50 ms for at most `secs`; true when it held.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f()
}

/// The value of one sample in an exposition (`name{labels}` as printed).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A running `relstat run` in a temporary directory, killed when dropped.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    child: Option<std::process::Child>,
}

impl Agent {
    /// A config with one file source `f` on `<dir>/logs/*.log` plus `extra` TOML.
    pub fn new(extra: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let config = dir.path().join("relstat.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\ndata_dir = \"{d}/data\"\nsite = \"t\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[[sources]]\nname = \"f\"\ntype = \"file\"\npaths = [\"{d}/logs/*.log\"]\n\n{extra}",
                d = dir.path().display()
            ),
        )
        .unwrap();
        Agent {
            dir,
            port,
            config,
            child: None,
        }
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    /// Starts the agent and waits (bounded) until /readyz answers 200.
    pub fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_relstat"))
            .args(["run", "-c", self.config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("relstat starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(20, || http_get(port, "/readyz")
                .is_some_and(|(s, _)| s == 200)),
            "agent did not become ready"
        );
    }

    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// `relstat_events_total{result=...,source="f"}`.
    pub fn events(&self, result: &str) -> f64 {
        sample(
            &self.metrics(),
            &format!(r#"relstat_events_total{{result="{result}",source="f"}}"#),
        )
        .unwrap_or(0.0)
    }

    /// Sends a signal; waits (bounded) for the process to exit; returns its code.
    pub fn signal(&mut self, sig: &str) -> Option<i32> {
        let child = self.child.as_mut()?;
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        if sig == "-HUP" {
            return None;
        }
        for _ in 0..200 {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("agent did not exit after {sig}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Appends canonical lines for releases `from..=to` (one `deployed` each).
pub fn append_lines(path: &Path, from: usize, to: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for i in from..=to {
        buf.push_str(&format!(
            "{{\"time\":\"2026-11-01T{:02}:{:02}:{:02}Z\",\"release\":\"r{i}\",\"environment\":\"prod\",\"status\":\"deployed\",\"service\":\"s{}\"}}\n",
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 7
        ));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

/// Input counters as the store holds them (the agent must be stopped).
pub fn stored_counts(data_dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let store = relstat::store::Store::open(data_dir).unwrap();
    store
        .load()
        .unwrap()
        .counters
        .into_iter()
        .map(|((_, r), n)| (r.as_str().to_string(), n))
        .collect()
}

/// A real Prometheus (Debian's package) on a free loopback port, with its own
/// config and storage in a temporary directory, scraping 127.0.0.1:`target`
/// every second and evaluating `rule_files` every second; killed when
/// dropped. `start` returns once `/-/ready` answers 200 (bounded wait).
pub struct Prometheus {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(binary: &Path, target: u16, rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = dir.path().join("prometheus.yml");
        let rules: String = rule_files
            .iter()
            .map(|r| format!("  - {}\n", r.display()))
            .collect();
        let rules = if rules.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rules}")
        };
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}scrape_configs:\n  - job_name: relstat\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prom = Prometheus {
            child,
            port,
            _dir: dir,
        };
        assert!(
            wait_until(60, || http_get(port, "/-/ready")
                .is_some_and(|(s, _)| s == 200)),
            "prometheus did not become ready"
        );
        prom
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts the agent with its descriptor limit (`ulimit -n`) set to
    /// `nofile`, and waits (bounded) until /readyz answers 200.
    pub fn start_with_nofile(&mut self, nofile: u32) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" run -c \"$1\"",))
            .arg(env!("CARGO_BIN_EXE_relstat"))
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("relstat starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(60, || http_get(port, "/readyz")
                .is_some_and(|(s, _)| s == 200)),
            "agent did not become ready"
        );
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Open descriptors of a process (entries of /proc/PID/fd).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// CPU time (user + system) of a process so far, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Yesterday's date (UTC) as YYYY-MM-DD: event times of new tests are
/// relative to the wall clock.
pub fn yesterday() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
