//! `relstat readiness` and `/api/v1/readiness` end to end: the real agent
//! fed a log, asked over HTTP (a partner's scope: an invisible release is
//! unknown, 404, never no-go) and through the CLI, against the running
//! agent (admin socket) and the stopped one (its store): exit 0 go, 3
//! no-go, 1 unknown, 2 usage.

use std::io::Write;

use crate::util::*;

const CONFIG: &str = "[model.gate]\nenvironments = [\"production\"]\napproval_sources = [\"f\"]\n\n\
[model.promotion]\norder = [\"staging\", \"production\"]\nmatch = \"release\"\n";

/// One canonical line at `hh:mm` of [`day`] for service api.
fn line(id: &str, hm: &str, rel: &str, env: &str, status: &str, who: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"time\":\"{day}T{hm}:00Z\",\"release\":\"{rel}\",\
         \"service\":\"api\",\"environment\":\"{env}\",\"status\":\"{status}\",\
         \"actor\":\"{who}\",\"actor_type\":\"human\"}}\n",
        day = day()
    )
}

/// r1: deployed in staging, approved for production by alice: go.
/// r2: only started in staging (yesterday: stuck), approved: no-go.
/// r3: only in staging: unknown to a partner who sees production only.
fn feed(agent: &Agent) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(agent.log("a.log"))
        .unwrap();
    let lines = [
        line("a1", "10:00", "r1", "staging", "in_progress", "bot"),
        line("a2", "10:10", "r1", "staging", "deployed", "bot"),
        line("a3", "10:20", "r1", "production", "approved", "alice"),
        line("b1", "11:00", "r2", "staging", "in_progress", "bot"),
        line("b2", "11:05", "r2", "production", "approved", "alice"),
        line("c1", "12:00", "r3", "staging", "in_progress", "bot"),
    ];
    f.write_all(lines.concat().as_bytes()).unwrap();
}

fn wait_accepted(agent: &Agent, n: f64) {
    assert!(
        wait_until(20, || agent.events("accepted") >= n),
        "accepted: {}",
        agent.events("accepted")
    );
}

fn check<'a>(answer: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    answer["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed: {answer}"))
}

/// The listed points add up to the score.
fn adds_up(answer: &serde_json::Value) {
    let tenths: i64 = answer["risk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["points"].as_f64().unwrap() * 10.0).round() as i64)
        .sum();
    assert_eq!(
        tenths as f64 / 10.0,
        answer["risk_score"].as_f64().unwrap(),
        "{answer}"
    );
}

#[test]
fn readiness_api_answers_go_and_no_go_within_a_partners_scope() {
    let agent = Agent::new(&format!(
        "{CONFIG}\n[http.partners.acme]\nenvironments = [\"production\"]\nredact = [\"actor\"]\n"
    ));
    set_web_users(&agent, &[("ops", "ops-pw"), ("acme", "acme-pw")]);
    feed(&agent);
    let mut agent = agent;
    agent.start();
    let auth = |u: &str, p: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let (ops, acme) = (auth("ops", "ops-pw"), auth("acme", "acme-pw"));
    let get = |who: &str, q: &str| -> (u16, String) {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET /api/v1/readiness?{q} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: {who}\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, buf.split_once("\r\n\r\n").unwrap().1.to_string())
    };
    // /metrics needs a password here: wait for the last line through the API.
    assert!(wait_until(20, || get(
        &ops,
        "release=r3&environment=staging"
    )
    .0 == 200));

    let (s, body) = get(&ops, "release=r1&environment=production");
    assert_eq!(s, 200, "{body}");
    let go: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(go["verdict"], "go", "{go}");
    assert_eq!(go["go"], true);
    assert_eq!(check(&go, "approval")["status"], "pass");
    assert!(
        check(&go, "approval")["reason"]
            .as_str()
            .unwrap()
            .contains("approved by alice"),
        "{go}"
    );
    assert_eq!(go["checks"].as_array().unwrap().len(), 6);
    adds_up(&go);

    let (s, body) = get(&ops, "release=r2&environment=production&service=api");
    assert_eq!(s, 200, "{body}");
    let nogo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(nogo["verdict"], "no-go");
    let stage = check(&nogo, "previous_stage");
    assert_eq!(stage["status"], "fail");
    assert_eq!(
        stage["reason"],
        "api: staging had no deployment of release r2 in the 14d before"
    );
    assert_eq!(check(&nogo, "approval")["status"], "pass");
    adds_up(&nogo);
    assert!(nogo["risk_score"].as_f64().unwrap() >= 15.0, "{nogo}");

    // The partner: r1 in production is visible (its approval's key), the
    // approver's name is redacted; r3 has no key in production: unknown;
    // staging is outside the scope: unknown too.
    let (s, body) = get(&acme, "release=r1&environment=production");
    assert_eq!(s, 200, "{body}");
    assert!(!body.contains("alice"), "{body}");
    assert!(body.contains("\"verdict\":\"go\""), "{body}");
    // r2's verdict is judged on staging too, but staging's details stay
    // out of the partner's view.
    let (s, body) = get(&acme, "release=r2&environment=production");
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verdict"], "no-go");
    for name in ["previous_stage", "previous_targets"] {
        assert_eq!(check(&v, name)["status"], "fail", "{v}");
        assert_eq!(
            check(&v, name)["reason"],
            "judged on staging, outside your view"
        );
    }
    assert!(!body.contains("in_progress"), "{body}");
    for q in [
        "release=r3&environment=production",
        "release=r1&environment=staging",
        "release=nope&environment=production",
    ] {
        let (s, body) = get(&acme, q);
        assert_eq!(
            (s, body.trim()),
            (404, r#"{"error":"release not found"}"#),
            "{q}"
        );
    }
    let (s, body) = get(&ops, "release=r1");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("needs release=R and environment=E"), "{body}");
    assert_eq!(
        get(&ops, "release=r1&environment=production&color=red").0,
        400
    );
}

/// Runs `relstat readiness` with `args`: (exit code, stdout, stderr).
fn readiness(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["readiness", "-c", agent.config.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = relstat(&all);
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

#[test]
fn readiness_cli_exit_codes_through_the_agent_and_from_its_store() {
    let mut agent = Agent::new(CONFIG);
    feed(&agent);
    agent.start();
    wait_accepted(&agent, 6.0);
    let asks = |agent: &Agent| {
        let (code, out, err) =
            readiness(agent, &["--release", "r1", "--environment", "production"]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.starts_with("GO: release r1 to production\n"), "{out}");
        assert!(out.contains("  pass  approval "), "{out}");
        assert!(out.contains("risk score: 0/100"), "{out}");

        let (code, out, err) = readiness(
            agent,
            &["--release", "r2", "--environment", "production", "--json"],
        );
        assert_eq!(code, 3, "{out}{err}");
        assert!(err.contains("no-go: 2 check(s) failed"), "{err}{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verdict"], "no-go");
        assert_eq!(check(&v, "previous_stage")["status"], "fail");
        // In progress in staging since yesterday: past in_progress's 1h.
        let targets = check(&v, "previous_targets");
        assert_eq!(targets["status"], "fail");
        assert_eq!(
            targets["reason"],
            "in staging: api at t stuck in in_progress"
        );
        adds_up(&v);

        let (code, out, _) = readiness(agent, &["--release", "r2", "--environment", "production"]);
        assert_eq!(code, 3);
        assert!(
            out.starts_with("NO-GO: release r2 to production\n"),
            "{out}"
        );
        assert!(out.contains("  FAIL  previous_stage "), "{out}");
        assert!(out.contains("+15"), "{out}");

        let (code, _, err) =
            readiness(agent, &["--release", "nope", "--environment", "production"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("unknown release \"nope\""), "{err}");

        let (code, _, err) = readiness(agent, &["--release", "r1"]);
        assert_eq!(code, 2, "{err}");
    };
    asks(&agent);
    // r1 is deployed in staging, not in production: scored; r2 and r3
    // never reached deployed anywhere.
    let series =
        r#"relstat_release_risk_score{environment="production",release="r1",service="api"}"#;
    assert!(wait_until(20, || sample(&agent.metrics(), series) == Some(0.0)));
    assert!(
        !agent
            .metrics()
            .contains(r#"release_risk_score{environment="production",release="r2""#)
    );
    if let Some(promtool) = peer("promtool") {
        let (clean, findings) = promtool_check_metrics(&promtool, &agent.metrics());
        assert!(clean, "{findings}");
    }
    assert_eq!(agent.signal("-TERM"), Some(0));
    assert!(
        !agent.dir.path().join("data/admin.sock").exists() || {
            // A socket file nobody answers on: the CLI falls back to the store.
            std::os::unix::net::UnixStream::connect(agent.dir.path().join("data/admin.sock"))
                .is_err()
        }
    );
    asks(&agent);
}
