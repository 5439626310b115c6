//! Hostile field values end to end: a canonical field over 1 KiB makes its
//! line or payload `invalid` whatever the source, so no megabyte label, row
//! or SIEM message exists; values over `[tracking] label_value_max_bytes`
//! are shortened in /metrics only, and the API keeps them whole.

use std::io::{Read, Write};

use crate::util::*;
use relstat::sources::webhook::auth::sign;

const SECRET: &str = "field-limits-secret";

/// A webhook source `hook` (generic preset, 4 MiB bodies) beside the file source.
const HOOK: &str = r#"
[[sources]]
name = "hook"
type = "webhook"
preset = "generic"
secret_file = "{D}/secret"
max_body = "4MiB"
"#;

fn yesterday() -> String {
    relstat::event::format_rfc3339(relstat::event::now_ms() - 86_400_000)
}

/// One canonical NDJSON line.
fn line(id: &str, release: &str, service: &str, status: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"time\":\"{}\",\"release\":\"{release}\",\"service\":\"{service}\",\
         \"environment\":\"prod\",\"status\":\"{status}\"}}\n",
        yesterday()
    )
}

fn append(agent: &Agent, text: &str) {
    append_text(&agent.log("a.log"), text);
}

/// POSTs a signed body to `/hooks/hook`; the status code.
fn post(port: u16, body: &[u8]) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /hooks/hook HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Relstat-Signature-256: {}\r\n\r\n",
        body.len(),
        sign(SECRET.as_bytes(), body)
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn events(agent: &Agent, source: &str, result: &str) -> f64 {
    sample(
        &agent.metrics(),
        &format!(r#"relstat_events_total{{result="{result}",source="{source}"}}"#),
    )
    .unwrap_or(0.0)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

#[test]
fn megabyte_field_values_are_invalid_from_files_and_webhooks_and_metrics_stay_small() {
    let mut agent = Agent::new(HOOK);
    let d = agent.dir.path().display().to_string();
    std::fs::write(agent.dir.path().join("secret"), SECRET).unwrap();
    let cfg = std::fs::read_to_string(&agent.config)
        .unwrap()
        .replace("{D}", &d);
    std::fs::write(&agent.config, cfg).unwrap();

    // The reported case, ten times over: a 400 KB release and a 300 KB
    // service per line (each line under the 1 MiB line cap), then lines of
    // one 1,000,000-byte field each, then a good line.
    let mut text = String::new();
    for i in 0..10 {
        let release = format!("{i}{}", "r".repeat(400_000));
        let service = format!("{i}{}", "s".repeat(300_000));
        text.push_str(&line(&format!("big-{i}"), &release, &service, "deployed"));
    }
    let mega = "m".repeat(1_000_000);
    text.push_str(&line("mega-release", &mega, "api", "deployed"));
    text.push_str(&line("mega-service", "r1", &mega, "deployed"));
    text.push_str(&line("mega-id", "r1", "api", "deployed").replace("mega-id", &mega));
    text.push_str(&line("mega-status", "r1", "api", &mega));
    text.push_str(&line("good", "r1", "api", "deployed"));
    append(&agent, &text);
    agent.start();
    let port = agent.port;
    assert!(
        wait_until(30, || events(&agent, "f", "accepted") >= 1.0
            && events(&agent, "f", "invalid") >= 14.0),
        "file: accepted {} invalid {}",
        events(&agent, "f", "accepted"),
        events(&agent, "f", "invalid")
    );
    assert_eq!(events(&agent, "f", "invalid"), 14.0);
    assert_eq!(
        events(&agent, "f", "unmapped"),
        0.0,
        "a long status is invalid"
    );

    // A webhook: one payload with a megabyte release, one with a megabyte
    // service; both counted invalid (answered 400 "cannot parse" as a
    // single invalid record is today, or 202 where well-formed JSON is
    // always taken in: the count is what matters here). A megabyte reason
    // (free text) is cut to 1 KiB instead: its deployment is accepted.
    let body = format!(
        "{{\"time\":\"{}\",\"release\":\"{mega}\",\"environment\":\"prod\",\"status\":\"deployed\"}}",
        yesterday()
    );
    assert!(matches!(post(port, body.as_bytes()), 202 | 400));
    let body = format!(
        "{{\"time\":\"{}\",\"release\":\"r2\",\"environment\":\"prod\",\"status\":\"deployed\",\
         \"service\":\"{mega}\"}}",
        yesterday()
    );
    assert!(matches!(post(port, body.as_bytes()), 202 | 400));
    assert!(
        wait_until(20, || events(&agent, "hook", "invalid") >= 2.0),
        "hook invalid: {}",
        events(&agent, "hook", "invalid")
    );
    assert_eq!(events(&agent, "hook", "accepted"), 0.0);
    let body = format!(
        "{{\"time\":\"{}\",\"release\":\"r3\",\"environment\":\"prod\",\"status\":\"deployed\",\
         \"reason\":\"{mega}\"}}",
        yesterday()
    );
    assert_eq!(post(port, body.as_bytes()), 202);
    assert!(
        wait_until(20, || events(&agent, "hook", "accepted") >= 1.0),
        "hook accepted: {}",
        events(&agent, "hook", "accepted")
    );

    let (status, exposition) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        exposition.len() < 1024 * 1024,
        "/metrics is {} bytes",
        exposition.len()
    );
    let longest = exposition.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 4096, "a /metrics line of {longest} bytes");
    assert!(
        exposition.contains(r#"release="r1""#),
        "the good line is tracked"
    );

    // Nothing of the refused values was kept: the API lists r1 and r3 only,
    // r3's reason cut to 1 KiB.
    let (status, api) = http_get(port, "/api/v1/releases").unwrap();
    assert_eq!(status, 200);
    assert!(api.len() < 64 * 1024, "API answer of {} bytes", api.len());
    let v: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(v["count"], 2, "{api}");
    let (status, h) = http_get(port, "/api/v1/releases/r3/history").unwrap();
    assert_eq!(status, 200, "{h}");
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    let reason = h["events"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.len() <= 1024 && reason.starts_with("mmm") && reason.ends_with('…'),
        "reason of {} bytes",
        reason.len()
    );
    // The store holds none of the 17 megabytes refused (on disk: small).
    agent.signal("-TERM");
    let stored = dir_bytes(&agent.dir.path().join("data"));
    assert!(stored < 8 * 1024 * 1024, "store of {stored} bytes");
}

#[test]
fn label_values_over_label_value_max_bytes_are_shortened_in_metrics_and_whole_in_the_api() {
    let mut agent = Agent::new("");
    // Two releases that differ only past the label limit, a 1 KiB service
    // (the longest accepted), and a multi-byte value cut near the limit.
    let common = "2026.12-".to_string() + &"x".repeat(300);
    let (rel_a, rel_b) = (format!("{common}-a"), format!("{common}-b"));
    let service = "s".repeat(1024);
    let umlauts = "ü".repeat(100); // 200 bytes
    append(
        &agent,
        &[
            line("a", &rel_a, &service, "deployed"),
            line("b", &rel_b, &umlauts, "deployed"),
            line("c", "short", "api", "deployed"),
        ]
        .concat(),
    );
    agent.start();
    let port = agent.port;
    assert!(
        wait_until(20, || agent.events("accepted") >= 3.0),
        "accepted {}",
        agent.events("accepted")
    );
    let exposition = agent.metrics();
    let release_lines: Vec<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("relstat_release_status{"))
        .collect();
    assert_eq!(release_lines.len(), 3, "{release_lines:#?}");
    // Every label value of every series is 128 bytes at most.
    for l in exposition.lines().filter(|l| !l.starts_with('#')) {
        for value in l.split('"').skip(1).step_by(2) {
            assert!(
                value.len() <= 128,
                "a {}-byte label value: {l}",
                value.len()
            );
        }
    }
    // The two releases stay two distinct shortened values, sharing the prefix.
    let shown: Vec<&str> = release_lines
        .iter()
        .filter_map(|l| l.split("release=\"").nth(1)?.split('"').next())
        .filter(|r| r.starts_with("2026.12-"))
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_ne!(shown[0], shown[1]);
    for s in &shown {
        assert!(s.len() <= 128 && s.contains('~'), "{s}");
    }
    assert!(exposition.contains(r#"release="short""#));
    // The multi-byte service is cut on a char boundary (it is valid UTF-8
    // and a prefix of the original).
    let svc = release_lines
        .iter()
        .filter_map(|l| l.split("service=\"").nth(1)?.split('"').next())
        .find(|s| s.starts_with('ü'))
        .expect("the ü service");
    assert!(umlauts.starts_with(svc.split('~').next().unwrap()), "{svc}");
    for label in ["release", "service"] {
        let n = sample(
            &exposition,
            &format!(r#"relstat_label_overflow_total{{label="{label}",reason="length"}}"#),
        )
        .unwrap_or(0.0);
        assert!(n >= 1.0, "{label}: overflow {n}\n{exposition}");
    }

    // The API carries the whole values.
    let (status, api) = http_get(port, "/api/v1/releases").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&api).unwrap();
    let rows = v["releases"].as_array().unwrap();
    let find = |r: &str| rows.iter().find(|row| row["release"] == r);
    assert_eq!(find(&rel_a).expect("release a whole")["service"], service);
    assert_eq!(find(&rel_b).expect("release b whole")["service"], umlauts);
}

#[test]
fn check_config_bounds_label_value_max_bytes() {
    for (value, ok) in [("16", false), ("32", true), ("128", true), ("4096", false)] {
        let (_d, path) = temp_file(
            "relstat.toml",
            &format!("[tracking]\nlabel_value_max_bytes = {value}\n"),
        );
        let out = relstat(&["check-config", "-c", path.to_str().unwrap()]);
        assert_eq!(out.status.success(), ok, "{value}: {}", stderr(&out));
        if !ok {
            assert_eq!(out.status.code(), Some(2));
            assert!(
                stderr(&out).contains("tracking.label_value_max_bytes"),
                "{}",
                stderr(&out)
            );
        }
    }
}
