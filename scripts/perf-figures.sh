#!/usr/bin/env bash
# The five figures of issue 23 in one run, on this machine, from one build:
#
#   1. RSS of `relstat run` idle with 10,000 open release keys (VmRSS, VmHWM,
#      RssFile = the binary's own pages, RssAnon = heap);
#   2. RSS over a soak: ~200 events/s of releases flowing scheduled ->
#      in_progress -> deployed -> complete (50 new keys a second, so the
#      per-release series reach max_tracked = 10,000 after ~200 s); first
#      half vs second half (target: flat, within 5 %, in the second half);
#   3. `relstat replay` vs `mtail --one_shot` lines/s on the shared workload
#      (benches/workload/: benchgen.py's logfmt log, transitions.mtail),
#      alternated three times, medians;
#   4. NDJSON parse MiB/s on one core (criterion, benches/ingest.rs);
#   5. `relstat run --once` CPU (user+sys) vs `replay` on the same file,
#      and the SIEM formats per core (criterion, benches/siem_format.rs).
#
# Usage: scripts/perf-figures.sh [--soak-minutes M] [--keys N] [--lines N]
#                                [--bin PATH]... [--only LIST] [--no-criterion] [--smoke]
#   --bin PATH      measure this binary instead of building (repeat it to
#                   run the agent figures of several builds side by side,
#                   alternating, e.g. the previous commit's build first)
#   --only LIST     some of idle,soak,ingest,criterion (comma-separated;
#                   ingest = figures 3 and 5's replay/mtail/run --once)
#   --no-criterion  skip figures 4 and the SIEM formats (no bench build)
#   --smoke         tiny sizes (200 keys, 5,000 lines, a 6 s soak) and no
#                   criterion: checks the script works (tests/bench_scripts.rs)
# Needs python3 and, for figure 3, mtail (scripts/install-peers.sh or
# `apt-get install mtail`; without it figure 3 prints relstat alone).
# Builds with `nice -n 19`: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK=10 KEYS=10000 LINES=500000 CRITERION=1 SMOKE=0 BINS=() ONLY=idle,soak,ingest,criterion
while [ $# -gt 0 ]; do
  case "$1" in
    --soak-minutes) SOAK=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --lines) LINES=$2; shift 2 ;;
    --bin) BINS+=("$2"); shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --no-criterion) CRITERION=0; shift ;;
    --smoke) SMOKE=1; SOAK=0.1; KEYS=200; LINES=5000; CRITERION=0; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "perf-figures: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case ",$ONLY," in *,criterion,*) ;; *) CRITERION=0 ;; esac
TARGET=${CARGO_TARGET_DIR:-target}
if [ ${#BINS[@]} -eq 0 ]; then
  # One build: with criterion, the benches and the binary together (cargo
  # builds a package's binaries for its benchmarks, bench profile = release
  # profile, into the same directory); without, the release binary.
  if [ "$CRITERION" = 1 ]; then
    nice -n 19 cargo bench --quiet --no-run --bench ingest --bench siem_format 2>&1 | grep -v '^ *Executable' || true
  else
    nice -n 19 cargo build --release --quiet --bin relstat
  fi
  BINS=("$TARGET/release/relstat")
fi
echo "perf-figures: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"
for b in "${BINS[@]}"; do echo "binary: $b ($(stat -c %s "$b") bytes)"; done

python3 - "$SOAK" "$KEYS" "$LINES" "$SMOKE" "$ONLY" "${BINS[@]}" <<'PY'
import os, shutil, socket, statistics, subprocess, sys, tempfile, time

soak_min, nkeys, nlines, smoke = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
only = sys.argv[5].split(",")
bins = [os.path.abspath(b) for b in sys.argv[6:]]
root = os.getcwd()
W = tempfile.mkdtemp(prefix="perf-figures.")

def get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    out = []
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        out.append(b)
    s.close()
    return b"".join(out).decode(errors="replace")

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def status(pid):
    """VmRSS, VmHWM, RssAnon, RssFile of a process, KiB."""
    v = {}
    for l in open(f"/proc/{pid}/status"):
        k, _, rest = l.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            v[k] = int(rest.split()[0])
    return v

def mib(k):
    return f"{k / 1024:.1f}"

def ts(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

def line(rel, svc, env, st, t):
    return (f'{{"time":"{ts(t)}","release":"{rel}","service":"{svc}","environment":"{env}",'
            f'"status":"{st}","actor":"deploy-bot","actor_type":"automation"}}\n')

def metric(text, name):
    total, found = 0.0, False
    for l in text.splitlines():
        if l.startswith(name) and (len(l) == len(name) or l[len(name)] in " {"):
            total += float(l.rsplit(" ", 1)[1]); found = True
    return total if found else None

class Agent:
    def __init__(self, exe, tag):
        self.d = os.path.join(W, tag)
        os.makedirs(f"{self.d}/logs")
        self.port = free_port()
        open(f"{self.d}/r.toml", "w").write(
            f'[agent]\ndata_dir = "{self.d}/data"\n[http]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[[sources]]\nname = "f"\ntype = "file"\npaths = ["{self.d}/logs/*.log"]\n')
        self.log = open(f"{self.d}/logs/a.log", "a")
        self.p = subprocess.Popen([exe, "run", "-c", f"{self.d}/r.toml"], stderr=open(f"{self.d}/stderr", "w"))
        for _ in range(400):
            try:
                if " 200 " in get(self.port, "/readyz").split("\r\n")[0] + " ":
                    return
            except OSError:
                pass
            if self.p.poll() is not None:
                sys.exit(f"agent exited: {open(f'{self.d}/stderr').read()[-2000:]}")
            time.sleep(0.05)
        sys.exit("agent not ready after 20 s")
    def accepted(self):
        return metric(get(self.port, "/metrics"), 'relstat_events_total{result="accepted",source="f"}') or 0
    def wait_accepted(self, n, limit=600):
        t0 = time.time()
        while self.accepted() < n:
            if time.time() - t0 > limit:
                sys.exit(f"only {self.accepted():.0f} of {n} events accepted after {limit} s")
            time.sleep(0.2)
    def stop(self):
        self.p.terminate()
        self.p.wait(20)

def cpu_of(argv, **kw):
    """(wall s, user+sys s) of a child run to completion."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, st, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.returncode = os.waitstatus_to_exitcode(st)
    if p.returncode != 0:
        sys.exit(f"{argv[0]} failed ({p.returncode}): {err[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime

def idle():
    """1. Idle with N open keys (in_progress, recent times: none stale or stuck)."""
    print(f"\n## 1. RSS idle with {nkeys:,} open release keys (relstat run, one file source)\n")
    print("| binary | VmRSS MiB | VmHWM MiB | RssFile MiB | RssAnon MiB |\n|---|---|---|---|---|")
    t0 = int(time.time()) - 1800
    for i, exe in enumerate(bins):
        a = Agent(exe, f"idle{i}")
        try:
            a.log.write("".join(line(f"r{k}", f"s{k % 40}", ["dev", "staging", "production"][k % 3],
                                     "in_progress", t0 + k // 10) for k in range(nkeys)))
            a.log.flush()
            a.wait_accepted(nkeys)
            time.sleep(1 if smoke else 5)
            s = status(a.p.pid)
            print(f"| {exe} | {mib(s['VmRSS'])} | {mib(s['VmHWM'])} | {mib(s['RssFile'])} | {mib(s['RssAnon'])} |")
        finally:
            a.stop()

def soak():
    """2. Soak: 200 events/s, 50 new keys a second, each scheduled ->
    in_progress -> deployed -> complete one second apart."""
    secs = max(4, int(soak_min * 60))
    print(f"\n## 2. RSS over a {secs} s soak: 200 events/s, keys flowing to complete, max_tracked 10,000\n")
    agents = [Agent(exe, f"soak{i}") for i, exe in enumerate(bins)]
    flow = ["scheduled", "in_progress", "deployed", "complete"]
    envs = ["dev", "staging", "production"]
    samples = [[] for _ in agents]
    try:
        start = time.time()
        written = 0
        for s in range(secs):
            now = int(time.time())
            chunk = []
            for step, st in enumerate(flow):
                block = s - step
                if block < 0:
                    continue
                for j in range(50):
                    k = block * 50 + j
                    chunk.append(line(f"soak-{k}", f"s{k % 40}", envs[k % 3], st, now))
            text = "".join(chunk)
            for a in agents:
                a.log.write(text); a.log.flush()
            written += len(chunk)
            for i, a in enumerate(agents):
                samples[i].append((s, status(a.p.pid)["VmRSS"]))
            nxt = start + s + 1
            time.sleep(max(0, nxt - time.time()))
        for a in agents:
            a.wait_accepted(written, 120)
        print(f"{written:,} events in {time.time() - start:.0f} s; RSS (MiB) by time:\n")
        marks = sorted(set([0, secs // 4, secs // 2, 3 * secs // 4, secs - 1]))
        print("| binary | " + " | ".join(f"{m} s" for m in marks) + " | 2nd half: start -> end (max) | evictions | series kept |")
        print("|---|" + "---|" * len(marks) + "---|---|---|")
        for i, a in enumerate(agents):
            v = dict(samples[i])
            half = [r for t, r in samples[i] if t >= secs // 2]
            m = get(a.port, "/metrics")
            ev = metric(m, "relstat_tracked_evictions_total") or 0
            kept = sum(1 for l in m.splitlines() if l.startswith("relstat_release_status{"))
            growth = 100.0 * (half[-1] - half[0]) / half[0]
            print(f"| {bins[i]} | " + " | ".join(mib(v[t]) for t in marks) +
                  f" | {mib(half[0])} -> {mib(half[-1])} ({mib(max(half))}): {growth:+.1f} % | {ev:.0f} | {kept} |")
    finally:
        for a in agents:
            a.stop()

def ingest():
    """3 and 5. The shared workload: replay, mtail, run --once, alternated."""
    print(f"\n## 3. replay vs mtail --one_shot, and 5. run --once CPU vs replay ({nlines:,} lines, benches/workload/)\n")
    log = os.path.join(W, "bench.log")
    subprocess.run([sys.executable, os.path.join(root, "benches/workload/benchgen.py"), log, str(nlines)], check=True)
    size = os.path.getsize(log)
    progs = os.path.join(W, "progs")
    os.makedirs(progs)
    shutil.copy(os.path.join(root, "benches/workload/transitions.mtail"), progs)
    def conf(tag):
        p = os.path.join(W, f"{tag}.toml")
        open(p, "w").write(f'''[agent]
data_dir = "{W}/{tag}-data"
[[sources]]
name = "bench"
type = "file"
paths = ["{log}"]
format = "logfmt"
start_at = "beginning"
[sources.fields]
time = "ts"
release = "rel"
service = "svc"
environment = "env"
status = "state"
actor = "who"
actor_type = "kind"
''')
        return p
    mtail = shutil.which("mtail")
    rounds = 1 if smoke else 3
    runs = {}
    for r in range(rounds):
        for i, exe in enumerate(bins):
            runs.setdefault(f"replay {i}", []).append(cpu_of([exe, "replay", "-c", conf("replay"), log]))
        if mtail:
            runs.setdefault("mtail", []).append(cpu_of([mtail, "--one_shot", "--one_shot_format", "prometheus",
                                                        "--progs", progs, "--logs", log, "--logtostderr"]))
        for i, exe in enumerate(bins):
            c = conf(f"once{i}-{r}")
            runs.setdefault(f"run --once {i}", []).append(cpu_of([exe, "run", "--once", "-c", c]))
            shutil.rmtree(f"{W}/once{i}-{r}-data", ignore_errors=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    print(f"file: {nlines:,} lines, {size / 1048576:.1f} MiB; medians of {rounds} alternated runs\n")
    print("| run | lines/s | MiB/s | CPU s (user+sys) |\n|---|---|---|---|")
    for k, (w, c) in med.items():
        name = k if len(bins) > 1 or k == "mtail" else k.rsplit(" ", 1)[0]
        print(f"| {name} | {nlines / w:,.0f} | {size / w / 1048576:.1f} | {c:.2f} |")
    print()
    for i, exe in enumerate(bins):
        w, c = med[f"replay {i}"]
        tag = f" ({exe})" if len(bins) > 1 else ""
        if mtail:
            print(f"replay / mtail lines/s{tag}: {med['mtail'][0] / w:.2f}x (target >= 10x)")
        print(f"run --once / replay CPU{tag}: {med[f'run --once {i}'][1] / c:.2f}x (target <= 2x)")
    if not mtail:
        print("mtail not installed: scripts/install-peers.sh or apt-get install mtail")
try:
    for name, figure in [("idle", idle), ("soak", soak), ("ingest", ingest)]:
        if name in only:
            figure()
finally:
    shutil.rmtree(W, ignore_errors=True)
PY

if [ "$CRITERION" = 1 ]; then
  echo
  echo "## 4. NDJSON parse on one core, and the SIEM formats per core (criterion)"
  echo
  run_bench() { # bench filter
    cargo bench --quiet --bench "$1" -- "$2" 2>/dev/null |
      awk '/^[a-z_]+\/[a-z0-9_]+/ { name = $1 } /thrpt:/ && /\/s/ { sub(/.*thrpt: *\[/, ""); sub(/\]$/, ""); print "| " name " | " $0 " |" }'
  }
  echo "| measurement | throughput [low middle high] |"
  echo "|---|---|"
  run_bench ingest 'parse_ndjson_bytes$'
  run_bench siem_format '^siem_format/(rfc5424|cef|leef|json)$'
  echo
  echo "targets: parse >= 250 MiB/s; every SIEM format >= 200k events/s (Kelem/s = thousand events/s)"
fi
