//! The audit chain with the real binary: `relstat audit verify` on a clean
//! store (stopped, and through the running agent's admin socket), on a
//! store whose history was edited in place (the sequence, key and time of
//! the row named, exit 1); `audit export` signed with the site key and
//! `audit verify --export --key` offline, a tampered export and a wrong key
//! refused; hostile files given to `verify --export`.

use std::path::Path;

use crate::util::*;

/// An agent with a site key whose store holds `n` history rows (run --once).
fn agent_with_history(keys: &Path, n: usize) -> Agent {
    let (key, _) = keygen(keys, "site");
    let a = Agent::new(&format!(
        "[spool]\nsigning_key_file = \"{}\"\n",
        key.display()
    ));
    append_lines(&a.log("deploy.log"), 1, n);
    let o = relstat(&["run", "--once", "-c", cfg(&a)]);
    assert!(o.status.success(), "{}", stderr(&o));
    a
}

/// Rewrites the history row with sequence `seq` in the stopped store: its
/// actor becomes `mallory`. Returns its release.
fn tamper(data_dir: &Path, seq: u64) -> String {
    const HISTORY: redb::TableDefinition<(&str, u64), &[u8]> =
        redb::TableDefinition::new("history");
    use redb::ReadableTable;
    let db = redb::Database::open(data_dir.join("relstat.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    let release;
    {
        let mut t = tx.open_table(HISTORY).unwrap();
        let (k, v) = t
            .iter()
            .unwrap()
            .map(|r| r.unwrap())
            .map(|(k, v)| (k.value().0.to_string(), v.value().to_vec()))
            .zip(t.iter().unwrap().map(|r| r.unwrap().0.value().1))
            .find(|(_, s)| *s == seq)
            .map(|((r, v), _)| (r, v))
            .expect("a row with that sequence");
        // the store's binary form (schema 8): decoded, edited, encoded again
        let mut row = relstat::track::codec::decode_history(&v).unwrap();
        row.event.actor = "mallory".into();
        let mut edited = Vec::new();
        relstat::track::codec::encode_history(&row, &mut edited);
        t.insert((k.as_str(), seq), edited.as_slice()).unwrap();
        release = k;
    }
    tx.commit().unwrap();
    release
}

#[test]
fn verify_passes_on_a_clean_store_and_names_the_row_edited_in_place() {
    let keys = tempfile::tempdir().unwrap();
    let mut a = agent_with_history(keys.path(), 20);
    let o = relstat(&["-c", cfg(&a), "audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("checkpoint: created at sequence 0"), "{out}");
    assert!(out.contains("rows: 20\n"), "{out}");
    assert!(out.contains("head: sequence 20 hash "), "{out}");
    // through the running agent's admin socket (the store is locked by it)
    a.start();
    let o = relstat(&["-c", cfg(&a), "audit", "verify", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["rows"], 20);
    assert_eq!(v["broken"], serde_json::Value::Null);
    assert_eq!(a.signal("-TERM"), Some(0));
    // an attacker edits row 7 of the stopped store
    let data = a.dir.path().join("data");
    let release = tamper(&data, 7);
    let o = relstat(&["-c", cfg(&a), "audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("breaks at sequence 7"), "{err}");
    assert!(err.contains(&format!("key {release}/")), "{err}");
    assert!(
        err.contains(&format!("recorded {}", &day_offset(0)[..4])),
        "{err}"
    );
    assert!(err.contains("edited"), "{err}");
}

#[test]
fn a_signed_export_verifies_offline_and_a_tampered_one_does_not() {
    let keys = tempfile::tempdir().unwrap();
    let a = agent_with_history(keys.path(), 12);
    let out = keys.path().join("audit.ndjson");
    let o = relstat(&[
        "-c",
        cfg(&a),
        "audit",
        "export",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exported 12 rows") && stderr(&o).contains("signed"),
        "{}",
        stderr(&o)
    );
    let public = keys.path().join("site.pub");
    let verify = |file: &Path, key: &Path| {
        relstat(&[
            "audit",
            "verify",
            "--export",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    };
    let o = verify(&out, &public);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("rows: 12\nsignature: valid"),
        "{}",
        stdout(&o)
    );
    // a row's actor rewritten
    let text = std::fs::read_to_string(&out).unwrap();
    let forged = keys.path().join("forged.ndjson");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines[5].contains("\"actor\":\""), "{}", lines[5]);
    lines[5] = lines[5].replacen("\"actor\":\"", "\"actor\":\"x", 1);
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let o = verify(&forged, &public);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 6 (sequence 5)") && stderr(&o).contains("edited"),
        "{}",
        stderr(&o)
    );
    // a row removed, the hashes left as they were
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.remove(3);
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let o = verify(&forged, &public);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("removed or moved"), "{}", stderr(&o));
    // another site's key
    let other = tempfile::tempdir().unwrap();
    let (_, other_pub) = keygen(other.path(), "site");
    let o = verify(&out, &other_pub);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("signature does not verify"),
        "{}",
        stderr(&o)
    );
    // a filtered export: only that environment's rows, still verifying
    let o = relstat(&[
        "-c",
        cfg(&a),
        "audit",
        "export",
        "--environment",
        "prod",
        "--since",
        &format!("{}T00:00:00Z", day_offset(-1)),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("exported 12 rows"), "{}", stderr(&o));
    assert!(verify(&out, &public).status.success());
}

#[test]
fn verify_export_refuses_hostile_files_with_a_clear_error_and_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "no end line"),
        (
            "garbage",
            b"\x00\xff garbage\n".to_vec(),
            "line 1: not a JSON object",
        ),
        (
            "not an export",
            b"{\"type\":\"header\",\"format\":\"other\"}\n".to_vec(),
            "format is not",
        ),
        (
            "row before header",
            b"{\"type\":\"row\"}\n".to_vec(),
            "first line is not the header",
        ),
        (
            "bad row",
            b"{\"type\":\"header\",\"format\":\"relstat-audit-export\",\"version\":1}\n\
              {\"type\":\"row\",\"sequence\":\"x\"}\n"
                .to_vec(),
            "line 2: a row needs",
        ),
        (
            "truncated",
            b"{\"type\":\"header\",\"format\":\"relstat-audit-export\",\"version\":1}\n".to_vec(),
            "truncated",
        ),
        // 128 MiB with no newline: refused after reading 1 MiB of it
        (
            "huge line",
            vec![b'a'; 128 * 1024 * 1024],
            "line 1: longer than 1048576 bytes",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join("x.ndjson");
        std::fs::write(&p, &bytes).unwrap();
        let (o, peak_kib) = relstat_peak(&["audit", "verify", "--export", p.to_str().unwrap()], 30);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{name}: {}", stderr(&o));
        assert!(peak_kib < 40 * 1024, "{name}: peak RSS {peak_kib} KiB");
    }
}

/// A real rsyslog receives `anchor` records in each format: the chain's
/// head sequence and hash, and the series follow.
#[test]
fn anchors_reach_a_real_rsyslog_in_every_format() {
    use crate::rsyslog::*;
    let Some((bin, _serial)) = rsyslogd() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path());
    let d = certs.path().display().to_string();
    for (format, want) in [
        ("rfc5424", "anchor [relstat@32473 rule=\"anchor\""),
        (
            "cef",
            "relstatRelstatAuditSequence=3 relstatRelstatAuditHash=",
        ),
        ("leef", "audit_sequence=3"),
        ("json", "\"audit_sequence\":3,"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "server.pem", "server.key"] {
            std::fs::copy(certs.path().join(f), dir.path().join(f)).unwrap();
        }
        let rs = Rsyslog::new(
            bin.clone(),
            dir.path(),
            Input::Tls {
                cert: "server",
                mtls: false,
            },
            false,
        );
        let mut a = Agent::new(&format!(
            "[tracking]\nanchor_interval = \"1s\"\n\n[siem]\ntransport = \"tls\"\n\
             address = \"127.0.0.1:{}\"\nca_file = \"{d}/ca.pem\"\nserver_name = \"localhost\"\n\
             format = \"{format}\"\n",
            rs.port
        ));
        append_lines(&a.log("a.log"), 1, 3);
        a.start();
        let anchored = |rs: &Rsyslog| {
            rs.lines()
                .into_iter()
                .find(|l| l.contains(want) && l.contains("audit") && l.contains('3'))
        };
        assert!(
            wait_until(40, || anchored(&rs).is_some()),
            "{format}: no anchor of sequence 3 received: {:#?}",
            rs.lines()
        );
        let line = anchored(&rs).unwrap();
        if format == "rfc5424" {
            assert!(line.starts_with("anchor\t"), "{line}");
            assert!(line.contains("\"audit_sequence\": \"3\""), "{line}");
            assert!(line.contains("\"audit_hash\": \""), "{line}");
        }
        // no hash in a label: the series are plain numbers
        let m = a.metrics();
        assert_eq!(sample(&m, "relstat_audit_sequence"), Some(3.0), "{format}");
        let at = sample(&m, "relstat_audit_last_anchor_timestamp_seconds").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            at > now - 120.0 && at <= now + 1.0,
            "{format}: {at} vs {now}"
        );
        assert_eq!(a.signal("-TERM"), Some(0));
    }
}

/// A site without a SIEM: its anchors wait in the spool and travel in a
/// bundle to the relay, whose outbox then holds them for its SIEM.
#[test]
fn anchors_travel_in_bundles_from_a_site_without_a_siem() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path(), "site");
    let trusted = keys.path().join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(&public, trusted.join("t.pub")).unwrap();
    let mut site = Agent::new(&format!(
        "[tracking]\nanchor_interval = \"1s\"\n\n[spool]\nenabled = true\n\
         signing_key_file = \"{}\"\n",
        key.display()
    ));
    append_lines(&site.log("a.log"), 1, 4);
    site.start();
    assert!(
        wait_until(30, || sample(&site.metrics(), "relstat_audit_sequence")
            == Some(4.0)
            && sample(
                &site.metrics(),
                "relstat_audit_last_anchor_timestamp_seconds"
            )
            .is_some_and(|t| t > 0.0)),
        "{}",
        site.metrics()
    );
    // one more tick: an anchor of the head with all four rows
    std::thread::sleep(std::time::Duration::from_secs(6));
    let bundle = keys.path().join("t.bundle");
    spool_export(&site, &bundle);
    assert_eq!(site.signal("-TERM"), Some(0));
    let relay = Agent::new(&format!(
        "[spool]\nenabled = true\ntrusted_keys_dir = \"{}\"\n",
        trusted.display()
    ));
    let o = spool_import(&relay, &bundle);
    assert!(o.status.success(), "{}", stderr(&o));
    let store = relstat::store::Store::open(&relay.dir.path().join("data")).unwrap();
    let anchors: Vec<_> = store
        .outbox_read(0, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.rule == "anchor")
        .collect();
    assert!(!anchors.is_empty(), "no anchor reached the relay");
    let last = anchors.last().unwrap();
    assert_eq!(last.audit_sequence, Some(4));
    assert_eq!(last.site, "t");
    assert_eq!(last.audit_hash.as_ref().map(String::len), Some(64));
    // the site's chain head, as the site's store says
    let head = relstat::store::Store::open(&site.dir.path().join("data"))
        .unwrap()
        .audit_head()
        .unwrap();
    assert_eq!(
        last.audit_hash.as_deref(),
        Some(relstat::store::audit::hex(&head.hash).as_str())
    );
}

/// The anchor interval runs on across restarts: the last anchor's time is
/// kept in the store, `relstat_audit_last_anchor_timestamp_seconds` shows
/// it from the start, and the next anchor comes one interval after it: not
/// at the start when the interval has not passed, at once when it has.
#[test]
fn the_anchor_interval_runs_on_across_restarts() {
    let mut a = Agent::new("[tracking]\nanchor_interval = \"1h\"\n\n[spool]\nenabled = true\n");
    let data = a.dir.path().join("data");
    let anchored_at = |at: i64| {
        let s = relstat::store::Store::open(&data).unwrap();
        s.audit_anchor(at, |h| relstat::store::audit::anchor_record(h, "h", "", at))
            .unwrap();
    };
    let last = |a: &Agent| sample(&a.metrics(), "relstat_audit_last_anchor_timestamp_seconds");
    let near = |x: Option<f64>, at: i64| x.is_some_and(|x| (x - at as f64 / 1000.0).abs() < 0.01);
    // 20 minutes ago: the next one is due in 40 minutes
    let t1 = relstat::event::now_ms() - 20 * 60_000;
    anchored_at(t1);
    a.start();
    assert!(wait_until(20, || near(last(&a), t1)), "{}", a.metrics());
    // a tick (5 s) later: still the same anchor
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(near(last(&a), t1), "{}", a.metrics());
    assert_eq!(a.signal("-TERM"), Some(0));
    // two hours ago: due at once, on the first tick
    let t2 = relstat::event::now_ms() - 2 * 3_600_000;
    anchored_at(t2);
    a.start();
    let now = relstat::event::now_ms();
    assert!(
        wait_until(20, || last(&a)
            .is_some_and(|x| x * 1000.0 >= now as f64 - 1000.0)),
        "{}",
        a.metrics()
    );
    assert_eq!(a.signal("-TERM"), Some(0));
    let s = relstat::store::Store::open(&data).unwrap();
    assert!(s.audit_last_anchor().unwrap().unwrap() >= now - 1000);
}
