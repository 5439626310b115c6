#!/usr/bin/env python3
"""Line -> series latency and memory of a running agent (release build).

1. latency: appends one line at a time to a tailed file and polls /metrics
   (every 1 ms) until that line's release appears; reports p50/p99/max over
   N lines. The poll itself costs up to ~1 ms plus one /metrics render.
2. memory: appends lines for 10,000 distinct release keys (status
   in_progress, so all stay tracked), waits until they are accepted, lets
   the agent idle, and reads its RSS (VmRSS) and CPU time over an idle
   window.

Usage: benches/latency.py [--lines 300] [--keys 10000] [--idle 10]
(builds target/release/relstat first)."""
import argparse, json, os, socket, subprocess, sys, tempfile, time

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

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=10)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
    exe = os.path.join(root, "target", "release", "relstat")
    d = tempfile.mkdtemp()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.makedirs(f"{d}/logs")
    open(f"{d}/r.toml", "w").write(
        f'[agent]\ndata_dir = "{d}/data"\n[http]\nlisten = "127.0.0.1:{port}"\n'
        f'[[sources]]\nname = "f"\ntype = "file"\npaths = ["{d}/logs/*.log"]\n')
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
        lat = []
        for i in range(1, a.lines + 1):
            needle = f'release="r{i}"'
            log.write(line(i)); log.flush()
            t0 = time.perf_counter()
            while needle not in get(port, "/metrics"):
                if time.perf_counter() - t0 > 5:
                    sys.exit(f"line {i} not visible after 5 s")
                time.sleep(0.001)
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        lat.sort()
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        print(f"line -> series latency over {len(lat)} lines: p50 {pct(0.50):.1f} ms, "
              f"p99 {pct(0.99):.1f} ms, max {lat[-1]:.1f} ms")
        base = a.lines
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
        p.terminate(); p.wait()

if __name__ == "__main__":
    main()
