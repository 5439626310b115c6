#!/usr/bin/env python3
"""Writes the Grafana dashboards (dashboards/*.json) from one description:
the same variables, datasource and conventions on every dashboard, panel ids
unique by construction. Edit this file, then run it from the repository root:

    python3 dashboards/generate.py

tests/ops.rs checks the JSON's structure and runs every query against a real
Prometheus scraping the agent on the shipped example."""
import json
import os

SCHEMA_VERSION = 41  # Grafana 12
DS = {"type": "prometheus", "uid": "${datasource}"}
ENV = 'environment=~"$environment"'
SVC = 'service=~"$service"'
SITE = 'site=~"$site"'
RI = "$__rate_interval"
RANGE = "$__range"
# process_* comes from every exporter: keep relstat's.
RELSTAT = "on (instance, job) relstat_build_info"


def var_query(name, label, query, multi=True):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def templating(extra=()):
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "options": [],
            },
            var_query("environment", "Environment", "label_values(relstat_releases_in_status, environment)"),
            var_query("service", "Service", 'label_values(relstat_deployments_total{environment=~"$environment"}, service)'),
            var_query("site", "Site", 'label_values(relstat_status_duration_seconds_count{environment=~"$environment"}, site)'),
            *extra,
        ]
    }


class Board:
    def __init__(self, uid, title, description, annotations=()):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0
        self.annotations = list(annotations)

    def panel(self, kind, title, targets, w=12, h=8, unit=None, description="", **opts):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        p = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": [],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {},
        }
        if unit:
            p["fieldConfig"]["defaults"]["unit"] = unit
        for i, t in enumerate(targets):
            expr, legend = t[0], t[1]
            fmt = t[2] if len(t) > 2 else "time_series"
            target = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend, "format": fmt, "range": True}
            if kind in ("stat", "table", "bargauge") or fmt == "table":
                target["instant"] = True
                target["range"] = False
            p["targets"].append(target)
        if kind == "heatmap":
            p["options"] = {"calculate": False, "yAxis": {"unit": unit or "s"}, "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}
        if kind == "timeseries" and opts.get("stack"):
            p["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}, "drawStyle": "bars" if opts.get("bars") else "line", "fillOpacity": 60}
        if kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "none"}
            if "thresholds" in opts:
                p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": opts["thresholds"]}
        if kind == "table":
            p["transformations"] = [{"id": "merge"}] if len(targets) > 1 else []
            p["transformations"].append({"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True}}})
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)
        return p

    def write(self, path, extra_vars=()):
        d = {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["relstat"],
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "time": {"from": "now-7d", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "refresh": "1m",
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}] + self.annotations},
            "links": [{"title": "relstat", "type": "dashboards", "tags": ["relstat"], "asDropdown": True, "includeVars": True, "keepTime": True}],
            "templating": templating(extra_vars),
            "panels": self.panels,
        }
        with open(path, "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")


# Deployments as annotations: a transition into deployed, from the
# transition counter (every agent has it; no per-release series needed).
DEPLOY_ANNOTATION = {
    "name": "Deployments",
    "datasource": DS,
    "enable": True,
    "hide": False,
    "iconColor": "rgba(115, 191, 105, 1)",
    "expr": f'sum by (environment) (increase(relstat_status_transitions_total{{{ENV},to="deployed"}}[2m])) > 0',
    "step": "1m",
    "titleFormat": "Deployment in {{environment}}",
    "textFormat": "{{environment}}: a key moved to deployed",
    "useValueForTime": False,
}


def overview():
    b = Board("relstat-overview", "relstat / Release overview",
              "Current status of every release by environment, time in status, stuck releases.",
              annotations=[DEPLOY_ANNOTATION])
    b.panel("stat", "Releases in progress", [(f'sum(relstat_releases_in_status{{{ENV},status=~"in_progress|paused"}})', "")], w=6, h=4)
    b.panel("stat", "Stuck releases", [(f"sum(relstat_releases_stuck{{{ENV}}}) or vector(0)", "")], w=6, h=4,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
    b.panel("stat", "Deployments (range)", [(f'sum(increase(relstat_deployments_total{{{ENV},{SVC},outcome="success"}}[{RANGE}]))', "")], w=6, h=4)
    b.panel("stat", "Anomalies (range)", [(f"sum(increase(relstat_anomalies_total{{{ENV}}}[{RANGE}])) or vector(0)", "")], w=6, h=4)
    b.panel("bargauge", "Current status by environment", [(f"sum by (environment, status) (relstat_releases_in_status{{{ENV}}}) > 0", "{{environment}} / {{status}}")],
            w=8, h=10, description="Tracked keys (release, service, environment, site) in each status.")
    b.panel("table", "Releases: current status and time in status",
            [(f"relstat:release_time_in_status:seconds{{{ENV},{SVC},{SITE}}}", "", "table")], w=16, h=10, unit="s",
            description="Every tracked key with its current status; the value is the time in status (recording rule relstat:release_time_in_status:seconds).")
    b.panel("table", "Stuck releases (per environment and status)",
            [(f"sum by (environment, status) (relstat_releases_stuck{{{ENV}}}) > 0", "", "table")], w=8, h=8,
            description="Keys past their status's stuck_after (agent's clock). Each also raised a stuck anomaly.")
    b.panel("table", "Longest in an open status (top 15)",
            [(f'topk(15, (time() - relstat_release_status_since_timestamp_seconds{{{ENV},{SVC},{SITE}}}) * on (instance, job, release, service, environment, site) group_left (status) (relstat_release_status{{status!~"deployed|complete|rolled_back|cancelled"}} == 1))', "", "table")],
            w=16, h=8, unit="s", description="Releases not in a resting or terminal status, by time in status.")
    b.panel("table", "Rollups: release × environment, targets per status",
            [(f"relstat_release_rollup_status{{{ENV}}} > 0", "", "table")], w=12, h=8,
            description="One release in one environment across every service and site (relstat_release_rollup_status). "
                        "status=missing counts expected targets ([rollups], or the previous release's) that never reported; "
                        "a rollup is complete when only status=complete is left.")
    b.panel("table", "Fleet rollups (recording rule, every agent)",
            [(f"relstat:release_rollup_targets:count{{{ENV}}}", "", "table")], w=12, h=8,
            description="The same rollup computed in Prometheus from every agent's per-key series (alerts/relstat.rules.yml). "
                        "A target that never reported is invisible here.")
    b.panel("timeseries", "Releases in each status", [(f"sum by (status) (relstat_releases_in_status{{{ENV}}})", "{{status}}")], w=12, stack=True)
    b.panel("timeseries", "Status transitions", [(f"sum by (from, to) (increase(relstat_status_transitions_total{{{ENV}}}[{RI}]))", "{{from}} → {{to}}")], w=12)
    return b


def correlation():
    query_var = {
        "name": "error_rate",
        "label": "Error-rate query",
        "type": "textbox",
        "query": 'sum(rate(relstat_events_total{result=~"invalid|unmapped"}[5m]))',
        "current": {"text": 'sum(rate(relstat_events_total{result=~"invalid|unmapped"}[5m]))',
                    "value": 'sum(rate(relstat_events_total{result=~"invalid|unmapped"}[5m]))'},
        "hide": 0,
        "options": [],
        "description": "Any PromQL giving an error rate (e.g. sum(rate(http_requests_total{code=~\"5..\"}[5m]))); deployments are overlaid as annotations.",
    }
    b = Board("relstat-correlation", "relstat / Change correlation",
              "Deployments overlaid on an error-rate query of your choice (variable error_rate): did this change break something?",
              annotations=[DEPLOY_ANNOTATION])
    b.panel("timeseries", "Error rate (the chosen query), with deployments", [("$error_rate", "error rate")], w=24, h=10,
            description="The query in the error_rate variable; the green marks are deployments (transitions to deployed).")
    b.panel("timeseries", "Deployments", [(f"sum by (environment, outcome) (increase(relstat_deployments_total{{{ENV},{SVC}}}[{RI}]))", "{{environment}} {{outcome}}")],
            w=12, stack=True, bars=True)
    b.panel("timeseries", "Anomalies", [(f"sum by (rule) (increase(relstat_anomalies_total{{{ENV}}}[{RI}]))", "{{rule}}")], w=12, stack=True, bars=True)
    return b, [query_var]


def durations():
    status_var = var_query("status", "Status", 'label_values(relstat_status_duration_seconds_count{environment=~"$environment"}, status)')
    b = Board("relstat-durations", "relstat / Status durations and MTTSR",
              "Time spent in each status and how long stuck or conflicting statuses take to resolve (MTTSR).")
    sel = f'{ENV},{SVC},{SITE},status=~"$status"'
    b.panel("heatmap", "Time in status (observed when left)",
            [(f"sum by (le) (increase(relstat_status_duration_seconds_bucket{{{sel}}}[{RI}]))", "{{le}}", "heatmap")], w=12, unit="s")
    b.panel("timeseries", "Time in status p50 / p95",
            [(f"histogram_quantile(0.5, sum by (le, status) (rate(relstat_status_duration_seconds_bucket{{{sel}}}[{RI}])))", "p50 {{status}}"),
             (f"histogram_quantile(0.95, sum by (le, status) (rate(relstat_status_duration_seconds_bucket{{{sel}}}[{RI}])))", "p95 {{status}}")],
            w=12, unit="s")
    b.panel("table", "Time in status over the range (p50, p95, mean)",
            [(f"histogram_quantile(0.5, sum by (le, status) (increase(relstat_status_duration_seconds_bucket{{{sel}}}[{RANGE}])))", "p50", "table"),
             (f"histogram_quantile(0.95, sum by (le, status) (increase(relstat_status_duration_seconds_bucket{{{sel}}}[{RANGE}])))", "p95", "table"),
             (f"sum by (status) (increase(relstat_status_duration_seconds_sum{{{sel}}}[{RANGE}])) / sum by (status) (increase(relstat_status_duration_seconds_count{{{sel}}}[{RANGE}]))", "mean", "table")],
            w=24, h=8, unit="s")
    rsel = f'{ENV},{SITE},status=~"$status"'
    b.panel("stat", "MTTSR over the range, by cause",
            [(f"sum by (cause) (increase(relstat_status_resolution_seconds_sum{{{rsel}}}[{RANGE}])) / sum by (cause) (increase(relstat_status_resolution_seconds_count{{{rsel}}}[{RANGE}]))", "{{cause}}")],
            w=8, unit="s", description="Mean time to resolve a stuck status (cause=stuck) or a conflict between sources (cause=conflict).")
    b.panel("timeseries", "MTTSR (1d, recorded)",
            [(f"relstat:status_resolution_seconds:mean1d{{{ENV}}}", "{{environment}} {{cause}}")], w=16, unit="s",
            description="Recording rule relstat:status_resolution_seconds:mean1d; RelstatMTTSRAboveSLO fires above 4h.")
    b.panel("heatmap", "Resolution time",
            [(f"sum by (le) (increase(relstat_status_resolution_seconds_bucket{{{rsel}}}[{RI}]))", "{{le}}", "heatmap")], w=12, unit="s")
    b.panel("timeseries", "Resolution time p50 / p95",
            [(f"histogram_quantile(0.5, sum by (le, cause) (rate(relstat_status_resolution_seconds_bucket{{{rsel}}}[{RI}])))", "p50 {{cause}}"),
             (f"histogram_quantile(0.95, sum by (le, cause) (rate(relstat_status_resolution_seconds_bucket{{{rsel}}}[{RI}])))", "p95 {{cause}}")],
            w=12, unit="s")
    return b, [status_var]


def dora():
    b = Board("relstat-dora", "relstat / DORA",
              "Deployment frequency, lead time for changes, change failure rate and time to restore, from relstat's series.")
    dsel = f"{ENV},{SVC}"
    hsel = f"{ENV},{SVC},{SITE}"
    b.panel("stat", "Deployment frequency (per day)",
            [(f'sum(increase(relstat_deployments_total{{{dsel},outcome="success"}}[{RANGE}])) / ($__range_s / 86400)', "")], w=6, h=5, unit="short")
    b.panel("stat", "Lead time for changes (p50)",
            [(f"histogram_quantile(0.5, sum by (le) (increase(relstat_lead_time_seconds_bucket{{{hsel}}}[{RANGE}])))", "")], w=6, h=5, unit="s",
            description="commit_time to deployed; only deployments whose events carry commit_time.")
    b.panel("stat", "Change failure rate",
            [(f'sum(increase(relstat_deployments_total{{{dsel},outcome=~"failure|rollback"}}[{RANGE}]) or 0 * increase(relstat_deployments_total{{{dsel}}}[{RANGE}])) / sum(increase(relstat_deployments_total{{{dsel},outcome=~"success|failure"}}[{RANGE}]))', "")],
            w=6, h=5, unit="percentunit", description="(failure + rollback) / (success + failure), docs/metrics.md.",
            thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.15}, {"color": "red", "value": 0.3}])
    b.panel("stat", "Time to restore (mean)",
            [(f"sum(increase(relstat_restore_seconds_sum{{{hsel}}}[{RANGE}])) / sum(increase(relstat_restore_seconds_count{{{hsel}}}[{RANGE}]))", "")], w=6, h=5, unit="s",
            description="From a failure or rollback to the next deployed of that service and environment.")
    b.panel("timeseries", "Deployments by outcome",
            [(f"sum by (outcome) (increase(relstat_deployments_total{{{dsel}}}[{RI}]))", "{{outcome}}")], w=12, stack=True, bars=True)
    b.panel("timeseries", "Deployments per day and change failure rate (1d, recorded)",
            [(f'sum by (environment) (relstat:deployments:increase1d{{{ENV},outcome="success"}})', "deployments/day {{environment}}"),
             (f"relstat:change_failure_rate:ratio1d{{{ENV}}}", "CFR {{environment}}")], w=12)
    b.panel("timeseries", "Lead time p50 / p95",
            [(f"histogram_quantile(0.5, sum by (le, environment) (rate(relstat_lead_time_seconds_bucket{{{hsel}}}[{RI}])))", "p50 {{environment}}"),
             (f"histogram_quantile(0.95, sum by (le, environment) (rate(relstat_lead_time_seconds_bucket{{{hsel}}}[{RI}])))", "p95 {{environment}}")], w=12, unit="s")
    b.panel("timeseries", "Time to restore p50 / p95",
            [(f"histogram_quantile(0.5, sum by (le, environment) (rate(relstat_restore_seconds_bucket{{{hsel}}}[{RI}])))", "p50 {{environment}}"),
             (f"histogram_quantile(0.95, sum by (le, environment) (rate(relstat_restore_seconds_bucket{{{hsel}}}[{RI}])))", "p95 {{environment}}")], w=12, unit="s")
    b.panel("table", "Time to restore by service (since the agent started)",
            [(f"sum by (service, environment) (relstat_restore_seconds_sum{{{hsel}}}) / sum by (service, environment) (relstat_restore_seconds_count{{{hsel}}})", "mean", "table"),
             (f"sum by (service, environment) (relstat_restore_seconds_count{{{hsel}}})", "restores", "table")],
            w=24, h=7, unit="s",
            description="Totals, not increases: a service's first restore creates its series, which increase() does not count.")
    b.panel("table", "By service over the range",
            [(f'sum by (service, environment) (increase(relstat_deployments_total{{{dsel},outcome="success"}}[{RANGE}]))', "deployments", "table"),
             (f'sum by (service, environment) (increase(relstat_deployments_total{{{dsel},outcome=~"failure|rollback"}}[{RANGE}]) or 0 * increase(relstat_deployments_total{{{dsel}}}[{RANGE}])) / sum by (service, environment) (increase(relstat_deployments_total{{{dsel},outcome=~"success|failure"}}[{RANGE}]))', "change failure rate", "table"),
             (f"histogram_quantile(0.5, sum by (le, service, environment) (increase(relstat_lead_time_seconds_bucket{{{hsel}}}[{RANGE}])))", "lead time p50", "table")],
            w=24, h=9)
    return b


def security():
    rule_var = var_query("rule", "Rule", 'label_values(relstat_anomalies_total{environment=~"$environment"}, rule)')
    b = Board("relstat-security", "relstat / Security anomalies",
              "Anomalies by rule, severity and environment (the same records go to the SIEM).")
    sel = f'{ENV},rule=~"$rule"'
    b.panel("stat", "Critical anomalies (range)",
            [(f'sum(increase(relstat_anomalies_total{{{sel},severity="critical"}}[{RANGE}])) or vector(0)', "")], w=8, h=4,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
            description="gate_bypass and unauthorized_actor by default: RelstatGateBypass / RelstatUnauthorizedActor page on them.")
    b.panel("stat", "Anomalies (range)", [(f"sum(increase(relstat_anomalies_total{{{sel}}}[{RANGE}])) or vector(0)", "")], w=8, h=4)
    b.panel("stat", "Anomalies since the agents' stores began", [(f"sum(relstat_anomalies_total{{{sel}}})", "")], w=8, h=4)
    b.panel("timeseries", "Anomalies by rule", [(f"sum by (rule) (increase(relstat_anomalies_total{{{sel}}}[{RI}]))", "{{rule}}")], w=12, stack=True, bars=True)
    b.panel("timeseries", "Anomalies by severity", [(f"sum by (severity) (increase(relstat_anomalies_total{{{sel}}}[{RI}]))", "{{severity}}")], w=12, stack=True, bars=True)
    b.panel("timeseries", "Anomalies by environment", [(f"sum by (environment) (increase(relstat_anomalies_total{{{sel}}}[{RI}]))", "{{environment}}")], w=12, stack=True, bars=True)
    b.panel("table", "Totals by rule, severity and environment",
            [(f"sum by (rule, severity, environment) (relstat_anomalies_total{{{sel}}})", "total", "table"),
             (f"sum by (rule, severity, environment) (increase(relstat_anomalies_total{{{sel}}}[{RANGE}]))", "in range", "table")], w=12)
    return b, [rule_var]


def agent():
    inst_var = var_query("instance", "Agent", "label_values(relstat_build_info, instance)")
    b = Board("relstat-agent", "relstat / Agent health",
              "Source freshness, input accounting, spool, SIEM forwarder and the process, per agent.")
    I = 'instance=~"$instance"'
    b.panel("table", "Agents", [(f"relstat_build_info{{{I}}}", "", "table"),
                                (f"time() - process_start_time_seconds{{{I}}} and {RELSTAT}", "uptime", "table")], w=12, h=6)
    b.panel("stat", "Sources with errors (range)", [(f"count(increase(relstat_source_errors_total{{{I}}}[{RANGE}]) > 0) or vector(0)", "")], w=6, h=6)
    b.panel("stat", "Rejected input (range)",
            [(f'sum(increase(relstat_events_total{{{I},result=~"invalid|unmapped"}}[{RANGE}])) or vector(0)', "")], w=6, h=6)
    b.panel("timeseries", "Source freshness (age of the newest event)",
            [(f"time() - relstat_source_last_event_timestamp_seconds{{{I}}}", "{{instance}} {{source}}")], w=12, unit="s",
            description="Event time: a quiet deployment log is not an error. RelstatSourceStale fires after 3 days.")
    b.panel("timeseries", "Input accounting",
            [(f"sum by (source, result) (increase(relstat_events_total{{{I}}}[{RI}]))", "{{source}} {{result}}")], w=12, stack=True)
    b.panel("table", "Input totals by source and result",
            [(f"sum by (source, result) (relstat_events_total{{{I}}})", "", "table")], w=12)
    b.panel("timeseries", "Source errors", [(f"sum by (source, kind) (increase(relstat_source_errors_total{{{I}}}[{RI}]))", "{{source}} {{kind}}")], w=12)
    b.panel("timeseries", "Spool depth",
            [(f"relstat_spool_events{{{I}}}", "events {{instance}}"), (f"relstat_spool_bytes{{{I}}}", "bytes {{instance}}")], w=8)
    b.panel("timeseries", "Spool: oldest event age", [(f"relstat_spool_oldest_event_age_seconds{{{I}}}", "{{instance}}")], w=8, unit="s")
    b.panel("timeseries", "Forwarder connected", [(f"relstat_forward_connected{{{I}}}", "{{instance}} {{sink}}")], w=8,
            description="1 while the SIEM connection is up. No series without [siem].")
    b.panel("timeseries", "Forwarded events", [(f"sum by (sink, result) (rate(relstat_forward_events_total{{{I}}}[{RI}]))", "{{sink}} {{result}}")], w=12, unit="ops")
    b.panel("timeseries", "Label overflow and tracked evictions",
            [(f"sum by (instance, label, reason) (increase(relstat_label_overflow_total{{{I}}}[{RI}]))", "overflow {{instance}} {{label}} {{reason}}"),
             (f"increase(relstat_tracked_evictions_total{{{I}}}[{RI}])", "evictions {{instance}}")], w=12,
            description="Label values beyond max_label_values become \"other\" (reason cardinality); values longer than "
                        "label_value_max_bytes are shortened with a hash suffix (reason length); per-release series beyond "
                        "max_tracked are evicted.")
    b.panel("timeseries", "Process CPU", [(f"rate(process_cpu_seconds_total{{{I}}}[{RI}]) and {RELSTAT}", "{{instance}}")], w=8, unit="percentunit")
    b.panel("timeseries", "Process memory", [(f"process_resident_memory_bytes{{{I}}} and {RELSTAT}", "RSS {{instance}}")], w=8, unit="bytes")
    b.panel("timeseries", "File descriptors and threads",
            [(f"process_open_fds{{{I}}} and {RELSTAT}", "open fds {{instance}}"),
             (f"process_max_fds{{{I}}} and {RELSTAT}", "max fds {{instance}}"),
             (f"process_threads{{{I}}} and {RELSTAT}", "threads {{instance}}")], w=8)
    return b, [inst_var]


if __name__ == "__main__":
    out = os.path.dirname(os.path.abspath(__file__))
    overview().write(os.path.join(out, "release-overview.json"))
    b, v = durations()
    b.write(os.path.join(out, "status-durations.json"), v)
    dora().write(os.path.join(out, "dora.json"))
    b, v = security()
    b.write(os.path.join(out, "security.json"), v)
    b, v = agent()
    b.write(os.path.join(out, "agent-health.json"), v)
    b, v = correlation()
    b.write(os.path.join(out, "change-correlation.json"), v)
