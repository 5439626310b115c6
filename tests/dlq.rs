//! The dead-letter store end to end: a real Jira payload that does not map
//! is answered 202 and kept (never its credentials), a polled Argo CD
//! application that does not map is kept once; after the configuration is
//! fixed, `relstat dlq replay` applies them once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::{
    Agent, http_server, json_200, post_hook, relstat, sample, stderr, stdout, wait_until,
};

const SECRET: &str = "dlq-s3cret-for-tests";

fn counted(a: &Agent, result: &str) -> f64 {
    sample(
        &a.metrics(),
        &format!(r#"relstat_events_total{{result="{result}",source="jira"}}"#),
    )
    .unwrap_or(0.0)
}

fn cli(a: &Agent, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-c", a.config.to_str().unwrap()]);
    let o = relstat(&all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn an_unmapped_payload_is_kept_and_replayed_once_after_the_fix() {
    let mut a = Agent::new(
        "[[sources]]\nname = \"jira\"\ntype = \"webhook\"\npreset = \"jira\"\n\
         secret_file = \"{D}/secret\"\n[sources.fields]\nrelease = \"issue.key\"\n",
    );
    let d = a.dir.path().display().to_string();
    std::fs::write(a.dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let cfg = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("{D}", &d);
    std::fs::write(&a.config, &cfg).unwrap();
    a.start();

    // A real transition To Do -> In Progress: no status this source maps.
    let body = std::fs::read(crate::util::root().join(
        "tests/fixtures/jira/jira_issue_updated.status_todo_to_inprogress.no_fixversion.json",
    ))
    .unwrap();
    let signature = relstat::sources::webhook::auth::sign(SECRET.as_bytes(), &body);
    let headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("Authorization", format!("Bearer {SECRET}")),
        ("X-Hub-Signature-256", signature.clone()),
        ("X-Atlassian-Webhook-Identifier", "delivery-77".to_string()),
        ("User-Agent", "Atlassian Webhook HTTP Client".to_string()),
    ];
    let (code, answer) = post_hook(a.port, "jira", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert!(wait_until(5, || counted(&a, "unmapped") == 1.0));
    assert_eq!(
        sample(
            &a.metrics(),
            r#"relstat_dlq_payloads{result="unmapped",source="jira"}"#
        ),
        Some(1.0)
    );

    // Listed and shown with its delivery id and reason; never the secret.
    let list = cli(&a, &["dlq", "list"]);
    let line = list.lines().nth(1).expect("one dead letter");
    assert!(
        line.starts_with("1\t")
            && line.contains("\tjira\tunmapped\tdelivery-77\t-\t")
            && line.contains("In Progress"),
        "{list}"
    );
    let show = cli(&a, &["dlq", "show", "--id", "1"]);
    let shown: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(shown[0]["payload"]["issue"]["key"], "INDEV-6");
    let kept: Vec<String> = shown[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kept,
        vec![
            "content-type",
            "x-atlassian-webhook-identifier",
            "user-agent"
        ],
        "{show}"
    );
    assert!(
        !show.contains(SECRET) && !show.contains(&signature[7..]),
        "{show}"
    );
    let store = std::fs::read(a.dir.path().join("data/relstat.redb")).unwrap();
    let has = |needle: &[u8]| store.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"delivery-77"), "the dead letter is in the store file");
    assert!(!has(SECRET.as_bytes()), "the secret is never stored");
    assert!(!has(&signature.as_bytes()[7..]), "nor the signature");

    // Nothing replays before the fix: still unmapped, marked replayed.
    let o = cli(&a, &["dlq", "replay", "--source", "jira"]);
    assert!(o.contains("1\tjira\tunmapped"), "{o}");
    assert_eq!(counted(&a, "accepted"), 0.0);

    // The fix: map Jira's "In Progress". A replay skips the entry replayed
    // before; --again applies it, accepted once.
    std::fs::write(
        &a.config,
        format!("{cfg}[sources.status_map]\n\"In Progress\" = \"in_progress\"\n"),
    )
    .unwrap();
    let o = cli(&a, &["dlq", "replay"]);
    assert!(o.contains("replayed 0, skipped 1"), "{o}");
    let o = cli(
        &a,
        &[
            "dlq",
            "replay",
            "--again",
            "--since",
            "2000-01-01T00:00:00Z",
        ],
    );
    assert!(
        o.contains("1\tjira\taccepted") && o.contains("replayed 1"),
        "{o}"
    );
    assert!(wait_until(5, || counted(&a, "accepted") == 1.0));
    let status = cli(&a, &["status", "--release", "INDEV-6", "--json"]);
    assert!(status.contains("in_progress"), "{status}");

    // A second replay changes nothing; a third with --again is a duplicate.
    let o = cli(&a, &["dlq", "replay"]);
    assert!(o.contains("replayed 0, skipped 1"), "{o}");
    let o = cli(&a, &["dlq", "replay", "--again", "--id", "1"]);
    assert!(o.contains("1\tjira\tduplicate"), "{o}");
    assert_eq!(counted(&a, "accepted"), 1.0);
    assert_eq!(counted(&a, "duplicate"), 1.0);

    // Stopped: list reads the store itself; replay needs the agent.
    a.signal("-TERM");
    let list = cli(&a, &["dlq", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows[0]["delivery"], "delivery-77");
    assert!(rows[0]["replayed"].is_string());
    let o = relstat(&["dlq", "replay", "-c", a.config.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("start it"), "{}", stderr(&o));
}

/// Serves `body` (JSON) to every request on a free 127.0.0.1 port,
/// counting the requests in `hits`.
fn serve_json(body: String, hits: Arc<AtomicUsize>) -> u16 {
    http_server(move |_| {
        hits.fetch_add(1, Ordering::SeqCst);
        json_200(&body)
    })
}

/// A poll source's object that does not map (a real Argo CD application,
/// OutOfSync and Degraded, naming no revision, never seen with one) is kept
/// once however often it is polled, and replays after a `fields` fix.
#[test]
fn a_polled_object_that_does_not_map_is_kept_once_and_replays() {
    let text = std::fs::read_to_string(
        crate::util::root()
            .join("tests/fixtures/argocd/application.outofsync_degraded.no_revision.yaml"),
    )
    .unwrap();
    let app: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let port = serve_json(
        serde_json::json!({ "items": [app] }).to_string(),
        hits.clone(),
    );
    let source = format!(
        "[[sources]]\nname = \"argocd\"\ntype = \"poll\"\npreset = \"argocd\"\n\
         urls = [\"http://127.0.0.1:{port}/api/v1/applications\"]\ninterval = \"1s\"\n\
         [sources.defaults]\nenvironment = \"production\"\n"
    );
    let mut a = Agent::new(&source);
    a.start();
    let invalid = |a: &Agent| {
        sample(
            &a.metrics(),
            r#"relstat_events_total{result="invalid",source="argocd"}"#,
        )
        .unwrap_or(0.0)
    };
    assert!(wait_until(10, || invalid(&a) == 1.0));
    // Polled twice more (interval 1s): still one entry.
    let seen = hits.load(Ordering::SeqCst);
    assert!(wait_until(10, || hits.load(Ordering::SeqCst) >= seen + 2));
    assert_eq!(invalid(&a), 1.0);
    let list = cli(&a, &["dlq", "list", "--json", "--source", "argocd"]);
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(rows[0]["result"], "invalid");
    assert_eq!(rows[0]["reason"], "missing field release");
    // The fix: name the release after the application.
    std::fs::write(
        &a.config,
        format!(
            "{}[sources.fields]\nrelease = \"app.metadata.name\"\n",
            std::fs::read_to_string(&a.config).unwrap()
        ),
    )
    .unwrap();
    let o = cli(&a, &["dlq", "replay", "--source", "argocd"]);
    assert!(o.contains("\targocd\taccepted"), "{o}");
    let status = cli(&a, &["status", "--release", "my-app-4", "--json"]);
    assert!(status.contains("failed"), "{status}");
    a.signal("-TERM");
}
