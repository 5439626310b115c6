#!/usr/bin/env python3
"""Latency, memory and idle CPU of a running agent (release build).

1. line -> series: appends one line at a time to a tailed file and polls
   /metrics (every 1 ms) until that line's release appears; reports
   p50/p99/max over N lines. The poll costs up to ~1 ms plus one render.
2. line -> SIEM (--siem): the agent forwards every transition
   (`forward = "all"`, rfc5424 over TLS) to a real rsyslog TLS receiver
   (imtcp + gtls, omfile); the script polls rsyslog's output file (every
   1 ms) until the line's release appears.
3. idle: appends lines for 10,000 distinct release keys (status in_progress
   with recent event times, so all stay tracked, none stale or stuck), waits
   until they are accepted and the agent settles (2 s), then reads VmRSS and
   the CPU time (user+sys, /proc/PID/stat) over an idle window (60 s).

Usage: benches/latency.py [--lines 300] [--keys 10000] [--idle 60] [--siem]
       [--no-latency] [--bin PATH]
(builds the release binary first, in $CARGO_TARGET_DIR or target/).
Loopback only; every wait is bounded."""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time

def get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    chunks = []
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
    s.close()
    return b"".join(chunks).decode(errors="replace")

T0 = int(time.time()) - 1800  # recent: keys stay open (not stale, not stuck)

def line(i, status="in_progress"):
    t = T0 + i // 10
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    return json.dumps({"time": ts, "release": f"r{i}", "service": f"s{i % 40}",
                       "environment": ["dev", "staging", "production"][i % 3], "status": status}) + "\n"

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def rss_kib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def start_rsyslog(d):
    """A real rsyslog TLS receiver (imtcp + gtls) writing each message to a
    file; returns (process, port, a function reading what it received)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", f"{d}/server.key", "-out", f"{d}/server.pem"],
                   check=True, capture_output=True)
    shutil.copy(f"{d}/server.pem", f"{d}/ca.pem")
    os.makedirs(f"{d}/rs")
    port = free_port()
    open(f"{d}/rs/rsyslog.conf", "w").write(
        f'global(workDirectory="{d}/rs" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{d}/ca.pem" '
        f'DefaultNetstreamDriverCertFile="{d}/server.pem" DefaultNetstreamDriverKeyFile="{d}/server.key")\n'
        'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in" '
        'SupportOctetCountedFraming="on" gnutlsPriorityString="NORMAL")\n'
        'template(name="m" type="string" string="%structured-data% %msg%\\n")\n'
        f'ruleset(name="in") {{ action(type="omfile" file="{d}/rs/received.log" template="m") }}\n')
    rs = subprocess.Popen(["rsyslogd", "-n", "-f", f"{d}/rs/rsyslog.conf", "-i", f"{d}/rs/pid"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
        except OSError:
            if time.time() - t > 10:
                sys.exit("rsyslog did not start")
            time.sleep(0.05)
    open(f"{d}/rs/received.log", "a").close()
    f = open(f"{d}/rs/received.log")
    seen = []
    def received():
        seen.append(f.read())
        return "".join(seen)
    return rs, port, received

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--siem", action="store_true", help="also line -> SIEM (rsyslog over TLS)")
    ap.add_argument("--no-latency", action="store_true", help="only the idle measurement")
    ap.add_argument("--bin", help="a relstat binary to run (default: build the release binary)")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = a.bin
    if not exe:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "relstat"], cwd=root, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
        exe = os.path.join(target, "release", "relstat")
    d = tempfile.mkdtemp()
    port = free_port()
    os.makedirs(f"{d}/logs")
    conf = (f'[agent]\ndata_dir = "{d}/data"\n[http]\nlisten = "127.0.0.1:{port}"\n'
            f'[[sources]]\nname = "f"\ntype = "file"\npaths = ["{d}/logs/*.log"]\n')
    rsyslog = None
    if a.siem:
        rsyslog, sport, received = start_rsyslog(d)
        conf += (f'[siem]\ntransport = "tls"\naddress = "127.0.0.1:{sport}"\nca_file = "{d}/ca.pem"\n'
                 f'server_name = "localhost"\nforward = "all"\n')
    open(f"{d}/r.toml", "w").write(conf)
    log = open(f"{d}/logs/a.log", "a")
    p = subprocess.Popen([exe, "run", "-c", f"{d}/r.toml"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if " 200 " in get(port, "/readyz").split("\r\n")[0] + " ":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        n = 0 if a.no_latency else a.lines
        if a.siem and n:
            # The first line also waits for the TLS connection: not timed.
            log.write(line(0)); log.flush()
            t0 = time.time()
            while 'release="r0"' not in received():
                if time.time() - t0 > 30:
                    sys.exit("the first event did not reach rsyslog in 30 s")
                time.sleep(0.01)
        lat, slat = [], []
        for i in range(1, n + 1):
            needle = f'release="r{i}"'
            log.write(line(i)); log.flush()
            t0 = time.perf_counter()
            while needle not in get(port, "/metrics"):
                if time.perf_counter() - t0 > 5:
                    sys.exit(f"line {i} not visible after 5 s")
                time.sleep(0.001)
            lat.append((time.perf_counter() - t0) * 1000)
            if a.siem:
                while needle not in received():
                    if time.perf_counter() - t0 > 5:
                        sys.exit(f"line {i} not at the SIEM after 5 s")
                    time.sleep(0.001)
                slat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        for name, v in [("line -> series", lat), ("line -> SIEM (rsyslog, TLS)", slat)]:
            if v:
                v.sort()
                pct = lambda q: v[min(len(v) - 1, int(q * len(v)))]
                print(f"{name} latency over {len(v)} lines: p50 {pct(0.50):.1f} ms, "
                      f"p99 {pct(0.99):.1f} ms, max {v[-1]:.1f} ms")
        base = n
        for i in range(base + 1, base + a.keys + 1):
            log.write(line(i))
        log.flush()
        want = base + a.keys
        for _ in range(600):
            m = get(port, "/metrics")
            if f'relstat_events_total{{result="accepted",source="f"}} {want}' in m:
                break
            time.sleep(0.1)
        time.sleep(2)
        c0 = cpu_seconds(p.pid); t0 = time.time()
        time.sleep(a.idle)
        cpu = cpu_seconds(p.pid) - c0
        print(f"{want} tracked keys: RSS {rss_kib(p.pid) / 1024:.1f} MiB after loading; "
              f"idle CPU {cpu:.2f} s over {time.time() - t0:.0f} s "
              f"({100 * cpu / (time.time() - t0):.2f}% of one core)")
    finally:
        p.terminate(); p.wait(10)
        if rsyslog:
            rsyslog.terminate(); rsyslog.wait(10)
        shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    main()
