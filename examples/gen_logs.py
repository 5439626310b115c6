#!/usr/bin/env python3
"""Writes the example deployment logs (deterministic): a few weeks of
releases of three services through staging and production, with what real
logs contain: retries, a failure rolled back, a redeploy, a late line, a
duplicate, a malformed line, an unknown status and a release still in
progress at the end."""
import json, random
from datetime import datetime, timedelta, timezone

random.seed(7)
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
json_lines, text_lines = [], []

def j(t, release, service, env, status, actor="deploy-bot", actor_type="automation", **kw):
    rec = {"time": iso(t), "release": release, "service": service, "env": env,
           "status": status, "actor": actor, "actor_type": actor_type}
    rec.update(kw)
    json_lines.append((t, json.dumps(rec)))

def s(t, actor, service, release, env, status, reason=""):
    text_lines.append((t, f"{iso(t)} {actor} {service} {release} {env} {status}" + (f" {reason}" if reason else "")))

for day in range(14):
    for k, service in enumerate(["payments", "checkout"]):
        if (day + k) % 3:
            continue
        t = T0 + timedelta(days=day, hours=k)
        rel = f"2026.11.{day + 2}"
        sha = f"{random.getrandbits(40):010x}"
        commit = {"sha": sha, "time": iso(t - timedelta(hours=random.randint(2, 30)))}
        j(t, rel, service, "staging", "scheduled")
        j(t + timedelta(minutes=5), rel, service, "staging", "in_progress", commit=commit)
        j(t + timedelta(minutes=14), rel, service, "staging", "deployed", commit=commit)
        j(t + timedelta(minutes=30), rel, service, "production", "scheduled")
        j(t + timedelta(minutes=40), rel, service, "production", "in_test")
        j(t + timedelta(hours=3), rel, service, "production", "approved", actor="alice", actor_type="human",
          reason="CHG-%d" % (1000 + day))
        tp = t + timedelta(hours=4)
        j(tp, rel, service, "production", "in_progress", commit=commit)
        if day == 6 and service == "payments":
            j(tp + timedelta(minutes=20), rel, service, "production", "failed", reason="health check failed")
            j(tp + timedelta(minutes=32), rel, service, "production", "rolled_back", actor="bob", actor_type="human")
            continue
        j(tp + timedelta(minutes=random.randint(8, 25)), rel, service, "production", "deployed", commit=commit)

# search is deployed by a shell script that writes text lines
for day in range(0, 14, 2):
    t = T0 + timedelta(days=day, hours=6)
    rel = f"2026.11.{day + 2}-s"
    s(t, "deploy-bot", "search", rel, "staging", "STARTED")
    s(t + timedelta(minutes=9), "deploy-bot", "search", rel, "staging", "SUCCESS")
    s(t + timedelta(hours=2), "deploy-bot", "search", rel, "production", "STARTED")
    if day == 8:
        s(t + timedelta(hours=2, minutes=12), "deploy-bot", "search", rel, "production", "SUCCESS")
        s(t + timedelta(hours=5), "carol", "search", rel, "production", "ROLLBACK", "error budget burn")
        continue
    s(t + timedelta(hours=2, minutes=11), "deploy-bot", "search", rel, "production", "SUCCESS")
    s(t + timedelta(hours=3), "deploy-bot", "search", rel, "production", "VERIFIED")

# the last release is still rolling out when the log ends
end = T0 + timedelta(days=14, hours=2)
j(end, "2026.11.16", "payments", "production", "scheduled")
j(end + timedelta(minutes=1), "2026.11.16", "payments", "production", "in_progress")

json_lines.sort(key=lambda x: x[0])
text_lines.sort(key=lambda x: x[0])
out = [l for _, l in json_lines]
# what real logs also contain:
out.insert(10, out[9])                                   # a duplicate line
late = json.loads(out[30]); late["status"] = "in_test"   # a late line, logged out of order
late["time"] = iso(datetime.fromisoformat(late["time"].replace("Z", "+00:00")) - timedelta(minutes=1))
out.insert(35, json.dumps(late))
out.insert(20, '{"time": "2026-11-04T10:00:00Z", "release": ')          # truncated line
out.insert(40, json.dumps({"time": "2026-11-06T10:00:00Z", "release": "2026.11.6", "service": "payments",
                           "env": "staging", "status": "smoke_testing"}))  # a status no state maps
with open("examples/logs/deploy.ndjson", "w") as f:
    f.write("\n".join(out) + "\n")
with open("examples/logs/search-deploy.log", "w") as f:
    f.write("\n".join(l for _, l in text_lines) + "\n")
