#!/usr/bin/env python3
"""Every PromQL expression the chart ships — alert rules (files/alerts.rules.yaml, also the
PrometheusRule and the rules ConfigMap), Grafana alert rules (files/grafana-alerts.yaml) and the
dashboards (files/dashboards/*.json: panel targets, annotation queries, variable queries) —
through `promtool check rules`, the dashboards' wrapped as recording rules with Grafana's
variables substituted.

    promql.py          check (make chart-test)
    promql.py --list   print [{"where": ..., "expr": ...}] as JSON (used by e2e/tests/chart_promql.rs)
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

FILES = pathlib.Path(__file__).resolve().parent.parent / "edgewatt" / "files"
# Grafana's built-in interval variables → a duration; every other variable is a multi-value
# regex matcher (`=~"$node"`), which "All" turns into `.*`.
DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}


def substitute(expr):
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: DURATIONS.get(m.group(1), ".*"), expr)


def label_values(query):
    """Grafana's label_values(metric, label) → the metric selector it reads."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    return m.group(1) if m else None


def exprs():
    out = []
    rules = yaml.safe_load((FILES / "alerts.rules.yaml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            out.append((f"alerts.rules.yaml {r.get('alert') or r.get('record')}", r["expr"]))
    ga = yaml.safe_load((FILES / "grafana-alerts.yaml").read_text())
    for g in ga["groups"]:
        for r in g["rules"]:
            for d in r["data"]:
                if d.get("datasourceUid") != "__expr__":
                    out.append((f"grafana-alerts.yaml {r['title']} {d['refId']}", d["model"]["expr"]))
    for path in sorted((FILES / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for p in board["panels"]:
            for t in p.get("targets", []):
                out.append((f"{path.name} panel '{p['title']}' {t['refId']}", t["expr"]))
        for a in board["annotations"]["list"]:
            if "expr" in a:
                out.append((f"{path.name} annotation '{a['name']}'", a["expr"]))
        for v in board["templating"]["list"]:
            if v["type"] == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                sel = label_values(q)
                out.append((f"{path.name} variable ${v['name']}", sel if sel else q))
    return [(w, substitute(e).strip()) for w, e in out]


def main():
    found = exprs()
    if "--list" in sys.argv:
        print(json.dumps([{"where": w, "expr": e} for w, e in found], indent=1))
        return
    with tempfile.TemporaryDirectory() as d:
        wrapped = {"groups": [{"name": "edgewatt-chart-expressions", "rules": [
            {"record": f"edgewatt_chart_check:expr_{i}", "expr": e} for i, (_, e) in enumerate(found)]}]}
        path = pathlib.Path(d) / "chart-expressions.rules.yaml"
        path.write_text(yaml.safe_dump(wrapped, sort_keys=False))
        failed = False
        for f in [FILES / "alerts.rules.yaml", path]:
            r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
            print(r.stdout.strip())
            if r.returncode != 0:
                failed = True
                print(r.stderr, file=sys.stderr)
                for i, (w, e) in enumerate(found):
                    if f"expr_{i}" in r.stderr or f"rule {i + 1}:" in r.stderr:
                        print(f"  -> {w}: {e}", file=sys.stderr)
        if failed:
            sys.exit("promtool rejected chart expressions")
    print(f"promtool: {len(found)} chart expressions ok")


if __name__ == "__main__":
    main()
