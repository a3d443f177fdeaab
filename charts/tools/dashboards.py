#!/usr/bin/env python3
"""Generates the chart's Grafana dashboards (charts/edgewatt/files/dashboards/*.json).

    python3 charts/tools/dashboards.py          # rewrite the JSON files
    python3 charts/tools/dashboards.py --check  # fail when they differ (make chart-test)

The dashboards are data here so the panels stay consistent (datasource variable, node filter);
the JSON is what ships and what the chart tests read."""
import json, pathlib, sys

OUT = pathlib.Path(__file__).resolve().parent.parent / "edgewatt" / "files" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
N = 'node_name=~"$node"'
# a node's draw: its whole-platform meter where it has one, else CPU package + DRAM
DRAW = (f'sum by (node_name) (edgewatt_node_platform_watts{{{N}}})'
        f' or sum by (node_name) (edgewatt_node_cpu_watts{{{N}, zone=~"package|dram"}})')


def var_ds():
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0}


def var_query(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "includeAll": multi, "multi": multi, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"} if multi else {}, "sort": 1}


class Board:
    def __init__(self, uid, title, description, variables, tags=()):
        self.uid, self.title, self.description = uid, title, description
        self.variables = [var_ds()] + list(variables)
        self.panels, self.annotations = [], []
        self.x = self.y = 0
        self.row_h = 0
        self.tags = ["edgewatt", *tags]

    def panel(self, kind, title, targets, w=12, h=8, unit=None, description="", **extra):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        p = {"id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
             "datasource": DS, "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
             "targets": [dict(refId=chr(65 + i), datasource=DS, **t) for i, t in enumerate(targets)],
             "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
        if unit:
            p["fieldConfig"]["defaults"]["unit"] = unit
        for k, v in extra.items():
            if k == "defaults":
                p["fieldConfig"]["defaults"].update(v)
            else:
                p[k] = v
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)
        return p

    def json(self):
        return {"uid": self.uid, "title": self.title, "description": self.description,
                "tags": self.tags, "editable": True, "schemaVersion": 39, "version": 1,
                "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "",
                "graphTooltip": 1, "links": [],
                "templating": {"list": self.variables},
                "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                          "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                          "name": "Annotations & Alerts", "type": "dashboard"}] + self.annotations},
                "panels": self.panels}


def ts(expr, legend, **kw):
    return {"expr": expr, "legendFormat": legend, "range": True, **kw}


def inst(expr, legend="", fmt="table"):
    return {"expr": expr, "legendFormat": legend, "instant": True, "range": False, "format": fmt}


NODE_VAR = var_query("node", "Node", "label_values(edgewatt_exporter_info, node_name)")
NS_VAR = var_query("namespace", "Namespace", "label_values(edgewatt_pod_cpu_watts, pod_namespace)")


def cluster_power():
    b = Board("edgewatt-cluster-power", "edgewatt / Cluster power",
              "Power by node, namespace and pod, with the source of every node's reading.",
              [NODE_VAR, NS_VAR], ["power"])
    b.panel("stat", "Cluster draw", [ts(f"sum({DRAW})", "total")], w=6, h=5, unit="watt",
            description="Sum over the selected nodes: platform meter where present, else CPU package + DRAM.")
    b.panel("stat", "Pods' share", [ts(f'sum(edgewatt_pod_cpu_watts{{{N}, pod_namespace=~"$namespace"}})', "pods")],
            w=6, h=5, unit="watt", description="CPU power attributed to pods in the selected namespaces.")
    b.panel("stat", "Energy in range", [ts(f'sum(increase(edgewatt_node_cpu_joules_total{{{N}, zone="package"}}[$__range])) / 3.6e6', "kWh")],
            w=6, h=5, unit="kwatth")
    b.panel("stat", "Nodes reporting", [ts(f"count(edgewatt_exporter_info{{{N}}})", "nodes")], w=6, h=5)
    b.panel("timeseries", "Draw by node", [ts(DRAW, "{{node_name}}")], w=24, unit="watt")
    b.panel("timeseries", "CPU power by zone", [ts(f"sum by (node_name, zone, source) (edgewatt_node_cpu_watts{{{N}}})",
                                                   "{{node_name}} {{zone}} ({{source}})")], unit="watt")
    b.panel("timeseries", "Active vs idle CPU power",
            [ts(f"sum by (node_name) (edgewatt_node_cpu_active_watts{{{N}}})", "{{node_name}} active"),
             ts(f"sum by (node_name) (edgewatt_node_cpu_idle_watts{{{N}}})", "{{node_name}} idle")], unit="watt")
    b.panel("timeseries", "Power by namespace",
            [ts(f'sum by (pod_namespace) (edgewatt_pod_cpu_watts{{{N}, pod_namespace=~"$namespace"}})', "{{pod_namespace}}")],
            unit="watt")
    b.panel("timeseries", "GPU power by node",
            [ts(f"sum by (node_name, gpu) (edgewatt_node_gpu_watts{{{N}}})", "{{node_name}} gpu {{gpu}}")], unit="watt")
    b.panel("table", "Top pods", [inst(f'topk(20, sum by (pod_namespace, pod_name, node_name) (edgewatt_pod_cpu_watts{{{N}, pod_namespace=~"$namespace"}}))')],
            w=24, unit="watt")
    b.panel("table", "Sources per node",
            [inst(f"edgewatt_exporter_info{{{N}}}"),
             inst(f"sum by (node_name, source) (edgewatt_exporter_source_up{{{N}}})")],
            w=24, description="Which meters each exporter reads (rapl, hwmon, redfish, power_supply, nvml, estimator) and how it attributes energy (ebpf or procfs).",
            transformations=[{"id": "merge", "options": {}}])
    return b


def edge_devices():
    b = Board("edgewatt-edge-devices", "edgewatt / Edge devices",
              "Battery, runtime left, mains and power budget of nodes and Flotta edge devices.",
              [NODE_VAR], ["edge", "battery"])
    b.panel("bargauge", "Battery charge", [ts(f"edgewatt_node_battery_charge_ratio{{{N}}} * 100", "{{node_name}}")],
            w=12, unit="percent", defaults={"min": 0, "max": 100})
    b.panel("stat", "On mains", [ts(f"edgewatt_node_external_power{{{N}}}", "{{node_name}}")], w=12, defaults={
        "mappings": [{"type": "value", "options": {"0": {"text": "battery", "color": "orange"},
                                                    "1": {"text": "mains", "color": "green"}}}]})
    b.panel("timeseries", "Battery charge over time", [ts(f"edgewatt_node_battery_charge_ratio{{{N}}} * 100", "{{node_name}}")],
            unit="percent")
    b.panel("timeseries", "Runtime left at current draw",
            [ts(f"edgewatt_node_battery_energy_joules{{{N}}} / (edgewatt_node_battery_power_watts{{{N}}} > 0)", "{{node_name}}")],
            unit="s", description="Remaining battery energy divided by the battery's current draw; empty while charging or on mains.")
    b.panel("timeseries", "Battery draw", [ts(f"edgewatt_node_battery_power_watts{{{N}}}", "{{node_name}}")], unit="watt")
    b.panel("timeseries", "Battery energy / capacity",
            [ts(f"edgewatt_node_battery_energy_joules{{{N}}} / 3600", "{{node_name}} energy"),
             ts(f"edgewatt_node_battery_capacity_joules{{{N}}} / 3600", "{{node_name}} capacity")], unit="watth")
    b.panel("timeseries", "Budget vs draw",
            [ts(f"edgewatt_node_power_budget_watts{{{N}}}", "{{node_name}} budget"),
             ts(DRAW, "{{node_name}} draw")], w=24, unit="watt",
            description="Budget from --power-budget-watts or the BMC's power limit; nodes budgeted by annotation or policy default show draw only.")
    b.panel("timeseries", "Headroom", [ts(f"edgewatt_node_power_budget_watts{{{N}}} - on (node_name) ({DRAW})", "{{node_name}}")],
            w=24, unit="watt")
    return b


def co2():
    b = Board("edgewatt-co2", "edgewatt / CO2",
              "CO2 from edgewatt_node_co2_grams_total: each node's energy at its configured grid carbon intensity "
              "(chart values exporter.carbonIntensity and exporter.carbonIntensityZones).",
              [NODE_VAR, NS_VAR], ["co2", "carbon"])
    b.panel("stat", "CO2 in range", [ts(f"sum(increase(edgewatt_node_co2_grams_total{{{N}}}[$__range]))", "g")],
            w=8, h=5, unit="massg")
    b.panel("stat", "CO2 rate", [ts(f"sum(rate(edgewatt_node_co2_grams_total{{{N}}}[$__rate_interval])) * 3600", "g/h")],
            w=8, h=5, unit="short", defaults={"unit": "g/h"})
    # g/s ÷ W = g/J; × 3.6e6 = g/kWh: the intensity each node's exporter was configured with
    intensity = (f"sum by (node_name) (rate(edgewatt_node_co2_grams_total{{{N}}}[$__rate_interval]))"
                 f" / on (node_name) ({DRAW}) * 3.6e6")
    b.panel("table", "Carbon intensity per node (g/kWh)", [inst(intensity)], w=8, h=5,
            description="Recovered from the counter and the draw: the per-node intensity set in the chart's values.")
    b.panel("timeseries", "CO2 rate by node", [ts(f"sum by (node_name) (rate(edgewatt_node_co2_grams_total{{{N}}}[$__rate_interval])) * 3600", "{{node_name}}")],
            unit="short", defaults={"unit": "g/h"})
    b.panel("timeseries", "CO2 rate by namespace",
            [ts(f'sum by (pod_namespace) (edgewatt_pod_cpu_watts{{{N}, pod_namespace=~"$namespace"}}'
                f" * on (node_name) group_left () (sum by (node_name) (rate(edgewatt_node_co2_grams_total{{{N}}}[$__rate_interval])) / on (node_name) ({DRAW}))) * 3600",
                "{{pod_namespace}}")], unit="short", defaults={"unit": "g/h"},
            description="Pods' attributed power × their node's intensity.")
    b.panel("bargauge", "CO2 by node in range", [inst(f"sum by (node_name) (increase(edgewatt_node_co2_grams_total{{{N}}}[$__range]))", "{{node_name}}", "time_series")],
            w=24, unit="massg")
    return b


def new_or_changed(sel):
    """Annotation query: the counter moved in the last 2 minutes, or its series is new (a
    first migration starts the series at 1, which changes() does not see)."""
    return (f"sum by (policy, kind) (changes({sel}[2m])) > 0"
            f" or sum by (policy, kind) ({sel} unless {sel} offset 2m)")


def migrations():
    b = Board("edgewatt-migrations", "edgewatt / Migrations",
              "Workloads moved away from energy-starved nodes and devices: timeline, failures, starved targets.",
              [var_query("policy", "Policy", "label_values(edgewatt_migrations_total, policy)")], ["migrations"])
    P = 'policy=~"$policy"'
    b.annotations += [
        {"name": "Migrations", "enable": True, "iconColor": "green", "datasource": DS,
         "expr": new_or_changed(f'edgewatt_migrations_total{{{P}, result="Succeeded"}}'),
         "step": "1m", "titleFormat": "{{kind}} moved", "textFormat": "policy {{policy}}", "tagKeys": "policy,kind",
         "useValueForTime": False},
        {"name": "Failed migrations", "enable": True, "iconColor": "red", "datasource": DS,
         "expr": new_or_changed(f'edgewatt_migrations_total{{{P}, result="Failed"}}'),
         "step": "1m", "titleFormat": "{{kind}} migration failed", "textFormat": "policy {{policy}}",
         "tagKeys": "policy,kind", "useValueForTime": False},
    ]
    b.panel("stat", "Moved in range", [ts(f'sum(increase(edgewatt_migrations_total{{{P}, result="Succeeded"}}[$__range]))', "moved")],
            w=6, h=5, defaults={"decimals": 0})
    b.panel("stat", "Failed in range", [ts(f'sum(increase(edgewatt_migrations_total{{{P}, result="Failed"}}[$__range]))', "failed")],
            w=6, h=5, defaults={"decimals": 0, "thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": 1}]}})
    b.panel("stat", "Starved targets now", [ts(f"sum(edgewatt_starved_targets{{{P}}})", "starved")], w=6, h=5,
            defaults={"decimals": 0})
    b.panel("stat", "Prometheus data age", [ts("max(edgewatt_prometheus_data_age_seconds)", "age")], w=6, h=5, unit="s",
            description="Over the node/device max age the controller takes no action and the extender scores neutrally.")
    b.panel("timeseries", "Migrations (timeline)",
            [ts(f"sum by (policy, kind, result) (increase(edgewatt_migrations_total{{{P}}}[$__rate_interval]))",
                "{{policy}} {{kind}} {{result}}")], w=24, defaults={"custom": {"drawStyle": "bars"}},
            description="Succeeded, Failed, Blocked (PDB) and DryRun (Observe mode) moves; annotations mark each one.")
    b.panel("timeseries", "Starved targets by policy", [ts(f"sum by (policy) (edgewatt_starved_targets{{{P}}})", "{{policy}}")])
    b.panel("table", "Starved targets", [inst(f"edgewatt_target_starved{{{P}}} == 1")],
            description="Nodes and devices each policy counts energy-starved right now.")
    b.panel("timeseries", "Migration duration (p50, p90)",
            [ts("histogram_quantile(0.5, sum by (le) (rate(edgewatt_migration_duration_seconds_bucket[$__rate_interval])))", "p50"),
             ts("histogram_quantile(0.9, sum by (le) (rate(edgewatt_migration_duration_seconds_bucket[$__rate_interval])))", "p90")],
            unit="s")
    b.panel("timeseries", "Degraded workloads (ladder)",
            [ts(f"sum by (policy, action, criticality) (edgewatt_degraded_workloads{{{P}, mode=\"Migrate\"}})",
                "{{policy}} {{action}} {{criticality}}"),
             ts(f"sum by (policy, action, criticality) (edgewatt_degraded_workloads{{{P}, mode=\"Observe\"}})",
                "{{policy}} would {{action}} {{criticality}}")],
            description="Workloads the degradation ladder holds throttled or suspended so critical work outlives the shortage (Observe: would).")
    b.panel("timeseries", "Runway vs recharge (forecast)",
            [ts(f"min by (kind, name) (edgewatt_runway_forecast_seconds{{{P}}})", "runway {{name}}"),
             ts(f"min by (kind, name) (edgewatt_recharge_forecast_seconds{{{P}}})", "recharge {{name}}")],
            unit="s", description="Forecast time to the battery's reserve and to the next recharge; runway below recharge means the target runs out before it charges.")
    b.panel("timeseries", "Ladder shortfall and flaps",
            [ts(f"max by (kind, name) (edgewatt_ladder_shortfall_watts{{{P}}})", "short {{name}} (W)"),
             ts(f"sum by (policy) (increase(edgewatt_ladder_flaps_total{{{P}}}[$__rate_interval]))", "flaps {{policy}}")],
            description="Watts still missing after shedding all the ladder may (EdgewattLadderExhausted), and restores undone within the flap window.")
    b.panel("timeseries", "Prometheus errors (controller)", [ts("sum(increase(edgewatt_prometheus_errors_total[$__rate_interval]))", "errors")])
    b.panel("timeseries", "Extender requests",
            [ts("sum by (verb, code) (rate(edgewatt_scheduler_requests_total[$__rate_interval]))", "{{verb}} {{code}}")],
            unit="reqps")
    b.panel("timeseries", "Extender failing open", [ts("max(edgewatt_scheduler_fail_open)", "fail open")],
            description="1 while the extender has no fresh data and scores every node equally.")
    return b


def main():
    boards = {"cluster-power": cluster_power(), "edge-devices": edge_devices(), "co2": co2(), "migrations": migrations()}
    check = "--check" in sys.argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, b in boards.items():
        text = json.dumps(b.json(), indent=2, sort_keys=False) + "\n"
        path = OUT / f"{name}.json"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"out of date (run python3 charts/tools/dashboards.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
