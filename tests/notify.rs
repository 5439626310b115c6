//! Chat notifications against receivers started here on 127.0.0.1: Slack's
//! and Teams' requirements checked on what arrives, a generic webhook's
//! signature; 429 with Retry-After, 500, a permanent refusal; an outage
//! followed by recovery; a burst that becomes digests within the rate
//! limit; `kill -9` during delivery; receivers that never answer or answer
//! with a huge body.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// How a receiver answers one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// Status, `Retry-After` seconds, body.
    Status(u16, Option<u32>, &'static str),
    /// 200 after this many milliseconds.
    Slow(u64),
    /// Never answers (keeps the connection open for a minute).
    Hang,
    /// 200 with a 64 MiB body.
    Huge,
}

/// One request as the receiver saw it.
#[derive(Clone)]
struct Got {
    at: Instant,
    headers: BTreeMap<String, String>,
    body: Value,
    raw: Vec<u8>,
}

/// A receiver: answers from its script, then with its default; records
/// every request. Slack receivers refuse a body Slack would refuse (HTTP
/// 400 `invalid_blocks`), Teams receivers one Teams would (400).
#[derive(Clone)]
struct Receiver {
    port: u16,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    got: Arc<Mutex<Vec<Got>>>,
    invalid: Arc<Mutex<Vec<String>>>,
}

const OK: Reply = Reply::Status(200, None, "ok");

impl Receiver {
    fn start(kind: &'static str, default: Reply) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver {
            port: l.local_addr().unwrap().port(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(default)),
            got: Arc::default(),
            invalid: Arc::default(),
        };
        let me = r.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let me = me.clone();
                std::thread::spawn(move || me.serve(conn, kind));
            }
        });
        r
    }

    fn set(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies.iter().copied());
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn serve(&self, conn: std::net::TcpStream, kind: &str) {
        conn.set_read_timeout(Some(Duration::from_secs(70)))
            .unwrap();
        let mut rd = BufReader::new(conn);
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if rd.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut raw = vec![0; length.min(1 << 20)];
            if rd.read_exact(&mut raw).is_err() {
                return;
            }
            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let problem = match kind {
                "slack" => slack_problem(&body),
                "teams" => teams_problem(&body),
                _ => None,
            };
            let reply = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(*self.default.lock().unwrap());
            self.got.lock().unwrap().push(Got {
                at: Instant::now(),
                headers,
                body,
                raw,
            });
            let out = rd.get_mut();
            let written = if let Some(p) = problem {
                self.invalid.lock().unwrap().push(p);
                answer(out, 400, None, "invalid_blocks")
            } else {
                match reply {
                    Reply::Status(s, retry, text) => answer(out, s, retry, text),
                    Reply::Slow(ms) => {
                        std::thread::sleep(Duration::from_millis(ms));
                        answer(out, 200, None, "ok")
                    }
                    Reply::Hang => {
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    Reply::Huge => {
                        let total = 64usize << 20;
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
                        let chunk = vec![b'x'; 64 * 1024];
                        let mut ok = out.write_all(head.as_bytes()).is_ok();
                        let mut sent = 0;
                        while ok && sent < total {
                            ok = out.write_all(&chunk).is_ok();
                            sent += chunk.len();
                        }
                        ok
                    }
                }
            };
            if !written {
                return;
            }
        }
    }
}

fn answer(out: &mut std::net::TcpStream, status: u16, retry: Option<u32>, text: &str) -> bool {
    let retry = retry.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    let a = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\n{retry}Content-Length: {}\r\n\r\n{text}",
        text.len()
    );
    out.write_all(a.as_bytes()).is_ok() && out.flush().is_ok()
}

/// What Slack refuses: no `text` fallback, no `blocks` array, a block type
/// that does not exist, a text past Slack's limits (header 150, section
/// 3000, field 2000, at most 10 fields, 50 blocks).
fn slack_problem(v: &Value) -> Option<String> {
    const TYPES: &[&str] = &[
        "header",
        "section",
        "context",
        "divider",
        "actions",
        "image",
        "rich_text",
        "input",
        "file",
        "video",
    ];
    let text = v["text"].as_str().unwrap_or("");
    if text.is_empty() || text.chars().count() > 40_000 {
        return Some(format!("bad text fallback: {v}"));
    }
    let Some(blocks) = v["blocks"].as_array() else {
        return Some("no blocks array".into());
    };
    if blocks.is_empty() || blocks.len() > 50 {
        return Some(format!("{} blocks", blocks.len()));
    }
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    for b in blocks {
        let t = b["type"].as_str().unwrap_or("");
        if !TYPES.contains(&t) {
            return Some(format!("unknown block type {t:?}"));
        }
        if t == "header" && (b["text"]["type"] != "plain_text" || len(&b["text"]["text"]) > 150) {
            return Some("bad header".into());
        }
        if t == "section" {
            if len(&b["text"]["text"]) > 3000 {
                return Some("section text over 3000".into());
            }
            if let Some(f) = b["fields"].as_array()
                && (f.len() > 10 || f.iter().any(|f| len(&f["text"]) > 2000))
            {
                return Some("bad fields".into());
            }
            if b.get("text").is_none() && b.get("fields").is_none() {
                return Some("a section needs text or fields".into());
            }
        }
        if t == "context"
            && !b["elements"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.len() <= 10)
        {
            return Some("bad context".into());
        }
    }
    None
}

/// What a Teams Workflows webhook needs: an Adaptive Card (`type`,
/// `version`, `body`) inside the `attachments` envelope.
fn teams_problem(v: &Value) -> Option<String> {
    let a = &v["attachments"][0];
    if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
        return Some(format!("no adaptive card attachment: {v}"));
    }
    let c = &a["content"];
    if c["type"] != "AdaptiveCard"
        || c["version"].as_str().is_none_or(|s| s.is_empty())
        || c["body"].as_array().is_none_or(|b| b.is_empty())
    {
        return Some(format!("not an adaptive card: {c}"));
    }
    None
}

/// A URL file (mode 600) in `dir` for a receiver.
fn url_file(dir: &Path, name: &str, port: u16) -> String {
    let p = dir.join(format!("{name}-url"));
    std::fs::write(&p, format!("http://127.0.0.1:{port}/hook/{name}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn destination(dir: &Path, name: &str, kind: &str, port: u16, extra: &str) -> String {
    format!(
        "[[notify.destinations]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl_file = \"{}\"\n{extra}\n",
        url_file(dir, name, port)
    )
}

/// Appends, for releases `from..=to`, events in production: `failed` and,
/// with `rollback`, `rolled_back` a second later (both notified by the
/// default routes). The events are of the last seconds (the agent does not
/// notify events older than `max_age`: a backlog).
fn fail(path: &Path, from: usize, to: usize, rollback: bool) {
    let end = chrono::Utc::now();
    let mut buf = String::new();
    for i in from..=to {
        let t0 = end - chrono::Duration::milliseconds(2 * (to - i) as i64);
        let t = |ms: i64| {
            (t0 + chrono::Duration::milliseconds(ms))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        buf.push_str(&format!(
            "{{\"time\":\"{}\",\"release\":\"r{i}\",\"environment\":\"production\",\"status\":\"failed\",\"service\":\"api\",\"reason\":\"smoke tests failed\"}}\n",
            t(0)
        ));
        if rollback {
            buf.push_str(&format!(
                "{{\"time\":\"{}\",\"release\":\"r{i}\",\"environment\":\"production\",\"status\":\"rolled_back\",\"service\":\"api\"}}\n",
                t(1000)
            ));
        }
    }
    append_text(path, &buf);
}

/// Events of yesterday: a backlog, not notified.
fn old_failures(path: &Path, n: usize) {
    let day = day();
    let mut buf = String::new();
    for i in 1..=n {
        buf.push_str(&format!(
            "{{\"time\":\"{day}T10:00:{:02}Z\",\"release\":\"old{i}\",\"environment\":\"production\",\"status\":\"failed\",\"service\":\"api\"}}\n",
            i % 60
        ));
    }
    std::fs::write(path, buf).unwrap();
}

/// An agent with `extra`; the `stuck` rule is off (a `failed` key would
/// be stuck hours later; the tests count messages exactly).
fn agent(extra: &str) -> Agent {
    Agent::new(&format!("[anomalies.stuck]\nenabled = false\n\n{extra}"))
}

fn metric(agent: &Agent, series: &str) -> f64 {
    sample(&agent.metrics(), series).unwrap_or(0.0)
}

/// The generic webhook's messages (digests opened up), in arrival order:
/// (id, release, to).
fn webhook_messages(got: &[Got]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in got {
        let list = match g.body["type"].as_str() {
            Some("relstat.digest") => g.body["messages"].as_array().cloned().unwrap_or_default(),
            _ => vec![g.body.clone()],
        };
        for m in list {
            out.push((
                m["id"].as_str().unwrap_or_default().to_string(),
                m["release"].as_str().unwrap_or_default().to_string(),
                m["to"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

#[test]
fn slack_teams_and_a_signed_webhook_receive_what_they_require() {
    let slack = Receiver::start("slack", OK);
    let teams = Receiver::start("teams", Reply::Status(202, None, ""));
    let hook = Receiver::start("webhook", OK);
    let files = tempfile::tempdir().unwrap();
    let secret = files.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut agent = agent(&format!(
        "[notify]\napi_url = \"https://relstat.example\"\n{}{}{}",
        destination(
            files.path(),
            "slack",
            "slack",
            slack.port,
            "per_minute = 600"
        ),
        destination(
            files.path(),
            "teams",
            "teams",
            teams.port,
            "per_minute = 600"
        ),
        destination(
            files.path(),
            "hook",
            "webhook",
            hook.port,
            &format!(
                "per_minute = 600\nhmac_secret_file = \"{}\"",
                secret.display()
            )
        ),
    ));
    // Yesterday's failures (a backlog read at the first start) are not
    // notified: each receiver gets exactly r1..r3.
    old_failures(&agent.log("old.log"), 5);
    agent.start();
    fail(&agent.log("a.log"), 1, 3, false);
    assert!(
        wait_until(30, || slack.got().len() >= 3
            && teams.got().len() >= 3
            && hook.got().len() >= 3),
        "slack {} teams {} hook {}",
        slack.got().len(),
        teams.got().len(),
        hook.got().len()
    );
    assert_eq!(*slack.invalid.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*teams.invalid.lock().unwrap(), Vec::<String>::new());
    let s = slack.got();
    assert_eq!(s.len(), 3);
    assert!(
        s[0].body["text"]
            .as_str()
            .unwrap()
            .contains("r1 api failed in production")
    );
    assert!(
        s[0].body
            .to_string()
            .contains("https://relstat.example/api/v1/releases/r1")
    );
    for g in hook.got() {
        let sig = g.headers.get("x-relstat-signature-256").expect("signed");
        assert_eq!(
            *sig,
            format!(
                "sha256={}",
                relstat::sinks::siem::transport::http::sign(b"s3cret", &g.raw)
            )
        );
        assert_eq!(g.body["type"], "relstat.notification");
    }
    let releases: Vec<String> = webhook_messages(&hook.got())
        .into_iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(releases, ["r1", "r2", "r3"]);
    for d in ["slack", "teams", "hook"] {
        assert!(wait_until(10, || metric(
            &agent,
            &format!("relstat_notify_sent_total{{destination=\"{d}\"}}")
        ) == 3.0));
        assert_eq!(
            metric(
                &agent,
                &format!("relstat_notify_queued{{destination=\"{d}\"}}")
            ),
            0.0
        );
    }
}

#[test]
fn retry_after_is_honoured_a_500_retried_and_a_refusal_dropped_and_counted() {
    let limited = Receiver::start("slack", OK);
    limited.script(&[Reply::Status(429, Some(2), "rate_limited")]);
    let broken = Receiver::start("slack", OK);
    broken.script(&[
        Reply::Status(500, None, "oops"),
        Reply::Status(503, None, "oops"),
    ]);
    let refusing = Receiver::start("slack", Reply::Status(404, None, "no_service"));
    let files = tempfile::tempdir().unwrap();
    let mut agent = agent(&format!(
        "[notify]\n{}{}{}",
        destination(files.path(), "limited", "slack", limited.port, ""),
        destination(files.path(), "broken", "slack", broken.port, ""),
        destination(files.path(), "refusing", "slack", refusing.port, ""),
    ));
    agent.start();
    fail(&agent.log("a.log"), 1, 1, false);
    let sent = |d: &str| {
        metric(
            &agent,
            &format!("relstat_notify_sent_total{{destination=\"{d}\"}}"),
        )
    };
    assert!(wait_until(60, || sent("limited") == 1.0 && sent("broken") == 1.0));
    let l = limited.got();
    assert_eq!(l.len(), 2, "one 429, then the message");
    assert!(
        l[1].at - l[0].at >= Duration::from_millis(1900),
        "Retry-After: 2 waited ({:?})",
        l[1].at - l[0].at
    );
    let b: Vec<String> = broken
        .got()
        .iter()
        .map(|g| g.body["text"].to_string())
        .collect();
    assert_eq!(b.len(), 3, "500, 503, then delivered once: {b:?}");
    // The retried message is the same message (same id).
    assert_eq!(l[0].raw, l[1].raw);
    assert!(wait_until(10, || metric(
        &agent,
        r#"relstat_notify_failed_total{destination="refusing",reason="refused"}"#
    ) == 1.0));
    assert_eq!(
        metric(&agent, r#"relstat_notify_failing{destination="refusing"}"#),
        1.0
    );
    assert_eq!(
        metric(&agent, r#"relstat_notify_queued{destination="refusing"}"#),
        0.0
    );
    assert_eq!(
        metric(&agent, r#"relstat_notify_failing{destination="broken"}"#),
        0.0
    );
    // Dropped for good: never offered again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(refusing.got().len(), 1);
}

#[test]
fn an_outage_then_recovery_loses_nothing_keeps_order_and_sends_no_duplicate() {
    let hook = Receiver::start("webhook", Reply::Status(503, None, "down"));
    let files = tempfile::tempdir().unwrap();
    let mut agent = agent(&format!(
        "[notify]\nmax_age = \"1h\"\ndigest_after = 1000\n{}",
        destination(
            files.path(),
            "hook",
            "webhook",
            hook.port,
            "per_minute = 600"
        ),
    ));
    agent.start();
    fail(&agent.log("a.log"), 1, 10, true);
    // A 20 s outage; scripts/notify-outage.sh runs the 10-minute one
    // (RELSTAT_NOTIFY_OUTAGE_SECS=600).
    let outage: u64 = std::env::var("RELSTAT_NOTIFY_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let queued = || metric(&agent, r#"relstat_notify_queued{destination="hook"}"#);
    assert!(wait_until(20, || queued() == 20.0), "queued {}", queued());
    std::thread::sleep(Duration::from_secs(outage));
    assert!(!hook.got().is_empty(), "tried during the outage");
    assert!(
        metric(
            &agent,
            r#"relstat_notify_oldest_age_seconds{destination="hook"}"#
        ) >= 15.0
    );
    let tried = hook.got().len();
    hook.set(OK);
    assert!(
        wait_until(90, || queued() == 0.0),
        "queued {} after recovery",
        queued()
    );
    let delivered: Vec<_> = webhook_messages(&hook.got()[tried..]);
    let ids: BTreeSet<&String> = delivered.iter().map(|m| &m.0).collect();
    assert_eq!(delivered.len(), 20, "{delivered:?}");
    assert_eq!(ids.len(), 20, "no duplicate");
    for i in 1..=10 {
        let r = format!("r{i}");
        let order: Vec<&str> = delivered
            .iter()
            .filter(|m| m.1 == r)
            .map(|m| m.2.as_str())
            .collect();
        assert_eq!(order, ["failed", "rolled_back"], "{r}");
    }
    assert_eq!(
        metric(
            &agent,
            r#"relstat_notify_failed_total{destination="hook",reason="max_age"}"#
        ),
        0.0
    );
}

#[test]
fn messages_older_than_max_age_are_dropped_and_counted() {
    let hook = Receiver::start("webhook", Reply::Status(503, None, "down"));
    let files = tempfile::tempdir().unwrap();
    let mut agent = agent(&format!(
        "[notify]\nmax_age = \"5s\"\n{}",
        destination(
            files.path(),
            "hook",
            "webhook",
            hook.port,
            "per_minute = 600"
        ),
    ));
    agent.start();
    fail(&agent.log("a.log"), 1, 4, false);
    assert!(wait_until(30, || metric(
        &agent,
        r#"relstat_notify_failed_total{destination="hook",reason="max_age"}"#
    ) == 4.0));
    hook.set(OK);
    let before = hook.got().len();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<String> = hook.got()[before..]
        .iter()
        .map(|g| g.body.to_string())
        .collect();
    assert_eq!(after, Vec::<String>::new(), "nothing left to send");
    assert_eq!(
        metric(&agent, r#"relstat_notify_queued{destination="hook"}"#),
        0.0
    );
}

#[test]
fn a_burst_of_500_transitions_becomes_digests_within_the_rate_limit() {
    let hook = Receiver::start("webhook", OK);
    let slack = Receiver::start("slack", OK);
    let files = tempfile::tempdir().unwrap();
    let mut agent = agent(&format!(
        "[notify]\n{}{}",
        destination(files.path(), "hook", "webhook", hook.port, ""),
        destination(files.path(), "slack", "slack", slack.port, ""),
    ));
    agent.start();
    // Five waves of 100, a second apart: several digests, spaced.
    for wave in 0..5 {
        fail(&agent.log("a.log"), wave * 100 + 1, wave * 100 + 100, false);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        wait_until(60, || webhook_messages(&hook.got()).len() >= 500),
        "{} of 500",
        webhook_messages(&hook.got()).len()
    );
    let got = hook.got();
    let ids: BTreeSet<String> = webhook_messages(&got).into_iter().map(|m| m.0).collect();
    assert_eq!(ids.len(), 500, "each once");
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!(
        "burst: 500 messages in {} requests, shortest gap {:?}",
        got.len(),
        gaps.iter().min()
    );
    assert!(
        (2..=25).contains(&got.len()),
        "{} requests for 500 messages",
        got.len()
    );
    assert!(got.iter().any(|g| g.body["type"] == "relstat.digest"));
    for w in got.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(900),
            "per_minute = 60: {:?} between requests",
            w[1].at - w[0].at
        );
    }
    // Slack gets digests too, valid ones.
    assert!(wait_until(30, || metric(
        &agent,
        r#"relstat_notify_queued{destination="slack"}"#
    ) == 0.0
        && !slack.got().is_empty()));
    assert_eq!(*slack.invalid.lock().unwrap(), Vec::<String>::new());
    let listed: usize = slack
        .got()
        .iter()
        .map(|g| {
            let t = g.body["blocks"][0]["text"]["text"].as_str().unwrap_or("");
            t.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        })
        .sum();
    assert_eq!(listed, 500);
}

#[test]
fn kill_9_during_delivery_loses_nothing() {
    let hook = Receiver::start("webhook", Reply::Slow(200));
    let files = tempfile::tempdir().unwrap();
    let mut agent = agent(&format!(
        "[notify]\ndigest_after = 1000\n{}",
        destination(
            files.path(),
            "hook",
            "webhook",
            hook.port,
            "per_minute = 6000"
        ),
    ));
    agent.start();
    fail(&agent.log("a.log"), 1, 40, false);
    assert!(wait_until(30, || hook.got().len() >= 5));
    agent.signal("-KILL");
    let at_kill = hook.got().len();
    assert!(at_kill < 40, "killed during delivery ({at_kill} sent)");
    agent.start();
    assert!(
        wait_until(60, || webhook_messages(&hook.got())
            .iter()
            .map(|m| &m.0)
            .collect::<BTreeSet<_>>()
            .len()
            >= 40),
        "not everything arrived"
    );
    let all = webhook_messages(&hook.got());
    let ids: BTreeSet<&String> = all.iter().map(|m| &m.0).collect();
    eprintln!(
        "kill -9: {at_kill} received before the kill, {} in all for 40 messages",
        all.len()
    );
    assert_eq!(ids.len(), 40);
    assert!(
        all.len() <= 41,
        "at most the message in flight at the kill is sent twice ({} for 40)",
        all.len()
    );
}

#[test]
fn a_receiver_that_never_answers_or_answers_a_huge_body_holds_no_other() {
    let hang = Receiver::start("webhook", Reply::Hang);
    let huge = Receiver::start("webhook", Reply::Huge);
    let ok = Receiver::start("webhook", OK);
    let files = tempfile::tempdir().unwrap();
    let mut agent = agent(&format!(
        "[notify]\n{}{}{}",
        destination(
            files.path(),
            "hang",
            "webhook",
            hang.port,
            "per_minute = 600"
        ),
        destination(
            files.path(),
            "huge",
            "webhook",
            huge.port,
            "per_minute = 600"
        ),
        destination(files.path(), "ok", "webhook", ok.port, "per_minute = 600"),
    ));
    agent.start();
    fail(&agent.log("a.log"), 1, 5, false);
    assert!(
        wait_until(30, || ok.got().len() >= 5),
        "ok got {}",
        ok.got().len()
    );
    assert!(wait_until(30, || metric(
        &agent,
        r#"relstat_notify_sent_total{destination="huge"}"#
    ) == 5.0));
    assert!(!hang.got().is_empty(), "asked, never answered");
    assert_eq!(
        metric(&agent, r#"relstat_notify_queued{destination="hang"}"#),
        5.0
    );
    let rss = peak_rss_kib(agent.pid());
    eprintln!("hostile receivers: agent VmHWM {rss} KiB");
    assert!(
        rss < 200 * 1024,
        "a 64 MiB answer is not read: VmHWM {rss} KiB"
    );
}

#[test]
fn notify_test_sends_a_sample_and_prints_the_answer() {
    let slack = Receiver::start("slack", OK);
    let refusing = Receiver::start("teams", Reply::Status(410, None, "gone"));
    let files = tempfile::tempdir().unwrap();
    let agent = agent(&format!(
        "[notify]\n{}{}",
        destination(files.path(), "chat", "slack", slack.port, ""),
        destination(files.path(), "old", "teams", refusing.port, ""),
    ));
    let c = agent.config.to_str().unwrap();
    let o = relstat(&["notify", "test", "chat", "-c", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "delivered: HTTP 200 ok");
    assert_eq!(slack.got().len(), 1);
    assert_eq!(*slack.invalid.lock().unwrap(), Vec::<String>::new());
    let o = relstat(&["notify", "test", "old", "-c", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refused: HTTP 410 gone"),
        "{}",
        stderr(&o)
    );
    let o = relstat(&["notify", "test", "nope", "-c", c]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no [[notify.destinations]] is named \"nope\""),
        "{}",
        stderr(&o)
    );
}

/// The Alertmanager example of docs/notifications.md passes `amtool
/// check-config` (Debian's prometheus-alertmanager; a missing amtool fails
/// in CI).
#[test]
fn the_alertmanager_example_passes_amtool() {
    let Some(amtool) = peer("amtool") else { return };
    let example = root().join("examples/alertmanager.yml");
    let o = std::process::Command::new(amtool)
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = std::fs::read_to_string(&example).unwrap();
    let doc = std::fs::read_to_string(root().join("docs/notifications.md")).unwrap();
    assert!(
        doc.contains(text.trim()),
        "docs/notifications.md shows examples/alertmanager.yml as it is"
    );
    // Every alert it routes by name exists in the shipped rules.
    let rules = std::fs::read_to_string(root().join("alerts/relstat.rules.yml")).unwrap();
    for name in [
        "RelstatAgentDown",
        "RelstatGateBypass",
        "RelstatUnauthorizedActor",
    ] {
        assert!(rules.contains(&format!("alert: {name}")), "{name}");
    }
}
