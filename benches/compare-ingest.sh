#!/usr/bin/env bash
# Ingest side by side, one run, same file, same machine: relstat replay (in
# memory, like mtail), relstat run --once (durable store, fsync per batch) and
# mtail --one_shot with benches/mtail/relstat.mtail (see its header for what
# it does not do). Reports lines/s, CPU seconds per million lines and peak
# RSS for each. Usage: benches/compare-ingest.sh [LINES]   (default 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
need=()
command -v mtail >/dev/null || need+=(mtail)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
python3 - "$N" "$W/deploy.ndjson" <<'PY'
import json, sys, time
n, out = int(sys.argv[1]), sys.argv[2]
envs = ["dev", "staging", "production"]
st = ["scheduled", "in_progress", "deployed", "complete"]
with open(out, "w") as f:
    for i in range(n):
        t = 1790000000 + i * 7
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
            "release": f"2026.11.{i // 12}", "service": f"svc-{(i // 12) % 50}",
            "environment": envs[(i // 4) % 3], "status": st[i % 4], "actor": "deploy-bot",
            "actor_type": "automation", "version": f"1.{i // 12}.0"}, separators=(",", ":")) + "\n")
PY
SIZE=$(stat -c %s "$W/deploy.ndjson")
printf 'file: %d lines, %.1f MiB; %s cores\n\n' "$N" "$(echo "$SIZE/1048576" | bc -l)" "$(nproc)"
cat > "$W/r.toml" <<TOML
[agent]
data_dir = "$W/data"
[[sources]]
name = "bench"
type = "file"
paths = ["$W/*.ndjson"]
TOML
measure() { # name command...
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" > /dev/null 2> "$W/err" || { cat "$W/err"; exit 1; }
  read -r wall user sys rss < "$W/time"
  awk -v n="$N" -v s="$SIZE" -v w="$wall" -v u="$user" -v y="$sys" -v r="$rss" -v name="$name" 'BEGIN {
    printf "| %-22s | %10.0f | %8.1f | %8.2f | %8.1f |\n", name, n / w, s / w / 1048576, (u + y) / (n / 1e6), r / 1024 }'
}
echo "| run                    |    lines/s |    MiB/s | CPU s/M lines | peak RSS MiB |"
echo "|---|---|---|---|---|"
measure "relstat replay" target/release/relstat replay -c "$W/r.toml" "$W/deploy.ndjson"
measure "relstat run --once" target/release/relstat run --once -c "$W/r.toml"
measure "mtail --one_shot" mtail --one_shot --one_shot_format prometheus --progs benches/mtail --logs "$W/deploy.ndjson"
