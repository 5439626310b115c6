#!/usr/bin/env bash
# Runs the tests whose outcome could depend on the calendar with the clock
# far ahead (default 400 days): the unit tests, and the integration tests
# that date events (api, anomalies, bundles, field_limits, replay, run, siem, spool_limits,
# webhooks). Every test must date its events relative to now or inject its
# clock (`replay --now`); a literal date whose age matters (stale_after
# 30 d, retention, stuck_after, dedupe and freeze windows) fails here long
# before the calendar reaches it on main.
#
# The test binaries run under libfaketime (Debian's faketime, installed by
# scripts/install-peers.sh) as cargo's target runner: the wall clock moves,
# the monotonic clock does not (timeouts stay real), cargo itself is not
# shifted (its fingerprints stay sane). Child processes (the relstat binary,
# rsyslog) inherit the shift; Go programs (prometheus) do not read the clock
# through libc, so the Prometheus tests are not run here.
# Usage: scripts/clock-ahead.sh [DAYS] [-- extra test filters]
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS=${1:-400}
command -v faketime >/dev/null 2>&1 || {
  echo "clock-ahead: faketime is not installed (scripts/install-peers.sh installs it)" >&2
  exit 1
}
host=$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${host}_RUNNER=env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +${DAYS}d"
echo "clock-ahead: running the calendar-sensitive tests with the clock ${DAYS} days ahead" >&2
cargo test --locked --lib
cargo test --locked --test tests -- \
  api:: anomalies:: bundles:: field_limits:: replay:: run:: siem:: spool_limits:: webhooks::
