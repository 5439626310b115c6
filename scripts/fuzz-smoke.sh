#!/usr/bin/env bash
# A short coverage-guided fuzzing run (cargo fuzz, libFuzzer) of every target
# in fuzz/, on the stable toolchain: `-s none` leaves out AddressSanitizer,
# which needs nightly; in safe Rust a panic is what we are looking for, and
# libFuzzer reports it with the input that caused it (fuzz/artifacts/).
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-5}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
cargo fuzz build -s none
# Built once, then each target runs as a plain libFuzzer binary (a `cargo
# fuzz run` per target would re-check, and in a git worktree re-run, the build).
BIN=target/$(rustc -vV | sed -n 's/^host: //p')/release
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t" "artifacts/$t"
  out=$("$BIN/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$SECS" -rss_limit_mb=2048 2>&1) || {
    echo "$out" | tail -40
    echo "fuzz-smoke: $t FAILED" >&2
    exit 1
  }
  echo "$t: $(echo "$out" | grep -E '^Done [0-9]+ runs' || echo done)"
done
