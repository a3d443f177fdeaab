#!/usr/bin/env python3
"""`helm lint` of charts/edgewatt with Helm's own library (PyPI helm-sdkpy), offline, and the
checks around it (make chart-test):

- lint is clean: no message at all, INFO included (an INFO is a recommendation Helm makes, such as
  "icon is recommended");
- the chart lints with the shipped values, examples/chart-values-edge.yaml and
  charts/tests/values-everything.yaml (every optional part on);
- values.schema.json is complete and strict: every key of values.yaml has a typed schema entry,
  every object is closed (additionalProperties: false, with named exceptions), and typos and
  wrong types at every level are refused (chart_install.rs checks Helm's messages name the key —
  helm-sdkpy returns lint messages without their text, Go errors serialise as {});
- Chart.yaml's home, sources and icon point at the project (Cargo.toml's repository);
- the CRDs are valid Kubernetes objects and kubeVersion covers what they use (k8s_schemas.py);
- the README's alert runbook, Grafana sidecar values, scrape config and install line hold to the
  chart (readme.py).
"""
import asyncio
import copy
import json
import pathlib
import re
import shutil
import sys
import tempfile

import helm_sdkpy as helm
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE.parent / "edgewatt"
REPO = HERE.parent.parent
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
VALUES_FILES = [REPO / "examples/chart-values-edge.yaml", HERE / "values-everything.yaml"]

# Objects of the schema that stay open, and why.
OPEN_OBJECTS = {
    "global": "an umbrella chart's globals reach every subchart",
    "affinity.nodeAffinity": "a Kubernetes NodeAffinity, passed through",
    "affinity.podAffinity": "a Kubernetes PodAffinity, passed through",
    "affinity.podAntiAffinity": "a Kubernetes PodAntiAffinity, passed through",
    "valueFrom.fieldRef": "a Kubernetes ObjectFieldSelector, passed through",
    "valueFrom.resourceFieldRef": "a Kubernetes ResourceFieldSelector, passed through",
    "valueFrom.configMapKeyRef": "a Kubernetes ConfigMapKeySelector, passed through",
    "valueFrom.secretKeyRef": "a Kubernetes SecretKeySelector, passed through",
}

# (path, value): each must be refused by the schema. Typos at every level and the wrong types
# issue #29 names (an exempt priority "high" rendered as 0 turned the filter off).
REFUSED = [
    (["controler"], {"enabled": True}),
    (["exporter", "port"], "nine"),
    (["exporter", "redfish", "urll"], "https://bmc"),
    (["exporter", "interval"], "10 seconds"),
    (["controller", "replicas"], "two"),
    (["controller", "resources", "request"], {"cpu": "1"}),
    (["scheduler", "exemptPriority"], "high"),
    (["scheduler", "watchNodes"], "yes"),
    (["scheduler", "unmeasuredNodes"], "first"),
    (["scheduler", "extender", "adress"], "clusterIP"),
    (["scheduler", "extender", "address"], "nodeport"),
    (["scheduler", "service", "nodePort"], "30888/TCP"),
    (["scheduler", "tls", "certManager", "issuerRef", "kind"], "Issuers"),
    (["scheduler", "secondScheduler", "image", "tags"], "v1.31.4"),
    (["scheduler", "networkPolicy", "from"], [{"ipblock": {"cidr": "10.0.0.1/32"}}]),
    (["monitoring", "additonalLabels"], {}),
    (["monitoring", "monitors"], "always"),
    (["grafana", "folders"], "x"),
    (["namespace", "create"], "true"),
    (["podDisruptionBudget", "maxUnavailable"], "half"),
    (["powerModels", "minSamples"], 5),
]


async def lint(path):
    return await helm.Lint(helm.Configuration(namespace="edgewatt-system")).run(str(path))


def messages(result):
    return result.get("Messages") or []


def problems(result):
    return [m for m in messages(result) if m.get("Severity", 0) >= 2]


def lint_changed(change):
    """`helm lint` of a copy of the chart changed by `change(dir)`: (problems, all messages)."""
    with tempfile.TemporaryDirectory() as d:
        copy_dir = pathlib.Path(d) / "edgewatt"
        shutil.copytree(CHART, copy_dir)
        change(copy_dir)
        result = asyncio.run(lint(copy_dir))
        return problems(result) + (result.get("Errors") or []), messages(result)


def merge(base, overlay):
    """Helm's coalescing of a values file over values.yaml: maps merge, the rest replaces."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def with_values(overlay):
    def change(chart_dir):
        values = chart_dir / "values.yaml"
        values.write_text(yaml.safe_dump(merge(yaml.safe_load(values.read_text()), overlay)))
    return change


def set_value(path, value):
    overlay = node = {}
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return with_values(overlay)


def schema_gaps():
    """Keys of values.yaml without a schema entry, and objects of the schema left open."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def resolve(s):
        while "$ref" in s:  # a local JSON pointer, `#/definitions/x` or `#/$defs/x`
            node = schema
            for part in s["$ref"].lstrip("#/").split("/"):
                node = node[part]
            s = node
        return s

    gaps = []

    def walk_values(value, s, path):
        s = resolve(s)
        if not s.get("type") and "enum" not in s and "anyOf" not in s:
            gaps.append(f"{'.'.join(path)}: no type in values.schema.json")
        if isinstance(value, dict) and "properties" in s:
            for k, v in value.items():
                if k not in s["properties"]:
                    gaps.append(f"{'.'.join(path + [k])}: in values.yaml, not in values.schema.json")
                else:
                    walk_values(v, s["properties"][k], path + [k])

    def walk_schema(s, path):
        s = resolve(s)
        if s.get("type") == "object" and "properties" in s:
            where = ".".join(path[-2:])
            if s.get("additionalProperties") is not False and where not in OPEN_OBJECTS:
                gaps.append(f"{'.'.join(path) or '(top level)'}: open object (additionalProperties is not false)")
            for k, sub in s["properties"].items():
                walk_schema(sub, path + [k])
        for key in ("items", "additionalProperties"):
            if isinstance(s.get(key), dict):
                walk_schema(s[key], path)

    walk_values(yaml.safe_load((CHART / "values.yaml").read_text()), schema, [])
    walk_schema(schema, [])
    return gaps


def chart_metadata():
    """home, sources and icon: the project's repository (Cargo.toml), the icon a file in it."""
    cargo = (REPO / "Cargo.toml").read_text()
    repo = re.search(r'^repository\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    bad = []
    if chart.get("home") != repo:
        bad.append(f"home {chart.get('home')!r} is not the repository {repo!r}")
    if repo not in (chart.get("sources") or []):
        bad.append(f"sources {chart.get('sources')!r} lack {repo!r}")
    icon = chart.get("icon", "")
    m = re.fullmatch(re.escape(repo) + r"/raw/main/(.+)", icon)
    if not m or not (REPO / m.group(1)).is_file():
        bad.append(f"icon {icon!r} is not a file of the repository ({repo}/raw/main/<path>)")
    return bad


def main():
    result = asyncio.run(lint(CHART))
    for m in messages(result):
        print(f"lint {SEVERITY.get(m.get('Severity'), m.get('Severity'))}: {m.get('Path')} {m.get('Err') or ''}")
    if messages(result) or result.get("Errors"):
        sys.exit(f"helm lint: {len(messages(result))} message(s) in {CHART} (INFO included)")
    # the lint really renders the templates: a broken copy must fail
    bad, _ = lint_changed(lambda c: (c / "templates" / "broken.yaml").write_text("{{ .Values.nope.missing }}\n"))
    if not bad:
        sys.exit("helm lint accepted a template that cannot render: the lint is not real")
    for f in VALUES_FILES:
        values = yaml.safe_load(f.read_text())
        # helm-sdkpy lints with an empty release namespace (the CLI uses "default"): a rendered
        # Namespace would be named "" and warned about. chart_install.rs installs
        # namespace.create=true into a real namespace instead.
        values.get("namespace", {}).pop("create", None)
        bad, msgs = lint_changed(with_values(values))
        if bad or msgs:
            sys.exit(f"helm lint with {f.relative_to(REPO)}: {len(msgs)} message(s) — values.schema.json "
                     "or a template refuses it")
    gaps = schema_gaps()
    if gaps:
        sys.exit("values.schema.json is not complete and strict:\n  " + "\n  ".join(gaps))
    for path, value in REFUSED:
        bad, _ = lint_changed(set_value(path, value))
        if not bad:
            sys.exit(f"helm lint accepted {'.'.join(path)}={value!r}: values.schema.json does not guard it")
    meta = chart_metadata()
    if meta:
        sys.exit("Chart.yaml: " + "; ".join(meta))
    sys.path.insert(0, str(HERE))
    import k8s_schemas
    import readme
    crd_problems = k8s_schemas.check_crds()
    if crd_problems:
        sys.exit("CRDs: " + "; ".join(crd_problems))
    # the schema check is real: a misspelt field of a Deployment is refused in both releases
    bad_deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                      "spec": {"replica": 1, "selector": {}, "template": {}}}
    if len(k8s_schemas.check_manifest([bad_deployment])[0]) != 2:
        sys.exit("k8s_schemas accepted a Deployment with `spec.replica`: the validation is not real")
    doc = readme.problems()
    if doc:
        sys.exit("README vs the chart:\n  " + "\n  ".join(doc))
    print(f"helm lint ok, no messages ({helm.get_version()}), also with "
          f"{', '.join(str(f.relative_to(REPO)) for f in VALUES_FILES)}; values.schema.json complete "
          f"and strict ({len(REFUSED)} typos and wrong types refused); Chart.yaml metadata ok; "
          f"CRDs valid in Kubernetes {' and '.join(k8s_schemas.versions())}, kubeVersion covers them; "
          "README runbook, Grafana values, scrape config and install line match the chart")


if __name__ == "__main__":
    main()
