#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the peers the tests
# need, then runs every test. With CI=true a missing peer fails its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
cargo test --locked "$@"
# The calendar check: the date-sensitive tests again, the clock 400 days ahead.
[ $# -gt 0 ] || scripts/clock-ahead.sh 400
