//! `relstat replay` on the shipped example: accounting, final statuses,
//! DORA outcomes, and an exposition that promtool accepts.

use crate::util::*;

const EXAMPLE: [&str; 5] = [
    "replay",
    "-c",
    "examples/quickstart.toml",
    "examples/logs/deploy.ndjson",
    "examples/logs/search-deploy.log",
];

fn replay(extra: &[&str]) -> std::process::Output {
    let mut args = EXAMPLE.to_vec();
    args.extend_from_slice(extra);
    relstat(&args)
}

#[test]
fn the_example_exposition_passes_promtool_check_metrics() {
    let o = replay(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("relstat_build_info{"), "{text}");
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let (clean, findings) = promtool_check_metrics(&promtool, &text);
    assert!(clean, "promtool check metrics found:\n{findings}");
}

#[test]
fn the_example_accounts_for_every_line() {
    let o = replay(&["--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // deploy.ndjson: 79 lines = 75 events + 1 duplicate + 1 late (logged out
    // of order) + 1 truncated line + 1 status no state maps (gen_logs.py).
    let json = &v["events"]["deploy-json"];
    assert_eq!(json["accepted"], 75, "{json}");
    assert_eq!(json["duplicate"], 1, "{json}");
    assert_eq!(json["late"], 1, "{json}");
    assert_eq!(json["invalid"], 1, "{json}");
    assert_eq!(json["unmapped"], 1, "{json}");
    assert_eq!(v["events"]["deploy-script"]["accepted"], 35);
    let lines: usize = std::fs::read_to_string(root().join("examples/logs/deploy.ndjson"))
        .unwrap()
        .lines()
        .count();
    let total: u64 = json
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        total as usize, lines,
        "every line lands in exactly one result"
    );
    // A realistic clean history raises nothing.
    assert_eq!(
        v["anomalies"].as_array().unwrap().len(),
        0,
        "{}",
        v["anomalies"]
    );
    assert_eq!(v["now"], "2026-11-16T10:01:00.000Z");
}

#[test]
fn the_example_ends_with_the_release_still_rolling_out() {
    let o = replay(&["--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let releases = v["releases"].as_array().unwrap();
    let last = releases
        .iter()
        .find(|r| r["release"] == "2026.11.16" && r["environment"] == "production")
        .expect("2026.11.16 is tracked");
    assert_eq!(last["status"], "in_progress");
    assert_eq!(last["finished"], false);
    assert_eq!(last["site"], "dc-east");
    // the rolled back payments release and the verified search releases are finished
    let rb = releases
        .iter()
        .find(|r| r["release"] == "2026.11.8" && r["environment"] == "production")
        .unwrap();
    assert_eq!(rb["status"], "rolled_back");
    assert_eq!(rb["finished_reason"], "terminal");
}

#[test]
fn dora_outcomes_and_per_release_series_of_the_example() {
    let text = stdout(&replay(&[]));
    let has = |needle: &str| assert!(text.contains(needle), "missing {needle} in:\n{text}");
    has(
        r#"relstat_release_status{environment="production",release="2026.11.16",service="payments",site="dc-east",status="in_progress"} 1"#,
    );
    // payments 2026.11.8 failed in production (in_progress -> failed): failure;
    // search 2026.11.10-s was rolled back after deployed: rollback.
    has(
        r#"relstat_deployments_total{environment="production",outcome="failure",service="payments"} 1"#,
    );
    has(
        r#"relstat_deployments_total{environment="production",outcome="rollback",service="search"} 1"#,
    );
    has(
        r#"relstat_restore_seconds_count{environment="production",service="payments",site="dc-east"} 1"#,
    );
    has("relstat_lead_time_seconds_count");
    // finished keys (complete, rolled back, superseded) have no per-release series
    assert!(
        !text.contains(
            r#"release="2026.11.8",service="payments",site="dc-east",status="rolled_back""#
        )
    );
}

#[test]
fn a_file_no_source_claims_is_a_usage_error() {
    let (_d, path) = temp_file("other.txt", "x\n");
    let o = relstat(&[
        "replay",
        "-c",
        "examples/quickstart.toml",
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no file source's paths match it"),
        "{}",
        stderr(&o)
    );
    let o = relstat(&[
        "replay",
        "-c",
        "examples/quickstart.toml",
        "--source",
        "deploy-json",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Hostile input: a 128 MiB line with no newline in a replayed file is held
/// only up to the 1 MiB line cap, skipped to its end and counted invalid;
/// the lines around it are read as usual.
#[test]
fn a_line_over_the_cap_is_counted_invalid_without_being_held() {
    use std::io::Write;
    let first = std::fs::read_to_string(root().join("examples/logs/deploy.ndjson")).unwrap();
    let first = first.lines().next().unwrap().to_string();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("huge.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "{first}").unwrap();
    let chunk = vec![b'x'; 1 << 20];
    f.write_all(b"{\"a\":\"").unwrap();
    for _ in 0..128 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\"}\n").unwrap();
    // The same event again: a duplicate, so the reader went on after the cut.
    writeln!(f, "{first}").unwrap();
    drop(f);
    let (o, peak_kib) = relstat_peak(
        &[
            "replay",
            "-c",
            "examples/quickstart.toml",
            "--source",
            "deploy-json",
            "--output",
            "json",
            path.to_str().unwrap(),
        ],
        120,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let json = &v["events"]["deploy-json"];
    assert_eq!(json["accepted"], 1, "{json}");
    assert_eq!(json["invalid"], 1, "{json}");
    assert_eq!(json["duplicate"], 1, "{json}");
    assert!(
        peak_kib < 48 * 1024,
        "replay held the 128 MiB line: peak {peak_kib} KiB"
    );
}
