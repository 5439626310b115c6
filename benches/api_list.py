#!/usr/bin/env python3
"""Latency of `GET /api/v1/releases` with 10,000 tracked keys (release build).

Appends lines for N distinct release keys (status in_progress, recent event
times, so all stay tracked and open), waits until the API lists them all,
then times R sequential requests over one fresh connection each:
1. the full list (200, ~4 MB of JSON),
2. the same with If-None-Match (304: the body is built for the hash, not sent),
3. the list filtered to one environment,
4. a snapshot `?at=` now (folded from the whole history),
and reports p50/p99/max in ms, measured by the client (connect to last byte).

Usage: benches/api_list.py [--keys 10000] [--requests 200] [--bin BIN]...
(build the release binary first). With several --bin (e.g. a build of the
previous commit and this one) each gets its own agent and the requests
alternate between them, so the comparison sees the same machine load."""
import argparse, json, os, socket, subprocess, sys, tempfile, time

def get(port, path, headers=()):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    h = "".join(f"{k}: {v}\r\n" for k, v in headers)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n{h}\r\n".encode())
    chunks = []
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        chunks.append(b)
    s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    return status, hdrs, body

T0 = int(time.time()) - 1800

def line(i):
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + i // 10))
    return json.dumps({"time": ts, "release": f"r{i}", "service": f"s{i % 40}",
                       "environment": ["dev", "staging", "production"][i % 3],
                       "status": "in_progress", "actor": "deploy-bot",
                       "reason": f"CHG-{i}"}) + "\n"

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def start(binary, keys):
    """An agent on a fresh data dir and port, fed `keys` lines; returns
    (process, port, list ETag, listed bytes) once it lists them all."""
    d = tempfile.mkdtemp()
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    os.makedirs(f"{d}/logs")
    with open(f"{d}/relstat.toml", "w") as f:
        f.write(f'[agent]\ndata_dir = "{d}/data"\n[http]\nlisten = "127.0.0.1:{port}"\n'
                f'[[sources]]\nname = "f"\ntype = "file"\npaths = ["{d}/logs/*.log"]\n')
    with open(f"{d}/logs/a.log", "w") as f:
        f.writelines(line(i) for i in range(keys))
    p = subprocess.Popen([binary, "run", "-c", f"{d}/relstat.toml"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            st, _, body = get(port, "/api/v1/releases?release=r%d" % (keys - 1))
            if st == 200 and json.loads(body)["count"] == 1:
                break
        except OSError:
            pass
        time.sleep(0.2)
    st, h, body = get(port, "/api/v1/releases")
    n = json.loads(body)["count"]
    assert n == keys, (binary, n)
    return p, port, h["etag"], len(body)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--bin", action="append",
                    help="a relstat binary; repeat to compare builds side by side "
                         "(requests alternate between them). Default target/release/relstat")
    a = ap.parse_args()
    bins = a.bin or ["target/release/relstat"]
    agents = []
    try:
        for b in bins:
            agents.append(start(b, a.keys))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        cases = [("list", "/api/v1/releases", False, 200),
                 ("list, If-None-Match", "/api/v1/releases", True, 304),
                 ("environment=production", "/api/v1/releases?environment=production", False, 200),
                 ("at=now (snapshot)", f"/api/v1/releases?at={now}", False, 200)]
        print(f"{a.keys} tracked keys, {agents[0][3]} bytes listed, {a.requests} requests per case"
              f" and binary; load average before: {os.getloadavg()[0]:.1f}")
        for name, path, conditional, want in cases:
            ts = [[] for _ in agents]
            for _ in range(a.requests if "snapshot" not in name else max(20, a.requests // 10)):
                for i, (_, port, tag, _) in enumerate(agents):
                    hdrs = (("If-None-Match", tag),) if conditional else ()
                    t = time.perf_counter()
                    st, _, _ = get(port, path, hdrs)
                    ts[i].append((time.perf_counter() - t) * 1000)
                    assert st == want, (bins[i], name, st)
            for b, t in zip(bins, ts):
                print(f"| {name} | {b} | p50 {pct(t, 50):.1f} ms | p99 {pct(t, 99):.1f} ms | max {max(t):.1f} ms |")
            if len(bins) > 1:
                print(f"| {name} | p99 ratio {bins[0]} / {bins[-1]} | {pct(ts[0], 99) / pct(ts[-1], 99):.2f} |")
    finally:
        for p, *_ in agents:
            p.terminate(); p.wait()

if __name__ == "__main__":
    main()
