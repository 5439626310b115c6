//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (tests run the binary from there, as a user would).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `relstat ARGS...` run from the repository root.
pub fn relstat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relstat"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("relstat runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A peer program the tests need. Locally a missing peer skips the test
/// with a message; in CI (`CI=true`) it fails: `scripts/install-peers.sh`
/// must have installed it.
pub fn peer(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is not installed; scripts/install-peers.sh installs it");
        }
        eprintln!("SKIPPED: {name} is not installed (run scripts/install-peers.sh)");
    }
    found
}

/// Runs `promtool check metrics` on an exposition; returns its findings.
pub fn promtool_check_metrics(promtool: &Path, exposition: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.success() && text.trim().is_empty(), text)
}

/// A temporary directory with a file in it.
pub fn temp_file(name: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}
