//! Air-gapped sync with the real binary: `keygen`, `spool export` through a
//! running site agent's admin socket, `spool import` into a stopped relay
//! (store opened directly) and a running one (through its socket), refusals
//! with their exit code and message; and the whole path into a real
//! rsyslog: a site with an unreachable SIEM exports, a relay imports and
//! forwards every event once, with the site's site and host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::rsyslog::*;
use crate::util::*;

/// Every `deployed` line of `append_lines` (yesterday, environment prod)
/// lands in this freeze: one change_freeze record per line.
fn freeze() -> String {
    format!(
        "\n[[anomalies.change_freeze.windows]]\nstart = \"{}T00:00:00Z\"\n\
         end = \"{}T00:00:00Z\"\nenvironments = [\"prod\"]\n",
        day_offset(-2),
        day_offset(0)
    )
}

fn cfg(a: &Agent) -> &str {
    a.config.to_str().unwrap()
}

fn live_spool(a: &Agent) -> Value {
    let o = relstat(&["-c", cfg(a), "spool", "inspect", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `relstat keygen --out DIR/NAME`; the public key copied to `trusted/SITE.pub`.
fn keygen(dir: &Path, name: &str, site: &str) -> PathBuf {
    let prefix = dir.join(name);
    let o = relstat(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trusted = dir.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(
        dir.join(format!("{name}.pub")),
        trusted.join(format!("{site}.pub")),
    )
    .unwrap();
    dir.join(format!("{name}.key"))
}

/// A site agent that accumulated `n` records, and the bundle it exported
/// while running.
fn site_bundle(keys: &Path, n: usize) -> (Agent, PathBuf) {
    let key = keygen(keys, "site-t", "t");
    let mut a = Agent::new(&format!(
        "{}\n[spool]\nenabled = true\nsigning_key_file = \"{}\"\n",
        freeze(),
        key.display()
    ));
    a.start();
    append_lines(&a.log("deploy.log"), 1, n);
    assert!(
        wait_until(20, || live_spool(&a)["events"] == n as u64),
        "the site's outbox never held {n} records: {}",
        live_spool(&a)
    );
    let out = keys.join("site-t.bundle");
    let o = relstat(&[
        "-c",
        cfg(&a),
        "spool",
        "export",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("exported {n} events")),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        live_spool(&a)["events"],
        0,
        "export removes what it exported"
    );
    (a, out)
}

#[test]
fn bundle_exported_by_a_running_site_imports_once_into_a_relay_stopped_or_running() {
    let keys = tempfile::tempdir().unwrap();
    let (mut site, bundle) = site_bundle(keys.path(), 40);
    assert_eq!(site.signal("-TERM"), Some(0));

    let o = relstat(&["spool", "inspect", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("site: t") && text.contains("events: 40"),
        "{text}"
    );
    assert!(text.contains("signature: not checked"), "{text}");

    let mut relay = Agent::new(&format!(
        "[spool]\nenabled = true\ntrusted_keys_dir = \"{}\"\n",
        keys.path().join("trusted").display()
    ));
    // Stopped: the store is opened directly.
    let o = relstat(&[
        "-c",
        cfg(&relay),
        "spool",
        "import",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("40 events, 40 enqueued, 0 already imported"),
        "{}",
        stderr(&o)
    );
    // Running: through the admin socket; the ledger remembers.
    relay.start();
    let o = relstat(&[
        "-c",
        cfg(&relay),
        "spool",
        "import",
        "--json",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(r[0]["already_imported_at"].is_string(), "{r}");
    assert_eq!(live_spool(&relay)["events"], 40);
}

#[test]
fn a_tampered_bundle_is_refused_with_exit_1_and_the_reason() {
    let keys = tempfile::tempdir().unwrap();
    let (_site, bundle) = site_bundle(keys.path(), 3);
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = keys.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let mut relay = Agent::new(&format!(
        "[spool]\nenabled = true\ntrusted_keys_dir = \"{}\"\n",
        keys.path().join("trusted").display()
    ));
    relay.start();
    let o = relstat(&["-c", cfg(&relay), "spool", "import", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("damaged or truncated bundle"),
        "{}",
        stderr(&o)
    );
    assert_eq!(live_spool(&relay)["events"], 0);
    // A relay that trusts nobody.
    let lonely = Agent::new("[spool]\nenabled = true\n");
    let o = relstat(&[
        "-c",
        cfg(&lonely),
        "spool",
        "import",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("trusted_keys_dir is not set"),
        "{}",
        stderr(&o)
    );
}

/// Replaces the `[agent]` site `Agent::new` writes with `site` and `hostname`.
fn set_site_and_host(a: &Agent, site: &str, host: &str) {
    let text = std::fs::read_to_string(&a.config).unwrap();
    let text = text.replacen(
        "site = \"t\"\n",
        &format!("site = \"{site}\"\nhostname = \"{host}\"\n"),
        1,
    );
    std::fs::write(&a.config, text).unwrap();
}

/// Releases `r1..=rn`, service `s<i>` each (no release supersedes another):
/// `deployed` inside [`freeze`] (a change_freeze), then `cancelled`, which
/// `deployed` may not go to (an invalid_transition).
fn freeze_and_invalid_lines(path: &Path, n: usize) {
    let day = day();
    let mut buf = String::new();
    for (hour, status) in [(0, "deployed"), (1, "cancelled")] {
        for i in 1..=n {
            buf.push_str(&format!(
                "{{\"time\":\"{day}T{hour:02}:{:02}:{:02}Z\",\"release\":\"r{i}\",\
                 \"environment\":\"prod\",\"status\":\"{status}\",\"service\":\"s{i}\"}}\n",
                (i / 60) % 60,
                i % 60
            ));
        }
    }
    std::fs::write(path, buf).unwrap();
}

#[test]
fn site_with_unreachable_siem_exports_and_relay_forwards_every_event_once_to_rsyslog() {
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let n = 25;
    let want = 2 * n;
    let keys = tempfile::tempdir().unwrap();
    // Site A: its SIEM is a closed port; the outbox accumulates.
    let key = keygen(keys.path(), "site-a", "site-a");
    let closed = free_port();
    let mut a = Agent::new(&format!(
        "{}\n[spool]\nsigning_key_file = \"{}\"\n\n\
         [siem]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{closed}\"\n",
        freeze(),
        key.display()
    ));
    set_site_and_host(&a, "site-a", "host-a");
    freeze_and_invalid_lines(&a.log("deploy.log"), n);
    a.start();
    assert!(
        wait_until(20, || live_spool(&a)["events"] == want as u64),
        "site A's outbox never held {want} records: {}",
        live_spool(&a)
    );
    assert_eq!(
        sample(&a.metrics(), r#"relstat_forward_connected{sink="tcp"}"#),
        Some(0.0),
        "site A's SIEM must be unreachable"
    );
    let bundle = keys.path().join("site-a.bundle");
    let o = relstat(&[
        "-c",
        cfg(&a),
        "spool",
        "export",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("exported {want} events")),
        "{}",
        stderr(&o)
    );
    assert_eq!(a.signal("-TERM"), Some(0));

    // Relay B: its own site and host, a real rsyslog over TLS.
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    let rs = Rsyslog::new(
        bin,
        certs.path(),
        Input::Tls {
            cert: "server",
            mtls: false,
        },
        false,
    );
    let mut b = Agent::new(&format!(
        "[spool]\ntrusted_keys_dir = \"{}\"\n\n\
         [siem]\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\n\
         ca_file = \"{}/ca.pem\"\nserver_name = \"localhost\"\n",
        keys.path().join("trusted").display(),
        rs.port,
        certs.path().display()
    ));
    set_site_and_host(&b, "relay", "relay-host");
    b.start();
    assert!(
        wait_until(15, || sample(
            &b.metrics(),
            r#"relstat_forward_connected{sink="tls"}"#
        ) == Some(1.0)),
        "the relay never connected to rsyslog: {}",
        std::fs::read_to_string(certs.path().join("rsyslog.err")).unwrap_or_default()
    );
    assert!(rs.lines().is_empty(), "the relay has nothing of its own");
    let import = || {
        let o = relstat(&["-c", cfg(&b), "spool", "import", bundle.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let said = import();
    assert!(
        said.contains(&format!(
            "{want} events, {want} enqueued, 0 already imported"
        )),
        "{said}"
    );
    assert!(
        wait_until(30, || rs.lines().len() >= want),
        "rsyslog received {} of {want}",
        rs.lines().len()
    );
    // Delivered means removed: the relay's outbox empties.
    assert!(
        wait_until(10, || live_spool(&b)["events"] == 0),
        "{}",
        live_spool(&b)
    );
    let check = |rs: &Rsyslog| {
        let lines = rs.lines();
        let received = rs.received();
        assert_eq!(received.len(), want, "{lines:#?}");
        let mut per_id: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut per_release: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (line, sd) in lines.iter().zip(&received) {
            let cols: Vec<&str> = line.split('\t').collect();
            // MSGID, HOSTNAME: the record's rule and the site's host.
            assert_eq!(
                cols[..3],
                [sd["rule"].as_str(), "host-a", "relstat"],
                "{line}"
            );
            assert_eq!(sd["site"], "site-a", "{line}");
            assert_eq!(sd["host"], "host-a", "{line}");
            assert!(!sd["event_id"].is_empty(), "{line}");
            *per_id
                .entry((sd["event_id"].clone(), sd["rule"].clone()))
                .or_default() += 1;
            per_release
                .entry(sd["release"].clone())
                .or_default()
                .push(sd["rule"].clone());
        }
        let dups: Vec<_> = per_id.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "received more than once: {dups:?}");
        assert_eq!(per_id.len(), want);
        for i in 1..=n {
            let mut rules = per_release
                .get(&format!("r{i}"))
                .cloned()
                .unwrap_or_default();
            rules.sort();
            assert_eq!(
                rules,
                ["change_freeze", "invalid_transition"],
                "release r{i}"
            );
        }
    };
    check(&rs);

    // The same bundle again: the ledger refuses it, nothing more is sent.
    let said = import();
    assert!(said.contains("already imported"), "{said}");
    assert_eq!(live_spool(&b)["events"], 0);
    assert!(
        !wait_until(3, || rs.lines().len() > want),
        "a second import sent again: {} lines",
        rs.lines().len()
    );
    check(&rs);
    assert_eq!(b.signal("-TERM"), Some(0));
}

/// Removes the file source `Agent::new` writes: a relay with no sources.
fn without_sources(a: &Agent) {
    let text = std::fs::read_to_string(&a.config).unwrap();
    let start = text.find("[[sources]]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap() + 2;
    std::fs::write(&a.config, format!("{}{}", &text[..start], &text[end..])).unwrap();
}

/// A site's history over the last 12 hours (event times in the past):
/// (release, service, status, minutes after the start).
const HISTORY: [(&str, &str, &str, i64); 14] = [
    ("r1", "api", "scheduled", 0),
    ("r1", "api", "in_progress", 60),
    ("r1", "api", "deployed", 90),
    ("r1", "api", "complete", 180),
    ("r2", "web", "in_progress", 120),
    ("r2", "web", "failed", 140),
    ("r2", "web", "rolled_back", 160),
    ("r3", "api", "in_progress", 240),
    ("r3", "api", "deployed", 300),
    ("r4", "db", "scheduled", 300),
    ("r4", "db", "approved", 360),
    ("r4", "db", "in_progress", 420),
    ("r4", "db", "deployed", 540),
    // deployed -> cancelled is not allowed: an invalid_transition too.
    ("r4", "db", "cancelled", 600),
];

fn write_history(path: &Path, start_ms: i64) {
    let mut buf = String::new();
    for (release, service, status, min) in HISTORY {
        let t = relstat::event::format_rfc3339(start_ms + min * 60_000);
        buf.push_str(&format!(
            "{{\"time\":\"{t}\",\"release\":\"{release}\",\"service\":\"{service}\",\
             \"environment\":\"prod\",\"status\":\"{status}\",\"actor\":\"bob\",\
             \"actor_type\":\"human\",\"version\":\"{release}.0\"}}\n"
        ));
    }
    std::fs::write(path, buf).unwrap();
}

/// The series a relay must show exactly as the site does for the same
/// history (sorted sample lines). `counters`: also transitions, durations,
/// MTTSR and DORA, which live in the running agent's memory (like any
/// counter they restart from zero with the process: the relay that
/// imported, or that started after an import into its stopped store,
/// shows them until it restarts); without, the series
/// rebuilt from the store's state: per-release status, time in status,
/// releases per status (non-zero).
fn history_series(exposition: &str, counters: bool) -> Vec<String> {
    const STATE: [&str; 3] = [
        "relstat_release_status{",
        "relstat_release_status_since_timestamp_seconds{",
        "relstat_releases_in_status{",
    ];
    const COUNTERS: [&str; 5] = [
        "relstat_status_transitions_total{",
        "relstat_status_duration_seconds_",
        "relstat_status_resolution_seconds_",
        "relstat_deployments_total{",
        "relstat_restore_seconds_",
    ];
    let mut v: Vec<String> = exposition
        .lines()
        .filter(|l| {
            (STATE.iter().any(|f| l.starts_with(f)) && !l.ends_with(" 0"))
                || (counters && COUNTERS.iter().any(|f| l.starts_with(f)))
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn relay_tracks_a_forward_all_sites_history_from_its_bundle_stopped_or_running() {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "site-a", "site-a");
    let start = (relstat::event::now_ms() / 60_000 - 12 * 60) * 60_000;
    // Site A: forward = "all", its SIEM a closed port.
    let siem = |port: u16| {
        format!("[siem]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nforward = \"all\"\n")
    };
    let mut a = Agent::new(&format!(
        "[spool]\nsigning_key_file = \"{}\"\n\n{}",
        key.display(),
        siem(free_port())
    ));
    set_site_and_host(&a, "site-a", "host-a");
    write_history(&a.log("deploy.log"), start);
    a.start();
    // Every line is a transition record (the first of a key too), plus
    // r4's invalid_transition.
    let want = HISTORY.len() as u64 + 1;
    assert!(
        wait_until(20, || live_spool(&a)["events"] == want),
        "site A's outbox never held {want} records: {}",
        live_spool(&a)
    );
    let site_metrics = a.metrics();
    let site_series = history_series(&site_metrics, true);
    let site_state = history_series(&site_metrics, false);
    assert!(
        site_series
            .iter()
            .any(|l| l.contains("relstat_release_status{") && l.contains("site=\"site-a\"")),
        "{site_series:#?}"
    );
    let bundle = keys.path().join("site-a.bundle");
    let o = relstat(&[
        "-c",
        cfg(&a),
        "spool",
        "export",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(a.signal("-TERM"), Some(0));

    // Relays: a [siem] (unreachable, so the outbox can be counted), no sources.
    let relay = || {
        let b = Agent::new(&format!(
            "[spool]\ntrusted_keys_dir = \"{}\"\n\n{}",
            keys.path().join("trusted").display(),
            siem(free_port())
        ));
        set_site_and_host(&b, "relay", "relay-host");
        without_sources(&b);
        b
    };
    let import = |b: &Agent| {
        let o = relstat(&["-c", cfg(b), "spool", "import", bundle.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let check = |b: &Agent, before: i64, after: i64, counters: bool| {
        let m = b.metrics();
        let expected = if counters { &site_series } else { &site_state };
        assert_eq!(
            &history_series(&m, counters),
            expected,
            "the relay's series differ from the site's"
        );
        assert_eq!(
            sample(
                &m,
                r#"relstat_events_total{result="accepted",source="import"}"#
            ),
            Some(HISTORY.len() as f64),
            "{m}"
        );
        // Exactly the site's records: the relay's own transition and
        // invalid_transition records for the same events are not added.
        assert_eq!(live_spool(b)["events"], want);
        let (status, body) = http_get(b.port, "/api/v1/releases/r4/history").unwrap();
        assert_eq!(status, 200, "{body}");
        let h: Value = serde_json::from_str(&body).unwrap();
        let events = h["events"].as_array().unwrap();
        assert_eq!(events.len(), 5, "{h}");
        for (e, (_, _, status, min)) in events.iter().zip(HISTORY[9..].iter()) {
            assert_eq!(e["to"], *status, "{e}");
            assert_eq!(e["site"], "site-a", "{e}");
            assert_eq!(e["source"], "f", "the site's source: {e}");
            assert_eq!(e["actor_type"], "human", "{e}");
            let t = relstat::event::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
            assert_eq!(t, start + min * 60_000, "event time kept: {e}");
            let rec = relstat::event::parse_rfc3339(e["recorded_at"].as_str().unwrap()).unwrap();
            assert!(
                (before..=after).contains(&rec),
                "recorded at import time: {e}"
            );
        }
    };

    // B1: imported while stopped (enqueued, its transitions pending in the
    // store), then started: the agent tracks them before it serves, so its
    // counters and histograms are the site's too.
    let mut b1 = relay();
    let before = relstat::event::now_ms();
    let said = import(&b1);
    let after = relstat::event::now_ms();
    assert!(
        said.contains(&format!(
            "{want} events, {want} enqueued, 0 already imported, {} transitions to track \
             when the agent starts",
            HISTORY.len()
        )),
        "{said}"
    );
    let o = relstat(&["-c", cfg(&b1), "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{} imported transitions pending", HISTORY.len())),
        "{}",
        stderr(&o)
    );
    b1.start();
    check(&b1, before, after, true);
    assert_eq!(b1.signal("-TERM"), Some(0));
    let o = relstat(&["-c", cfg(&b1), "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("pending"), "{}", stderr(&o));
    // Started again: tracked once, what the store holds.
    b1.start();
    check(&b1, before, after, false);
    assert_eq!(b1.signal("-TERM"), Some(0));

    // B2: imported while running (through the admin socket, on its core).
    let mut b2 = relay();
    b2.start();
    let before = relstat::event::now_ms();
    import(&b2);
    let after = relstat::event::now_ms();
    check(&b2, before, after, true);
    // Again: the ledger answers, nothing changes.
    let said = import(&b2);
    assert!(said.contains("already imported"), "{said}");
    check(&b2, before, after, true);
    // After a restart, what the store holds.
    assert_eq!(b2.signal("-TERM"), Some(0));
    b2.start();
    check(&b2, before, after, false);
}
