//! The approvals ledger end to end: decisions from an approval source
//! (a file source named `jira`) judged by the gate with four eyes and an
//! identity map, then shown where people look: the API's history, `relstat
//! status` (through the agent and from the stopped agent's store) and the
//! SIEM record of `gate_bypass` (json over tcp to a local listener).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;

use crate::util::*;

/// One canonical line at `hh:mm` of [`day`]; `who` is a person.
fn line(id: &str, hm: &str, rel: &str, svc: &str, env: &str, status: &str, who: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"time\":\"{day}T{hm}:00Z\",\"release\":\"{rel}\",\
         \"service\":\"{svc}\",\"environment\":\"{env}\",\"status\":\"{status}\",\
         \"actor\":\"{who}\",\"actor_type\":\"human\"}}\n",
        day = day()
    )
}

fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http_get(port, path).expect("the API answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn decisions_and_four_eyes_show_in_history_status_and_siem() {
    let siem = TcpListener::bind("127.0.0.1:0").unwrap();
    let siem_port = siem.local_addr().unwrap().port();
    let mut agent = Agent::new(&format!(
        "[[sources]]\nname = \"jira\"\ntype = \"file\"\npaths = [\"{d}/jira/*.log\"]\n\n\
         [model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"jira\"]\n\
         require_distinct_approver = true\n\n\
         [model.identities]\nalice = [\"jira:5b10ac8d\", \"f:alice\"]\n\n\
         [siem]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{siem_port}\"\nformat = \"json\"\n",
        d = agent_dir_placeholder()
    ));
    let dir = agent.dir.path().to_path_buf();
    let cfg = std::fs::read_to_string(&agent.config)
        .unwrap()
        .replace(&agent_dir_placeholder(), &dir.display().to_string());
    std::fs::write(&agent.config, cfg).unwrap();
    std::fs::create_dir_all(dir.join("jira")).unwrap();
    let jira = dir.join("jira/decisions.log");
    // r1: alice approves in Jira (as her accountId) and deploys: self-approved
    // r2: approved by carol, rejected by bob before the deploy: no approval
    // r3: approved by bob, deployed by alice: clean
    append_text(
        &jira,
        &[
            line("j1", "10:00", "r1", "-", "-", "approved", "5b10ac8d"),
            line("j2", "10:00", "r2", "-", "-", "approved", "carol"),
            line("j3", "10:01", "r2", "-", "-", "rejected", "bob"),
            line("j4", "10:00", "r3", "-", "-", "approved", "bob"),
        ]
        .concat(),
    );
    append_text(
        &agent.log("deploy.log"),
        &[
            line(
                "d1",
                "10:05",
                "r1",
                "api",
                "production",
                "deployed",
                "alice",
            ),
            line(
                "d2",
                "10:05",
                "r2",
                "web",
                "production",
                "deployed",
                "alice",
            ),
            line("d3", "10:05", "r3", "db", "production", "deployed", "alice"),
        ]
        .concat(),
    );
    agent.start();

    // the SIEM gets the two findings, with approver and decision
    assert!(wait_until(30, || {
        sample(
            &agent.metrics(),
            r#"relstat_anomalies_total{environment="production",rule="gate_bypass",severity="critical"}"#,
        )
        .is_some_and(|n| n >= 2.0)
    }));
    assert_eq!(
        sample(
            &agent.metrics(),
            r#"relstat_events_total{result="unmapped",source="jira"}"#
        ),
        Some(0.0),
        "a rejection from the approval source is a decision, not unmapped"
    );
    let (conn, _) = siem.accept().unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn);
    let mut found = Vec::new();
    while found.len() < 2 {
        // octet-counted frames: "LEN {json}"
        let mut len = Vec::new();
        reader.read_until(b' ', &mut len).unwrap();
        let n: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
        let mut msg = vec![0u8; n];
        std::io::Read::read_exact(&mut reader, &mut msg).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&msg).unwrap();
        found.push(format!(
            "{} {} {} {} | {}",
            v["rule"].as_str().unwrap(),
            v["release"].as_str().unwrap(),
            v["decision"].as_str().unwrap_or("-"),
            v["approver"].as_str().unwrap_or("-"),
            v["message"].as_str().unwrap(),
        ));
    }
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("gate_bypass r1 approved 5b10ac8d | ")
            && found[0].contains("self-approved"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("gate_bypass r2 rejected bob | ")
            && found[1].contains("rejected by bob (jira)"),
        "{found:?}"
    );

    // the history shows each decision with its approver
    let h = get_json(agent.port, "/api/v1/releases/r2/history");
    let rows: Vec<String> = h["events"]
        .as_array()
        .or_else(|| h.as_array())
        .expect("history rows")
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["to"].as_str().unwrap(),
                r["decision"].as_str().unwrap_or("-"),
                r["approver"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert!(
        rows.contains(&"approved approved carol".to_string()),
        "{rows:?}"
    );
    assert!(
        rows.contains(&"rejected rejected bob".to_string()),
        "{rows:?}"
    );
    assert!(rows.contains(&"deployed - -".to_string()), "{rows:?}");

    // `relstat status`: the ledger's last decision per gated key
    let config = agent.config.to_str().unwrap().to_string();
    let table = || {
        let out = relstat(&["status", "-c", &config, "--environment", "production"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let want = |t: &str| {
        assert!(t.contains("APPROVAL"), "{t}");
        for (rel, approval) in [
            ("r1", "approved:5b10ac8d"),
            ("r2", "rejected:bob"),
            ("r3", "approved:bob"),
        ] {
            assert!(
                t.lines()
                    .any(|l| l.starts_with(&format!("{rel} ")) && l.contains(approval)),
                "{rel} {approval}:\n{t}"
            );
        }
    };
    want(&table());
    assert_eq!(agent.signal("-TERM"), Some(0));
    want(&table());
}

/// `Agent::new` writes the config before the directory is known to the
/// caller: the jira source's path is patched in after.
fn agent_dir_placeholder() -> String {
    "@AGENT_DIR@".to_string()
}

/// A local ServiceNow answering the Table API as its documentation shows
/// (`{"result": [...]}`): the real change request (tests/fixtures),
/// renumbered per release, in the lifecycle state given.
fn servicenow(changes: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, String)>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let real: serde_json::Value =
        serde_json::from_str(
            &std::fs::read_to_string(root().join(
                "tests/fixtures/servicenow/change_request.standard.new_approved.demisto.json",
            ))
            .unwrap(),
        )
        .unwrap();
    serve_http(l, move |line| {
        let offset_zero = line.contains("sysparm_offset=0");
        let list: Vec<serde_json::Value> = if offset_zero {
            changes
                .lock()
                .unwrap()
                .iter()
                .map(|(release, state, approval)| {
                    let mut c = real["result"].clone();
                    c["sys_id"] = serde_json::json!({"value": format!("sys-{release}")});
                    c["u_release"] = serde_json::json!({"value": release});
                    c["state"] = serde_json::json!({"value": state});
                    c["approval"] = serde_json::json!({"value": approval});
                    c["sys_updated_by"] = serde_json::json!({"value": "change-board"});
                    c["sys_updated_on"] =
                        serde_json::json!({"value": format!("{} 09:00:00", day())});
                    c
                })
                .collect()
        } else {
            Vec::new()
        };
        json_200(&serde_json::json!({ "result": list }).to_string())
    });
    port
}

/// An agent no webhook reaches polls ServiceNow for its approvals: an
/// authorized change opens the gate, a canceled one (approved, then
/// canceled before the deploy) does not, and a change in review, not
/// approved, is no release step at all.
#[test]
fn an_agent_polling_servicenow_sees_approvals_and_revocations() {
    let changes = std::sync::Arc::new(std::sync::Mutex::new(vec![
        ("r-ok".to_string(), -3, "requested".to_string()),
        ("r-canceled".to_string(), 4, "approved".to_string()),
        ("r-review".to_string(), 0, "not yet requested".to_string()),
    ]));
    let port = servicenow(changes.clone());
    let mut agent = Agent::new(&format!(
        "[[sources]]\nname = \"servicenow\"\ntype = \"poll\"\npreset = \"servicenow\"\n\
         urls = [\"http://127.0.0.1:{port}\"]\ninterval = \"1s\"\n\
         [sources.fields]\nrelease = \"u_release.value\"\n\n\
         [model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"servicenow\"]\n"
    ));
    append_text(
        &agent.log("deploy.log"),
        &[
            line(
                "d1",
                "10:05",
                "r-ok",
                "api",
                "production",
                "deployed",
                "deploy-bot",
            ),
            line(
                "d2",
                "10:05",
                "r-canceled",
                "web",
                "production",
                "deployed",
                "deploy-bot",
            ),
            line(
                "d3",
                "10:05",
                "r-review",
                "db",
                "production",
                "deployed",
                "deploy-bot",
            ),
        ]
        .concat(),
    );
    agent.start();
    let series = |m: &str, name: &str| sample(m, name).unwrap_or(0.0);
    assert!(
        wait_until(30, || series(
            &agent.metrics(),
            r#"relstat_anomalies_total{environment="production",rule="gate_bypass",severity="critical"}"#
        ) >= 2.0),
        "{}",
        agent.metrics()
    );
    let m = agent.metrics();
    assert_eq!(
        series(
            &m,
            r#"relstat_events_total{result="accepted",source="servicenow"}"#
        ),
        2.0,
        "the authorization and the cancellation"
    );
    assert_eq!(
        series(
            &m,
            r#"relstat_events_total{result="unmapped",source="servicenow"}"#
        ),
        1.0,
        "a change in review is no release step"
    );
    // the canceled change is in the history as a revocation
    let h = get_json(agent.port, "/api/v1/releases/r-canceled/history");
    let decisions: Vec<String> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{} by {}",
                r["decision"].as_str()?,
                r["approver"].as_str()?
            ))
        })
        .collect();
    assert_eq!(decisions, ["revoked by change-board"]);
    let config = agent.config.to_str().unwrap().to_string();
    let out = relstat(&["status", "-c", &config, "--environment", "production"]);
    let t = stdout(&out);
    for (rel, approval) in [
        ("r-ok", "approved:change-board"),
        ("r-canceled", "revoked:change-board"),
        ("r-review", " - "),
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(&format!("{rel} ")) && l.contains(approval)),
            "{rel} {approval}:\n{t}"
        );
    }
    // nothing more once the polls go on: no third finding, no duplicate
    std::thread::sleep(std::time::Duration::from_secs(3));
    let m = agent.metrics();
    assert_eq!(
        series(
            &m,
            r#"relstat_anomalies_total{environment="production",rule="gate_bypass",severity="critical"}"#
        ),
        2.0
    );
    assert_eq!(
        series(
            &m,
            r#"relstat_events_total{result="duplicate",source="servicenow"}"#
        ),
        0.0
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
}
