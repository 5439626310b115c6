#!/usr/bin/env bash
# A long coverage-guided fuzzing campaign (cargo fuzz, libFuzzer) of every
# target in fuzz/, each seeded from the repository's own inputs (see
# seeds() below), one target at a time at the lowest CPU priority. Stable
# toolchain with `-s none`, as scripts/fuzz-smoke.sh: a panic (including an
# arithmetic overflow: cargo fuzz builds with debug assertions) is a crash.
#
# Usage: scripts/fuzz-campaign.sh [TOTAL_RUNS] [TARGET...]
#   TOTAL_RUNS  executions over all targets (default 10000000), spread
#               evenly: each target runs TOTAL_RUNS / targets new inputs
#               (libFuzzer -runs=), on top of its seeds.
#   TARGET...   only these (default: every target of `cargo fuzz list`).
#   MAX_SECS=N  (environment) also stop each target after N seconds
#               (libFuzzer -max_total_time=): a campaign with a deadline
#               records the executions it reached.
#
# The corpus of each target grows in fuzz/corpus/TARGET (not committed);
# crashes are written to fuzz/artifacts/TARGET/. The figures (executions,
# libFuzzer's cov: and ft:, corpus size, crashes) replace the block between
# the campaign markers of fuzz/CAMPAIGN.md, with the command that made
# them; a crash does not stop the campaign, the next target runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOTAL=${1:-10000000}
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
cd fuzz
# Built once; the targets then run as plain libFuzzer binaries (a `cargo
# fuzz run` per target would re-check, and in a git worktree re-run, the
# build). NO_BUILD=1 uses the binaries already built.
[ -n "${NO_BUILD:-}" ] || nice -n 19 cargo fuzz build -s none
BIN=$ROOT/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
if [ $# -gt 0 ]; then TARGETS=("$@"); else mapfile -t TARGETS < <(cargo fuzz list); fi
PER=$(((TOTAL + ${#TARGETS[@]} - 1) / ${#TARGETS[@]}))
LOGS=$ROOT/fuzz/target/campaign-logs
mkdir -p "$LOGS"

# Seeds: fuzz/target/seeds/TARGET, rebuilt from the repository on each run.
seeds() {
  python3 - "$ROOT" "$1" "$ROOT/fuzz/target/seeds/$1" <<'PY'
import glob, gzip, io, json, os, re, shutil, sys, tarfile
root, target, out = sys.argv[1:]
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
fx = os.path.join(root, "tests/fixtures")
n = 0
def put(data):
    global n
    n += 1
    with open(os.path.join(out, f"seed-{n:04}"), "wb") as f:
        f.write(data)
def read(p):
    with open(p, "rb") as f:
        return f.read()
def wrapped(key, path):
    import yaml  # the argo fixtures are API objects kept as YAML
    class Loader(yaml.SafeLoader):  # times stay strings, as serde reads them
        yaml_implicit_resolvers = {
            k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
            for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return json.dumps({key: yaml.load(read(path), Loader=Loader)}).encode()

presets = {"github": "github", "gitlab": "gitlab", "jenkins": "jenkins",
           "argocd": "argocd", "argo_rollouts": "argo-rollouts", "flux": "flux",
           "azure_devops": "azure-devops", "jira": "jira", "servicenow": "servicenow"}
if target.startswith("preset_"):
    name = target[len("preset_"):]
    dirs = [presets[name]] if name in presets else [d for d in os.listdir(fx)
                                                    if os.path.isdir(os.path.join(fx, d))
                                                    and d not in ("bundle", "web-config")]
    bodies = []
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(fx, d, "*"))):
            bodies.append(read(p))
            if d == "argocd":
                bodies.append(wrapped("app", p))
            elif d == "argo-rollouts":
                bodies.append(wrapped("rollout", p))
    # The first byte picks the event-type header (see the target).
    for b in bodies:
        for event in range(4):
            put(bytes([event]) + b)
elif target == "line_parser":
    for p in sorted(glob.glob(os.path.join(root, "examples/logs/*"))):
        for line in read(p).splitlines()[:200]:
            put(line)
elif target == "bundle_reader":
    gz = read(os.path.join(fx, "bundle/dc-a.bundle"))
    tar = gzip.decompress(gz)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        parts = [t.extractfile(m).read() for m in t.getmembers()]
    split = b"\n--8<--\n".join(parts)
    for key in (0, 1):  # bit 0: check the signature with dc-a.pub
        put(bytes([key]) + gz)
        put(bytes([2 | key]) + tar)
        put(bytes([4 | key]) + split)
    # A crash found before (fuzz/CAMPAIGN.md): 4,096 records and a manifest
    # claiming a huge payload_bytes, as a gzip file (too big to be mutated
    # into from the fixture).
    manifest = json.loads(parts[0])
    manifest["payload_bytes"] = 2**63
    manifest["count"] = 4096
    entries = [json.dumps(manifest).encode(), parts[1], parts[2].splitlines(True)[0] * 4096]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in zip(("manifest.json", "manifest.sig", "events.ndjson"), entries):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    put(b"\0" + gzip.compress(buf.getvalue(), 9))
elif target == "web_config":
    for p in sorted(glob.glob(os.path.join(fx, "web-config/*.yml"))):
        put(read(p))
elif target == "toml_config":
    for p in sorted(glob.glob(os.path.join(root, "examples/*.toml"))) + \
             [os.path.join(root, "packaging/relstat.toml")]:
        put(read(p))
    # Every TOML example in the documentation.
    for p in sorted(glob.glob(os.path.join(root, "docs/*.md"))) + [os.path.join(root, "README.md")]:
        for block in re.findall(r"```toml\n(.*?)```", read(p).decode(), re.S):
            put(block.encode())
print(n)
PY
}

final_stat() { grep -E "^$1" "$2" | tail -1 | sed -E "s/^$1[[:space:]]*//" || true; }

START=$(date -u +%FT%TZ)
T0=$(date +%s)
ROWS=""
SUM=0
CRASHES=0
for t in "${TARGETS[@]}"; do
  nseeds=$(seeds "$t")
  mkdir -p "corpus/$t"
  log=$LOGS/$t.log
  t1=$(date +%s)
  status=ok
  mkdir -p "artifacts/$t"
  nice -n 19 "$BIN/$t" "corpus/$t" "target/seeds/$t" -artifact_prefix="artifacts/$t/" \
    -runs="$PER" ${MAX_SECS:+-max_total_time=$MAX_SECS} -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=crash
  secs=$(($(date +%s) - t1))
  execs=$(final_stat 'stat::number_of_executed_units:' "$log")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | sed -nE 's/.* cov: ([0-9]+).*/\1/p')
  ft=$(echo "$last" | sed -nE 's/.* ft: ([0-9]+).*/\1/p')
  corp=$(echo "$last" | sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p')
  found=""
  if [ "$status" = crash ]; then
    CRASHES=$((CRASHES + 1))
    found=$(grep -oE 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //; s#.*/fuzz/##' | tail -1)
    why=$(grep -E "panicked at|ERROR: libFuzzer" "$log" | head -1 | sed 's/|/\\|/g')
    found="${found:-see $log}: ${why}"
  fi
  SUM=$((SUM + ${execs:-0}))
  ROWS+="| $t | $nseeds | ${execs:-?} | $secs | ${cov:-?} | ${ft:-?} | ${corp:-?} | ${found:-none} |"$'\n'
  echo "$t: ${execs:-?} executions in ${secs}s, cov ${cov:-?} ft ${ft:-?} corp ${corp:-?}, $status"
done
TOTAL_SECS=$(($(date +%s) - T0))

cmd="${MAX_SECS:+MAX_SECS=$MAX_SECS }scripts/fuzz-campaign.sh $TOTAL${1:+ $*}"
block=$(
  cat <<EOF
<!-- campaign:begin (written by scripts/fuzz-campaign.sh) -->
Last run: \`$cmd\`, started $START, $TOTAL_SECS s, commit
$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src fuzz/fuzz_targets || echo ' (with uncommitted changes)'),
$(rustc --version), cargo-fuzz $(cargo fuzz --version | awk '{print $2}'), \`-s none\`,
\`-runs=$PER${MAX_SECS:+ -max_total_time=$MAX_SECS} -rss_limit_mb=2048 -timeout=10\` per target, \`nice -n 19\`, one target at a time.

**$SUM executions in all, $CRASHES target(s) with a crash.**

| target | seeds | executions | seconds | cov | ft | corpus | crash |
|---|---|---|---|---|---|---|---|
$ROWS
<!-- campaign:end -->
EOF
)
md=$ROOT/fuzz/CAMPAIGN.md
if [ -f "$md" ] && grep -q '<!-- campaign:begin' "$md"; then
  python3 - "$md" "$block" <<'PY'
import re, sys
md, block = sys.argv[1:]
text = open(md).read()
text = re.sub(r"<!-- campaign:begin.*?<!-- campaign:end -->", lambda _: block, text, flags=re.S)
open(md, "w").write(text)
PY
else
  printf '# Fuzzing campaign\n\n%s\n' "$block" >"$md"
fi
echo "fuzz-campaign: $SUM executions, $CRASHES target(s) with a crash; figures in fuzz/CAMPAIGN.md"
[ "$CRASHES" -eq 0 ]
