//! Webhook sources end to end: the real binary, real HTTP on 127.0.0.1, the
//! tools' own payloads (tests/fixtures, SOURCES.md), each tool's own
//! authentication; what landed is read back from the store.

use std::io::{Read, Write};
use std::path::Path;

use crate::util::{Agent, day, post_hook, sample};
use relstat::sources::webhook::auth::sign;

pub(crate) const SECRET: &str = "s3cret-for-tests";

/// The sources under test; `{D}` is the agent's temp dir.
const SOURCES: &str = r#"
[[sources]]
name = "github"
type = "webhook"
preset = "github"
secret_file = "{D}/secret"

[[sources]]
name = "gitlab"
type = "webhook"
preset = "gitlab"
secret_file = "{D}/secret"

[[sources]]
name = "jenkins"
type = "webhook"
preset = "jenkins"
secret_file = "{D}/secret"
[sources.defaults]
environment = "production"

[[sources]]
name = "argocd"
type = "webhook"
preset = "argocd"
secret_file = "{D}/secret"
[sources.defaults]
environment = "production"

[[sources]]
name = "rollouts"
type = "webhook"
preset = "argo_rollouts"
secret_file = "{D}/secret"
[sources.defaults]
environment = "production"

[[sources]]
name = "flux"
type = "webhook"
preset = "flux"
secret_file = "{D}/secret"
[sources.defaults]
environment = "production"

[[sources]]
name = "azure"
type = "webhook"
preset = "azure_devops"
secret_file = "{D}/secret"

[[sources]]
name = "jira"
type = "webhook"
preset = "jira"
secret_file = "{D}/secret"
[sources.fields]
release = "issue.key"
[sources.status_map]
Done = "approved"

[[sources]]
name = "servicenow"
type = "webhook"
preset = "servicenow"
secret_file = "{D}/secret"
[sources.fields]
release = "result.number.value"

[[sources]]
name = "generic"
type = "webhook"
preset = "generic"
secret_file = "{D}/secret"
max_body = "2KiB"

[[sources]]
name = "limited"
type = "webhook"
preset = "generic"
secret_file = "{D}/secret"
rate_limit = 2
"#;

fn agent(extra: &str) -> Agent {
    let mut a = Agent::new(&format!("{SOURCES}\n{extra}"));
    let d = a.dir.path().display().to_string();
    std::fs::write(a.dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let cfg = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("{D}", &d);
    std::fs::write(&a.config, cfg).unwrap();
    a.start();
    a
}

/// POSTs `body` to `/hooks/{source}` with `headers`; the status code.
fn post(port: u16, source: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    post_hook(port, source, headers, body).0
}

/// The headers each tool authenticates with, for `body`.
pub(crate) fn auth(preset: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let json = ("Content-Type", "application/json".to_string());
    match preset {
        "github" => vec![json, ("X-Hub-Signature-256", sign(SECRET.as_bytes(), body))],
        "gitlab" => vec![json, ("X-Gitlab-Token", SECRET.to_string())],
        "azure" => vec![
            json,
            (
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("ado:{SECRET}"))
                ),
            ),
        ],
        "jira" | "flux" => vec![json, ("X-Hub-Signature", sign(SECRET.as_bytes(), body))],
        "servicenow" => vec![json, ("Authorization", format!("Bearer {SECRET}"))],
        _ => vec![
            json,
            ("X-Relstat-Signature-256", sign(SECRET.as_bytes(), body)),
        ],
    }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(crate::util::root().join("tests/fixtures").join(path)).unwrap()
}

/// The recommended Argo CD / Argo Rollouts notification body
/// (`{"app": {{toJson .app}}}`), built from an API object kept as YAML.
fn wrapped(key: &str, yaml_path: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture(yaml_path)).unwrap();
    let v: serde_json::Value = serde_norway::from_str(&text).unwrap();
    serde_json::to_vec(&serde_json::json!({ key: v })).unwrap()
}

/// One history record, compact: id | release | service | env | status |
/// time | actor | actor_type.
/// Times at or after `started` (payloads without a time of their own take
/// the time they were received) print as RECEIVED.
fn history(data: &Path, release: &str, started: i64) -> Vec<String> {
    let store = relstat::store::Store::open(data).unwrap();
    store
        .history(release)
        .unwrap()
        .into_iter()
        .map(|h| {
            let e = h.event;
            format!(
                "{} | {} | {} | {} | {} | {} | {} | {} | {}",
                e.source,
                e.id,
                e.service,
                e.environment,
                e.status,
                if e.time >= started {
                    "RECEIVED".to_string()
                } else {
                    relstat::event::format_rfc3339(e.time)
                },
                e.actor,
                e.actor_type.as_str(),
                e.commit.or(e.version).unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_yields_its_canonical_events() {
    let started = relstat::event::now_ms();
    let mut a = agent("");
    let port = a.port;
    // (source, X-*-Event header, body)
    let mut posts: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "github",
            Some("deployment"),
            fixture("github/deployment.created.json"),
        ),
        (
            "github",
            Some("deployment_status"),
            fixture("github/deployment_status.success.json"),
        ),
        (
            "github",
            Some("deployment_status"),
            fixture("github/deployment_status.failure.synthetic.json"),
        ),
        (
            "github",
            Some("workflow_run"),
            fixture("github/workflow_run.requested.json"),
        ),
        (
            "github",
            Some("workflow_run"),
            fixture("github/workflow_run.requested.action_required.json"),
        ),
        (
            "github",
            Some("workflow_run"),
            fixture("github/workflow_run.completed.success.json"),
        ),
        (
            "github",
            Some("workflow_job"),
            fixture("github/workflow_job.in_progress.json"),
        ),
        (
            "gitlab",
            Some("Deployment Hook"),
            fixture("gitlab/deployment_hook.success.json"),
        ),
        (
            "gitlab",
            Some("Pipeline Hook"),
            fixture("gitlab/pipeline_hook.success.json"),
        ),
        (
            "jenkins",
            None,
            fixture("jenkins/notification_plugin.help_example.json"),
        ),
        (
            "jenkins",
            None,
            fixture("jenkins/notification_plugin.completed_aborted.synthetic.json"),
        ),
        (
            "jenkins",
            None,
            fixture("jenkins/build.lastBuild.success.json"),
        ),
        (
            "jenkins",
            None,
            fixture("jenkins/build.building_in_progress.json"),
        ),
        (
            "flux",
            None,
            fixture("flux/event.kustomization.error_validationfailed.generic_webhook.json"),
        ),
        (
            "azure",
            None,
            fixture("azure-devops/ms.vss-release.deployment-completed-event.msdocs.json"),
        ),
        (
            "azure",
            None,
            fixture(
                "azure-devops/ms.vss-release.deployment-approval-completed-event.aspnet-webhooks-pr.json",
            ),
        ),
        (
            "azure",
            None,
            fixture("azure-devops/ms.vss-pipelines.run-state-changed-event.msdocs.json"),
        ),
        (
            "azure",
            None,
            fixture("azure-devops/build.complete.aspnet-webhooks.json"),
        ),
        (
            "jira",
            None,
            fixture("jira/jira_issue_updated.status_todo_to_done.json"),
        ),
        (
            "jira",
            None,
            fixture("jira/jira_issue_updated.status_todo_to_done.integration.json"),
        ),
        (
            "servicenow",
            None,
            fixture("servicenow/change_request.standard.new_approved.demisto.json"),
        ),
    ];
    for f in [
        "application.synced_healthy_succeeded.full.yaml",
        "application.outofsync_progressing_running.yaml",
        "application.synced_healthy_succeeded.min.yaml",
    ] {
        posts.push(("argocd", None, wrapped("app", &format!("argocd/{f}"))));
    }
    for f in [
        "rollout.canary_progressing_setweight.yaml",
        "rollout.phase_paused.yaml",
        "rollout.phase_healthy.yaml",
        "rollout.phase_degraded.yaml",
        "rollout.aborted.yaml",
        "rollout.progress_deadline_exceeded.yaml",
    ] {
        posts.push((
            "rollouts",
            None,
            wrapped("rollout", &format!("argo-rollouts/{f}")),
        ));
    }
    // Payloads no preset maps: accepted (202), counted `unmapped`.
    let unmapped: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("jira", None, fixture("jira/jira_issue_created.json")),
        (
            "azure",
            None,
            fixture("azure-devops/workitem.updated.state_change.aspnet-webhooks.json"),
        ),
        // an Application with no metadata (gitops-engine's health test data)
        (
            "argocd",
            None,
            wrapped("app", "argocd/application.health_degraded.min.yaml"),
        ),
        (
            "github",
            Some("ping"),
            b"{\"zen\":\"Keep it logically awesome.\"}".to_vec(),
        ),
        // octokit's gh-pages example reuses the success example's status id
        (
            "github",
            Some("deployment_status"),
            fixture("github/deployment_status.in_progress.gh-pages.json"),
        ),
    ];
    for (source, event, body) in posts.iter().chain(&unmapped) {
        let mut h = auth(source, body);
        if let Some(e) = event {
            let name = if *source == "gitlab" {
                "X-Gitlab-Event"
            } else {
                "X-GitHub-Event"
            };
            h.push((name, e.to_string()));
        }
        let (code, answer) = post_hook(port, source, &h, body);
        assert_eq!(code, 202, "{source} {event:?}: {answer}");
    }
    let m = a.metrics();
    let count = |source: &str, result: &str| {
        sample(
            &m,
            &format!(r#"relstat_events_total{{result="{result}",source="{source}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("jira", "unmapped"), 1.0);
    assert_eq!(count("azure", "unmapped"), 1.0);
    assert_eq!(count("github", "unmapped"), 1.0);
    assert_eq!(count("argocd", "unmapped"), 1.0);
    assert_eq!(count("github", "duplicate"), 1.0);
    assert_eq!(a.signal("-TERM"), Some(0));

    let data = a.dir.path().join("data");
    // Every release the store tracks (approval-only releases have history
    // but no key: list those by name).
    let mut releases: Vec<String> = {
        let store = relstat::store::Store::open(&data).unwrap();
        store
            .load()
            .unwrap()
            .keys
            .into_iter()
            .map(|(k, _)| k.release)
            .collect()
    };
    releases.extend(["Release-1", "TEST-11", "TEST-12", "CHG0031889"].map(String::from));
    releases.sort();
    releases.dedup();
    let mut got: Vec<String> = releases
        .iter()
        .flat_map(|r| {
            history(&data, r, started)
                .into_iter()
                .map(move |l| format!("{r} | {l}"))
        })
        .collect();
    got.sort();
    for l in &got {
        println!("{l}");
    }
    let want = include_str!("fixtures/webhooks.expected.txt");
    let mut want: Vec<&str> = want
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn each_failure_gets_its_answer_and_other_sources_keep_working() {
    let a = agent("");
    let port = a.port;
    let body = format!(
        r#"{{"time":"{}T10:00:00Z","release":"r1","environment":"prod","status":"deployed","id":"e1"}}"#,
        day()
    );
    let body = body.as_bytes();
    let good = auth("generic", body);
    // unknown source
    assert_eq!(post(port, "nope", &good, body), 404);
    // missing signature, wrong secret, a valid signature over another body
    assert_eq!(post(port, "generic", &[], body), 401);
    let wrong = vec![("X-Relstat-Signature-256", sign(b"other", body))];
    assert_eq!(post(port, "generic", &wrong, body), 401);
    let other_body = auth("generic", b"{}");
    assert_eq!(post(port, "generic", &other_body, body), 401);
    assert_eq!(post(port, "github", &auth("gitlab", body), body), 401);
    // accepted, then the same delivery again: a duplicate, still 202
    assert_eq!(post(port, "generic", &good, body), 202);
    assert_eq!(post(port, "generic", &good, body), 202);
    // over max_body (2KiB for this source)
    let big = format!(
        "[{}]",
        vec![std::str::from_utf8(body).unwrap(); 40].join(",")
    );
    assert_eq!(
        post(
            port,
            "generic",
            &auth("generic", big.as_bytes()),
            big.as_bytes()
        ),
        413
    );
    // not JSON: 415 for a form body, 400 for a JSON body that is not JSON
    let form = b"payload=%7B%7D";
    let mut h = vec![(
        "Content-Type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    h.push(("X-Relstat-Signature-256", sign(SECRET.as_bytes(), form)));
    assert_eq!(post(port, "generic", &h, form), 415);
    assert_eq!(
        post(port, "github", &auth("github", b"{nope"), b"{nope"),
        400
    );
    // a flood on `limited` (2/s) gets 429 while `generic` keeps answering 202
    let mut codes = Vec::new();
    for i in 0..20 {
        let b = format!(
            r#"{{"time":"{day}T10:00:{i:02}Z","release":"flood","environment":"prod","status":"in_progress"}}"#,
            day = day()
        );
        codes.push(post(
            port,
            "limited",
            &auth("limited", b.as_bytes()),
            b.as_bytes(),
        ));
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == 202).count() >= 2,
        "{codes:?}"
    );
    let b2 = format!(
        r#"{{"time":"{}T10:01:00Z","release":"r2","environment":"prod","status":"deployed"}}"#,
        day()
    );
    let b2 = b2.as_bytes();
    assert_eq!(post(port, "generic", &auth("generic", b2), b2), 202);

    let m = a.metrics();
    let v = |s: &str| sample(&m, s).unwrap_or(0.0);
    assert_eq!(
        v(r#"relstat_events_total{result="accepted",source="generic"}"#),
        2.0
    );
    assert_eq!(
        v(r#"relstat_events_total{result="duplicate",source="generic"}"#),
        1.0
    );
    assert_eq!(
        v(r#"relstat_events_total{result="invalid",source="generic"}"#),
        1.0
    );
    assert_eq!(
        v(r#"relstat_events_total{result="invalid",source="github"}"#),
        1.0
    );
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="auth",source="generic"}"#),
        3.0
    );
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="too_large",source="generic"}"#),
        1.0
    );
    assert!(v(r#"relstat_source_errors_total{kind="rate_limited",source="limited"}"#) >= 1.0);
}

#[test]
fn generic_takes_an_object_an_array_or_ndjson_and_counts_each_record() {
    let a = agent("");
    let port = a.port;
    let ev = |i: u32, status: &str| {
        format!(
            r#"{{"time":"{day}T10:00:{i:02}Z","release":"g{i}","environment":"prod","status":"{status}"}}"#,
            day = day()
        )
    };
    let array = format!("[{},{},{}]", ev(1, "deployed"), ev(2, "nope"), "{\"x\":1}");
    let ndjson = format!("{}\n{}\n", ev(3, "deployed"), ev(4, "failed"));
    let pretty = format!(
        "{{\n  \"time\": \"{}T10:00:05Z\",\n  \"release\": \"g5\",\n  \"environment\": \"prod\",\n  \"status\": \"deployed\"\n}}",
        day()
    );
    for body in [array.as_str(), ndjson.as_str(), pretty.as_str()] {
        assert_eq!(
            post(
                port,
                "generic",
                &auth("generic", body.as_bytes()),
                body.as_bytes()
            ),
            202
        );
    }
    let m = a.metrics();
    let v = |r: &str| {
        sample(
            &m,
            &format!(r#"relstat_events_total{{result="{r}",source="generic"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        (v("accepted"), v("unmapped"), v("invalid")),
        (4.0, 1.0, 1.0)
    );
}

#[test]
fn a_full_spool_under_block_answers_503() {
    // A 1-byte spool: full as soon as one anomaly is waiting in it.
    let a = agent("[spool]\nenabled = true\nmax_bytes = \"1B\"\nwhen_full = \"block\"\n");
    let ev = |sec: u32, status: &str| {
        format!(
            r#"{{"time":"{day}T10:00:{sec:02}Z","release":"r1","environment":"prod","status":"{status}"}}"#,
            day = day()
        )
    };
    // deployed, then back to in_test: invalid_transition goes to the outbox.
    for (sec, status) in [(0, "deployed"), (1, "in_test")] {
        let b = ev(sec, status);
        assert_eq!(
            post(
                a.port,
                "generic",
                &auth("generic", b.as_bytes()),
                b.as_bytes()
            ),
            202
        );
    }
    let b = ev(2, "deployed");
    assert_eq!(
        post(
            a.port,
            "generic",
            &auth("generic", b.as_bytes()),
            b.as_bytes()
        ),
        503
    );
    let m = a.metrics();
    assert_eq!(
        sample(
            &m,
            r#"relstat_events_total{result="accepted",source="generic"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"relstat_source_errors_total{kind="spool_full",source="generic"}"#
        ),
        Some(1.0)
    );
}

// ---- hostile bodies (memory bounded before anything is read) ----

/// A source whose `max_body` is far below the bodies thrown at it.
const SMALL: &str = r#"
[[sources]]
name = "small"
type = "webhook"
preset = "generic"
secret_file = "{D}/secret"
max_body = "64KiB"
"#;

/// A well-formed signature that matches no body: the body must be read to
/// find out.
fn bogus_signature() -> Vec<(&'static str, String)> {
    vec![(
        "X-Relstat-Signature-256",
        format!("sha256={}", "00".repeat(32)),
    )]
}

/// A canonical event of yesterday (relative to the wall clock).
fn yesterday_event(release: &str) -> String {
    let t = relstat::event::format_rfc3339(relstat::event::now_ms() - 86_400_000);
    format!(r#"{{"time":"{t}","release":"{release}","environment":"prod","status":"deployed"}}"#)
}

/// Sends the request head of a POST to `/hooks/{source}` declaring a body of
/// `declared` bytes and never sends the body: the status of an answer that
/// comes within 5 s (0 if none does).
fn post_head_only(port: u16, source: &str, headers: &[(&str, String)], declared: u64) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut req = format!(
        "POST /hooks/{source} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_status(&mut s)
}

/// Reads an answer's head; its status, 0 when none came (timeout, reset).
fn read_status(s: &mut std::net::TcpStream) -> u16 {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 64 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// POSTs `body` to `/hooks/{source}` chunked (`Transfer-Encoding: chunked`,
/// chunks of `chunk` bytes); writes `repeat` copies of `body` from one
/// thread while this one reads the answer. Returns the status (0 when none
/// came) and how many body bytes were written before the agent stopped
/// taking them (what the sockets' buffers held included).
fn post_chunked(
    port: u16,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
    repeat: usize,
) -> (u16, usize) {
    use std::time::Duration;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "POST /hooks/{source} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        let mut write = || -> std::io::Result<()> {
            w.write_all(head.as_bytes())?;
            for _ in 0..repeat {
                w.write_all(format!("{:x}\r\n", body.len()).as_bytes())?;
                w.write_all(&body)?;
                w.write_all(b"\r\n")?;
                sent += body.len();
            }
            w.write_all(b"0\r\n\r\n")
        };
        let _ = write();
        sent
    });
    let status = read_status(&mut s);
    // Unblocks the writer if the agent stopped reading without closing.
    let _ = s.shutdown(std::net::Shutdown::Both);
    (status, writer.join().unwrap())
}

#[test]
fn unsigned_chunked_floods_are_cut_off_at_max_body_and_memory_stays_bounded() {
    const CLIENTS: usize = 16;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 384; // 24 MiB each
    let a = agent(SMALL);
    let port = a.port;
    let ev = yesterday_event("flood-ok");
    assert_eq!(
        post(port, "small", &auth("small", ev.as_bytes()), ev.as_bytes()),
        202
    );
    let baseline = crate::util::peak_rss_kib(a.pid());

    let chunk = vec![b' '; CHUNK];
    let results: Vec<(bool, u16, usize)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let chunk = &chunk;
                scope.spawn(move || {
                    // Half claim a signature (the body must be read to check
                    // it), half carry no credentials at all.
                    let signed = i % 2 == 0;
                    let headers = if signed {
                        bogus_signature()
                    } else {
                        Vec::new()
                    };
                    let (code, sent) = post_chunked(port, "small", &headers, chunk, CHUNKS);
                    (signed, code, sent)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let peak = crate::util::peak_rss_kib(a.pid());
    println!(
        "baseline VmHWM {baseline} KiB, after {CLIENTS} x 24 MiB: {peak} KiB (+{} KiB)",
        peak - baseline
    );
    for (signed, code, sent) in &results {
        println!("signed={signed} status={code} body bytes taken={sent}");
        if *signed {
            assert_eq!(*code, 413, "a body over max_body is cut off with 413");
        } else {
            assert!(*code == 401 || *code == 413, "{code}");
        }
        // The agent stopped reading long before the 24 MiB (what it took is
        // at most max_body plus what the sockets' buffers held).
        assert!(*sent < CHUNK * CHUNKS, "the whole body was read");
    }
    assert!(
        peak - baseline < 64 * 1024,
        "peak RSS grew by {} KiB (limit 64 MiB)",
        peak - baseline
    );
    // Still serving, and each refusal counted.
    let ev = yesterday_event("flood-after");
    assert_eq!(
        post(port, "small", &auth("small", ev.as_bytes()), ev.as_bytes()),
        202
    );
    let m = a.metrics();
    let v = |s: &str| sample(&m, s).unwrap_or(0.0);
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="too_large",source="small"}"#)
            + v(r#"relstat_source_errors_total{kind="auth",source="small"}"#),
        CLIENTS as f64
    );
}

#[test]
fn refusals_come_before_the_body_and_valid_payloads_still_pass() {
    let a = agent(SMALL);
    let port = a.port;
    // No such hook: 404 without waiting for the 24 MiB announced.
    assert_eq!(post_head_only(port, "nope", &[], 24 << 20), 404);
    // A declared length over max_body: 413 at once.
    assert_eq!(
        post_head_only(port, "small", &bogus_signature(), 1 << 20),
        413
    );
    // Credentials the headers carry are checked before the body is read.
    let bad_token = vec![("X-Gitlab-Token", "wrong".to_string())];
    assert_eq!(post_head_only(port, "gitlab", &bad_token, 1000), 401);
    assert_eq!(post_head_only(port, "github", &[], 1000), 401);
    let malformed = vec![("X-Hub-Signature-256", "sha256=zz".to_string())];
    assert_eq!(post_head_only(port, "github", &malformed, 1000), 401);

    // Valid signed payloads still pass: declared, chunked, as text/plain.
    let ev = yesterday_event("ok-1");
    assert_eq!(
        post(port, "small", &auth("small", ev.as_bytes()), ev.as_bytes()),
        202
    );
    let ev = yesterday_event("ok-2");
    let (code, _) = post_chunked(
        port,
        "small",
        &auth("small", ev.as_bytes()),
        ev.as_bytes(),
        1,
    );
    assert_eq!(code, 202);
    let ev = yesterday_event("ok-3");
    let mut h = auth("small", ev.as_bytes());
    h[0].1 = "text/plain; charset=utf-8".into();
    assert_eq!(post(port, "small", &h, ev.as_bytes()), 202);
    // A chunked body just over max_body: 413 as soon as it passes.
    let (code, _) = post_chunked(port, "small", &bogus_signature(), &[b' '; 1024], 65);
    assert_eq!(code, 413);

    let m = a.metrics();
    let v = |s: &str| sample(&m, s).unwrap_or(0.0);
    assert_eq!(
        v(r#"relstat_events_total{result="accepted",source="small"}"#),
        3.0
    );
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="too_large",source="small"}"#),
        2.0
    );
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="auth",source="gitlab"}"#),
        1.0
    );
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="auth",source="github"}"#),
        2.0
    );
}

#[test]
fn bodies_in_flight_share_one_budget_and_past_it_get_503() {
    use std::time::Duration;
    const BIG: &str = "[[sources]]\nname = \"big\"\ntype = \"webhook\"\npreset = \"generic\"\nsecret_file = \"{D}/secret\"\nmax_body = \"25MiB\"\n";
    const LEN: usize = 22 << 20;
    let a = agent(BIG);
    let port = a.port;
    // Three senders each hold 22 MiB of an unfinished body: 66 MiB do not
    // fit the listener's 64 MiB budget, so the last is refused mid-body.
    let filler = vec![b' '; 1 << 20];
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut head =
            format!("POST /hooks/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {LEN}\r\n");
        for (k, v) in bogus_signature() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = (|| -> std::io::Result<()> {
            s.write_all(head.as_bytes())?;
            for _ in 0..LEN / filler.len() - 1 {
                s.write_all(&filler)?;
            }
            s.write_all(&filler[1..])
        })();
        // Let the agent read what the sockets hold.
        std::thread::sleep(Duration::from_millis(300));
        holders.push(s);
    }
    let busy = read_status(&mut holders[2]);
    assert_eq!(busy, 503, "the third body finds the budget spent");
    // The first two were waiting for their last byte: then read whole, and
    // refused for their signature.
    for s in &mut holders[..2] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b" ").unwrap();
        assert_eq!(read_status(s), 401);
    }
    drop(holders);
    // The budget is free again.
    let ev = yesterday_event("after-budget");
    assert_eq!(
        post(port, "big", &auth("big", ev.as_bytes()), ev.as_bytes()),
        202
    );
    let m = a.metrics();
    let v = |s: &str| sample(&m, s).unwrap_or(0.0);
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="busy",source="big"}"#),
        1.0
    );
    assert_eq!(
        v(r#"relstat_source_errors_total{kind="auth",source="big"}"#),
        2.0
    );
}

/// `relstat_events_total{result, source}` of a running agent.
fn counted(a: &Agent, source: &str, result: &str) -> f64 {
    sample(
        &a.metrics(),
        &format!(r#"relstat_events_total{{result="{result}",source="{source}"}}"#),
    )
    .unwrap_or(0.0)
}

/// Every tool: an authenticated, well-formed payload that is no release
/// step (the tools' own: a ping, a push, a comment...) is answered 202 and
/// counted `unmapped` or `invalid`, never 400; a body that is not JSON is
/// still 400. The payloads of issue 20 that were refused are accepted.
#[test]
fn well_formed_payloads_that_do_not_map_are_answered_202() {
    let mut a = agent("");
    let port = a.port;
    // (source, event header, body, what it is counted as)
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let rollout = {
        let mut v: serde_json::Value = serde_norway::from_str(
            &String::from_utf8(fixture("argo-rollouts/rollout.phase_healthy.yaml")).unwrap(),
        )
        .unwrap();
        v["status"]["phase"] = serde_json::json!("Unknown");
        serde_json::to_vec(&serde_json::json!({ "rollout": v })).unwrap()
    };
    let cases: Vec<Case> = vec![
        ("github", Some(("X-GitHub-Event", "ping")), fixture("github/ping.json"), "unmapped"),
        ("github", Some(("X-GitHub-Event", "push")), fixture("github/push.json"), "unmapped"),
        ("gitlab", Some(("X-Gitlab-Event", "Push Hook")), fixture("gitlab/push_hook.json"), "unmapped"),
        ("jenkins", None, fixture("jenkins/job.api.blue.json"), "unmapped"),
        ("argocd", None, br#"{"app":{"kind":"Application","metadata":{"name":"a"},"status":{"health":{"status":"Unknown"}}}}"#.to_vec(), "unmapped"),
        ("rollouts", None, rollout, "unmapped"),
        ("flux", None, br#"{"involvedObject":{"kind":"Kustomization","name":"web"},"reason":"DependencyNotReady","severity":"info"}"#.to_vec(), "unmapped"),
        ("azure", None, fixture("azure-devops/git.push.aspnet-webhooks.json"), "unmapped"),
        ("jira", None, fixture("jira/comment_created.cloud.json"), "unmapped"),
        ("jira", None, fixture("jira/jira_issue_updated.status_todo_to_inprogress.no_fixversion.json"), "unmapped"),
        ("servicenow", None, br#"{"result":{"number":{"value":"CHG1"},"sys_id":{"value":"x1"},"approval":{"value":"requested"}}}"#.to_vec(), "unmapped"),
        ("generic", None, br#"{"hello":"world"}"#.to_vec(), "invalid"),
    ];
    for (source, event, body, result) in &cases {
        let before = counted(&a, source, result);
        let mut h = auth(source, body);
        if let Some((k, v)) = event {
            h.push((k, v.to_string()));
        }
        let (code, answer) = post_hook(port, source, &h, body);
        assert_eq!(code, 202, "{source}: {answer}");
        assert!(
            answer.contains(&format!("\"{result}\":1")),
            "{source}: {answer}"
        );
        assert_eq!(
            counted(&a, source, result),
            before + 1.0,
            "{source} {result}"
        );
    }
    // Issue 20's refused payloads: a job just created (no time), Azure's
    // documented started event (release under the environment).
    let job = fixture("gitlab/job_hook.created.no_times.2021.json");
    let mut h = auth("gitlab", &job);
    h.push(("X-Gitlab-Event", "Job Hook".into()));
    assert_eq!(post_hook(port, "gitlab", &h, &job).0, 202);
    let started = fixture("azure-devops/ms.vss-release.deployment-started-event.msdocs.json");
    assert_eq!(post(port, "azure", &auth("azure", &started), &started), 202);
    assert!(crate::util::wait_until(5, || counted(
        &a, "gitlab", "accepted"
    ) >= 1.0));
    assert!(counted(&a, "azure", "accepted") >= 1.0);
    assert_eq!(
        counted(&a, "gitlab", "invalid") + counted(&a, "azure", "invalid"),
        0.0
    );
    // Not JSON (a real Jenkins body with a trailing comma): 400.
    let broken = fixture("jenkins/build.success.trailing_comma.invalid_json.json");
    assert_eq!(
        post(port, "jenkins", &auth("jenkins", &broken), &broken),
        400
    );
    a.signal("-TERM");
}
