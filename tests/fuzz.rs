//! Every parser of outside input (line formats, every webhook preset, the
//! bundle reader, the web config, the TOML config) under a short
//! coverage-guided fuzzing run: `scripts/fuzz-smoke.sh`.

use crate::util::*;

#[test]
fn every_fuzz_target_runs_without_a_crash() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && peer("cargo-fuzz").is_none() {
        return; // locally without cargo-fuzz: skipped with a message by peer()
    }
    let o = std::process::Command::new(root().join("scripts/fuzz-smoke.sh"))
        .arg("5")
        .current_dir(root())
        .output()
        .expect("fuzz-smoke.sh runs");
    assert!(
        o.status.success(),
        "fuzzing found a crash or could not run:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    // every target ran
    let text = stdout(&o);
    for target in std::fs::read_dir(root().join("fuzz/fuzz_targets")).unwrap() {
        let name = target
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            text.contains(&format!("{name}: Done ")),
            "{name} did not run:\n{text}"
        );
    }
}
