#!/usr/bin/env python3
"""The README's chart instructions hold to the chart (run by lint.py, make chart-test):

- every alert (Prometheus rules and Grafana-managed rules) has a `runbook_url` into the README's
  "Alert runbook", at Chart.yaml's `home`, whose anchor is a heading there (GitHub's anchors:
  the heading lowercased, spaces to dashes, punctuation dropped);
- the kube-prometheus-stack values (`kps-values.yaml`) switch on what the chart's Grafana
  ConfigMaps need: the dashboard sidecar with the chart's label and the folder annotation the
  chart writes (`grafana_folder`, honoured only with `foldersFromFilesStructure`), the alert
  sidecar with the chart's label, in every namespace (grafana chart defaults: alerts off, own
  namespace only — grafana/helm-charts charts/grafana/values.yaml `sidecar.alerts`);
- the plain-Prometheus scrape config names the job the exporter alerts select and uses real
  relabel fields and the chart's annotations;
- the install line renders the namespace with its Pod Security labels.
"""
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHART = HERE.parent / "edgewatt"


def readme():
    return (REPO / "README.md").read_text()


def anchors(text):
    """GitHub's heading anchors."""
    out = set()
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def yaml_blocks(text):
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def alerts():
    """(name, annotations) of every alert the chart ships."""
    rules = yaml.safe_load((CHART / "files/alerts.rules.yaml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                yield r["alert"], r.get("annotations", {})
    grafana = yaml.safe_load((CHART / "files/grafana-alerts.yaml").read_text())
    for g in grafana["groups"]:
        for r in g["rules"]:
            yield f"grafana {r['title']}", r.get("annotations", {})


def check_runbooks(text):
    home = yaml.safe_load((CHART / "Chart.yaml").read_text()).get("home")
    if not home:
        return ["Chart.yaml has no `home`, the base of every runbook_url"]
    base = f"{home}/blob/main/README.md#"
    have = anchors(text)
    runbook = text.split("### Alert runbook", 1)[-1].split("\n## ", 1)[0]
    in_runbook = anchors(runbook)
    bad = []
    for name, ann in alerts():
        url = ann.get("runbook_url", "")
        if not url.startswith(base):
            bad.append(f"{name}: runbook_url {url!r} is not {base}<anchor>")
            continue
        anchor = url[len(base):]
        if anchor not in have or anchor not in in_runbook:
            bad.append(f"{name}: #{anchor} is no heading of README's 'Alert runbook'")
    return bad


def check_kps_values(text):
    values = yaml.safe_load((CHART / "values.yaml").read_text())["grafana"]
    grafana_tpl = (CHART / "templates/grafana.yaml").read_text()
    blocks = [b for b in yaml_blocks(text) if isinstance(b, dict) and "grafana" in b]
    if not blocks:
        return ["no kube-prometheus-stack values (a ```yaml block with `grafana.sidecar`) in README"]
    sidecar = blocks[0]["grafana"].get("sidecar", {})
    d, a = sidecar.get("dashboards", {}), sidecar.get("alerts", {})
    bad = []
    folder_key = re.search(r"annotations:\s*\n\s*(\w+): \{\{ \. \}\}", grafana_tpl).group(1)
    want = {
        "dashboards.enabled": (d.get("enabled"), True),
        "dashboards.label": (d.get("label"), values["dashboardLabel"]),
        "dashboards.labelValue": (d.get("labelValue"), values["dashboardLabelValue"]),
        "dashboards.searchNamespace": (d.get("searchNamespace"), "ALL"),
        "dashboards.folderAnnotation": (d.get("folderAnnotation"), folder_key),
        "dashboards.provider.foldersFromFilesStructure":
            (d.get("provider", {}).get("foldersFromFilesStructure"), True),
        "alerts.enabled": (a.get("enabled"), True),
        "alerts.label": (a.get("label"), values["alertLabel"]),
        "alerts.labelValue": (a.get("labelValue"), values["alertLabelValue"]),
        "alerts.searchNamespace": (a.get("searchNamespace"), "ALL"),
    }
    for k, (got, exp) in want.items():
        if got != exp:
            bad.append(f"kps-values.yaml grafana.sidecar.{k}: {got!r}, the chart needs {exp!r}")
    return bad


def check_scrape_config(text):
    blocks = [b for b in yaml_blocks(text) if isinstance(b, dict) and "scrape_configs" in b]
    if not blocks:
        return ["no plain-Prometheus scrape config (a ```yaml block with scrape_configs) in README"]
    jobs = [j["job_name"] for j in blocks[0]["scrape_configs"]]
    bad = [] if "edgewatt-exporter" in jobs else [f"scrape config jobs {jobs}: no edgewatt-exporter"]
    # Debian's promtool is built without Kubernetes service discovery, so the config is checked
    # here against Prometheus' relabel_config fields and actions (prometheus/prometheus
    # model/relabel/relabel.go), the annotation names against the chart's.
    fields = {"source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action"}
    actions = {"replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap",
               "labeldrop", "labelkeep", "lowercase", "uppercase"}
    annotations = set(re.findall(r"prometheus\.io/(\w+)",
                                 (CHART / "templates/_helpers.tpl").read_text()))
    for job in blocks[0]["scrape_configs"]:
        for r in job.get("relabel_configs", []):
            if set(r) - fields or r.get("action", "replace") not in actions:
                bad.append(f"{job['job_name']}: not a relabel_config: {r}")
            re.compile(str(r.get("regex", "")))
            for src in r.get("source_labels", []):
                m = re.fullmatch(r"__meta_kubernetes_pod_annotation_prometheus_io_(\w+)", src)
                if m and m.group(1) not in annotations:
                    bad.append(f"{job['job_name']}: prometheus.io/{m.group(1)} is no annotation of the chart")
    return bad


def check_install_line(text):
    section = text.split("## On a cluster", 1)[-1]
    m = re.search(r"^helm install edgewatt [^\n]*(\\\n[^\n]*)*", section, re.M)
    if not m or "namespace.create=true" not in m.group(0):
        return ["README's `helm install edgewatt` line does not set namespace.create=true"]
    return []


def problems():
    text = readme()
    return check_runbooks(text) + check_kps_values(text) + check_scrape_config(text) + check_install_line(text)


if __name__ == "__main__":
    p = problems()
    for x in p:
        print(x, file=sys.stderr)
    sys.exit(1 if p else 0)
