//! The operator kit against the tools it targets: the Grafana dashboards'
//! structure (Grafana itself is not installable here) and every dashboard
//! query run on a real Prometheus that scrapes a real agent fed with the
//! shipped example and loads the shipped rules; the rules under `promtool
//! check rules` and `promtool test rules`; the systemd unit under
//! `systemd-analyze security` and `verify`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

const DASHBOARDS: [&str; 6] = [
    "release-overview.json",
    "status-durations.json",
    "dora.json",
    "security.json",
    "agent-health.json",
    "change-correlation.json",
];

/// Every series of docs/metrics.md (histograms by their base name).
const SPEC_SERIES: [&str; 21] = [
    "relstat_release_status",
    "relstat_release_status_since_timestamp_seconds",
    "relstat_status_duration_seconds",
    "relstat_status_transitions_total",
    "relstat_releases_in_status",
    "relstat_releases_stuck",
    "relstat_status_resolution_seconds",
    "relstat_deployments_total",
    "relstat_lead_time_seconds",
    "relstat_restore_seconds",
    "relstat_anomalies_total",
    "relstat_events_total",
    "relstat_source_last_event_timestamp_seconds",
    "relstat_source_errors_total",
    "relstat_spool_events",
    "relstat_spool_bytes",
    "relstat_spool_oldest_event_age_seconds",
    "relstat_forward_events_total",
    "relstat_forward_connected",
    "relstat_build_info",
    "process_",
];

/// Dashboard targets that legitimately return nothing (or only NaN) on the
/// example, as (dashboard uid, panel title, refId, why). The test fails if
/// one of them does return data: then it belongs off this list.
const NO_DATA: &[(&str, &str, &str, &str)] = &[
    (
        "relstat-durations",
        "MTTSR over the range, by cause",
        "A",
        "the example resolves no stuck or conflicting status (clean history; its one stuck release is still open)",
    ),
    ("relstat-durations", "MTTSR (1d, recorded)", "A", "idem"),
    ("relstat-durations", "Resolution time", "A", "idem"),
    (
        "relstat-durations",
        "Resolution time p50 / p95",
        "A",
        "idem",
    ),
    (
        "relstat-durations",
        "Resolution time p50 / p95",
        "B",
        "idem",
    ),
    (
        "relstat-agent",
        "Source errors",
        "A",
        "the example's files are read without error",
    ),
    (
        "relstat-agent",
        "Forwarder connected",
        "A",
        "no [siem] in the quickstart: no forwarder",
    ),
    ("relstat-agent", "Forwarded events", "A", "idem"),
    (
        "relstat-agent",
        "Label overflow and tracked evictions",
        "A",
        "the example stays far below max_label_values",
    ),
];

fn dashboard(name: &str) -> Value {
    let path = root().join("dashboards").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (panel title, refId, expr) of every target of a dashboard, and of its
/// Prometheus annotations (as ("annotation <name>", "-", expr)).
fn targets(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["refId"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push((
                format!("annotation {}", a["name"].as_str().unwrap()),
                "-".into(),
                expr.to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboards_are_importable_grafana_json_using_every_spec_series() {
    let mut uids = BTreeSet::new();
    let mut all_exprs = String::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let uid = d["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{name}: schemaVersion of a current Grafana (>= 39)"
        );
        assert!(
            d.get("id").is_none_or(Value::is_null),
            "{name}: no fixed id"
        );
        // Variables: a Prometheus datasource, then environment/service/site.
        let vars = d["templating"]["list"].as_array().expect("templating");
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        let ds = var("datasource").unwrap_or_else(|| panic!("{name}: $datasource"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        for v in ["environment", "service", "site"] {
            let v = var(v).unwrap_or_else(|| panic!("{name}: ${v}"));
            assert_eq!(v["type"], "query", "{name}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
            assert_eq!(v["includeAll"], true, "{name}");
        }
        // Panels: unique ids, a grid position inside 24 columns, every query
        // through $datasource.
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap();
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {title}: id"));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && g["h"].as_u64().unwrap() > 0,
                "{name}: {title}: {g}"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title}");
            let ts = p["targets"].as_array().unwrap();
            assert!(!ts.is_empty(), "{name}: {title}: no query");
            let mut refs = BTreeSet::new();
            for t in ts {
                assert!(refs.insert(t["refId"].as_str().unwrap()), "{name}: {title}");
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
                let expr = t["expr"].as_str().unwrap();
                assert!(!expr.is_empty(), "{name}: {title}");
                all_exprs.push_str(expr);
                all_exprs.push('\n');
            }
        }
    }
    for s in SPEC_SERIES {
        assert!(all_exprs.contains(s), "no dashboard uses {s}");
    }
    // The change failure rate as docs/metrics.md defines it.
    let dora = targets(&dashboard("dora.json"));
    let (_, _, cfr) = dora
        .iter()
        .find(|(t, _, _)| t == "Change failure rate")
        .unwrap();
    let (num, den) = cfr.split_once(" / ").unwrap();
    assert!(num.contains(r#"outcome=~"failure|rollback""#), "{cfr}");
    assert!(den.contains(r#"outcome=~"success|failure""#), "{cfr}");
}

/// Grafana's variables in a query, as the test substitutes them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range_s", "600")
        .replace("$__range", "10m")
        .replace("$environment", ".*")
        .replace("$service", ".*")
        .replace("$site", ".*")
        .replace("$status", ".*")
        .replace("$rule", ".*")
        .replace("$instance", ".*")
        .replace(
            "$error_rate",
            r#"sum(rate(relstat_events_total{result=~"accepted|invalid"}[5m]))"#,
        )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The lines of an example log, split in two at `at`.
fn halves(name: &str, at: usize) -> (String, String) {
    let text = std::fs::read_to_string(root().join("examples/logs").join(name)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    (join(&lines[..at]), join(&lines[at..]))
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[test]
fn every_dashboard_query_returns_data_from_prometheus_scraping_the_example() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    // The agent: examples/quickstart.toml as shipped, its logs fed below.
    let agent = ExampleAgent::start(false);
    let (logs, port) = (agent.logs.clone(), agent.port);
    assert!(
        wait_until(20, || http_get(port, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "agent did not become ready"
    );

    // Prometheus: scrapes every second, evaluates the shipped rules every second.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let prom = Prometheus::start(
        &prometheus,
        port,
        &[root().join("alerts/relstat.rules.yml")],
    );
    let pport = prom.port;
    let api = |path: &str| -> Value {
        let (status, body) = http_get(pport, path).unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: HTTP {status}: {e}: {body}"))
    };
    let instant = |q: &str| -> Value {
        api(&format!("/api/v1/query?query={}", urlencode(q)))["data"]["result"].clone()
    };
    let scalar = |q: &str| -> f64 {
        instant(q)
            .get(0)
            .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok()))
            .unwrap_or(f64::NAN)
    };
    assert!(
        wait_until(60, || scalar(r#"up{job="relstat"}"#) == 1.0),
        "Prometheus never scraped the agent"
    );

    // Feed the example in two parts, so that counters and histograms move
    // between scrapes (rate() and increase() need a series that existed
    // before it changed): the first part, a few scrapes, the rest.
    let (json1, json2) = halves("deploy.ndjson", 30);
    let (text1, text2) = halves("search-deploy.log", 12);
    append(&logs.join("deploy.ndjson"), &json1);
    append(&logs.join("search-deploy.log"), &text1);
    assert!(
        wait_until(30, || scalar(r#"sum(relstat_events_total)"#) == 42.0),
        "the first part never reached Prometheus: {}",
        instant("relstat_events_total")
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    append(&logs.join("deploy.ndjson"), &json2);
    append(&logs.join("search-deploy.log"), &text2);
    // Everything read (114 lines), the still-rolling-out release flagged
    // stuck (checked every 15 s once caught up), the recording rules
    // evaluated on the result.
    assert!(
        wait_until(60, || {
            scalar("sum(relstat_events_total)") == 114.0
                && scalar(r#"sum(relstat_anomalies_total{rule="stuck"})"#) == 1.0
                && scalar("count(relstat:release_time_in_status:seconds)")
                    == scalar("count(relstat_release_status)")
                && scalar("count(relstat:change_failure_rate:ratio1d)") == 2.0
        }),
        "the example never fully reached Prometheus: {}",
        instant(r#"{__name__=~"relstat_events_total|relstat_anomalies_total"}"#)
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let expected_empty: BTreeMap<(&str, &str, &str), &str> = NO_DATA
        .iter()
        .map(|(d, p, r, why)| ((*d, *p, *r), *why))
        .collect();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let uid = d["uid"].as_str().unwrap();
        // The variables' own queries: label_values(selector, label).
        for v in d["templating"]["list"].as_array().unwrap() {
            let Some(def) = v["definition"].as_str() else {
                continue;
            };
            let inner = def
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{uid}: ${}: {def}", v["name"]));
            let (selector, label) = inner.rsplit_once(", ").unwrap();
            let r = api(&format!(
                "/api/v1/label/{label}/values?match[]={}&start={started}&end={end}",
                urlencode(&substitute(selector))
            ));
            if r["status"] != "success" || r["data"].as_array().is_none_or(|a| a.is_empty()) {
                failures.push(format!("{uid}: variable ${}: {def}: {r}", v["name"]));
            }
        }
        for (panel, ref_id, expr) in targets(&d) {
            let q = substitute(&expr);
            let r = api(&format!(
                "/api/v1/query_range?query={}&start={started}&end={end}&step=1",
                urlencode(&q)
            ));
            if r["status"] != "success" {
                failures.push(format!(
                    "{uid} / {panel} / {ref_id}: query error {r}\n  {q}"
                ));
                continue;
            }
            let result = r["data"]["result"].as_array().unwrap();
            let finite = result.iter().any(|s| {
                s["values"].as_array().unwrap().iter().any(|v| {
                    v[1].as_str()
                        .and_then(|x| x.parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                })
            });
            let allowed = expected_empty.get(&(uid, panel.as_str(), ref_id.as_str()));
            match (finite, allowed) {
                (true, None) => {}
                (false, Some(why)) => report.push(format!("{uid} / {panel} / {ref_id}: {why}")),
                (false, None) => failures.push(format!(
                    "{uid} / {panel} / {ref_id}: no data ({} series, none finite)\n  {q}",
                    result.len()
                )),
                (true, Some(_)) => failures.push(format!(
                    "{uid} / {panel} / {ref_id}: returns data now: remove it from NO_DATA"
                )),
            }
        }
    }
    eprintln!(
        "without data on the example, as expected:\n  {}",
        report.join("\n  ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report.len(), NO_DATA.len());
}

// --- Prometheus rules ---------------------------------------------------

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let run = |args: &[&str]| {
        let o = Command::new(&promtool)
            .args(args)
            .current_dir(root().join("alerts"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
    };
    run(&["check", "rules", "relstat.rules.yml"]);
    run(&["test", "rules", "relstat.rules.test.yml"]);
}

#[test]
fn every_alert_is_documented_and_tested_firing_and_silent() {
    let rules = yaml(&root().join("alerts/relstat.rules.yml"));
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut alerts = Vec::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let Some(name) = r["alert"].as_str() else {
                continue;
            };
            alerts.push(name.to_string());
            assert!(r["for"].is_string(), "{name}: for");
            let sev = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&sev),
                "{name}: severity"
            );
            for a in ["summary", "description", "runbook_url"] {
                assert!(r["annotations"][a].is_string(), "{name}: annotation {a}");
            }
            let url = r["annotations"]["runbook_url"].as_str().unwrap();
            let anchor = url.strip_prefix("docs/runbook.md#").unwrap_or_default();
            assert_eq!(anchor, name.to_lowercase(), "{name}: {url}");
            assert!(
                anchors.contains(anchor),
                "{name}: no section in docs/runbook.md"
            );
        }
    }
    for must in [
        "RelstatReleaseStuck",
        "RelstatMTTSRAboveSLO",
        "RelstatGateBypass",
        "RelstatUnauthorizedActor",
        "RelstatChangeFailureRateHigh",
        "RelstatSpoolFilling",
        "RelstatSpoolLagging",
        "RelstatForwarderDisconnected",
        "RelstatSourceStale",
        "RelstatAgentDown",
    ] {
        assert!(alerts.iter().any(|a| a == must), "no alert {must}");
    }
    for (name, sev) in [
        ("RelstatGateBypass", "critical"),
        ("RelstatUnauthorizedActor", "critical"),
    ] {
        let r = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .find(|r| r["alert"] == name)
            .unwrap();
        assert_eq!(r["labels"]["severity"], sev, "{name}");
    }
    // The unit tests: each alert expected firing at some time and silent at another.
    let tests = yaml(&root().join("alerts/relstat.rules.test.yml"));
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            if a["exp_alerts"].as_array().is_some_and(|x| !x.is_empty()) {
                firing.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for a in &alerts {
        assert!(firing.contains(a), "{a}: no promtool test where it fires");
        // Silent: an explicit empty expectation, or another series of the
        // same test that the firing expectation leaves out (promtool fails
        // on any unexpected alert).
        let same_group_other_series = tests["tests"].as_array().unwrap().iter().any(|t| {
            t["input_series"].as_array().unwrap().len() > 1
                && t["alert_rule_test"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["alertname"] == a.as_str())
        });
        assert!(
            silent.contains(a) || same_group_other_series,
            "{a}: no promtool test where it stays silent"
        );
    }
}

// --- systemd -------------------------------------------------------------

#[test]
fn the_systemd_unit_scores_at_most_2_and_verifies() {
    let Some(analyze) = peer("systemd-analyze") else {
        return;
    };
    let unit = root().join("systemd/relstat.service");
    let o = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = stdout(&o);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for relstat.service: "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{text}{}", stderr(&o)));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");

    // verify: the unit as installed needs /usr/bin/relstat; point a copy at
    // an executable stand-in (the package test verifies the installed unit).
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("relstat");
    std::fs::write(&stub, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = std::fs::read_to_string(&unit).unwrap();
    for key in [
        "User=relstat",
        "StateDirectory=relstat",
        "ExecStartPre=/usr/bin/relstat check-config",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.contains(key), "the unit lacks {key:?}");
    }
    let copy = dir.path().join("relstat.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/relstat", stub.to_str().unwrap()),
    )
    .unwrap();
    let o = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        o.status.success() && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
}
