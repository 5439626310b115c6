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

/// The UTC date `days` from today (`YYYY-MM-DD`; negative is past), fixed
/// for the whole test run. Tests date their events relative to the clock, so
/// what they assert about ages (`stale_after` 30 d, retention, `stuck_after`,
/// dedupe and freeze windows) holds on whatever day the suite runs: a literal
/// date turns stale a month after it was written.
pub fn day_offset(days: i64) -> String {
    static TODAY: std::sync::OnceLock<chrono::NaiveDate> = std::sync::OnceLock::new();
    let today = *TODAY.get_or_init(|| chrono::Utc::now().date_naive());
    (today + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

/// Yesterday (UTC), the day the integration tests' events happen: every
/// time of it is in the past and less than two days old.
pub fn day() -> String {
    day_offset(-1)
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

/// Peak resident memory of a running process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    vm_hwm(pid).expect("VmHWM in /proc/PID/status")
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

    /// The agent's process id (after [`Agent::start`]).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent started").id()
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    /// Starts the agent and waits (bounded) until /readyz answers 200.
    pub fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relstat"));
        cmd.args(["run", "-c", self.config.to_str().unwrap()]);
        self.start_command(cmd, 20);
    }

    /// Starts the agent with no proxy variables but `env`, and waits (bounded)
    /// until /readyz answers 200.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relstat"));
        cmd.args(["run", "-c", self.config.to_str().unwrap()]);
        for v in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
            cmd.env_remove(v).env_remove(v.to_ascii_uppercase());
        }
        cmd.envs(env.iter().copied());
        self.start_command(cmd, 20);
    }

    /// Runs `cmd` (the agent, possibly wrapped) and waits (bounded by
    /// `secs`) until /readyz answers 200.
    fn start_command(&mut self, mut cmd: Command, secs: u64) {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("relstat starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(secs, || http_get(port, "/readyz")
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

    /// Waits at most `secs` for the agent to exit by itself: `Some(code)`
    /// (-1 when a signal ended it), `None` while it still runs.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st.code().unwrap_or(-1));
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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
    let day = day();
    let mut buf = String::new();
    for i in from..=to {
        buf.push_str(&format!(
            "{{\"time\":\"{}T{:02}:{:02}:{:02}Z\",\"release\":\"r{i}\",\"environment\":\"prod\",\"status\":\"deployed\",\"service\":\"s{}\"}}\n",
            day,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 7
        ));
    }
    append_text(path, &buf);
}

/// Appends `text` to the file at `path` (created if missing).
pub fn append_text(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The path of an agent's config, as `-c` takes it.
pub fn cfg(a: &Agent) -> &str {
    a.config.to_str().unwrap()
}

/// `relstat keygen --out DIR/NAME`: the paths of NAME.key and NAME.pub.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let o = relstat(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// `relstat -c CFG spool export --out OUT` (through the agent's admin
/// socket while it runs); asserts it succeeded, and returns its output.
pub fn spool_export(a: &Agent, out: &Path) -> Output {
    let o = relstat(&[
        "-c",
        cfg(a),
        "spool",
        "export",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// `relstat -c CFG spool import BUNDLE`: its output, whatever the outcome.
pub fn spool_import(a: &Agent, bundle: &Path) -> Output {
    relstat(&["-c", cfg(a), "spool", "import", bundle.to_str().unwrap()])
}

/// Serves HTTP/1.1 on a loopback port until the test process ends: for each
/// connection, reads the request head and writes what `respond` makes of the
/// request line (a whole response: see [`json_200`]), then closes.
pub fn http_server(respond: impl FnMut(&str) -> String + Send + 'static) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    serve_http(l, respond);
    port
}

/// [`http_server`] on a listener already bound (for answers that name
/// their own port).
pub fn serve_http(
    l: std::net::TcpListener,
    mut respond: impl FnMut(&str) -> String + Send + 'static,
) {
    use std::io::{BufRead, BufReader, Write};
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let _ = conn.write_all(respond(&line).as_bytes());
        }
    });
}

/// A `200 OK` response carrying the JSON `body`, closing the connection.
pub fn json_200(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// POSTs `body` to `/hooks/{source}` with `headers` over HTTP/1.0; the status
/// code (0 when there is none) and the whole answer.
pub fn post_hook(
    port: u16,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "POST /hooks/{source} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// Gives the agent (before it starts) a `web_config_file` with HTTP basic
/// auth for `users` (name, password); with no users, a web config that
/// only sets a header (no authentication).
pub fn set_web_users(agent: &Agent, users: &[(&str, &str)]) {
    let web = agent.dir.path().join("web.yml");
    let mut yaml = String::from(if users.is_empty() {
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    } else {
        "basic_auth_users:\n"
    });
    for (user, password) in users {
        yaml.push_str(&format!(
            "  {user}: {}\n",
            bcrypt::hash(password, 4).unwrap()
        ));
    }
    std::fs::write(&web, yaml).unwrap();
    // web_config_file belongs in [http], which Agent::new writes first.
    let cfg = std::fs::read_to_string(&agent.config).unwrap().replace(
        "[http]\n",
        &format!("[http]\nweb_config_file = \"{}\"\n", web.display()),
    );
    std::fs::write(&agent.config, cfg).unwrap();
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
        Self::start_many(binary, &[target], rule_files)
    }

    /// [`Prometheus::start`] scraping every port of `targets` in one job.
    pub fn start_many(binary: &Path, targets: &[u16], rule_files: &[PathBuf]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'127.0.0.1:{t}'")).collect();
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
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}scrape_configs:\n  - job_name: relstat\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
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

/// Peak resident memory of a running process in KiB: `VmHWM` of
/// /proc/PID/status (`None` once it has exited).
pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `relstat ARGS...` as [`relstat`] does, with the child's peak resident
/// memory in KiB: its `VmHWM`, sampled every 2 ms while it runs and read
/// once more when it exits. The child runs traced (`PTRACE_O_TRACEEXIT`):
/// it stops on its way out with its memory still mapped, so nothing between
/// the last sample and the exit is missed. (`ru_maxrss` of `wait4` cannot
/// serve: Linux carries the spawning process's own peak into it at exec.)
/// Killed (and the test failed) after `secs`.
pub fn relstat_peak(args: &[&str], secs: u64) -> (Output, u64) {
    use std::io::{Read, Seek};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relstat"));
    cmd.args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    // SAFETY: ptrace(TRACEME) is async-signal-safe; it only marks this child traced.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("relstat runs traced");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY (all libc calls below): pid is our own traced child, reaped
    // only here (std's Child is never waited).
    unsafe {
        // Stopped at its exec: trace its exit, then let it run.
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFSTOPPED(status), "status {status:#x}");
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL,
        );
        libc::ptrace(libc::PTRACE_CONT, pid, 0, 0);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let (mut peak, mut at_exit) = (0u64, None);
    loop {
        if let Some(kb) = vm_hwm(pid as u32) {
            peak = peak.max(kb);
        }
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                break;
            }
            let sig = libc::WSTOPSIG(status);
            if status >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8) {
                at_exit = vm_hwm(pid as u32);
                peak = peak.max(at_exit.unwrap_or(0));
                unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
            } else {
                // Another stop: deliver its signal.
                unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, sig) };
            }
            continue;
        }
        if std::time::Instant::now() > deadline {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("relstat {args:?} still ran after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    drop(child);
    assert!(at_exit.is_some(), "relstat {args:?}: no VmHWM at its exit");
    let read = |f: &mut std::fs::File| {
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: read(&mut out),
        stderr: read(&mut err),
    };
    (output, peak)
}

impl Agent {
    /// Starts the agent with its descriptor limit (`ulimit -n`) set to
    /// `nofile`, and waits (bounded) until /readyz answers 200.
    pub fn start_with_nofile(&mut self, nofile: u32) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" run -c \"$1\""))
            .arg(env!("CARGO_BIN_EXE_relstat"))
            .arg(&self.config);
        self.start_command(cmd, 60);
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

/// `relstat run` on examples/quickstart.toml as shipped (relative paths, in a
/// scratch directory), on a free port; killed when dropped. With
/// `with_logs`, the example's logs are copied in before it starts; without,
/// `logs` is the empty directory its sources watch.
pub struct ExampleAgent {
    /// Its working directory (removed when dropped).
    _dir: tempfile::TempDir,
    pub logs: PathBuf,
    pub port: u16,
    child: std::process::Child,
}

impl ExampleAgent {
    pub fn start(with_logs: bool) -> ExampleAgent {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("examples/logs");
        std::fs::create_dir_all(&logs).unwrap();
        if with_logs {
            for entry in std::fs::read_dir(root().join("examples/logs")).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), logs.join(entry.file_name())).unwrap();
            }
        }
        let port = free_port();
        let quickstart = std::fs::read_to_string(root().join("examples/quickstart.toml")).unwrap();
        assert!(quickstart.contains("listen = \"127.0.0.1:9731\""));
        let config = dir.path().join("quickstart.toml");
        std::fs::write(
            &config,
            quickstart.replace("127.0.0.1:9731", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_relstat"))
            .args(["run", "-c", config.to_str().unwrap()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("relstat starts");
        ExampleAgent {
            _dir: dir,
            logs,
            port,
            child,
        }
    }
}

impl Drop for ExampleAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
