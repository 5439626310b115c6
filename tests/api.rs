//! The release status API against a running agent: the current view, the
//! audit trail and `?at=` snapshots are what the history says (late and
//! duplicate events included); ETag/304; partner scope and redaction.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::util::*;

/// A GET with extra headers: (status, lower-cased headers, body).
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, BTreeMap<String, String>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status.parse().unwrap(), headers, body.to_string())
}

fn json(port: u16, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let (status, _, body) = get(port, path, headers);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn line(id: &str, time: &str, release: &str, env: &str, status: &str, actor: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"time\":\"{day}T{time}:00Z\",\"release\":\"{release}\",\
         \"service\":\"api\",\"environment\":\"{env}\",\"status\":\"{status}\",\
         \"actor\":\"{actor}\",\"actor_type\":\"human\",\"reason\":\"because-{actor}\"}}\n",
        day = day()
    )
}

fn append(agent: &Agent, text: &str) {
    append_text(&agent.log("a.log"), text);
}

fn wait_events(agent: &Agent, result: &str, n: f64) {
    assert!(
        wait_until(20, || agent.events(result) >= n),
        "{result}: {}",
        agent.events(result)
    );
}

/// (status, entered_at) of each row, keyed by "release/environment".
fn statuses(v: &serde_json::Value, field: &str) -> BTreeMap<String, (String, String)> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["release"].as_str().unwrap(),
                    r["environment"].as_str().unwrap()
                ),
                (
                    r["status"].as_str().unwrap().to_string(),
                    r["entered_at"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn now_rfc3339() -> String {
    relstat::event::format_rfc3339(relstat::event::now_ms())
}

#[test]
fn api_current_history_and_snapshots_follow_the_history() {
    let mut agent = Agent::new("");
    // r1: in_progress 10:00, deployed 10:30, a duplicate of the deployed.
    // r2: deployed 11:00.
    append(
        &agent,
        &[
            line("a1", "10:00", "r1", "prod", "in_progress", "ann"),
            line("a2", "10:30", "r1", "prod", "deployed", "ann"),
            line("a2", "10:30", "r1", "prod", "deployed", "ann"),
            line("b1", "11:00", "r2", "staging", "deployed", "bob"),
        ]
        .concat(),
    );
    agent.start();
    wait_events(&agent, "accepted", 3.0);
    wait_events(&agent, "duplicate", 1.0);
    let port = agent.port;

    let before = json(port, "/api/v1/releases", &[]);
    assert_eq!(before["count"], 2);
    let r1 = &before["releases"][0];
    assert_eq!(r1["release"], "r1");
    assert_eq!(r1["status"], "deployed");
    assert_eq!(r1["entered_at"], format!("{}T10:30:00.000Z", day()));
    assert_eq!(r1["last_actor"], "ann");
    assert_eq!(r1["finished"], false);

    std::thread::sleep(std::time::Duration::from_millis(50));
    let t1 = now_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Late for r1 (sorts before its deployed): kept, moves nothing. r2
    // moves on to complete.
    append(
        &agent,
        &[
            line("a3", "10:20", "r1", "prod", "failed", "late-lou"),
            line("b2", "11:30", "r2", "staging", "complete", "bob"),
        ]
        .concat(),
    );
    wait_events(&agent, "late", 1.0);
    wait_events(&agent, "accepted", 4.0);
    let t2 = now_rfc3339();

    let now = json(port, "/api/v1/releases", &[]);
    let cur = statuses(&now, "releases");
    assert_eq!(
        cur["r1/prod"],
        ("deployed".into(), format!("{}T10:30:00.000Z", day()))
    );
    assert_eq!(
        cur["r2/staging"],
        ("complete".into(), format!("{}T11:30:00.000Z", day()))
    );
    assert_eq!(now["releases"][1]["finished"], true);
    assert_eq!(now["releases"][1]["finished_reason"], "terminal");

    // The history: every event but the duplicate, the late one marked.
    let h = json(port, "/api/v1/releases/r1/history", &[]);
    let evs = h["events"].as_array().unwrap();
    assert_eq!(evs.len(), 3, "{h}");
    assert_eq!(
        evs.iter()
            .map(|e| e["to"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["in_progress", "deployed", "failed"]
    );
    assert_eq!(evs[1]["from"], "in_progress");
    assert_eq!(evs[2]["late"], true);
    assert!(evs[2].get("from").is_none());
    assert_eq!(evs[2]["actor"], "late-lou");
    assert_eq!(evs[2]["reason"], "because-late-lou");
    assert_eq!(evs[2]["actor_type"], "human");
    assert_eq!(evs[2]["source"], "f");
    assert!(evs[2]["recorded_at"].as_str().unwrap() > t1.as_str());

    // What relstat knew at t1: r2 still deployed, the late event unknown.
    let at_t1 = json(port, &format!("/api/v1/releases?at={t1}"), &[]);
    assert_eq!(at_t1["axis"], "recorded");
    let s1 = statuses(&at_t1, "releases");
    assert_eq!(
        s1["r1/prod"],
        ("deployed".into(), format!("{}T10:30:00.000Z", day()))
    );
    assert_eq!(
        s1["r2/staging"],
        ("deployed".into(), format!("{}T11:00:00.000Z", day()))
    );
    assert_eq!(at_t1["releases"][1]["finished"], false);
    let h1 = json(port, &format!("/api/v1/releases/r1/history?at={t1}"), &[]);
    assert_eq!(h1["count"], 2);
    // After the late event: what the current view says.
    let at_t2 = json(port, &format!("/api/v1/releases?at={t2}"), &[]);
    assert_eq!(statuses(&at_t2, "releases"), cur);
    // Before anything was recorded: nothing known, and the detail is a 404.
    let early = format!("{}T10:25:00Z", day());
    assert_eq!(
        json(port, &format!("/api/v1/releases?at={early}"), &[])["count"],
        0
    );
    assert_eq!(
        get(port, &format!("/api/v1/releases/r1?at={early}"), &[]).0,
        404
    );
    // The event axis at 10:25, as known now: the late failed (10:20) counts.
    let ev = json(
        port,
        &format!("/api/v1/releases/r1?at={early}&axis=event"),
        &[],
    );
    assert_eq!(ev["keys"][0]["status"], "failed");
    assert_eq!(
        ev["keys"][0]["entered_at"],
        format!("{}T10:20:00.000Z", day())
    );
    assert_eq!(ev["keys"][0]["last_actor"], "late-lou");
    // ... and at 10:15 it was in progress.
    let ev = json(
        port,
        &format!("/api/v1/releases/r1?at={}T10:15:00Z&axis=event", day()),
        &[],
    );
    assert_eq!(ev["keys"][0]["status"], "in_progress");

    // Filters, the detail, unknowns and bad queries.
    let f = json(
        port,
        "/api/v1/releases?environment=staging&status=complete",
        &[],
    );
    assert_eq!(f["count"], 1);
    assert_eq!(f["releases"][0]["release"], "r2");
    let d = json(port, "/api/v1/releases/r2", &[]);
    assert_eq!(d["release"], "r2");
    assert_eq!(d["keys"][0]["status"], "complete");
    assert_eq!(get(port, "/api/v1/releases/nope", &[]).0, 404);
    assert_eq!(get(port, "/api/v1/releases/nope/history", &[]).0, 404);
    let (s, _, body) = get(port, "/api/v1/releases?at=yesterday", &[]);
    assert_eq!(s, 400);
    assert!(body.contains("not an RFC 3339 time"), "{body}");
    assert_eq!(get(port, "/api/v1/releases?colour=red", &[]).0, 400);
    assert_eq!(get(port, "/api/v1/releases?axis=event", &[]).0, 400);

    // `relstat status` through the running agent agrees.
    let cfg = agent.config.to_str().unwrap().to_string();
    let out = relstat(&["status", "-c", &cfg, "--json", "--at", &t1]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[1]["status"], "deployed");
    let out = relstat(&["status", "-c", &cfg, "--release", "r2"]);
    let table = stdout(&out);
    assert!(
        table.contains("r2") && table.contains("complete") && !table.contains("r1 "),
        "{table}"
    );

    // ... and from the store once the agent is stopped.
    assert_eq!(agent.signal("-TERM"), Some(0));
    let out = relstat(&["status", "-c", &cfg, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["status"], "deployed");
    assert_eq!(rows[1]["status"], "complete");
    let out = relstat(&["status", "-c", &cfg, "--json", "--at", &t1]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[1]["status"], "deployed");
}

#[test]
fn api_etag_answers_304_until_something_changes() {
    let mut agent = Agent::new("");
    append(
        &agent,
        &line("a1", "10:00", "r1", "prod", "in_progress", "ann"),
    );
    agent.start();
    wait_events(&agent, "accepted", 1.0);
    let port = agent.port;
    let (s, h, body) = get(port, "/api/v1/releases", &[]);
    assert_eq!(s, 200);
    let tag = h["etag"].clone();
    assert!(tag.starts_with("W/\""), "{tag}");
    // A second later time in status differs, the tag does not.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, h2, body2) = get(port, "/api/v1/releases", &[]);
    assert_ne!(body, body2);
    assert_eq!(h2["etag"], tag);
    let (s, h3, body3) = get(port, "/api/v1/releases", &[("If-None-Match", &tag)]);
    assert_eq!(s, 304);
    assert_eq!(h3["etag"], tag);
    assert!(body3.is_empty());
    // Another tag in the list, or `*`, also match; a different one does not.
    let list = format!("W/\"0000\", {tag}");
    assert_eq!(
        get(port, "/api/v1/releases", &[("If-None-Match", &list)]).0,
        304
    );
    assert_eq!(
        get(port, "/api/v1/releases", &[("If-None-Match", "\"x\"")]).0,
        200
    );
    // Each query has its own tag.
    let (_, hq, _) = get(port, "/api/v1/releases?environment=prod", &[]);
    let (_, hh, _) = get(port, "/api/v1/releases/r1/history", &[]);
    assert_ne!(hh["etag"], tag);
    assert!(hq.contains_key("etag"));
    // A new event changes the answer and its tag.
    append(
        &agent,
        &line("a2", "10:30", "r1", "prod", "deployed", "ann"),
    );
    wait_events(&agent, "accepted", 2.0);
    let (s, h4, _) = get(port, "/api/v1/releases", &[("If-None-Match", &tag)]);
    assert_eq!(s, 200);
    assert_ne!(h4["etag"], tag);
}

/// Every object key anywhere in `v`.
fn all_keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                all_keys(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| all_keys(x, out)),
        _ => {}
    }
}

#[test]
fn api_partner_sees_its_environments_and_never_a_redacted_field() {
    let mut agent = Agent::new(
        "[http.partners.acme]\nenvironments = [\"staging\"]\nredact = [\"actor\", \"reason\"]\n",
    );
    set_web_users(&agent, &[("ops", "ops-pw"), ("acme", "acme-pw")]);
    append(
        &agent,
        &[
            line("a1", "10:00", "r1", "prod", "in_progress", "secret-sam"),
            line("a2", "10:10", "r1", "staging", "deployed", "secret-sam"),
            line("a3", "10:05", "r1", "staging", "in_progress", "secret-sam"),
            line("b1", "11:00", "r2", "prod", "deployed", "secret-sam"),
        ]
        .concat(),
    );
    let auth = |u: &str, p: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let (ops, acme) = (auth("ops", "ops-pw"), auth("acme", "acme-pw"));
    agent.start();
    let port = agent.port;
    assert!(wait_until(20, || {
        get(port, "/api/v1/releases", &[("Authorization", &ops)])
            .2
            .contains("\"count\":3")
    }));
    let t = now_rfc3339();
    assert_eq!(get(port, "/api/v1/releases", &[]).0, 401);
    assert_eq!(
        get(
            port,
            "/api/v1/releases",
            &[("Authorization", &auth("acme", "x"))]
        )
        .0,
        401
    );

    // The full view for a user who is not a partner.
    let full = json(port, "/api/v1/releases", &[("Authorization", &ops)]);
    assert_eq!(full["releases"][0]["last_actor"], "secret-sam");
    assert_eq!(full["releases"][0]["last_reason"], "because-secret-sam");

    let redacted = [
        "last_actor",
        "last_actor_type",
        "last_reason",
        "actor",
        "actor_type",
        "reason",
    ];
    let check = |path: &str| -> serde_json::Value {
        let (s, _, body) = get(port, path, &[("Authorization", &acme)]);
        assert_eq!(s, 200, "{path}: {body}");
        assert!(
            !body.contains("secret-sam"),
            "{path} leaks the actor: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut keys = Vec::new();
        all_keys(&v, &mut keys);
        for k in redacted {
            assert!(!keys.iter().any(|x| x == k), "{path} shows {k}: {body}");
        }
        assert!(!body.contains("\"prod\""), "{path} shows prod: {body}");
        v
    };
    let list = check("/api/v1/releases");
    assert_eq!(list["count"], 1);
    assert_eq!(list["releases"][0]["environment"], "staging");
    assert_eq!(list["releases"][0]["status"], "deployed");
    assert_eq!(check("/api/v1/releases/r1")["count"], 1);
    let h = check("/api/v1/releases/r1/history");
    assert_eq!(h["count"], 2);
    assert_eq!(h["events"][1]["late"], true);
    assert_eq!(check(&format!("/api/v1/releases?at={t}"))["count"], 1);
    assert_eq!(
        check(&format!("/api/v1/releases/r1?at={t}&axis=event"))["count"],
        1
    );
    assert_eq!(
        check(&format!("/api/v1/releases/r1/history?at={t}"))["count"],
        2
    );
    assert_eq!(check("/api/v1/releases?environment=prod")["count"], 0);
    assert_eq!(check("/api/v1/releases?release=r2")["count"], 0);
    // Rollups: computed from the keys in scope only.
    let rollups = check("/api/v1/rollups");
    let rows = rollups["rollups"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rollups}");
    assert_eq!(
        (
            &rows[0]["release"],
            &rows[0]["environment"],
            &rows[0]["status"]
        ),
        (&"r1".into(), &"staging".into(), &"deployed".into())
    );
    assert_eq!(
        check("/api/v1/releases/r1/rollup")["rollups"][0]["complete"],
        false
    );
    let all = json(port, "/api/v1/rollups", &[("Authorization", &ops)]);
    assert_eq!(all["rollups"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(
        get(
            port,
            "/api/v1/rollups?service=x",
            &[("Authorization", &ops)]
        )
        .0,
        400
    );

    // A release seen only outside the scope answers exactly like an unknown one.
    let unknown = get(port, "/api/v1/releases/nope", &[("Authorization", &acme)]);
    for path in [
        "/api/v1/releases/r2",
        "/api/v1/releases/r2/rollup",
        "/api/v1/releases/r2/history",
        &format!("/api/v1/releases/r2?at={t}"),
    ] {
        let (s, _, body) = get(port, path, &[("Authorization", &acme)]);
        assert_eq!((s, &body), (404, &unknown.2), "{path}");
    }
    assert_eq!(
        get(port, "/api/v1/releases/r2", &[("Authorization", &ops)]).0,
        200
    );

    // The partner's ETag differs from the full view's for the same path.
    let (_, h_ops, _) = get(port, "/api/v1/releases/r1", &[("Authorization", &ops)]);
    let (_, h_acme, _) = get(port, "/api/v1/releases/r1", &[("Authorization", &acme)]);
    assert_ne!(h_ops["etag"], h_acme["etag"]);
}

#[test]
fn check_config_refuses_a_bad_partner() {
    let (_d, path) = temp_file(
        "relstat.toml",
        "[http]\n[http.partners.acme]\nenvironments = []\nredact = [\"actor\", \"password\"]\n",
    );
    let out = relstat(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("http.partners.acme.environments"), "{err}");
    assert!(err.contains("\"password\" cannot be redacted"), "{err}");
    assert!(err.contains("web_config_file"), "{err}");
}

/// An agent whose web config has `users` (name, password) and whose
/// relstat.toml has `extra` after [http].
fn agent_with_users(users: &[(&str, &str)], extra: &str) -> Agent {
    let agent = Agent::new(extra);
    set_web_users(&agent, users);
    agent
}

/// A `deployed` line dated a day before the wall clock.
fn recent_line(id: &str, release: &str, env: &str) -> String {
    let t = relstat::event::format_rfc3339(relstat::event::now_ms() - 86_400_000);
    format!(
        "{{\"id\":\"{id}\",\"time\":\"{t}\",\"release\":\"{release}\",\
         \"environment\":\"{env}\",\"status\":\"deployed\"}}\n"
    )
}

fn basic(u: &str, p: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

#[test]
fn metrics_is_refused_to_a_partner_and_served_to_other_users() {
    let mut agent = agent_with_users(
        &[("ops", "ops-pw"), ("acme", "acme-pw")],
        "[http.partners.acme]\nenvironments = [\"staging\"]\n",
    );
    append(
        &agent,
        &[
            recent_line("a1", "r-prod", "production"),
            recent_line("a2", "r-stag", "staging"),
        ]
        .concat(),
    );
    agent.start();
    let port = agent.port;
    let (ops, acme) = (basic("ops", "ops-pw"), basic("acme", "acme-pw"));
    assert!(wait_until(20, || {
        get(port, "/metrics", &[("Authorization", &ops)])
            .2
            .contains("r-prod")
    }));
    // The partner's scope of the API holds; /metrics would leak production.
    let (s, _, body) = get(port, "/metrics", &[("Authorization", &acme)]);
    assert_eq!(s, 403, "{body}");
    assert!(
        !body.contains("r-prod") && !body.contains("production"),
        "{body}"
    );
    assert_eq!(get(port, "/metrics", &[]).0, 401);
    assert_eq!(
        get(port, "/metrics", &[("Authorization", &basic("acme", "x"))]).0,
        401
    );
    let (s, _, body) = get(port, "/metrics", &[("Authorization", &ops)]);
    assert_eq!(s, 200);
    assert!(body.contains("relstat_release_status{"), "{body}");
    let (s, _, body) = get(port, "/api/v1/releases", &[("Authorization", &acme)]);
    assert_eq!(s, 200);
    assert!(
        body.contains("r-stag") && !body.contains("r-prod"),
        "{body}"
    );
    // Probes stay open.
    assert_eq!(get(port, "/healthz", &[]).0, 200);
}

#[test]
fn check_config_refuses_partners_that_are_no_basic_auth_user() {
    let check = |agent: &Agent| relstat(&["check-config", "-c", agent.config.to_str().unwrap()]);
    // A partner name that is no user: its view would never apply.
    let agent = agent_with_users(
        &[("ops", "pw"), ("acme", "pw")],
        "[http.partners.acme]\nenvironments = [\"staging\"]\n\
         [http.partners.globex]\nenvironments = [\"uat\"]\n",
    );
    let out = check(&agent);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("http.partners.globex"), "{err}");
    assert!(
        err.contains("\"globex\" is no user in basic_auth_users"),
        "{err}"
    );
    assert!(!err.contains("http.partners.acme"), "{err}");
    // `run` refuses it as well.
    let run = relstat(&["run", "--once", "-c", agent.config.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));

    // A web config without basic_auth_users: everything would be open.
    let agent = agent_with_users(&[], "[http.partners.acme]\nenvironments = [\"staging\"]\n");
    let out = check(&agent);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no basic_auth_users"),
        "{}",
        stderr(&out)
    );

    // Every partner a user: valid.
    let agent = agent_with_users(
        &[("ops", "pw"), ("acme", "pw")],
        "[http.partners.acme]\nenvironments = [\"staging\"]\n",
    );
    let out = check(&agent);
    assert!(out.status.success(), "{}", stderr(&out));
}
