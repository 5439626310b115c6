//! Test support for the kill -9 tests: runs one test of this binary as a
//! child process (it writes `started` in its directory once it commits), lets
//! it run a while, and kills it hard. The store's and the relay drain's crash
//! tests share it, so the spawn, the bounded wait and the kill are one piece.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs the test `name` of this test binary with `env` = `dir`, waits (at
/// most 5 s) for `dir/started`, lets it run `run_ms` more, then SIGKILLs it.
pub(crate) fn run_and_kill(name: &str, env: &str, dir: &Path, run_ms: u64) {
    let _ = std::fs::remove_file(dir.join("started"));
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if dir.join("started").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(run_ms));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}
