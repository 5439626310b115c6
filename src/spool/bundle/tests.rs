//! Bundles end to end on real files and stores: round trip, every kind of
//! refusal (nothing imported, the message says which), idempotency.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::{Severity, WhenFull};
use crate::event::ActorType;
use crate::track::Batch;

fn record(i: u64, rule: &str) -> Anomaly {
    Anomaly {
        rule: rule.into(),
        severity: Severity::Warning,
        release: format!("r{i}"),
        service: "svc".into(),
        environment: "production".into(),
        site: "dc-a".into(),
        from: Some("in_progress".into()),
        to: "deployed".into(),
        actor: "bot".into(),
        actor_type: ActorType::Automation,
        source: "deploy-log".into(),
        event_id: format!("ev-{i}"),
        event_time: 1_700_000_000_000 + i as i64,
        detected_at: 1_700_000_001_000 + i as i64,
        reason: Some("line one\nline two \"quoted\"".into()),
        version: Some("1.2.3".into()),
        commit: None,
        change_class: None,
        approver: None,
        decision: None,
        audit_sequence: None,
        audit_hash: None,
        host: "host-a".into(),
        message: format!("r{i} moved"),
    }
}

fn enqueue(store: &Store, recs: Vec<Anomaly>) {
    let b = Batch {
        outbox: recs,
        ..Default::default()
    };
    store.commit(&b, &[], &Default::default()).unwrap();
}

fn outbox(store: &Store) -> Vec<Anomaly> {
    store
        .outbox_read(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// Two sites (dc-a, dc-b) with key pairs, a relay trusting both.
struct World {
    dir: tempfile::TempDir,
    a: Settings,
    b: Settings,
    relay: Settings,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let trusted = dir.path().join("trusted");
        std::fs::create_dir(&trusted).unwrap();
        let site = |name: &str| {
            let (k, p) = keys::generate(&dir.path().join(name)).unwrap();
            std::fs::copy(&p, trusted.join(format!("{name}.pub"))).unwrap();
            Settings {
                site: name.into(),
                host: format!("host-{name}"),
                signing_key_file: Some(k),
                ..Settings::default()
            }
        };
        let a = site("dc-a");
        let b = site("dc-b");
        let relay = Settings {
            site: "central".into(),
            host: "relay".into(),
            trusted_keys_dir: Some(trusted),
            ..Settings::default()
        };
        World { dir, a, b, relay }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A site store with `n` records, exported (kept) to `name`.
    fn bundle(&self, name: &str, n: u64) -> PathBuf {
        let store = Store::in_memory().unwrap();
        enqueue(&store, (0..n).map(|i| record(i, "stuck")).collect());
        let out = self.path(name);
        export(&store, &self.a, &out, true, false).unwrap();
        out
    }
}

/// Unpacks a bundle into its three entries (name, bytes).
fn unpack(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            (name, v)
        })
        .collect()
}

/// Packs entries into a bundle file, as an attacker with tar and gzip would.
fn pack(path: &Path, entries: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::default(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, name, &data[..]).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
}

fn sign(key_file: &Path, manifest: &[u8]) -> Vec<u8> {
    let k = keys::load_signing(key_file).unwrap();
    format!("{}\n", STANDARD.encode(k.sign(manifest).to_bytes())).into_bytes()
}

/// Imports `path` into a fresh relay store; on refusal asserts nothing was
/// imported and returns the message.
fn refused(w: &World, path: &Path) -> String {
    let relay = Store::in_memory().unwrap();
    let e = import(&relay, &w.relay, &[path.to_path_buf()], false)
        .expect_err("the bundle must be refused")
        .to_string();
    assert_eq!(relay.outbox_stats().unwrap().events, 0, "{e}");
    e
}

#[test]
fn export_then_import_carries_every_record_unchanged_and_empties_the_site_outbox() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    let recs: Vec<Anomaly> = (0..25_003).map(|i| record(i, "stuck")).collect();
    enqueue(&site, recs.clone());
    let out = w.path("a.bundle");
    let r = export(&site, &w.a, &out, false, false).unwrap();
    assert_eq!(r.manifest.count, 25_003);
    assert_eq!((r.manifest.first_seq, r.manifest.last_seq), (1, 25_003));
    assert_eq!(r.removed, 25_003);
    assert_eq!(site.outbox_stats().unwrap(), Default::default());
    assert!(!w.path("a.bundle.tmp").exists());

    let names: Vec<String> = unpack(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["manifest.json", "manifest.sig", "events.ndjson"]);

    let i = inspect(&out, w.relay.trusted_keys_dir.as_deref()).unwrap();
    assert!(matches!(i.signature, SignatureStatus::Valid { .. }));
    assert_eq!(i.manifest.host, "host-dc-a");

    let relay = Store::in_memory().unwrap();
    let reps = import(&relay, &w.relay, &[out], false).unwrap();
    assert_eq!((reps[0].enqueued, reps[0].duplicates), (25_003, 0));
    assert_eq!(outbox(&relay), recs);
}

#[test]
fn keep_leaves_the_outbox_and_an_empty_outbox_exports_nothing() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    let e = export(&site, &w.a, &w.path("x"), false, false).unwrap_err();
    assert!(matches!(e, BundleError::Empty), "{e}");
    assert!(!w.path("x").exists() && !w.path("x.tmp").exists());
    enqueue(&site, vec![record(1, "stuck")]);
    let r = export(&site, &w.a, &w.path("x"), true, false).unwrap();
    assert_eq!(r.removed, 0);
    assert_eq!(site.outbox_stats().unwrap().events, 1);
}

#[test]
fn export_refuses_without_a_site_or_a_key_and_names_the_setting() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    enqueue(&site, vec![record(1, "stuck")]);
    let mut s = w.a.clone();
    s.signing_key_file = None;
    let e = export(&site, &s, &w.path("x"), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("signing_key_file") && e.contains("relstat keygen"),
        "{e}"
    );
    s = w.a.clone();
    s.site = String::new();
    let e = export(&site, &s, &w.path("x"), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[agent] site"), "{e}");
    assert_eq!(site.outbox_stats().unwrap().events, 1);
}

#[test]
fn a_flipped_payload_byte_is_a_checksum_mismatch() {
    let w = World::new();
    let out = w.bundle("a", 10);
    let mut e = unpack(&out);
    let p = &mut e[2].1;
    let at = p.iter().position(|&b| b == b'7').unwrap();
    p[at] = b'8';
    pack(&out, &e);
    let msg = refused(&w, &out);
    assert!(msg.contains("payload checksum mismatch"), "{msg}");
}

#[test]
fn a_flipped_manifest_byte_is_a_bad_signature() {
    let w = World::new();
    let out = w.bundle("a", 10);
    let mut e = unpack(&out);
    let text = String::from_utf8(e[0].1.clone()).unwrap();
    e[0].1 = text.replace("\"count\": 10", "\"count\": 11").into_bytes();
    assert_ne!(e[0].1, text.as_bytes());
    pack(&out, &e);
    let msg = refused(&w, &out);
    assert!(
        msg.contains("bad signature") && msg.contains("not signed by site \"dc-a\""),
        "{msg}"
    );
}

#[test]
fn a_truncated_or_damaged_file_is_refused_as_damaged() {
    let w = World::new();
    let out = w.bundle("a", 2_000);
    let bytes = std::fs::read(&out).unwrap();
    for cut in [bytes.len() - 5, bytes.len() / 2, 200] {
        let t = w.path("cut");
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let msg = refused(&w, &t);
        assert!(msg.contains("damaged or truncated"), "cut {cut}: {msg}");
    }
    // One raw byte flipped inside the compressed stream.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let t = w.path("flipped");
    std::fs::write(&t, &flipped).unwrap();
    let msg = refused(&w, &t);
    assert!(
        msg.contains("damaged") || msg.contains("checksum") || msg.contains("not a relstat"),
        "{msg}"
    );
    let t = w.path("junk");
    std::fs::write(&t, b"hello, not a bundle").unwrap();
    let msg = refused(&w, &t);
    assert!(msg.contains("not a relstat bundle"), "{msg}");
}

#[test]
fn an_untrusted_key_is_refused() {
    let w = World::new();
    // A key pair nobody trusts signs a bundle that claims dc-a.
    let (rogue, _) = keys::generate(&w.path("rogue")).unwrap();
    let out = w.bundle("a", 3);
    let mut e = unpack(&out);
    e[1].1 = sign(&rogue, &e[0].1);
    pack(&out, &e);
    let msg = refused(&w, &out);
    assert!(
        msg.contains("bad signature") && msg.contains("untrusted key"),
        "{msg}"
    );

    // A site without a .pub in trusted_keys_dir.
    let site = Store::in_memory().unwrap();
    enqueue(&site, vec![record(1, "stuck")]);
    let s = Settings {
        site: "dc-unknown".into(),
        signing_key_file: Some(rogue),
        ..w.a.clone()
    };
    let out = w.path("u");
    export(&site, &s, &out, true, false).unwrap();
    let msg = refused(&w, &out);
    assert!(msg.contains("untrusted site \"dc-unknown\""), "{msg}");
}

#[test]
fn one_site_key_cannot_sign_another_sites_bundle() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    enqueue(&site, vec![record(1, "stuck")]);
    // dc-a's key, manifest says dc-b.
    let s = Settings {
        signing_key_file: w.a.signing_key_file.clone(),
        ..w.b.clone()
    };
    let out = w.path("forged");
    export(&site, &s, &out, true, false).unwrap();
    let msg = refused(&w, &out);
    assert!(
        msg.contains("manifest says site \"dc-b\"") && msg.contains("key of site \"dc-a\""),
        "{msg}"
    );
}

#[test]
fn an_unknown_format_version_is_refused_even_when_signed() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let mut e = unpack(&out);
    let text = String::from_utf8(e[0].1.clone()).unwrap();
    e[0].1 = text
        .replace("\"format_version\": 1", "\"format_version\": 2")
        .into_bytes();
    e[1].1 = sign(w.a.signing_key_file.as_ref().unwrap(), &e[0].1);
    pack(&out, &e);
    let msg = refused(&w, &out);
    assert!(msg.contains("unknown bundle format version 2"), "{msg}");
}

/// A crash of the `bundle_reader` fuzz target (on a crafted input, see
/// fuzz/CAMPAIGN.md): from 4,096 records on, the progress position (records
/// read x payload_bytes / count) overflowed u64 and panicked (debug builds)
/// on a manifest claiming a huge payload_bytes.
#[test]
fn a_huge_payload_bytes_in_the_manifest_is_a_size_mismatch_not_an_overflow_panic() {
    let w = World::new();
    let out = w.bundle("a", 4096);
    let mut e = unpack(&out);
    let mut m: serde_json::Value = serde_json::from_slice(&e[0].1).unwrap();
    m["payload_bytes"] = serde_json::json!(u64::MAX / 2);
    e[0].1 = serde_json::to_vec_pretty(&m).unwrap();
    e[1].1 = sign(w.a.signing_key_file.as_ref().unwrap(), &e[0].1);
    pack(&out, &e);
    // The entry's size is checked against the manifest before it is read.
    let msg = inspect(&out, None).unwrap_err().to_string();
    assert!(
        msg.contains("the unsigned manifest says 9223372036854775807"),
        "{msg}"
    );
    let msg = refused(&w, &out);
    assert!(msg.contains("manifest says 9223372036854775807"), "{msg}");
}

#[test]
fn extra_or_reordered_entries_are_not_a_bundle() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let e = unpack(&out);
    let mut extra = e.clone();
    extra.push(("evil.sh".into(), b"rm -rf /".to_vec()));
    pack(&out, &extra);
    assert!(refused(&w, &out).contains("unexpected entry \"evil.sh\""));
    let swapped = vec![e[1].clone(), e[0].clone(), e[2].clone()];
    pack(&out, &swapped);
    assert!(refused(&w, &out).contains("expected the file manifest.json"));
}

#[test]
fn a_tmp_file_never_imports() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let tmp = w.path("a.tmp");
    std::fs::copy(&out, &tmp).unwrap();
    assert!(refused(&w, &tmp).contains("did not finish"));
}

#[test]
fn one_bad_bundle_among_several_imports_nothing() {
    let w = World::new();
    let good = w.bundle("good", 5);
    let bad = w.path("bad");
    std::fs::write(&bad, b"\x1f\x8b garbage").unwrap();
    let relay = Store::in_memory().unwrap();
    assert!(import(&relay, &w.relay, &[good, bad], false).is_err());
    assert_eq!(relay.outbox_stats().unwrap().events, 0);
}

#[test]
fn the_same_bundle_twice_and_overlapping_bundles_forward_each_record_once() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    // Same event id under two rules: two records, both must arrive.
    enqueue(
        &site,
        vec![
            record(1, "stuck"),
            record(1, "flapping"),
            record(2, "stuck"),
        ],
    );
    let first = w.path("first");
    export(&site, &w.a, &first, true, false).unwrap();
    enqueue(&site, vec![record(3, "stuck")]);
    let second = w.path("second"); // overlaps: 1/stuck, 1/flapping, 2 again, plus 3
    export(&site, &w.a, &second, true, false).unwrap();

    let relay = Store::in_memory().unwrap();
    let r = import(&relay, &w.relay, std::slice::from_ref(&first), false).unwrap();
    assert_eq!((r[0].enqueued, r[0].duplicates), (3, 0));
    let r = import(&relay, &w.relay, std::slice::from_ref(&first), false).unwrap();
    assert!(r[0].already_imported_at.is_some());
    assert_eq!(r[0].enqueued, 0);
    let r = import(&relay, &w.relay, &[second.clone(), second], false).unwrap();
    assert_eq!((r[0].enqueued, r[0].duplicates), (1, 3));
    assert!(r[1].already_imported_at.is_some());
    let ids: Vec<(String, String)> = outbox(&relay)
        .into_iter()
        .map(|r| (r.event_id, r.rule))
        .collect();
    assert_eq!(
        ids,
        [
            ("ev-1", "stuck"),
            ("ev-1", "flapping"),
            ("ev-2", "stuck"),
            ("ev-3", "stuck")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Delivered and gone from the relay's outbox, the records still count as
    // imported: a re-export of the same events months later adds nothing.
    relay.outbox_remove(u64::MAX).unwrap();
    let third = w.path("third");
    export(&site, &w.a, &third, false, false).unwrap();
    let r = import(&relay, &w.relay, &[third], false).unwrap();
    assert_eq!((r[0].enqueued, r[0].duplicates), (0, 4));
    assert_eq!(relay.outbox_stats().unwrap().events, 0);
}

#[test]
fn an_interrupted_import_resumes_without_duplicates() {
    let w = World::new();
    let out = w.bundle("a", (CHUNK * 2 + 7) as u64);
    let m = inspect(&out, None).unwrap().manifest;
    let relay = Store::in_memory().unwrap();
    // The first chunk committed, then a crash: no ledger row yet.
    let first: Vec<Anomaly> = (0..CHUNK as u64).map(|i| record(i, "stuck")).collect();
    relay.import_chunk(&first, 0, None, None, None).unwrap();
    assert!(relay.imported_bundle(&m.bundle_id).unwrap().is_none());
    let r = import(&relay, &w.relay, &[out], false).unwrap();
    assert_eq!(
        (r[0].enqueued, r[0].duplicates),
        (CHUNK as u64 + 7, CHUNK as u64)
    );
    assert_eq!(relay.outbox_stats().unwrap().events, m.count);
    assert!(relay.imported_bundle(&m.bundle_id).unwrap().is_some());
}

#[test]
fn a_store_on_disk_keeps_the_ledger_across_reopening() {
    let w = World::new();
    let out = w.bundle("a", 4);
    let data = w.path("relay-data");
    {
        let relay = Store::open(&data).unwrap();
        import(&relay, &w.relay, std::slice::from_ref(&out), false).unwrap();
        relay.outbox_remove(u64::MAX).unwrap();
    }
    let relay = Store::open(&data).unwrap();
    let r = import(&relay, &w.relay, &[out], false).unwrap();
    assert!(r[0].already_imported_at.is_some());
    assert_eq!(relay.outbox_stats().unwrap().events, 0);
}

/// The outbox bytes of `n` records like [`record`]'s.
fn bytes_of(n: u64) -> u64 {
    (0..n)
        .map(|i| serde_json::to_vec(&record(i, "stuck")).unwrap().len() as u64)
        .sum()
}

fn limited(w: &World, max: u64, when_full: WhenFull) -> Settings {
    Settings {
        limit: Some((max, when_full)),
        ..w.relay.clone()
    }
}

#[test]
fn block_stops_at_max_bytes_and_running_again_imports_the_rest_exactly_once() {
    let w = World::new();
    let out = w.bundle("a", 50);
    let m = inspect(&out, None).unwrap().manifest;
    let relay = Store::in_memory().unwrap();
    // Room for 20 records (record sizes differ by a digit or two).
    let settings = limited(&w, bytes_of(20), WhenFull::Block);
    let mut delivered: Vec<String> = Vec::new();
    let mut runs = 0;
    let report = loop {
        runs += 1;
        assert!(runs < 10, "the import never finished");
        match import(&relay, &settings, std::slice::from_ref(&out), false) {
            Ok(r) => break r,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    matches!(e, BundleError::SpoolFull { count: 50, .. }),
                    "{msg}"
                );
                assert!(
                    msg.contains("the spool is full") && msg.contains("run the same import again"),
                    "{msg}"
                );
                assert!(relay.imported_bundle(&m.bundle_id).unwrap().is_none());
                let stats = relay.outbox_stats().unwrap();
                assert!(stats.bytes <= bytes_of(20), "{stats:?}");
                assert!(stats.events >= 18, "{stats:?}");
            }
        }
        // The SIEM drains the spool.
        delivered.extend(outbox(&relay).into_iter().map(|r| r.event_id));
        relay.outbox_remove(u64::MAX).unwrap();
    };
    assert_eq!(runs, 3, "20 + 19 + 11 records");
    assert_eq!(report[0].enqueued + report[0].duplicates, 50);
    delivered.extend(outbox(&relay).into_iter().map(|r| r.event_id));
    delivered.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("ev-{i}")).collect();
    want.sort();
    assert_eq!(delivered, want, "every record once");
    assert!(relay.imported_bundle(&m.bundle_id).unwrap().is_some());
    // A full spool from the start: nothing imported, the same message.
    let full = Store::in_memory().unwrap();
    enqueue(&full, (100..125).map(|i| record(i, "stuck")).collect());
    let e = import(&full, &settings, &[out], false).unwrap_err();
    assert!(
        matches!(e, BundleError::SpoolFull { imported: 0, .. }),
        "{e}"
    );
    assert_eq!(full.outbox_stats().unwrap().events, 25);
}

#[test]
fn drop_oldest_imports_everything_then_drops_the_oldest_and_counts_them() {
    let w = World::new();
    let out = w.bundle("a", 50);
    let relay = Store::in_memory().unwrap();
    let settings = limited(&w, bytes_of(20), WhenFull::DropOldest);
    let r = import(&relay, &settings, std::slice::from_ref(&out), false).unwrap();
    assert_eq!(r[0].enqueued, 50);
    let kept = outbox(&relay);
    assert_eq!(r[0].dropped + kept.len() as u64, 50);
    assert!(r[0].dropped >= 30, "{}", r[0].dropped);
    assert_eq!(kept.last().unwrap().event_id, "ev-49", "the newest stay");
    assert!(relay.outbox_stats().unwrap().bytes <= bytes_of(20));
    // Counted in the dropped ledger, reported as one SIEM event later.
    let mut seen = 0;
    relay
        .outbox_take_dropped(true, |l| {
            seen = l.count;
            record(999, "dropped")
        })
        .unwrap();
    assert_eq!(seen, r[0].dropped);
    // The bundle is imported: dropped records do not come back.
    let r = import(&relay, &settings, &[out], false).unwrap();
    assert!(r[0].already_imported_at.is_some());
}

#[test]
fn a_known_bundle_is_recognised_after_its_signature_without_reading_the_payload() {
    let w = World::new();
    let out = w.bundle("a", 5);
    let relay = Store::in_memory().unwrap();
    import(&relay, &w.relay, std::slice::from_ref(&out), false).unwrap();
    // Same signed manifest, payload damaged: not read, already imported.
    let mut entries = unpack(&out);
    entries[2].1[3] ^= 0x20;
    let copy = w.path("copy");
    pack(&copy, &entries);
    let r = import(&relay, &w.relay, &[copy], false).unwrap();
    assert!(r[0].already_imported_at.is_some());
    assert_eq!(r[0].enqueued, 0);
    // A manifest reusing the id, altered: the signature refuses it first.
    let mut forged = unpack(&out);
    let text = String::from_utf8(forged[0].1.clone()).unwrap();
    forged[0].1 = text.replace("\"count\": 5", "\"count\": 6").into_bytes();
    let f = w.path("forged");
    pack(&f, &forged);
    let e = import(&relay, &w.relay, &[f], false).unwrap_err();
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
    // Site dc-b signs a manifest of its own reusing dc-a's bundle id.
    let mut other = unpack(&out);
    let text = String::from_utf8(other[0].1.clone()).unwrap();
    other[0].1 = text.replace("\"dc-a\"", "\"dc-b\"").into_bytes();
    other[1].1 = sign(w.b.signing_key_file.as_ref().unwrap(), &other[0].1);
    let b = w.path("b-reuses");
    pack(&b, &other);
    let e = import(&relay, &w.relay, &[b], false).unwrap_err();
    assert!(matches!(e, BundleError::ReusedId { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("already imported from site \"dc-a\""),
        "{e}"
    );
    assert_eq!(relay.outbox_stats().unwrap().events, 5);
}

/// A relay tracker (`forward = "all"`: it makes transition records itself,
/// as the site did) with the default model.
fn relay_tracker() -> crate::track::Tracker {
    let cfg: crate::config::Config = toml::from_str(
        "[agent]\nhostname = \"relay\"\n[siem]\ntransport = \"tcp\"\n\
         address = \"127.0.0.1:1\"\nforward = \"all\"\n",
    )
    .unwrap();
    crate::track::Tracker::from_config(&cfg, true).unwrap()
}

fn transition(id: &str, release: &str, from: Option<&str>, to: &str, t: i64) -> Anomaly {
    Anomaly {
        rule: "transition".into(),
        release: release.into(),
        from: from.map(str::to_string),
        to: to.into(),
        event_id: id.into(),
        event_time: t,
        ..record(0, "transition")
    }
}

/// r1's history after filler up to the chunk boundary: its last event
/// straddles the boundary (the transition is record CHUNK, the site's
/// invalid_transition on it record CHUNK + 1); then a transition record
/// that is no event (e4: no environment).
fn r1_history(t0: i64) -> Vec<Anomaly> {
    let h = 3_600_000;
    let mut recs: Vec<Anomaly> = (0..CHUNK as u64 - 3).map(|i| record(i, "stuck")).collect();
    recs.push(transition("e1", "r1", None, "in_progress", t0));
    recs.push(transition(
        "e2",
        "r1",
        Some("in_progress"),
        "deployed",
        t0 + 2 * h,
    ));
    recs.push(transition(
        "e3",
        "r1",
        Some("deployed"),
        "cancelled",
        t0 + 5 * h,
    ));
    recs.push(Anomaly {
        rule: "invalid_transition".into(),
        ..transition("e3", "r1", Some("deployed"), "cancelled", t0 + 5 * h)
    });
    let mut bad = transition("e4", "r2", None, "deployed", t0);
    bad.environment.clear();
    recs.push(bad);
    recs
}

#[test]
fn tracked_import_feeds_the_tracker_once_and_never_duplicates_a_site_record() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    let h = 3_600_000;
    let t0 = 1_700_000_000_000;
    let recs = r1_history(t0);
    assert_eq!(recs[CHUNK - 1].event_id, "e3");
    enqueue(&site, recs.clone());
    let first = w.path("first");
    export(&site, &w.a, &first, true, false).unwrap();

    let relay = Store::in_memory().unwrap();
    let mut tracker = relay_tracker();
    let effects = std::cell::RefCell::new(Vec::new());
    let mut sink = |e: Vec<crate::track::Effect>| effects.borrow_mut().extend(e);
    let mut t = crate::spool::relay::Tracking::Live {
        tracker: &mut tracker,
        committed: &mut sink,
    };
    let r = import_tracked(
        &relay,
        &w.relay,
        std::slice::from_ref(&first),
        false,
        Some(&mut t),
    )
    .unwrap();
    assert_eq!((r[0].tracked, r[0].invalid), (3, 1));
    assert_eq!(r[0].enqueued, recs.len() as u64);
    // The relay re-judged r1 (its own transition and invalid_transition
    // records for e1..e3): none duplicates what the site said.
    let out = outbox(&relay);
    assert_eq!(out, recs, "exactly the site's records, once");
    let key = crate::event::Key {
        release: "r1".into(),
        service: "svc".into(),
        environment: "production".into(),
        site: "dc-a".into(),
    };
    let ks = tracker.get(&key).unwrap();
    assert_eq!(
        (ks.status.as_str(), ks.entered_at),
        ("cancelled", t0 + 5 * h)
    );
    let durations: Vec<(String, f64)> = effects
        .borrow()
        .iter()
        .filter_map(|e| match e {
            crate::track::Effect::Duration { status, secs, .. } => Some((status.clone(), *secs)),
            _ => None,
        })
        .collect();
    assert_eq!(
        durations,
        [
            ("in_progress".to_string(), 7200.0),
            ("deployed".to_string(), 10800.0)
        ],
        "event-time durations"
    );
    let history = relay.history("r1").unwrap();
    assert_eq!(history.len(), 3);
    let imported_at = relay
        .imported_bundle(&r[0].bundle_id)
        .unwrap()
        .unwrap()
        .imported_at;
    assert!(history.iter().all(|h| h.recorded_at == imported_at));

    // An overlapping bundle: only the new event is tracked.
    enqueue(
        &site,
        vec![transition("e5", "r3", None, "deployed", t0 + 6 * h)],
    );
    let second = w.path("second");
    export(&site, &w.a, &second, true, false).unwrap();
    let mut t = crate::spool::relay::Tracking::Live {
        tracker: &mut tracker,
        committed: &mut sink,
    };
    let r = import_tracked(&relay, &w.relay, &[second], false, Some(&mut t)).unwrap();
    assert_eq!((r[0].enqueued, r[0].tracked), (1, 1));
    assert_eq!(relay.history("r1").unwrap().len(), 3);
    assert_eq!(outbox(&relay).len(), recs.len() + 1);
}

/// What a running agent's counters and histograms see of an import.
fn metric_effects(effects: &[crate::track::Effect]) -> Vec<crate::track::Effect> {
    use crate::track::Effect as E;
    effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                E::Input { .. }
                    | E::Transition { .. }
                    | E::Duration { .. }
                    | E::Resolution { .. }
                    | E::Deployment { .. }
                    | E::LeadTime { .. }
                    | E::Restore { .. }
            )
        })
        .cloned()
        .collect()
}

#[test]
fn import_into_a_stopped_relay_is_tracked_at_its_start_as_a_running_relay_would() {
    use crate::spool::relay::{Tracking, drain_pending};
    let w = World::new();
    let site = Store::in_memory().unwrap();
    let t0 = 1_700_000_000_000;
    let recs = r1_history(t0);
    enqueue(&site, recs.clone());
    let bundle = w.path("bundle");
    export(&site, &w.a, &bundle, true, false).unwrap();
    let one = std::slice::from_ref(&bundle);

    // The running relay.
    let live = Store::in_memory().unwrap();
    let mut live_tracker = relay_tracker();
    let mut live_effects = Vec::new();
    let mut sink = |e: Vec<crate::track::Effect>| live_effects.extend(e);
    let mut t = Tracking::Live {
        tracker: &mut live_tracker,
        committed: &mut sink,
    };
    import_tracked(&live, &w.relay, one, false, Some(&mut t)).unwrap();

    // The stopped relay: forwarded as the running one, tracked at start.
    let stopped = Store::in_memory().unwrap();
    let r = import_tracked(
        &stopped,
        &w.relay,
        one,
        false,
        Some(&mut Tracking::Deferred),
    )
    .unwrap();
    assert_eq!((r[0].tracked, r[0].pending, r[0].invalid), (0, 3, 1));
    assert_eq!(stopped.pending_len().unwrap(), 3);
    assert!(stopped.load().unwrap().keys.is_empty());
    assert_eq!(stopped.history_len().unwrap(), 0);
    assert_eq!(outbox(&stopped), recs);
    let imported_at = stopped
        .imported_bundle(&r[0].bundle_id)
        .unwrap()
        .unwrap()
        .imported_at;

    let mut tracker = relay_tracker();
    let snap = stopped.load().unwrap();
    tracker.restore(snap.keys, snap.seen, snap.failing, snap.approvals);
    tracker.take_effects();
    let mut effects = Vec::new();
    let n = drain_pending(&mut tracker, &stopped, &mut |e| effects.extend(e)).unwrap();
    assert_eq!(n, 3);
    assert_eq!(stopped.pending_len().unwrap(), 0);
    // The invalid record was counted in the store at import (the agent
    // restores input counters at its start); everything else the same.
    let invalid = crate::track::Effect::Input {
        source: crate::spool::relay::IMPORT_SOURCE.into(),
        result: crate::event::InputResult::Invalid,
    };
    let live_metrics: Vec<_> = metric_effects(&live_effects)
        .into_iter()
        .filter(|e| *e != invalid)
        .collect();
    assert!(live_metrics.len() > 5, "{live_metrics:?}");
    assert_eq!(metric_effects(&effects), live_metrics);
    assert_eq!(
        stopped.load().unwrap().counters,
        live.load().unwrap().counters
    );
    let key = crate::event::Key {
        release: "r1".into(),
        service: "svc".into(),
        environment: "production".into(),
        site: "dc-a".into(),
    };
    let (a, b) = (tracker.get(&key).unwrap(), live_tracker.get(&key).unwrap());
    assert_eq!(
        (&a.status, a.entered_at, a.max_time),
        (&b.status, b.entered_at, b.max_time)
    );
    // The relay's own records on e1..e3 (transition, invalid_transition)
    // are not added to what the site said.
    assert_eq!(outbox(&stopped), recs);
    assert_eq!(outbox(&live), recs);
    let history = stopped.history("r1").unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h.recorded_at == imported_at));
    // A second start: nothing left.
    assert_eq!(
        drain_pending(&mut tracker, &stopped, &mut |_| {}).unwrap(),
        0
    );
}

// --- Hostile input: every check of the reader, each on its own ------------

/// A gzip member of `bytes`, as gzip writes it.
fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The uncompressed tar of a bundle file.
fn gunzip(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// A ustar header block for `name` declaring `size` bytes of `kind`.
fn raw_header(name: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// The manifest of `entries` rewritten for `payload`, signed by dc-a.
fn resign(w: &World, entries: &mut [(String, Vec<u8>)], payload: Vec<u8>, count: u64) {
    let mut m: Manifest = serde_json::from_slice(&entries[0].1).unwrap();
    m.payload_bytes = payload.len() as u64;
    m.payload_sha256 = hex(&Sha256::digest(&payload));
    m.count = count;
    entries[0].1 = serde_json::to_vec_pretty(&m).unwrap();
    entries[1].1 = sign(w.a.signing_key_file.as_ref().unwrap(), &entries[0].1);
    entries[2].1 = payload;
}

/// Refused by import and by inspect with and without the trusted key;
/// returns the import's message.
fn refused_everywhere(w: &World, path: &Path, says: &str) -> String {
    let msg = refused(w, path);
    assert!(msg.contains(says), "import: {msg}");
    for dir in [w.relay.trusted_keys_dir.as_deref(), None] {
        let e = inspect(path, dir).expect_err("inspect must refuse it");
        assert!(e.to_string().contains(says), "inspect ({dir:?}): {e}");
    }
    msg
}

#[test]
fn next_line_keeps_at_most_the_cap_and_says_when_a_line_is_longer() {
    let mut hasher = Sha256::new();
    let mut line = Vec::new();
    let mut r = std::io::BufReader::with_capacity(4, &b"abc\ndefghij\nk"[..]);
    assert_eq!(
        next_line(&mut r, &mut line, &mut hasher, 8).unwrap(),
        (4, true)
    );
    assert_eq!(line, b"abc\n");
    line.clear();
    // 8 bytes "defghij\n" fit exactly.
    assert_eq!(
        next_line(&mut r, &mut line, &mut hasher, 8).unwrap(),
        (8, true)
    );
    line.clear();
    // The last line has no newline: whole at the end of the input.
    assert_eq!(
        next_line(&mut r, &mut line, &mut hasher, 8).unwrap(),
        (1, true)
    );
    line.clear();
    assert_eq!(
        next_line(&mut r, &mut line, &mut hasher, 8).unwrap(),
        (0, true)
    );
    let mut r = std::io::BufReader::with_capacity(4, &b"0123456789\n"[..]);
    let (_, whole) = next_line(&mut r, &mut line, &mut hasher, 8).unwrap();
    assert!(!whole);
    assert!(line.len() <= 8, "{}", line.len());
}

#[test]
fn a_payload_line_over_the_cap_is_a_malformed_record_even_when_signed() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let mut e = unpack(&out);
    let mut payload = e[2].1.clone();
    payload.extend(vec![b'{'; MAX_LINE + 1]);
    payload.push(b'\n');
    resign(&w, &mut e, payload, 4);
    pack(&out, &e);
    let msg = refused_everywhere(&w, &out, "malformed record at line 4 of events.ndjson");
    assert!(msg.contains("longer than 1048576 bytes"), "{msg}");
}

#[test]
fn a_signed_payload_that_is_not_records_is_malformed_not_a_checksum_mismatch() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let mut e = unpack(&out);
    let mut lines: Vec<&[u8]> = e[2].1.split_inclusive(|&b| b == b'\n').collect();
    lines[1] = b"{\"rule\": \"stuck\"}\n";
    let payload = lines.concat();
    resign(&w, &mut e, payload, 3);
    pack(&out, &e);
    let msg = refused_everywhere(&w, &out, "malformed record at line 2 of events.ndjson");
    assert!(msg.contains("missing field"), "{msg}");
    assert!(!msg.contains("checksum"), "{msg}");
    // The same payload under the original manifest: altered (its size too).
    let mut orig = unpack(&w.bundle("b", 3));
    orig[2].1 = unpack(&out)[2].1.clone();
    let b = w.path("b2");
    pack(&b, &orig);
    let msg = refused(&w, &b);
    assert!(
        msg.contains("bytes in the archive, but the signed manifest says"),
        "{msg}"
    );
    // A manifest whose count disagrees with a payload matching its hash.
    let mut e = unpack(&w.bundle("c", 3));
    let payload = e[2].1.clone();
    resign(&w, &mut e, payload, 5);
    pack(&out, &e);
    let msg = refused(&w, &out);
    assert!(
        msg.contains("holds 3 records, the manifest says 5"),
        "{msg}"
    );
}

#[test]
fn a_payload_entry_of_another_size_than_the_manifest_is_refused_before_it_is_read() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let mut e = unpack(&out);
    let size = e[2].1.len();
    e[2].1.extend(vec![0u8; 2 << 20]);
    pack(&out, &e);
    let want = format!(
        "events.ndjson is {} bytes in the archive, but the signed manifest says {size}",
        size + (2 << 20)
    );
    let msg = refused(&w, &out);
    assert!(msg.contains(&want), "{msg}");
    let e = inspect(&out, None).unwrap_err().to_string();
    assert!(e.contains("but the unsigned manifest says"), "{e}");
}

#[test]
fn one_events_records_are_capped_so_an_import_transaction_is_bounded() {
    let w = World::new();
    let out = w.bundle("a", 1);
    let mut e = unpack(&out);
    let line = e[2].1.clone();
    let n = MAX_EVENT_RECORDS + 1;
    let payload = line.repeat(n as usize);
    resign(&w, &mut e, payload, n);
    pack(&out, &e);
    let msg = refused_everywhere(&w, &out, &format!("malformed record at line {n}"));
    assert!(
        msg.contains("event \"ev-0\" has more than 10000 records"),
        "{msg}"
    );
}

#[test]
fn entries_are_sized_and_named_before_any_of_them_is_read() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let tar = gunzip(&out);
    // A manifest.json declaring more than the cap (its data is not there).
    let mut big = raw_header("manifest.json", MAX_MANIFEST + 1, tar::EntryType::Regular);
    big.extend(&tar);
    std::fs::write(&out, gz(&big)).unwrap();
    refused_everywhere(
        &w,
        &out,
        "manifest.json is 65537 bytes, more than the 65536",
    );
    // A GNU long name or a PAX header of 1 GiB first: refused by its name,
    // not read (the tar crate would read it into memory).
    for (name, kind) in [
        ("././@LongLink", tar::EntryType::GNULongName),
        ("PaxHeaders/manifest.json", tar::EntryType::XHeader),
    ] {
        let mut v = raw_header(name, 1 << 30, kind);
        v.extend(&tar);
        std::fs::write(&out, gz(&v)).unwrap();
        refused_everywhere(
            &w,
            &out,
            &format!("expected the file manifest.json next, found {name:?}"),
        );
    }
    // A signature entry over its cap.
    let e = unpack(&w.bundle("b", 3));
    let mut v = raw_header(
        "manifest.json",
        e[0].1.len() as u64,
        tar::EntryType::Regular,
    );
    v.extend_from_slice(&e[0].1);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v.extend(raw_header(
        "manifest.sig",
        MAX_SIGNATURE + 1,
        tar::EntryType::Regular,
    ));
    std::fs::write(&out, gz(&v)).unwrap();
    refused_everywhere(&w, &out, "manifest.sig is 1025 bytes, more than the 1024");
}

#[test]
fn anything_after_the_archive_is_refused_and_tar_padding_is_not() {
    let w = World::new();
    let out = w.bundle("a", 3);
    let good = std::fs::read(&out).unwrap();
    let tar = gunzip(&out);
    let t = w.path("t");
    // Data after the gzip stream.
    let mut v = good.clone();
    v.extend_from_slice(b"junk");
    std::fs::write(&t, &v).unwrap();
    refused_everywhere(&w, &t, "data (4 bytes after the gzip stream's end");
    // A second gzip member (gunzip would concatenate it).
    let mut v = good.clone();
    v.extend(gz(b"more"));
    std::fs::write(&t, &v).unwrap();
    let msg = refused_everywhere(&w, &t, "a second gzip member");
    assert!(msg.contains("after the end of the bundle"), "{msg}");
    // Data after the tar's end marker, inside the gzip stream.
    let mut v = tar.clone();
    v.extend_from_slice(b"\0\0\0junk");
    std::fs::write(&t, gz(&v)).unwrap();
    refused_everywhere(&w, &t, "data after the tar archive's end marker");
    // A tar header right after the payload that is not one.
    let end = tar.len() - 1024;
    let mut v = tar[..end].to_vec();
    v.extend(vec![b'x'; 1024]);
    std::fs::write(&t, gz(&v)).unwrap();
    refused_everywhere(&w, &t, "data that is not a tar entry");
    // Too much padding, even of zeros.
    let mut v = tar.clone();
    v.extend(vec![0u8; MAX_TAR_PADDING as usize]);
    std::fs::write(&t, gz(&v)).unwrap();
    refused_everywhere(&w, &t, "more than 65536 bytes of zeros");
    // GNU tar's padding to a 10 KiB record imports, as does no end marker.
    let mut v = tar.clone();
    v.resize(v.len().div_ceil(10240) * 10240, 0);
    std::fs::write(&t, gz(&v)).unwrap();
    inspect(&t, w.relay.trusted_keys_dir.as_deref()).unwrap();
    std::fs::write(&t, gz(&tar[..end])).unwrap();
    let relay = Store::in_memory().unwrap();
    let r = import(&relay, &w.relay, &[t], false).unwrap();
    assert_eq!(r[0].enqueued, 3);
}

#[test]
fn export_refuses_a_record_longer_than_a_bundle_line() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    let mut r = record(1, "stuck");
    r.message = "x".repeat(MAX_LINE);
    enqueue(&site, vec![record(0, "stuck"), r]);
    let e = export(&site, &w.a, &w.path("x"), false, false).unwrap_err();
    assert!(
        e.to_string().contains("outbox record 2 is 1048")
            && e.to_string().contains("nothing exported"),
        "{e}"
    );
    assert!(!w.path("x").exists() && !w.path("x.tmp").exists());
    assert_eq!(site.outbox_stats().unwrap().events, 2);
}

/// `tests/fixtures/bundle/`: a real export of three records by `dc-a`, and
/// its public key (the fuzz target's seed).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bundle")
        .join(name)
}

#[test]
fn inspect_file_on_an_open_bundle_reports_what_inspect_reports_on_its_path() {
    let path = fixture("dc-a.bundle");
    let keys = fixture("");
    let by_path = inspect(&path, Some(&keys)).unwrap();
    assert!(matches!(by_path.signature, SignatureStatus::Valid { .. }));
    assert!(by_path.payload_verified);
    assert_eq!(
        (by_path.manifest.site.as_str(), by_path.manifest.count),
        ("dc-a", 3)
    );

    let file = File::open(&path).unwrap();
    let open = inspect_file(&file, Path::new("named.bundle"), Some(&keys)).unwrap();
    assert_eq!(open.path, Path::new("named.bundle"));
    assert_eq!(open.manifest, by_path.manifest);
    assert_eq!(open.signature, by_path.signature);
    assert_eq!(open.file_bytes, by_path.file_bytes);
    assert_eq!(
        (open.oldest_detected_at, open.newest_detected_at),
        (by_path.oldest_detected_at, by_path.newest_detected_at)
    );

    // The same refusals: a truncated copy is damaged, and named as given.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - 5]).unwrap();
    let e = inspect_file(
        &File::open(&short).unwrap(),
        Path::new("named.bundle"),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("named.bundle"), "{e}");
}

/// A relay notifies for imported events only with `[notify] imported =
/// true`: the messages are queued in the chunk's transaction.
#[test]
fn tracked_imports_notify_only_when_notify_imported_is_set() {
    let w = World::new();
    let site = Store::in_memory().unwrap();
    let t0 = 1_700_000_000_000;
    enqueue(
        &site,
        vec![
            transition("e1", "r1", None, "in_progress", t0),
            transition("e2", "r1", Some("in_progress"), "failed", t0 + 1000),
        ],
    );
    let bundle = w.path("b");
    export(&site, &w.a, &bundle, true, false).unwrap();
    let router = |imported: bool| {
        let text = format!(
            "[notify]\nimported = {imported}\n[[notify.destinations]]\nname = \"chat\"\n\
             kind = \"slack\"\nurl_file = \"/u\"\n"
        );
        let cfg = crate::config::parse_text(text, None).unwrap().config;
        Settings::from_config(&cfg).notify
    };
    assert!(router(false).is_none());
    for (imported, queued) in [(false, 0), (true, 1)] {
        let relay = Store::in_memory().unwrap();
        let mut tracker = relay_tracker();
        let mut sink = |_: Vec<crate::track::Effect>| {};
        let mut t = crate::spool::relay::Tracking::Live {
            tracker: &mut tracker,
            committed: &mut sink,
        };
        let settings = Settings {
            notify: router(imported),
            ..w.relay.clone()
        };
        let r = import_tracked(
            &relay,
            &settings,
            std::slice::from_ref(&bundle),
            false,
            Some(&mut t),
        )
        .unwrap();
        assert_eq!(r[0].tracked, 2);
        assert_eq!(
            relay.notify_len("chat").unwrap(),
            queued,
            "imported = {imported}"
        );
        if queued > 0 {
            let rows = relay.notify_read("chat", 10).unwrap();
            let n: crate::notifications::Note = serde_json::from_slice(&rows[0].1).unwrap();
            assert_eq!((n.release.as_str(), n.to.as_str()), ("r1", "failed"));
        }
    }
}
