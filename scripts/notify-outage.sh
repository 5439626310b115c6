#!/usr/bin/env bash
# The 10-minute version of the notification outage test
# (tests/notify.rs, an_outage_then_recovery_loses_nothing_keeps_order_and_sends_no_duplicate):
# a webhook receiver answers 503 for RELSTAT_NOTIFY_OUTAGE_SECS (default
# here 600) seconds, then 200; every message queued during the outage must
# arrive once, in order per release. The suite runs it with a 20 s outage.
set -euo pipefail
cd "$(dirname "$0")/.."
export RELSTAT_NOTIFY_OUTAGE_SECS="${RELSTAT_NOTIFY_OUTAGE_SECS:-600}"
exec nice cargo test --test tests -- --exact \
  notify::an_outage_then_recovery_loses_nothing_keeps_order_and_sends_no_duplicate
