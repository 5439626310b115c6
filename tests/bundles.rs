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

fn live_spool(a: &Agent) -> Value {
    let o = relstat(&["-c", cfg(a), "spool", "inspect", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `relstat keygen --out DIR/NAME`, the public key copied to
/// `trusted/SITE.pub`; the private key's path.
fn trusted_keygen(dir: &Path, name: &str, site: &str) -> PathBuf {
    let (key, public) = keygen(dir, name);
    let trusted = dir.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(public, trusted.join(format!("{site}.pub"))).unwrap();
    key
}

/// A `[siem]` that takes every transition (`forward = "all"`) to a closed
/// loopback port: the outbox keeps them all, to be counted or exported.
fn siem_forward_all_unreachable() -> String {
    format!(
        "[siem]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\nforward = \"all\"\n",
        free_port()
    )
}

/// A site agent that accumulated `n` records, and the bundle it exported
/// while running.
fn site_bundle(keys: &Path, n: usize) -> (Agent, PathBuf) {
    let key = trusted_keygen(keys, "site-t", "t");
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
    let o = spool_export(&a, &out);
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
    let o = spool_import(&relay, &bundle);
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
    let o = spool_import(&relay, &cut);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("damaged or truncated bundle"),
        "{}",
        stderr(&o)
    );
    assert_eq!(live_spool(&relay)["events"], 0);
    // A relay that trusts nobody.
    let lonely = Agent::new("[spool]\nenabled = true\n");
    let o = spool_import(&lonely, &bundle);
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
    let key = trusted_keygen(keys.path(), "site-a", "site-a");
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
    let o = spool_export(&a, &bundle);
    assert!(
        stderr(&o).contains(&format!("exported {want} events")),
        "{}",
        stderr(&o)
    );
    assert_eq!(a.signal("-TERM"), Some(0));

    // Relay B: its own site and host, a real rsyslog over TLS.
    let (certs, rs) = Rsyslog::tls(bin);
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
        let o = spool_import(&b, &bundle);
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
    let key = trusted_keygen(keys.path(), "site-a", "site-a");
    let start = (relstat::event::now_ms() / 60_000 - 12 * 60) * 60_000;
    let mut a = Agent::new(&format!(
        "[spool]\nsigning_key_file = \"{}\"\n\n{}",
        key.display(),
        siem_forward_all_unreachable()
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
    spool_export(&a, &bundle);
    assert_eq!(a.signal("-TERM"), Some(0));

    // Relays: a [siem] (unreachable, so the outbox can be counted), no sources.
    let relay = || {
        let b = Agent::new(&format!(
            "[spool]\ntrusted_keys_dir = \"{}\"\n\n{}",
            keys.path().join("trusted").display(),
            siem_forward_all_unreachable()
        ));
        set_site_and_host(&b, "relay", "relay-host");
        without_sources(&b);
        b
    };
    let import = |b: &Agent| {
        let o = spool_import(b, &bundle);
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

// --- Hostile bundles: refused with bounded memory ---------------------------

/// The size of every bomb's run of zeros.
const BOMB: u64 = 1 << 30;
/// How far above a normal small import's peak RSS a refusal may go.
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// A gzip member of `pieces`, each compressed once (ending with a full
/// flush, so that its copies do not refer to each other) and repeated: a
/// 1 GiB run of zeros costs compressing 1 MiB and takes about 1 MiB.
fn gzip(pieces: &[(&[u8], u64)]) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut crc = Crc::new();
    for (data, times) in pieces {
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::with_capacity(data.len() + 4096);
        for _ in 0..1000 {
            let taken = c.total_in() as usize;
            c.compress_vec(&data[taken..], &mut z, FlushCompress::Full)
                .unwrap();
            if c.total_in() as usize == data.len() && z.len() < z.capacity() {
                break;
            }
            z.reserve(64 * 1024);
        }
        let mut one = Crc::new();
        one.update(data);
        for _ in 0..*times {
            out.extend_from_slice(&z);
            crc.combine(&one);
        }
    }
    let mut c = Compress::new(Compression::default(), false);
    let mut z = Vec::with_capacity(64);
    c.compress_vec(&[], &mut z, FlushCompress::Finish).unwrap();
    out.extend_from_slice(&z);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

/// A ustar header block: `name`, declaring `size` bytes of type `kind`.
fn tar_header(name: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    // As written (set_path would turn GNU's "././@LongLink" into "@LongLink").
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A regular file entry: header, data, zero padding to the block.
fn tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = tar_header(name, data.len() as u64, tar::EntryType::Regular);
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// The tar's end-of-archive marker: two zero blocks.
const TAR_END: [u8; 1024] = [0; 1024];

/// A bundle's three entries, signed by the site key `key`.
struct Parts {
    manifest: Vec<u8>,
    sig: Vec<u8>,
    payload: Vec<u8>,
}

impl Parts {
    /// `n` records of site `t`, detected yesterday, under a fresh bundle id.
    fn good(key: &Path, n: usize) -> Parts {
        let day = 86_400_000;
        let t = relstat::event::now_ms() - day;
        let mut payload = Vec::new();
        for i in 0..n {
            payload.extend_from_slice(
                format!(
                    "{{\"rule\":\"stuck\",\"severity\":\"warning\",\"release\":\"r{i}\",\
                     \"service\":\"s\",\"environment\":\"prod\",\"site\":\"t\",\"to\":\"deployed\",\
                     \"actor\":\"a\",\"actor_type\":\"human\",\"source\":\"f\",\"event_id\":\"e{i}\",\
                     \"event_time\":{t},\"detected_at\":{},\"host\":\"h\",\"message\":\"m\"}}\n",
                    t + 1000
                )
                .as_bytes(),
            );
        }
        use sha2::Digest;
        let sha: String = sha2::Sha256::digest(&payload)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Parts::signed(key, payload.len() as u64, n as u64, sha, payload)
    }

    /// A manifest for a payload of `bytes` bytes, signed with `key`.
    fn signed(key: &Path, bytes: u64, count: u64, sha: String, payload: Vec<u8>) -> Parts {
        use base64::Engine;
        use ed25519_dalek::Signer;
        let m = relstat::spool::bundle::Manifest {
            format_version: 1,
            bundle_id: format!("{:032x}", fastrand::u128(..)),
            site: "t".into(),
            host: "h".into(),
            agent_version: "0.1.0".into(),
            first_seq: 1,
            last_seq: count,
            count,
            payload_bytes: bytes,
            payload_sha256: sha,
            created_at: relstat::event::format_rfc3339(relstat::event::now_ms()),
        };
        let manifest = serde_json::to_vec_pretty(&m).unwrap();
        let k = relstat::spool::keys::load_signing(key).unwrap();
        let sig = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(k.sign(&manifest).to_bytes())
        );
        Parts {
            manifest,
            sig: sig.into_bytes(),
            payload,
        }
    }

    /// manifest.json and manifest.sig as tar entries.
    fn head(&self) -> Vec<u8> {
        let mut v = tar_entry("manifest.json", &self.manifest);
        v.extend(tar_entry("manifest.sig", &self.sig));
        v
    }

    /// The whole tar, end marker included.
    fn tar(&self) -> Vec<u8> {
        let mut v = self.head();
        v.extend(tar_entry("events.ndjson", &self.payload));
        v.extend_from_slice(&TAR_END);
        v
    }
}

/// The bomb shapes: (name, file bytes, what the refusal must say, what it
/// says when the manifest's signature is not checked, if different).
fn bombs(key: &Path, good: &Parts) -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    let mib = vec![0u8; 1 << 20];
    let runs = BOMB >> 20;
    let zeros = (&mib[..], runs);
    let tar = good.tar();
    // A GNU long-name entry of 1 GiB before manifest.json.
    let longname = gzip(&[
        (
            &tar_header("././@LongLink", BOMB, tar::EntryType::GNULongName),
            1,
        ),
        zeros,
        (&tar, 1),
    ]);
    let manifest = gzip(&[
        (
            &tar_header("manifest.json", BOMB, tar::EntryType::Regular),
            1,
        ),
        zeros,
        (&TAR_END, 1),
    ]);
    // The real signed manifest of a bundle not imported, a 1 GiB payload.
    let mut head = good.head();
    head.extend(tar_header("events.ndjson", BOMB, tar::EntryType::Regular));
    let payload = gzip(&[(&head, 1), zeros, (&TAR_END, 1)]);
    // A manifest signed by the site's key for a 1 GiB payload of zeros.
    let big = Parts::signed(key, BOMB, 1, "0".repeat(64), Vec::new());
    let mut head = big.head();
    head.extend(tar_header("events.ndjson", BOMB, tar::EntryType::Regular));
    let signed = gzip(&[(&head, 1), zeros, (&TAR_END, 1)]);
    let mut member = gzip(&[(&tar, 1)]);
    member.extend(gzip(&[zeros]));
    let after_end = gzip(&[(&tar, 1), zeros, (b"x", 1)]);
    let mut garbage = gzip(&[(&tar, 1)]);
    garbage.extend_from_slice(b"trailing bytes");
    vec![
        (
            "GNU long-name entry of 1 GiB",
            longname,
            "expected the file manifest.json next, found \"././@LongLink\"",
            "",
        ),
        (
            "manifest.json entry of 1 GiB",
            manifest,
            "manifest.json is 1073741824 bytes, more than the 65536",
            "",
        ),
        (
            "1 GiB payload under a real signed manifest",
            payload,
            "events.ndjson is 1073741824 bytes in the archive, but the signed manifest says",
            "events.ndjson is 1073741824 bytes in the archive, but the unsigned manifest says",
        ),
        (
            "1 GiB payload under a manifest signed for it",
            signed,
            "malformed record at line 1 of events.ndjson: the line is longer than 1048576 bytes",
            "",
        ),
        (
            "1 GiB second gzip member",
            member,
            "a second gzip member",
            "",
        ),
        (
            "1 GiB after the tar's end",
            after_end,
            "more than 65536 bytes of zeros after the tar archive's end marker",
            "",
        ),
        (
            "data after the gzip stream",
            garbage,
            "data (14 bytes after the gzip stream's end",
            "",
        ),
    ]
}

/// At most 2,000 characters of a message (a refusal must not quote the bomb).
fn short(s: &str) -> String {
    let mut cut = s.len().min(2000);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ({} bytes)", &s[..cut], s.len())
}

#[test]
fn bomb_bundles_are_refused_by_import_and_inspect_with_bounded_memory() {
    let keys = tempfile::tempdir().unwrap();
    let key = trusted_keygen(keys.path(), "site-t", "t");
    let trusted = keys.path().join("trusted");
    let relay_cfg = format!(
        "[spool]\nenabled = true\ntrusted_keys_dir = \"{}\"\n",
        trusted.display()
    );
    let write = |name: &str, bytes: &[u8]| {
        let p = keys.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // The baseline: a normal small import (and inspect) into a stopped relay.
    let first = Parts::good(&key, 20);
    let first_path = write("first.bundle", &gzip(&[(&first.tar(), 1)]));
    let base_relay = Agent::new(&relay_cfg);
    let (o, import_base) = relstat_peak(
        &[
            "-c",
            cfg(&base_relay),
            "spool",
            "import",
            first_path.to_str().unwrap(),
        ],
        60,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (o, inspect_base) = relstat_peak(
        &[
            "-c",
            cfg(&base_relay),
            "spool",
            "inspect",
            first_path.to_str().unwrap(),
        ],
        60,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let base = import_base.max(inspect_base);
    eprintln!("baseline peak RSS: import {import_base} KiB, inspect {inspect_base} KiB");

    // Bombs built on a bundle no relay imported.
    let second = Parts::good(&key, 20);
    let relay = Agent::new(&relay_cfg);
    let untrusting = Agent::new("[spool]\nenabled = true\n");
    let made: Vec<_> = bombs(&key, &second)
        .into_iter()
        .enumerate()
        .map(|(i, (what, bytes, says, unsigned_says))| {
            (
                what,
                write(&format!("bomb-{i}.bundle"), &bytes),
                says,
                unsigned_says,
            )
        })
        .collect();
    for (what, path, says, unsigned_says) in &made {
        let (what, says, unsigned_says) = (*what, *says, *unsigned_says);
        let file = path.to_str().unwrap();
        for (agent, verb, says) in [
            (&relay, "import", says),
            (&relay, "inspect", says),
            (
                &untrusting,
                "inspect",
                if unsigned_says.is_empty() {
                    says
                } else {
                    unsigned_says
                },
            ),
        ] {
            let (o, peak) = relstat_peak(&["-c", cfg(agent), "spool", verb, file], 120);
            let said = stderr(&o);
            eprintln!("{what}: spool {verb}: peak RSS {peak} KiB");
            assert_eq!(o.status.code(), Some(1), "{what}: {verb}: {}", short(&said));
            assert!(said.contains(says), "{what}: {verb}: {}", short(&said));
            assert!(
                peak < base + RSS_SLACK_KIB,
                "{what}: spool {verb} peaked at {peak} KiB, the baseline is {base} KiB"
            );
        }
    }
    assert_eq!(live_spool(&relay)["events"], 0, "nothing imported");

    // A running relay: the import happens in the agent (admin socket).
    let mut running = Agent::new(&relay_cfg);
    running.start();
    let o = spool_import(&running, &first_path);
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = running.pid();
    let before = vm_hwm(pid).unwrap();
    for (what, path, says, _) in &made {
        let o = spool_import(&running, path);
        let said = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", short(&said));
        assert!(said.contains(says), "{what}: {}", short(&said));
        let peak = vm_hwm(pid).expect("the relay still runs");
        eprintln!("{what}: running relay's peak RSS {peak} KiB (before the bombs {before} KiB)");
        assert!(
            peak < before + RSS_SLACK_KIB,
            "{what}: the running relay peaked at {peak} KiB, {before} KiB before"
        );
    }
    assert_eq!(live_spool(&running)["events"], 20, "only the good bundle");
    assert_eq!(running.signal("-TERM"), Some(0));
}

#[test]
fn the_admin_socket_refuses_a_request_line_over_its_cap_with_bounded_memory() {
    use std::io::{BufRead, Write};
    let mut relay = Agent::new("[spool]\nenabled = true\n");
    relay.start();
    let pid = relay.pid();
    let before = vm_hwm(pid).unwrap();
    let sock = relay.dir.path().join("data").join("admin.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_write_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // 256 MiB without a newline, until the agent stops reading.
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent < 256 && s.write_all(&chunk).is_ok() {
        sent += 1;
    }
    let mut answer = String::new();
    std::io::BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(
        answer.contains("bad request: longer than 1048576 bytes"),
        "after {sent} MiB: {answer}"
    );
    assert!(sent < 256, "the agent read all 256 MiB");
    let peak = vm_hwm(pid).unwrap();
    eprintln!("admin socket: {sent} MiB sent, peak RSS {before} -> {peak} KiB");
    assert!(peak < before + RSS_SLACK_KIB, "{before} -> {peak} KiB");
    // The agent still answers.
    assert_eq!(live_spool(&relay)["events"], 0);
    assert_eq!(relay.signal("-TERM"), Some(0));
}

// --- Rollups across sites, and skipped_stage judged by the relay -------------

/// JSON lines of (release, environment, status, minutes after `start`,
/// version) for service `api`, at the agent's own site.
fn promotion_lines(path: &Path, start_ms: i64, lines: &[(&str, &str, &str, i64, &str)]) {
    let mut buf = String::new();
    for (release, env, status, min, version) in lines {
        let t = relstat::event::format_rfc3339(start_ms + min * 60_000);
        buf.push_str(&format!(
            "{{\"time\":\"{t}\",\"release\":\"{release}\",\"service\":\"api\",\
             \"environment\":\"{env}\",\"status\":\"{status}\",\"actor\":\"deploy-bot\",\
             \"version\":\"{version}\"}}\n"
        ));
    }
    std::fs::write(path, buf).unwrap();
}

const PROMOTION: &str = "[model.promotion]\norder = [\"staging\", \"prod\"]\n\n\
    [rollups.environments.prod]\nservices = [\"api\"]\nsites = [\"oslo\", \"zurich\"]\n";

/// The `prod` rollup of `release` from the API: (status, complete).
fn prod_rollup(a: &Agent, release: &str) -> (String, bool) {
    let (status, body) = http_get(a.port, &format!("/api/v1/releases/{release}/rollup")).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let r = v["rollups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["environment"] == "prod")
        .unwrap_or_else(|| panic!("no prod rollup: {v}"))
        .clone();
    (
        r["status"].as_str().unwrap().to_string(),
        r["complete"].as_bool().unwrap(),
    )
}

#[test]
fn a_rollup_completes_when_the_air_gapped_sites_bundle_arrives_and_the_relay_judges_stages_alike() {
    let keys = tempfile::tempdir().unwrap();
    let key = trusted_keygen(keys.path(), "oslo", "oslo");
    let start = (relstat::event::now_ms() / 60_000 - 3 * 60) * 60_000;
    // Oslo, air-gapped: r1 promoted cleanly, r2 (2.0) straight to prod.
    let mut oslo = Agent::new(&format!(
        "[spool]\nsigning_key_file = \"{}\"\n\n{}\n{PROMOTION}",
        key.display(),
        siem_forward_all_unreachable()
    ));
    set_site_and_host(&oslo, "oslo", "host-oslo");
    let oslo_lines = [
        ("r1", "staging", "deployed", 0, "1.4"),
        ("r1", "prod", "in_progress", 10, "1.4"),
        ("r1", "prod", "deployed", 20, "1.4"),
        ("r1", "prod", "complete", 30, "1.4"),
        ("r2", "prod", "deployed", 40, "2.0"),
    ];
    promotion_lines(&oslo.log("deploy.log"), start, &oslo_lines);
    // r3 (3.0) straight to prod too, on the emergency path.
    let mut text = std::fs::read_to_string(oslo.log("deploy.log")).unwrap();
    text.push_str(&format!(
        "{{\"time\":\"{}\",\"release\":\"r3\",\"service\":\"api\",\"environment\":\"prod\",\
         \"status\":\"deployed\",\"actor\":\"oncall\",\"version\":\"3.0\",\
         \"change_class\":\"emergency\",\"reason\":\"INC-7\"}}\n",
        relstat::event::format_rfc3339(start + 50 * 60_000)
    ));
    std::fs::write(oslo.log("deploy.log"), text).unwrap();
    oslo.start();
    // Six transition records, the skipped_stage and the emergency_change.
    assert!(
        wait_until(20, || live_spool(&oslo)["events"] == 8),
        "oslo's outbox: {}",
        live_spool(&oslo)
    );
    let skipped =
        r#"relstat_anomalies_total{environment="prod",rule="skipped_stage",severity="warning"}"#;
    let emergency =
        r#"relstat_anomalies_total{environment="prod",rule="emergency_change",severity="notice"}"#;
    let m = oslo.metrics();
    assert_eq!(sample(&m, skipped), Some(1.0), "{m}");
    assert_eq!(sample(&m, emergency), Some(1.0), "{m}");
    let bundle = keys.path().join("oslo.bundle");
    spool_export(&oslo, &bundle);
    assert_eq!(oslo.signal("-TERM"), Some(0));

    // Zurich, the relay: its own r1, promoted cleanly.
    let mut zurich = Agent::new(&format!(
        "[spool]\ntrusted_keys_dir = \"{}\"\n\n{}\n{PROMOTION}",
        keys.path().join("trusted").display(),
        siem_forward_all_unreachable()
    ));
    set_site_and_host(&zurich, "zurich", "host-zurich");
    promotion_lines(
        &zurich.log("deploy.log"),
        start,
        &[
            ("r1", "staging", "deployed", 0, "1.4"),
            ("r1", "prod", "deployed", 25, "1.4"),
            ("r1", "prod", "complete", 35, "1.4"),
        ],
    );
    zurich.start();
    assert!(
        wait_until(20, || prod_rollup(&zurich, "r1")
            == ("missing".into(), false)),
        "before the bundle, oslo's r1 is missing: {:?}",
        prod_rollup(&zurich, "r1")
    );
    let rollup_series = |m: &str, status: &str| {
        sample(
            m,
            &format!(
                r#"relstat_release_rollup_status{{environment="prod",release="r1",status="{status}"}}"#
            ),
        )
    };
    assert!(
        wait_until(20, || rollup_series(&zurich.metrics(), "missing")
            == Some(1.0)),
        "{}",
        zurich.metrics()
    );
    assert_eq!(
        sample(&zurich.metrics(), skipped),
        None,
        "zurich promoted cleanly"
    );

    let o = spool_import(&zurich, &bundle);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(prod_rollup(&zurich, "r1"), ("complete".into(), true));
    // Freshness of what the relay knows about oslo.
    let m = zurich.metrics();
    let synced = sample(
        &m,
        r#"relstat_site_last_sync_timestamp_seconds{site="oslo"}"#,
    )
    .unwrap_or_else(|| panic!("no sync time for oslo: {m}"));
    assert!(
        (synced * 1000.0 - relstat::event::now_ms() as f64).abs() < 60_000.0,
        "{synced}"
    );
    assert_eq!(
        sample(
            &m,
            r#"relstat_site_newest_event_timestamp_seconds{site="oslo"}"#
        ),
        Some((start + 50 * 60_000) as f64 / 1000.0)
    );
    // Six events, all recorded more than an hour after they happened.
    assert_eq!(
        sample(
            &m,
            r#"relstat_event_delay_seconds_count{site="oslo",source="f"}"#
        ),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"relstat_event_delay_seconds_bucket{site="oslo",source="f",le="3600"}"#
        ),
        Some(0.0),
        "{m}"
    );
    assert!(
        wait_until(20, || {
            let m = zurich.metrics();
            rollup_series(&m, "complete") == Some(2.0) && rollup_series(&m, "missing").is_none()
        }),
        "{}",
        zurich.metrics()
    );
    // r2 reached prod only at oslo: expected at zurich too.
    assert_eq!(prod_rollup(&zurich, "r2"), ("missing".into(), false));
    // The relay judged oslo's r2 as oslo did, oslo's clean r1 as clean, and
    // r3's skip as excused by the emergency path (its change_class came
    // with the transition record).
    let m = zurich.metrics();
    assert_eq!(sample(&m, skipped), Some(1.0), "{m}");
    assert_eq!(sample(&m, emergency), Some(1.0), "{m}");
    for (release, rule) in [("r2", "skipped_stage"), ("r3", "emergency_change")] {
        let (status, body) =
            http_get(zurich.port, &format!("/api/v1/releases/{release}/history")).unwrap();
        assert_eq!(status, 200, "{body}");
        let h: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            h["events"][0]["anomalies"],
            serde_json::json!([rule]),
            "{h}"
        );
        assert_eq!(h["events"][0]["site"], "oslo", "{h}");
    }
    assert_eq!(zurich.signal("-TERM"), Some(0));
}

/// `relstat:release_rollup_targets:count` of (r1, prod) from Prometheus:
/// status -> targets.
fn fleet_rollup(port: u16) -> BTreeMap<String, u64> {
    let q = "relstat%3Arelease_rollup_targets%3Acount%7Brelease%3D%22r1%22%2Cenvironment%3D%22prod%22%7D";
    let body = http_get(port, &format!("/api/v1/query?query={q}"))
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    let status = r["metric"]["status"].as_str()?.to_string();
                    let n = r["value"][1].as_str()?.parse().ok()?;
                    Some((status, n))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_fleet_recording_rules_give_the_relays_rollup_on_a_real_prometheus() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let key = trusted_keygen(keys.path(), "oslo", "oslo");
    let start = (relstat::event::now_ms() / 60_000 - 3 * 60) * 60_000;
    let mut oslo = Agent::new(&format!(
        "[spool]\nsigning_key_file = \"{}\"\n\n{}",
        key.display(),
        siem_forward_all_unreachable()
    ));
    set_site_and_host(&oslo, "oslo", "host-oslo");
    promotion_lines(
        &oslo.log("deploy.log"),
        start,
        &[
            ("r1", "prod", "deployed", 20, "1.4"),
            ("r1", "prod", "complete", 30, "1.4"),
        ],
    );
    oslo.start();
    assert!(wait_until(20, || live_spool(&oslo)["events"] == 2));
    let bundle = keys.path().join("oslo.bundle");
    spool_export(&oslo, &bundle);

    // Zurich, the relay: its own r1 deployed, oslo's imported.
    let mut zurich = Agent::new(&format!(
        "[spool]\ntrusted_keys_dir = \"{}\"\n",
        keys.path().join("trusted").display(),
    ));
    set_site_and_host(&zurich, "zurich", "host-zurich");
    promotion_lines(
        &zurich.log("deploy.log"),
        start,
        &[("r1", "prod", "deployed", 25, "1.4")],
    );
    zurich.start();
    let o = spool_import(&zurich, &bundle);
    assert!(o.status.success(), "{}", stderr(&o));
    let (status, body) = http_get(zurich.port, "/api/v1/releases/r1/rollup").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let relay: BTreeMap<String, u64> = v["rollups"][0]["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    assert_eq!(
        relay,
        BTreeMap::from([("complete".to_string(), 1), ("deployed".to_string(), 1)]),
        "{v}"
    );

    // Prometheus scrapes both agents (oslo's key is on both: counted once).
    let prom = Prometheus::start_many(
        &prometheus,
        &[oslo.port, zurich.port],
        &[root().join("alerts").join("relstat.rules.yml")],
    );
    let mut last = BTreeMap::new();
    assert!(
        wait_until(60, || {
            last = fleet_rollup(prom.port);
            last == relay
        }),
        "the fleet rule gave {last:?}, the relay {relay:?}"
    );
    drop(prom);
    assert_eq!(oslo.signal("-TERM"), Some(0));
    assert_eq!(zurich.signal("-TERM"), Some(0));
}
