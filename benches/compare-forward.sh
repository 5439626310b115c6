#!/usr/bin/env bash
# Forwarding side by side, one run, same machine, rate limit off: relstat
# draining a full spool over TLS vs rsyslog forwarding the same messages
# (imfile -> omfwd over TLS with a disk-assisted queue), each (1) to a null
# TLS sink (examples/tls_null_sink.rs: parses octet-counted frames and
# discards them, so the receiver is not what is measured) and (2) to a real
# rsyslog TLS receiver (imtcp + gtls, omfile writing 2 bytes a message).
# Reports events/s and the CPU seconds (user+sys) of each forwarder process.
#
# The spool is filled realistically: `relstat run --once` over a generated
# NDJSON deployment log with `[siem] forward = "all"` (every accepted
# transition is one SIEM record), the SIEM address pointing at a closed
# port so nothing is delivered during the fill. The exact rfc5424 messages
# relstat sends are captured once by the null sink (--dump) and are what
# rsyslog's imfile reads, so both forward byte-identical messages.
#
# Usage: benches/compare-forward.sh [EVENTS]   (default 200000)
# Loopback only; every wait is bounded (TIMEOUT seconds per run, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
TIMEOUT=${TIMEOUT:-300}
scripts/install-peers.sh
T=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin relstat --example tls_null_sink
W=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "work dir: $W" || trap 'rm -rf "$W"' EXIT
printf 'machine: %s cores, %s; load average %s\n' "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(cut -d' ' -f1-3 /proc/loadavg)"

# A self-signed server certificate for "localhost" (not a CA: webpki refuses
# a CA certificate as the end entity), trusted by both clients as their CA.
cat > "$W/cert.cnf" <<'CNF'
[req]
distinguished_name = dn
x509_extensions = v3
prompt = no
[dn]
CN = localhost
[v3]
subjectAltName = DNS:localhost
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
CNF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -config "$W/cert.cnf" -keyout "$W/server.key" -out "$W/server.pem" 2>/dev/null
cp "$W/server.pem" "$W/ca.pem"

# N events: keys of 4 statuses each (scheduled -> in_progress -> deployed ->
# complete), 50 services, 3 environments, recent event times.
python3 - "$N" "$W/deploy.ndjson" <<'PY'
import json, sys, time
n, out = int(sys.argv[1]), sys.argv[2]
envs = ["dev", "staging", "production"]
st = ["scheduled", "in_progress", "deployed", "complete"]
t0 = int(time.time()) - 86400
with open(out, "w") as f:
    for i in range(n):
        k = i // 4
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + i // 10)),
            "release": f"2026.11.{k}", "service": f"svc-{k % 50}", "environment": envs[k % 3],
            "status": st[i % 4], "actor": "deploy-bot", "actor_type": "automation",
            "version": f"1.{k}.0"}, separators=(",", ":")) + "\n")
PY

relstat_conf() { # data_dir siem_port http_port
  cat <<TOML
[agent]
data_dir = "$1"
[http]
listen = "127.0.0.1:$3"
[[sources]]
name = "deploy"
type = "file"
paths = ["$W/deploy.ndjson"]
[siem]
transport = "tls"
address = "127.0.0.1:$2"
ca_file = "$W/ca.pem"
server_name = "localhost"
forward = "all"
rate_limit = 0
[spool]
max_bytes = "8 GiB"
TOML
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Fill: port 1 on loopback is closed, so the forwarder only retries.
relstat_conf "$W/spool" 1 "$(free_port)" > "$W/fill.toml"
/usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KiB peak RSS" -o "$W/fill.time" \
  timeout "$TIMEOUT" "$T/release/relstat" run --once -c "$W/fill.toml" 2> "$W/fill.log" ||
  { cat "$W/fill.log"; exit 1; }
echo "fill: relstat run --once -c fill.toml over $N lines: $(cat "$W/fill.time")"
"$T/release/relstat" spool inspect -c "$W/fill.toml" | sed 's/^/fill: /'

# rsyslog's action queue: in memory up to QSIZE messages, spilled to disk
# beyond its high watermark (90%). With rsyslog's default size (1000) the
# disk part stalled with messages left in it in two of our runs under load.
QSIZE=${QSIZE:-100000}
export N TIMEOUT W T QSIZE
python3 - <<'PY'
import os, shutil, signal, subprocess, sys, time
N, TIMEOUT, W, T = int(os.environ["N"]), int(os.environ["TIMEOUT"]), os.environ["W"], os.environ["T"]
TCK = os.sysconf("SC_CLK_TCK")
QSIZE = int(os.environ["QSIZE"])

def free_port():
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK

def wait_for(pred, what, limit=30):
    t = time.time()
    while not pred():
        if time.time() - t > limit:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.02)

def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()

def null_sink(tag, dump=None):
    pf, cf = f"{W}/{tag}.port", f"{W}/{tag}.count"
    args = [f"{T}/release/examples/tls_null_sink", f"{W}/server.pem", f"{W}/server.key", pf, cf]
    if dump:
        args += ["--dump", dump]
    p = subprocess.Popen(args)
    wait_for(lambda: os.path.exists(pf) and open(pf).read(), "the null sink")
    def count():
        try:
            return int(open(cf).read() or 0)
        except (OSError, ValueError):
            return 0
    return p, int(open(pf).read()), count

def rsyslog(tag, conf):
    d = f"{W}/{tag}"
    os.makedirs(f"{d}/work", exist_ok=True)
    open(f"{d}/rsyslog.conf", "w").write(
        f'global(workDirectory="{d}/work" maxMessageSize="64k" DefaultNetstreamDriver="gtls" '
        f'DefaultNetstreamDriverCAFile="{W}/ca.pem" DefaultNetstreamDriverCertFile="{W}/server.pem" '
        f'DefaultNetstreamDriverKeyFile="{W}/server.key")\n' + conf.replace("DIR", d))
    chk = subprocess.run(["rsyslogd", "-N1", "-f", f"{d}/rsyslog.conf"], capture_output=True, text=True)
    if chk.returncode != 0:
        sys.exit(f"rsyslog config {tag}: {chk.stderr}")
    return subprocess.Popen(["rsyslogd", "-n", "-f", f"{d}/rsyslog.conf", "-i", f"{d}/pid"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr", "w"))

def receiver():
    """A real rsyslog TLS receiver: imtcp + gtls, omfile writing "x\\n" a message."""
    port = free_port()
    p = rsyslog(f"recv{port}",
        'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in" '
        'SupportOctetCountedFraming="on" gnutlsPriorityString="NORMAL")\n'
        'template(name="n" type="string" string="x\\n")\n'
        'ruleset(name="in") { action(type="omfile" file="DIR/received.log" template="n") }\n')
    import socket
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return True
        except OSError:
            return False
    wait_for(up, "the rsyslog receiver")
    f = f"{W}/recv{port}/received.log"
    def count():
        try:
            return os.path.getsize(f) // 2
        except OSError:
            return 0
    return p, port, count

def relstat(tag, port):
    d = f"{W}/{tag}"
    shutil.copytree(f"{W}/spool", d)
    conf = open(f"{W}/fill.toml").read().replace(f'"{W}/spool"', f'"{d}"') \
        .replace('"127.0.0.1:1"', f'"127.0.0.1:{port}"')
    conf = conf.replace(conf.split("listen = ")[1].split("\n")[0], f'"127.0.0.1:{free_port()}"')
    open(f"{d}.toml", "w").write(conf)
    return subprocess.Popen([f"{T}/release/relstat", "run", "-c", f"{d}.toml"],
                            stderr=open(f"{d}.log", "w"))

def rsyslog_forwarder(tag, port):
    return rsyslog(tag,
        'module(load="imfile")\n'
        f'input(type="imfile" file="{W}/messages.txt" tag="x" ruleset="fwd")\n'
        'template(name="raw" type="string" string="%rawmsg%")\n'
        'ruleset(name="fwd") { action(type="omfwd" target="127.0.0.1" '
        f'port="{port}" protocol="tcp" TCP_Framing="octet-counted" template="raw" '
        'StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" '
        'StreamDriverPermittedPeers="localhost" '
        f'queue.type="LinkedList" queue.size="{QSIZE}" queue.filename="fwdq" queue.saveOnShutdown="on" '
        'action.resumeRetryCount="-1") }\n')

def measure(name, start_forwarder, make_receiver):
    rp, port, count = make_receiver()
    t0 = time.time()
    fp = start_forwarder(port)
    first = None
    while True:
        c = count()
        now = time.time()
        if c > 0 and first is None:
            first = now
        if c >= N:
            used = cpu(fp.pid)
            break
        if fp.poll() is not None:
            sys.exit(f"{name}: the forwarder exited ({fp.returncode}) after {c} events")
        if now - t0 > TIMEOUT:
            print(f"{name}: only {c} of {N} events after {TIMEOUT} s (counted as a failed run)")
            used = cpu(fp.pid)
            break
        time.sleep(0.005)
    stop(fp); stop(rp)
    return name, c, now - t0, now - (first or t0), used

# Capture the messages relstat sends (rfc5424, one a line) for rsyslog's imfile.
sp, port, count = null_sink("dump", dump=f"{W}/messages.txt")
fp = relstat("dump", port)
t = time.time()
while count() < N and time.time() - t < TIMEOUT and fp.poll() is None:
    time.sleep(0.05)
stop(fp); stop(sp)
got = sum(1 for _ in open(f"{W}/messages.txt", "rb"))
if got != N:
    sys.exit(f"captured {got} messages, expected {N}")
print(f"messages: {N}, {os.path.getsize(f'{W}/messages.txt') / N:.0f} bytes each on average (rfc5424)")

runs = [
    measure("relstat -> null TLS sink", lambda p: relstat("r_null", p), lambda: null_sink("n1")),
    measure("rsyslog -> null TLS sink", lambda p: rsyslog_forwarder("s_null", p), lambda: null_sink("n2")),
    measure("relstat -> rsyslog (gtls)", lambda p: relstat("r_rs", p), receiver),
    measure("rsyslog -> rsyslog (gtls)", lambda p: rsyslog_forwarder("s_rs", p), receiver),
]
print()
print(f"| forwarder -> receiver | events/s (from start) | events/s (first to last event) | CPU s (user+sys) | CPU µs/event |")
print("|---|---|---|---|---|")
for name, c, total, steady, used in runs:
    if c < N:
        name += f" (**incomplete: {c} of {N}**)"
    print(f"| {name} | {c / total:,.0f} | {c / max(steady, 1e-3):,.0f} | {used:.2f} | {used / max(c, 1) * 1e6:.1f} |")
r = {name: (c / total, used / max(c, 1)) for name, c, total, _, used in runs}
for recv in ["null TLS sink", "rsyslog (gtls)"]:
    (a, ca), (b, cb) = r[f"relstat -> {recv}"], r[f"rsyslog -> {recv}"]
    print(f"\nto the {recv}: relstat/rsyslog events/s ratio {a / b:.2f}, CPU per event ratio {ca / cb:.2f}")
PY
