//! SIEM forwarding against a real rsyslog (started here with its own config
//! and work directory on 127.0.0.1): TLS and RELP delivery, structured data
//! as rsyslog parses it, receiver and agent crashes, TLS refusals, the rate
//! limit. Events come from a file source with `forward = "all"` (each line
//! is one transition, one SIEM event, identified by its release `r<i>`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::rsyslog::*;
use crate::util::*;

mod http;

/// The agent's `[siem]` section.
fn siem_conf(dir: &Path, transport: &str, port: u16, extra: &str) -> String {
    format!(
        "[siem]\ntransport = \"{transport}\"\naddress = \"127.0.0.1:{port}\"\n\
         ca_file = \"{d}/ca.pem\"\nserver_name = \"localhost\"\nforward = \"all\"\n{extra}\n",
        d = dir.display()
    )
}

fn spool_events(agent: &Agent) -> f64 {
    sample(&agent.metrics(), "relstat_spool_events").unwrap_or(-1.0)
}

/// Each of r1..=rn received at least once; returns how many duplicates.
fn check_all_once_or_more(got: &[String], n: usize) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for r in got {
        seen.insert(r.clone());
    }
    let missing: Vec<usize> = (1..=n)
        .filter(|i| !seen.contains(&format!("r{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    got.len() - seen.len()
}

#[test]
fn tls_delivers_every_event_intact_and_in_order() {
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let (certs, rs) = Rsyslog::tls(bin);
    let mut agent = Agent::new(&siem_conf(certs.path(), "tls", rs.port, ""));
    let n = 500;
    append_lines(&agent.log("a.log"), 1, n);
    agent.start();
    assert!(
        wait_until(30, || rs.lines().len() >= n),
        "received {}",
        rs.lines().len()
    );
    let want: Vec<String> = (1..=n).map(|i| format!("r{i}")).collect();
    assert_eq!(rs.releases(), want, "in order, each once");
    // rsyslog's parse of the header and of the structured data.
    let host = relstat::cli::hostname();
    for (i, (line, sd)) in rs.lines().iter().zip(rs.received()).enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            cols[..3],
            ["transition", host.as_str(), "relstat"],
            "{line}"
        );
        let r = i + 1;
        assert_eq!(sd["release"], format!("r{r}"));
        assert_eq!(sd["service"], format!("s{}", r % 7));
        assert_eq!(sd["environment"], "prod");
        assert_eq!(sd["site"], "t");
        assert_eq!(sd["to"], "deployed");
        assert_eq!(sd["rule"], "transition");
        assert_eq!(sd["source"], "f");
        assert_eq!(sd["host"], host);
        assert!(
            sd["event_time"].starts_with(&format!("{}T", day())),
            "{sd:?}"
        );
        // The header TIMESTAMP is detected_at.
        let ts = relstat::event::parse_rfc3339(cols[3]).unwrap();
        assert_eq!(
            ts / 1000,
            relstat::event::parse_rfc3339(&sd["detected_at"]).unwrap() / 1000
        );
    }
    // Everything delivered leaves the spool.
    assert!(
        wait_until(10, || spool_events(&agent) == 0.0),
        "{}",
        agent.metrics()
    );
    let m = agent.metrics();
    assert_eq!(
        sample(
            &m,
            r#"relstat_forward_events_total{result="sent",sink="tls"}"#
        ),
        Some(n as f64)
    );
    assert_eq!(
        sample(
            &m,
            r#"relstat_forward_events_total{result="acked",sink="tls"}"#
        ),
        Some(n as f64)
    );
    assert_eq!(
        sample(&m, r#"relstat_forward_connected{sink="tls"}"#),
        Some(1.0)
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
}

/// A transition on the emergency path reaches rsyslog with its version,
/// commit and change class in the structured data, escaped so rsyslog
/// parses them back whole.
#[test]
fn tls_transition_records_carry_version_commit_and_change_class() {
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let (certs, rs) = Rsyslog::tls(bin);
    let mut agent = Agent::new(&siem_conf(certs.path(), "tls", rs.port, ""));
    std::fs::write(
        agent.log("a.log"),
        format!(
            "{{\"time\":\"{}T10:00:00Z\",\"release\":\"r1\",\"environment\":\"prod\",\
             \"status\":\"deployed\",\"service\":\"pay\",\"version\":\"1.2\",\
             \"commit\":\"9f3c]\\\"x\",\"change_class\":\"emergency\",\"reason\":\"INC-7\"}}\n",
            day()
        ),
    )
    .unwrap();
    agent.start();
    assert!(
        wait_until(30, || !rs.lines().is_empty()),
        "nothing received; rsyslog said: {}",
        std::fs::read_to_string(certs.path().join("rsyslog.err")).unwrap_or_default()
    );
    let sd = &rs.received()[0];
    assert_eq!(sd["rule"], "transition");
    assert_eq!(sd["version"], "1.2");
    assert_eq!(sd["commit"], "9f3c]\"x");
    assert_eq!(sd["change_class"], "emergency");
    assert_eq!(sd["reason"], "INC-7");
    assert_eq!(agent.signal("-TERM"), Some(0));
}

/// Streams `n` events (rate-limited so the stream is long enough), kills
/// rsyslog -9 mid-stream, restarts it: every event arrives at least once.
/// Returns the duplicates.
fn receiver_crash(input: Input, transport: &str, tls_relp: bool) -> usize {
    let Some((bin, _serial)) = rsyslogd() else {
        return 0;
    };
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    let mut rs = Rsyslog::new(bin, certs.path(), input, true);
    let extra = format!(
        "rate_limit = 400\nburst = 50\n{}",
        if tls_relp {
            // imrelp with certificates authenticates the client too (its
            // default, "fingerprint", with no permitted peer refuses
            // everyone): mTLS, with authMode certvalid.
            format!(
                "tls = true\nclient_cert_file = \"{d}/client.pem\"\nclient_key_file = \"{d}/client.key\"",
                d = certs.path().display()
            )
        } else {
            String::new()
        }
    );
    let mut agent = Agent::new(&siem_conf(certs.path(), transport, rs.port, &extra));
    let n = 2000;
    append_lines(&agent.log("a.log"), 1, n);
    agent.start();
    assert!(
        wait_until(20, || rs.lines().len() >= 400),
        "stream did not start; rsyslog said: {}",
        std::fs::read_to_string(certs.path().join("rsyslog.err")).unwrap_or_default()
    );
    rs.kill9();
    let at_kill = rs.lines().len();
    assert!(at_kill < n, "the stream was over before the kill");
    std::thread::sleep(Duration::from_millis(1500));
    rs.start();
    assert!(
        wait_until(60, || {
            let got = rs.releases();
            (1..=n).all(|i| got.contains(&format!("r{i}")))
        }),
        "not all delivered: {} lines",
        rs.lines().len()
    );
    assert!(wait_until(10, || spool_events(&agent) == 0.0));
    let dups = check_all_once_or_more(&rs.releases(), n);
    let m = agent.metrics();
    let retried = sample(
        &m,
        &format!(r#"relstat_forward_events_total{{result="retried",sink="{transport}"}}"#),
    )
    .unwrap_or(0.0);
    eprintln!(
        "{transport} (tls={tls_relp}): {dups} duplicates after a receiver kill -9, {retried} resent"
    );
    assert!(
        dups as f64 <= retried,
        "duplicates ({dups}) beyond what was resent ({retried})"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
    dups
}

#[test]
fn relp_receiver_killed_mid_stream_loses_nothing() {
    let dups = receiver_crash(Input::Relp { tls: false }, "relp", false);
    // Only the unacknowledged window is resent.
    assert!(
        dups <= relstat::sinks::siem::transport::relp::WINDOW,
        "{dups}"
    );
}

#[test]
fn relp_over_tls_receiver_killed_mid_stream_loses_nothing() {
    let dups = receiver_crash(Input::Relp { tls: true }, "relp", true);
    assert!(
        dups <= relstat::sinks::siem::transport::relp::WINDOW,
        "{dups}"
    );
}

#[test]
fn tls_receiver_killed_mid_stream_loses_nothing() {
    let dups = receiver_crash(
        Input::Tls {
            cert: "server",
            mtls: false,
        },
        "tls",
        false,
    );
    // What was sent within the grace (and the kill's own latency) at 400/s plus the burst.
    assert!(dups <= 400 * 4 + 50, "{dups}");
}

#[test]
fn agent_killed_with_events_pending_delivers_them_after_restart() {
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    // No receiver yet: everything stays in the spool.
    let port = free_port();
    let mut agent = Agent::new(&siem_conf(certs.path(), "relp", port, ""));
    let n = 300;
    append_lines(&agent.log("a.log"), 1, n);
    agent.start();
    assert!(
        wait_until(20, || spool_events(&agent) == n as f64),
        "{}",
        agent.metrics()
    );
    assert_eq!(
        sample(
            &agent.metrics(),
            r#"relstat_forward_connected{sink="relp"}"#
        ),
        Some(0.0)
    );
    agent.signal("-KILL");
    // The receiver comes up on the port the agent was configured with.
    let mut rs = Rsyslog {
        bin,
        dir: certs.path().to_path_buf(),
        port,
        child: None,
        torn: Vec::new(),
    };
    let conf = Rsyslog::new(
        rs.bin.clone(),
        certs.path(),
        Input::Relp { tls: false },
        false,
    );
    let text = std::fs::read_to_string(certs.path().join("rsyslog.conf"))
        .unwrap()
        .replace(
            &format!("port=\"{}\"", conf.port),
            &format!("port=\"{port}\""),
        );
    drop(conf);
    std::fs::write(certs.path().join("rsyslog.conf"), text).unwrap();
    rs.start();
    agent.start();
    assert!(
        wait_until(30, || rs.lines().len() >= n),
        "received {}",
        rs.lines().len()
    );
    assert!(wait_until(10, || spool_events(&agent) == 0.0));
    let want: Vec<String> = (1..=n).map(|i| format!("r{i}")).collect();
    assert_eq!(rs.releases(), want);
    assert_eq!(agent.signal("-TERM"), Some(0));
}

#[test]
fn tls_refusals_send_nothing() {
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    let d = certs.path().display().to_string();
    let cases: [(&str, Input, String); 4] = [
        (
            "unknown CA",
            Input::Tls {
                cert: "server",
                mtls: false,
            },
            format!("ca_file = \"{d}/other-ca.pem\"\nserver_name = \"localhost\""),
        ),
        (
            "wrong server name",
            Input::Tls {
                cert: "server",
                mtls: false,
            },
            format!("ca_file = \"{d}/ca.pem\"\nserver_name = \"siem.example\""),
        ),
        (
            "expired certificate",
            Input::Tls {
                cert: "expired",
                mtls: false,
            },
            format!("ca_file = \"{d}/ca.pem\"\nserver_name = \"localhost\""),
        ),
        (
            "client certificate required",
            Input::Tls {
                cert: "server",
                mtls: true,
            },
            format!("ca_file = \"{d}/ca.pem\"\nserver_name = \"localhost\""),
        ),
    ];
    for (what, input, tls) in cases {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "ca.pem",
            "other-ca.pem",
            "server.pem",
            "server.key",
            "expired.pem",
            "expired.key",
        ] {
            std::fs::copy(certs.path().join(f), dir.path().join(f)).unwrap();
        }
        let rs = Rsyslog::new(bin.clone(), dir.path(), input, false);
        let conf = format!(
            "[siem]\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\n{tls}\nforward = \"all\"\n",
            rs.port
        );
        let mut agent = Agent::new(&conf);
        append_lines(&agent.log("a.log"), 1, 50);
        agent.start();
        assert!(wait_until(20, || spool_events(&agent) == 50.0), "{what}");
        std::thread::sleep(Duration::from_secs(4));
        let m = agent.metrics();
        assert_eq!(
            rs.lines().len(),
            0,
            "{what}: rsyslog received {:?}",
            rs.lines()
        );
        assert_eq!(spool_events(&agent), 50.0, "{what}: the spool lost events");
        assert_eq!(
            sample(
                &m,
                r#"relstat_forward_events_total{result="acked",sink="tls"}"#
            )
            .unwrap_or(0.0),
            0.0,
            "{what}"
        );
        assert_eq!(
            sample(&m, r#"relstat_forward_connected{sink="tls"}"#),
            Some(0.0),
            "{what}"
        );
        assert_eq!(agent.signal("-TERM"), Some(0));
    }
}

#[test]
fn rate_limit_holds() {
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let (certs, rs) = Rsyslog::tls(bin);
    let (rate, burst) = (200.0, 50.0);
    let mut agent = Agent::new(&siem_conf(
        certs.path(),
        "tls",
        rs.port,
        "rate_limit = 200\nburst = 50",
    ));
    let n = 1000;
    append_lines(&agent.log("a.log"), 1, n);
    let start = Instant::now();
    agent.start();
    assert!(wait_until(20, || !rs.lines().is_empty()));
    let (t0, c0) = (Instant::now(), rs.lines().len());
    std::thread::sleep(Duration::from_secs(3));
    let (t1, c1) = (Instant::now(), rs.lines().len());
    let secs = (t1 - t0).as_secs_f64();
    let got = (c1 - c0) as f64;
    eprintln!("rate limit {rate}/s burst {burst}: {got} in {secs:.2} s");
    assert!(
        got <= rate * secs + burst + 20.0,
        "{got} events in {secs:.2} s"
    );
    assert!(
        got >= rate * secs * 0.5,
        "far below the limit: {got} in {secs:.2} s"
    );
    assert!(wait_until(30, || rs.lines().len() >= n));
    let total = start.elapsed().as_secs_f64();
    assert!(
        total >= (n as f64 - burst) / rate * 0.9,
        "{n} events in {total:.2} s"
    );
    assert_eq!(agent.signal("-TERM"), Some(0));
}
