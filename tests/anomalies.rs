//! `relstat replay` on a history holding one instance of each of the ten
//! anomaly rules: each is reported exactly where it happened (rule, release,
//! service, environment, event id), and nothing else is.

use serde_json::{Value, json};

use crate::util::*;

const NOW: &str = "2026-11-20T12:00:00Z";

const CONFIG: &str = r#"
[agent]
data_dir = "DIR/data"
hostname = "test-host"
site = "dc-east"

[[sources]]
name = "deploy"
type = "file"
paths = ["DIR/deploy*.ndjson"]
format = "json"

[[sources]]
name = "jira"
type = "file"
paths = ["DIR/jira*.ndjson"]
format = "json"

[model.gate]
environments = ["production"]
approval_sources = ["jira"]
grace = "2m"

[model.roles]
deployers = ["deploy-bot"]

[[model.permissions]]
into = ["deployed", "in_progress"]
environments = ["production"]
allow = ["@deployers"]

[[anomalies.change_freeze.windows]]
start = "2026-11-18T00:00:00Z"
end = "2026-11-18T06:00:00Z"
environments = ["production"]
"#;

/// One canonical NDJSON line; `who` starting with `@` is a person.
fn line(id: &str, time: &str, rel: &str, svc: &str, env: &str, status: &str, who: &str) -> Value {
    let (actor, actor_type) = match who.strip_prefix('@') {
        Some(person) => (person, "human"),
        None => (who, "automation"),
    };
    json!({
        "id": id, "time": time, "release": rel, "service": svc, "environment": env,
        "status": status, "actor": actor, "actor_type": actor_type,
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn deploy_log() -> Vec<Value> {
    let bot = "deploy-bot";
    vec![
        // invalid_transition: deployed -> scheduled (staging: no gate)
        line(
            "inv-1",
            "2026-11-16T09:00:00Z",
            "r-inv",
            "web",
            "staging",
            "in_progress",
            bot,
        ),
        line(
            "inv-2",
            "2026-11-16T09:05:00Z",
            "r-inv",
            "web",
            "staging",
            "deployed",
            bot,
        ),
        line(
            "inv-3",
            "2026-11-16T09:30:00Z",
            "r-inv",
            "web",
            "staging",
            "scheduled",
            bot,
        ),
        // gate_bypass: production without approval
        line(
            "gb-1",
            "2026-11-16T10:00:00Z",
            "r-gate",
            "payments",
            "production",
            "in_progress",
            bot,
        ),
        line(
            "gb-2",
            "2026-11-16T10:05:00Z",
            "r-gate",
            "payments",
            "production",
            "deployed",
            bot,
        ),
        // emergency_change: the same, on the emergency path
        with(
            line(
                "em-1",
                "2026-11-16T11:00:00Z",
                "r-emer",
                "auth",
                "production",
                "in_progress",
                bot,
            ),
            json!({"change_class": "emergency", "reason": "INC-7 logins failing"}),
        ),
        line(
            "em-2",
            "2026-11-16T11:04:00Z",
            "r-emer",
            "auth",
            "production",
            "deployed",
            bot,
        ),
        // unauthorized_actor: approved, but deployed by someone not a deployer
        line(
            "ua-1",
            "2026-11-16T13:00:00Z",
            "r-unauth",
            "search",
            "production",
            "deployed",
            "@mallory",
        ),
        // status_conflict: automation says deployed, a person sets in_test a
        // minute later; automation deploys again (resolves it)
        line(
            "sc-1",
            "2026-11-17T09:00:00Z",
            "r-conf",
            "cart",
            "staging",
            "in_test",
            bot,
        ),
        line(
            "sc-2",
            "2026-11-17T09:10:00Z",
            "r-conf",
            "cart",
            "staging",
            "deployed",
            bot,
        ),
        line(
            "sc-3",
            "2026-11-17T09:11:00Z",
            "r-conf",
            "cart",
            "staging",
            "in_test",
            "@carol",
        ),
        line(
            "sc-4",
            "2026-11-17T10:00:00Z",
            "r-conf",
            "cart",
            "staging",
            "deployed",
            bot,
        ),
        // id_reuse: rolled back 1.0, then the same id deployed as 1.1
        with(
            line(
                "ir-1",
                "2026-11-17T12:00:00Z",
                "r-reuse",
                "billing",
                "staging",
                "in_progress",
                bot,
            ),
            json!({"version": "1.0"}),
        ),
        line(
            "ir-2",
            "2026-11-17T12:10:00Z",
            "r-reuse",
            "billing",
            "staging",
            "rolled_back",
            bot,
        ),
        with(
            line(
                "ir-3",
                "2026-11-17T15:00:00Z",
                "r-reuse",
                "billing",
                "staging",
                "in_progress",
                bot,
            ),
            json!({"version": "1.1"}),
        ),
        line(
            "ir-4",
            "2026-11-17T15:10:00Z",
            "r-reuse",
            "billing",
            "staging",
            "deployed",
            bot,
        ),
        // change_freeze: an approved deploy inside the absolute window
        line(
            "fz-1",
            "2026-11-18T03:00:00Z",
            "r-freeze",
            "catalog",
            "production",
            "deployed",
            bot,
        ),
        // stuck: in_progress since yesterday
        line(
            "st-1",
            "2026-11-19T10:00:00Z",
            "r-stuck",
            "search",
            "dev",
            "in_progress",
            bot,
        ),
        // clock_skew: an hour ahead of the agent's clock (--now)
        line(
            "sk-1",
            "2026-11-20T13:00:00Z",
            "r-skew",
            "docs",
            "dev",
            "deployed",
            bot,
        ),
    ]
    .into_iter()
    .chain(flapping())
    .collect()
}

/// flapping: re-scheduled six times within the hour (returning to scheduled
/// only five times, so one finding).
fn flapping() -> Vec<Value> {
    let mut v = vec![line(
        "fl-0",
        "2026-11-19T08:00:00Z",
        "r-flap",
        "mail",
        "staging",
        "scheduled",
        "@dave",
    )];
    for i in 1..=6 {
        let at = |m: u32| format!("2026-11-19T08:{m:02}:00Z");
        v.push(line(
            &format!("fl-r{i}"),
            &at(i * 8),
            "r-flap",
            "mail",
            "staging",
            "rescheduled",
            "@dave",
        ));
        if i < 6 {
            v.push(line(
                &format!("fl-s{i}"),
                &at(i * 8 + 4),
                "r-flap",
                "mail",
                "staging",
                "scheduled",
                "@dave",
            ));
        }
    }
    v
}

fn jira_log() -> Vec<Value> {
    vec![
        line(
            "ua-0",
            "2026-11-16T12:00:00Z",
            "r-unauth",
            "search",
            "production",
            "approved",
            "@bob",
        ),
        line(
            "fz-0",
            "2026-11-17T18:00:00Z",
            "r-freeze",
            "-",
            "production",
            "approved",
            "@bob",
        ),
    ]
}

fn ndjson(lines: Vec<Value>) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Writes the config and both logs; runs `relstat replay` with `extra` args.
fn replay(extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = dir.path().join("relstat.toml");
    std::fs::write(&cfg, CONFIG.replace("DIR", d)).unwrap();
    let deploy = dir.path().join("deploy.ndjson");
    std::fs::write(&deploy, ndjson(deploy_log())).unwrap();
    let jira = dir.path().join("jira.ndjson");
    std::fs::write(&jira, ndjson(jira_log())).unwrap();
    let mut args = vec!["replay", "-c", cfg.to_str().unwrap(), "--now", NOW];
    args.extend_from_slice(extra);
    args.push(deploy.to_str().unwrap());
    args.push(jira.to_str().unwrap());
    relstat(&args)
}

#[test]
fn each_rule_is_reported_exactly_where_it_happened() {
    let o = replay(&["--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let anomalies = v["anomalies"].as_array().unwrap();
    let mut got: Vec<String> = anomalies
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {} {}",
                a["rule"].as_str().unwrap(),
                a["release"].as_str().unwrap(),
                a["service"].as_str().unwrap(),
                a["environment"].as_str().unwrap(),
                a["event_id"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        "invalid_transition r-inv web staging inv-3",
        "gate_bypass r-gate payments production gb-2",
        "emergency_change r-emer auth production em-2",
        "unauthorized_actor r-unauth search production ua-1",
        "status_conflict r-conf cart staging sc-3",
        "flapping r-flap mail staging fl-r6",
        "id_reuse r-reuse billing staging ir-3",
        "stuck r-stuck search dev st-1",
        "change_freeze r-freeze catalog production fz-1",
        "clock_skew r-skew docs dev sk-1",
    ];
    want.sort();
    assert_eq!(
        got,
        want,
        "{}",
        serde_json::to_string_pretty(anomalies).unwrap()
    );
    // every record carries the docs/events.md, "SIEM records" evidence
    for a in anomalies {
        for field in [
            "severity",
            "site",
            "to",
            "actor",
            "actor_type",
            "source",
            "event_time",
            "detected_at",
            "host",
            "message",
        ] {
            assert!(!a[field].is_null(), "{field} missing in {a}");
        }
        assert_eq!(a["host"], "test-host");
        assert_eq!(a["site"], "dc-east");
        assert_eq!(a["detected_at"], json!(1_795_176_000_000i64), "{a}");
    }
    let by_rule = |r: &str| anomalies.iter().find(|a| a["rule"] == r).unwrap();
    let gb = by_rule("gate_bypass");
    assert_eq!(gb["severity"], "critical");
    assert_eq!(gb["from"], "in_progress");
    assert_eq!(gb["to"], "deployed");
    assert_eq!(
        gb["message"],
        "production deploy of r-gate/payments by deploy-bot without prior approval (no approval from jira)"
    );
    let em = by_rule("emergency_change");
    assert_eq!(em["severity"], "notice");
    assert!(
        em["message"]
            .as_str()
            .unwrap()
            .contains("INC-7 logins failing"),
        "{em}"
    );
    let ir = by_rule("id_reuse");
    assert_eq!(ir["version"], "1.1");
    assert_eq!(ir["from"], "rolled_back");
    let ua = by_rule("unauthorized_actor");
    assert_eq!(
        (&ua["actor"], &ua["actor_type"]),
        (&json!("mallory"), &json!("human"))
    );
    // the ticket approval was accepted (it fed the gate), not late or dropped
    assert_eq!(v["events"]["jira"]["accepted"], 2, "{}", v["events"]);
}

#[test]
fn the_new_rules_are_counted_in_the_exposition() {
    let o = replay(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        r#"relstat_anomalies_total{environment="production",rule="gate_bypass",severity="critical"} 1"#,
        r#"relstat_anomalies_total{environment="staging",rule="status_conflict",severity="warning"} 1"#,
        r#"relstat_anomalies_total{environment="production",rule="change_freeze",severity="error"} 1"#,
        r#"relstat_status_resolution_seconds_count{cause="conflict",environment="staging",site="dc-east",status="in_test"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let (clean, findings) = promtool_check_metrics(&promtool, &text);
    assert!(clean, "promtool check metrics found:\n{findings}");
}
