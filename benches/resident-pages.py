#!/usr/bin/env python3
"""Where the binary's resident pages are: `relstat run` idle with N open
release keys (the feed of scripts/perf-figures.sh's idle figure), then
/proc/PID/smaps by mapping, and /proc/PID/pagemap's present bit for every
page of the binary's own mappings, by ELF section (`readelf -SW`; pages
copied on write counted as anonymous) and `.text` by the crate of the
symbols on its resident pages (`nm -S -C`, rough: generic code counts for
the crate named first in the symbol). Needs root (pagemap), readelf, nm.

    python3 benches/resident-pages.py BINARY [KEYS]   # KEYS: 10000

BENCHMARKS.md, step 10, has its output for the shipped build.
"""
import os, re, socket, struct, subprocess, sys, tempfile, time, collections
exe = os.path.abspath(sys.argv[1]); nkeys = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
W = tempfile.mkdtemp(prefix="pages-attr.")
def get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode()); out = []
    while True:
        b = s.recv(1 << 16)
        if not b: break
        out.append(b)
    s.close(); return b"".join(out).decode(errors="replace")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.makedirs(f"{W}/logs")
open(f"{W}/r.toml", "w").write(f'[agent]\ndata_dir = "{W}/data"\n[http]\nlisten = "127.0.0.1:{port}"\n'
    f'[[sources]]\nname = "f"\ntype = "file"\npaths = ["{W}/logs/*.log"]\n')
p = subprocess.Popen([exe, "run", "-c", f"{W}/r.toml"], stderr=open(f"{W}/stderr", "w"))
for _ in range(400):
    try:
        if " 200 " in get(port, "/readyz").split("\r\n")[0] + " ": break
    except OSError: pass
    time.sleep(0.05)
else:
    p.kill(); sys.exit(f"agent not ready after 20 s: {open(f'{W}/stderr').read()[-2000:]}")
t0 = int(time.time()) - 1800
def ts(t): return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
with open(f"{W}/logs/a.log", "w") as f:
    for k in range(nkeys):
        f.write(f'{{"time":"{ts(t0 + k // 10)}","release":"r{k}","service":"s{k % 40}","environment":"{["dev","staging","production"][k % 3]}","status":"in_progress","actor":"deploy-bot","actor_type":"automation"}}\n')
key = 'relstat_events_total{result="accepted",source="f"}'
for _ in range(3000):
    m = [l for l in get(port, "/metrics").splitlines() if l.startswith(key)]
    if m and float(m[0].rsplit(" ", 1)[1]) >= nkeys: break
    time.sleep(0.2)
else:
    p.kill(); sys.exit(f"not all {nkeys} events accepted after 600 s")
time.sleep(5)
pid = p.pid
st = {l.split(":")[0]: l.split(":")[1].strip() for l in open(f"/proc/{pid}/status")}
print(f"{exe}: VmRSS {st['VmRSS']}, RssFile {st['RssFile']}, RssAnon {st['RssAnon']}")
# smaps by mapping
maps = []; cur = None
for l in open(f"/proc/{pid}/smaps"):
    f = l.split()
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", l):
        a, b = (int(x, 16) for x in f[0].split("-"))
        cur = dict(start=a, end=b, perms=f[1], off=int(f[2], 16), path=f[5] if len(f) > 5 else "")
        maps.append(cur)
    elif f[0] in ("Rss:", "Anonymous:", "Private_Dirty:"):
        cur[f[0][:-1]] = int(f[1])
agg = collections.OrderedDict()
for m in maps:
    name = os.path.basename(m["path"]) if m["path"] else "[anon]"
    if m["path"] == exe: name = f"binary {m['perms']} off {m['off']:#x}"
    a = agg.setdefault(name, [0, 0]); a[0] += m.get("Rss", 0); a[1] += m.get("Anonymous", 0)
print("\n| mapping | Rss KiB | Anonymous KiB |\n|---|---|---|")
for k, (r, an) in agg.items():
    if r >= 64: print(f"| {k} | {r} | {an} |")
# pagemap: present pages of the binary's mappings by file offset
PG = 4096; pm = open(f"/proc/{pid}/pagemap", "rb")
present = {}  # file page offset -> anon?
for m in maps:
    if m["path"] != exe: continue
    n = (m["end"] - m["start"]) // PG
    pm.seek(m["start"] // PG * 8); data = pm.read(n * 8)
    for i in range(n):
        e = struct.unpack_from("<Q", data, i * 8)[0]
        if e >> 63 & 1:
            present[m["off"] + i * PG] = not (e >> 61 & 1)
p.terminate(); p.wait(20)
secs = []
for l in subprocess.run(["readelf", "-SW", exe], capture_output=True, text=True).stdout.splitlines():
    mm = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", l)
    if mm and mm.group(2) != "NOBITS" and int(mm.group(3), 16):
        secs.append((mm.group(1), int(mm.group(4), 16), int(mm.group(5), 16), int(mm.group(3), 16)))
print("\n| section | size KiB | resident KiB | of which anonymous KiB |\n|---|---|---|---|")
for name, off, size, addr in secs:
    pages = range(off // PG * PG, off + size, PG)
    res = sum(min(off + size, pg + PG) - max(off, pg) for pg in pages if pg in present)
    anon = sum(min(off + size, pg + PG) - max(off, pg) for pg in pages if present.get(pg))
    if size >= 16384 or res >= 16384:
        print(f"| {name} | {size // 1024} | {res // 1024} | {anon // 1024} |")
print(f"total resident pages of the binary: {len(present) * 4} KiB, anonymous {sum(present.values()) * 4} KiB")
# .text by crate: bytes of each sized symbol lying on resident pages
text = [s for s in secs if s[0] == ".text"][0]
delta = text[3] - text[1]  # vaddr - file offset
bycrate = collections.Counter()
out = subprocess.run(["nm", "-S", "-C", "--defined-only", exe], capture_output=True, text=True).stdout
for l in out.splitlines():
    f = l.split(" ", 3)
    if len(f) < 4 or f[2] not in "tTwW": continue
    a, sz = int(f[0], 16), int(f[1], 16); o = a - delta
    if not (text[1] <= o < text[1] + text[2]): continue
    nm = f[3].lstrip("<&*")
    nm = re.sub(r"^(dyn |impl |mut |const )", "", nm)
    crate = re.split(r"::|<| ", nm, 1)[0] or "?"
    pg = o // PG * PG; r = 0
    while pg < o + sz:
        if pg in present: r += min(o + sz, pg + PG) - max(o, pg)
        pg += PG
    bycrate[crate] += r
print("\n.text resident by crate (KiB, symbols' bytes on resident pages):",
      ", ".join(f"{c} {v // 1024}" for c, v in bycrate.most_common(18)))
