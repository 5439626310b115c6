//! The agent stays answerable under abuse and honest about its health: probes
//! and scrapes get through a slowloris attack from hundreds of addresses, and
//! a dead core (store on a full disk) shows in `/readyz` and the exit status.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::util::*;

/// Attackers: one connection from each of this many loopback addresses,
/// more than the listener's 512 connections.
const ATTACKERS: usize = 600;
/// How long the probes run while the attack holds.
const ATTACK_WINDOW: Duration = Duration::from_secs(20);
/// The prober's own address.
const PROBER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 200);
/// A probe that has no answer within this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The i-th attacker's address: 127.0.1.1, 127.0.1.2, ... (never the prober's).
fn attacker_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

async fn connect_from(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((src, 0)))?;
    let connect = socket.connect(SocketAddr::from(([127, 0, 0, 1], port)));
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A slowloris client until `until`: sends a request line, then one header
/// line a second, never the blank line that ends the head; reconnects when
/// the agent closes the connection. Returns how many connections it opened.
async fn trickle(src: Ipv4Addr, port: u16, until: Instant) -> usize {
    let mut opened = 0;
    while Instant::now() < until {
        let Ok(mut s) = connect_from(src, port).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        opened += 1;
        let mut line = 0;
        let mut buf = [0u8; 256];
        let mut next = b"GET /api/v1/releases HTTP/1.1\r\nHost: relstat\r\n".to_vec();
        while Instant::now() < until {
            if s.write_all(&next).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Closed by the agent (EOF or reset)? Reconnect.
            match s.try_read(&mut buf) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            line += 1;
            next = format!("X-Slow-{line}: a\r\n").into_bytes();
        }
    }
    opened
}

/// One GET from the prober's address on a fresh connection: the status, or
/// `None` when nothing answered within [`PROBE_TIMEOUT`].
async fn probe(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut s = connect_from(PROBER, port).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: relstat\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.ok()?;
        let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]).into_owned();
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// Regression: 600 connections trickling their headers (one line a second)
/// from 600 addresses held all 512 slots for hyper's 30 s header timeout,
/// and the agent answered 1 of 11 probes over 40 s. Now the probes and
/// scrapes get through, and one greedy address is held to its share.
#[test]
fn slowloris_from_600_addresses_leaves_probes_and_scrapes_answering() {
    let mut agent = Agent::new("");
    agent.start();
    let port = agent.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (healthz, others, latency, opened, greedy_held) = rt.block_on(async move {
        // One greedy address opens 100 connections (the default per-peer
        // limit is 64) and holds them silently.
        let greedy = Ipv4Addr::new(127, 0, 0, 3);
        let mut held = Vec::new();
        for _ in 0..100 {
            if let Ok(s) = connect_from(greedy, port).await {
                held.push(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let greedy_held = held.len();

        let until = Instant::now() + Duration::from_secs(3) + ATTACK_WINDOW;
        let attackers: Vec<_> = (0..ATTACKERS)
            .map(|i| tokio::spawn(trickle(attacker_addr(i), port, until)))
            .collect();
        // Let the attackers connect and fill the slots.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let (mut healthz, mut others) = ((0usize, 0usize), (0usize, 0usize));
        let mut latency = Duration::ZERO;
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            let path = match n % 5 {
                0 => "/metrics",
                1 => "/readyz",
                _ => "/healthz",
            };
            let start = Instant::now();
            let ok = probe(port, path).await == Some(200);
            latency = latency.max(start.elapsed());
            let tally = if path == "/healthz" {
                &mut healthz
            } else {
                &mut others
            };
            tally.0 += usize::from(ok);
            tally.1 += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut opened = 0;
        for a in attackers {
            opened += a.await.unwrap();
        }
        drop(held);
        (healthz, others, latency, opened, greedy_held)
    });
    let metrics = agent.metrics();
    let refused = |reason: &str| {
        sample(
            &metrics,
            &format!(r#"relstat_http_refused_total{{reason="{reason}"}}"#),
        )
        .unwrap_or(-1.0)
    };
    eprintln!(
        "healthz {}/{}, readyz+metrics {}/{}, slowest probe {latency:?}; attackers opened \
         {opened} connections; greedy address held {greedy_held}; refused per_peer_limit {}, \
         evicted {}, full {}",
        healthz.0,
        healthz.1,
        others.0,
        others.1,
        refused("per_peer_limit"),
        refused("evicted"),
        refused("full"),
    );
    assert!(healthz.1 >= 20, "too few probes ran: {healthz:?}");
    assert!(
        healthz.0 * 100 >= healthz.1 * 95,
        "/healthz answered {} of {} probes under the attack",
        healthz.0,
        healthz.1
    );
    assert!(
        others.0 * 100 >= others.1 * 95,
        "/readyz and /metrics answered {} of {} probes under the attack",
        others.0,
        others.1
    );
    // The attack did fill the listener: slots were taken from attackers.
    assert!(
        refused("evicted") > 0.0,
        "the attack never filled the slots"
    );
    assert!(
        refused("per_peer_limit") >= 36.0,
        "the greedy address's connections over 64 were not refused and counted"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped (even when the test
/// fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "16m") on `dir`. Where mounting is not
    /// allowed (not root, no CAP_SYS_ADMIN) the test is skipped with a
    /// message, except in CI (`CI=true`), where it fails.
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(o) => stderr(&o),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs for the disk-full test (run as root): {why}");
                }
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs for the disk-full test (needs root): {why}"
                );
                None
            }
        }
    }

    /// Fills the file system with `<dir>/filler` until it is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        // Bounded: at most 1 GiB, far more than any tmpfs this test mounts.
        for _ in 0..16 * 1024 {
            if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
                return;
            }
        }
        panic!("the tmpfs never filled up");
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.0).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs at {}", self.0.display());
        }
    }
}

/// Appends canonical lines for releases `from..to` (one `deployed` each),
/// timed from yesterday on, one second apart.
fn append_recent(path: &std::path::Path, from: usize, to: usize) {
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    let mut buf = String::new();
    for i in from..to {
        let t = start + chrono::Duration::seconds(i as i64);
        buf.push_str(&format!(
            "{{\"time\":\"{}\",\"release\":\"r{i}\",\"environment\":\"prod\",\"status\":\"deployed\",\"service\":\"s{}\"}}\n",
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            i % 7
        ));
    }
    append_text(path, &buf);
}

/// Regression: after a commit failed on a full disk, the core thread was
/// dead, yet /healthz and /readyz answered 200, the file source stopped
/// without a word and the process never exited, so systemd never restarted
/// it. Now /readyz says why (503), the agent exits with status 1, and once
/// space is freed a restart reads what was not committed: every line counted
/// exactly once.
#[test]
fn a_full_disk_makes_readyz_503_and_exit_1_and_a_restart_loses_nothing() {
    let mut agent = Agent::new("");
    let Some(disk) = Tmpfs::mount(&agent.dir.path().join("data"), "16m") else {
        return;
    };
    agent.start();
    let log = agent.log("deploy.log");
    append_recent(&log, 0, 2000);
    assert!(
        wait_until(30, || agent.events("accepted") == 2000.0),
        "the first 2,000 lines were not committed"
    );

    disk.fill();
    append_recent(&log, 2000, 6000);
    // The failed commit shows in /readyz (and /healthz) before the exit.
    let mut seen: Option<(u16, String, u16)> = None;
    let exited = {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut code = None;
        while Instant::now() < deadline {
            if seen.is_none()
                && let Some((status, body)) = http_get(agent.port, "/readyz")
                && status == 503
            {
                let health = http_get(agent.port, "/healthz").map_or(0, |(s, _)| s);
                seen = Some((status, body, health));
            }
            code = agent.wait_exit(0);
            if code.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        code
    };
    let (_, reason, health) = seen.expect("/readyz never answered 503 after the failed commit");
    eprintln!("/readyz said: {}", reason.trim());
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(health, 503, "/healthz must not say ok with a dead core");
    assert_eq!(
        exited,
        Some(1),
        "the agent must exit with status 1 within 60 s"
    );

    disk.free();
    agent.start();
    assert!(
        wait_until(60, || agent.events("accepted") == 6000.0),
        "after the restart {} of 6,000 lines were accepted",
        agent.events("accepted")
    );
    let metrics = agent.metrics();
    assert_eq!(agent.events("duplicate"), 0.0, "a line was read twice");
    assert_eq!(
        sample(
            &metrics,
            r#"relstat_releases_in_status{environment="prod",status="deployed"}"#
        ),
        Some(6000.0),
        "every release once"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
    let stored = stored_counts(&agent.dir.path().join("data"));
    assert_eq!(stored.get("accepted"), Some(&6000));
    assert_eq!(stored.get("duplicate").copied().unwrap_or(0), 0);
}

/// `[http] header_timeout` and `max_connections_per_peer` reach the
/// listener: with 1 s and 2, a third connection from one address is closed
/// at once and counted, and a client that never ends its headers is closed
/// after about a second (the default would keep it 10 s).
#[test]
fn header_timeout_and_per_peer_limit_come_from_the_config() {
    let mut agent = Agent::new("");
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let config = config.replacen(
        "[http]\n",
        "[http]\nheader_timeout = \"1s\"\nmax_connections_per_peer = 2\n",
        1,
    );
    std::fs::write(&agent.config, config).unwrap();
    agent.start();
    let port = agent.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (third_closed, trickler_closed_after) = rt.block_on(async move {
        let src = Ipv4Addr::new(127, 0, 0, 5);
        let mut first = connect_from(src, port).await.unwrap();
        let _second = connect_from(src, port).await.unwrap();
        let mut third = connect_from(src, port).await.unwrap();
        let mut buf = [0u8; 64];
        let third_closed = matches!(
            tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        );
        let start = Instant::now();
        first
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: relstat\r\n")
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match first.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // hyper may answer 408 before closing.
                    Ok(_) => {}
                }
            }
        })
        .await;
        (third_closed, closed.ok().map(|()| start.elapsed()))
    });
    assert!(
        third_closed,
        "a third connection from one address stayed open"
    );
    let after = trickler_closed_after.expect("a trickling client was not closed within 8 s");
    assert!(
        after < Duration::from_secs(5),
        "closed after {after:?}, not ~1 s"
    );
    assert_eq!(
        sample(
            &agent.metrics(),
            r#"relstat_http_refused_total{reason="per_peer_limit"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn a_long_request_head_is_refused_and_costs_no_memory() {
    // hyper's read buffer would grow to ~400 KiB per connection by default,
    // and hold it while the head is unfinished (up to header_timeout); it is
    // capped at 64 KiB (MAX_HEAD_BYTES). 128 connections, each from its own
    // address, send 300 KiB of an unfinished header and wait: uncapped that
    // is 38 MiB held at once; capped, each gets 431 at 64 KiB and its buffer
    // goes, and the agent's peak memory stays near its baseline.
    let mut agent = Agent::new("");
    agent.start();
    let port = agent.port;
    let pid = agent.pid();
    let baseline = peak_rss_kib(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (answers, peak) = rt.block_on(async move {
        let mut streams = Vec::new();
        for i in 0..128u8 {
            let src = Ipv4Addr::new(127, 0, 3, i + 1);
            let Ok(mut s) = connect_from(src, port).await else {
                continue;
            };
            let mut head = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
            head.resize(head.len() + 300 * 1024, b'a');
            // A capped agent stops reading at 64 KiB and answers: the write
            // may then fail or stall; both are fine.
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&head)).await;
            streams.push(s);
        }
        // Every head sent and unfinished: what the agent holds now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let peak = peak_rss_kib(pid);
        let mut answers = Vec::new();
        for mut s in streams {
            let mut buf = vec![0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        (answers, peak)
    });
    assert!(
        peak < baseline + 16 * 1024,
        "baseline {baseline} KiB, with 128 unfinished 300 KiB heads: {peak} KiB"
    );
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 431"))
        .count();
    assert!(
        refused >= 100,
        "431 answers: {refused} of {}",
        answers.len()
    );
    // Still answering.
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
}
