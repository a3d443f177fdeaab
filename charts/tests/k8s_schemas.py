#!/usr/bin/env python3
"""The chart's objects against Kubernetes' own OpenAPI schemas, offline: PyPI `kubernetes-validate`
ships the JSON schemas of every Kubernetes minor release from 1.25 on (`-local-strict`: unknown
fields refused, as kube-apiserver's strict field validation does). Checked against the oldest
release the chart supports (Chart.yaml kubeVersion, 1.28) and the newest the package knows.

    k8s_schemas.py                 the CRDs in charts/edgewatt/crds, and that Chart.yaml's
                                   kubeVersion covers every API feature they use
    k8s_schemas.py --manifest F    every object of a rendered manifest (Helm's release manifest;
                                   `-` = stdin), used by e2e/tests/chart_install.rs

Objects of other projects' APIs (the Prometheus operator's monitors and rules, cert-manager's
Certificate) have no schema there: they are listed as skipped, never silently passed.
"""
import pathlib
import re
import sys

import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv
from packaging.version import Version

CHART = pathlib.Path(__file__).resolve().parent.parent / "edgewatt"
MINIMUM = "1.28"
# Other projects' API groups: their CRDs are not part of Kubernetes' schemas.
FOREIGN_GROUPS = {"monitoring.coreos.com", "cert-manager.io"}

# API features the CRDs may use and the first Kubernetes release that accepts them — the same
# boundary the schemas draw, written down with its source so a failure says why:
#  - x-kubernetes-validations[].messageExpression: KEP-2876 (CRD validation expression language),
#    Kubernetes 1.27 (kubernetes/enhancements keps/sig-api-machinery/2876-crd-validation-
#    expression-language).
#  - x-kubernetes-validations[].reason and .fieldPath: KEP-2876, kubernetes/kubernetes#118041
#    "Add reason and fieldPath into CRD validation rules", Kubernetes 1.28.
#  - x-kubernetes-validations[].optionalOldSelf: KEP-4008 (CRD validation ratcheting), 1.30.
#  - x-kubernetes-validations itself: KEP-2876, beta (on by default) in 1.25.
VALIDATION_RULE_FIELDS = {
    "rule": "1.25",
    "message": "1.25",
    "messageExpression": "1.27",
    "reason": "1.28",
    "fieldPath": "1.28",
    "optionalOldSelf": "1.30",
}


def minor(v):
    return Version(kv.major_minor(v))


def versions():
    """The releases to check against: the chart's minimum and the newest the schemas know."""
    known = kv.all_versions()
    if not any(kv.major_minor(v) == MINIMUM for v in known):
        sys.exit(f"kubernetes-validate {kubernetes_validate.__version__} has no {MINIMUM} schemas")
    return [MINIMUM, kv.major_minor(kv.latest_version())]


def validate(obj, version):
    """None when `obj` is valid in `version` (strict), else the reason."""
    try:
        kv.validate(obj, version, strict=True)
        return None
    except kv.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        return f"{where}: {e.message}"
    except kv.SchemaNotFoundError as e:
        return e.message


def name(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def check_manifest(docs):
    """Validates every object; returns (problems, checked, skipped)."""
    problems, checked, skipped = [], 0, []
    for obj in docs:
        group = obj.get("apiVersion", "").rpartition("/")[0]
        if group in FOREIGN_GROUPS:
            skipped.append(name(obj))
            continue
        checked += 1
        for v in versions():
            why = validate(obj, v)
            if why:
                problems.append(f"{name(obj)} is not valid in Kubernetes {v}: {why}")
    return problems, checked, skipped


def crds():
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def kube_version_floor():
    """The lower bound of Chart.yaml's kubeVersion (`>=1.28.0-0` → 1.28)."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    m = re.fullmatch(r"\s*>=\s*v?(\d+\.\d+)(\.\d+)?(-0)?\s*", chart.get("kubeVersion", ""))
    if not m:
        sys.exit(f"Chart.yaml kubeVersion {chart.get('kubeVersion')!r}: expected '>=X.Y.Z-0'")
    return m.group(1)


def rule_fields(node):
    """Every key used in any x-kubernetes-validations entry under `node`."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "x-kubernetes-validations":
                for rule in v:
                    yield from rule.keys()
            else:
                yield from rule_fields(v)
    elif isinstance(node, list):
        for v in node:
            yield from rule_fields(v)


def oldest_accepting(doc):
    """The oldest Kubernetes release whose (strict) schema accepts `doc`."""
    for v in sorted({kv.major_minor(x) for x in kv.all_versions()}, key=Version):
        if validate(doc, v) is None:
            return v
    return None


def check_crds():
    problems = []
    floor = kube_version_floor()
    for file, doc in crds():
        for v in versions():
            why = validate(doc, v)
            if why:
                problems.append(f"{file}: not valid in Kubernetes {v}: {why}")
        # what the CRD's features need, two ways: the schemas' own boundary…
        oldest = oldest_accepting(doc)
        if oldest is None or minor(oldest) > minor(floor):
            problems.append(f"{file}: needs Kubernetes {oldest}, Chart.yaml kubeVersion allows {floor}")
        # …and the documented feature table (a field the table does not know is a failure too)
        for field in sorted(set(rule_fields(doc))):
            need = VALIDATION_RULE_FIELDS.get(field)
            if need is None:
                problems.append(f"{file}: x-kubernetes-validations[].{field}: unknown to this test")
            elif minor(need) > minor(floor):
                problems.append(f"{file}: x-kubernetes-validations[].{field} needs Kubernetes {need}, "
                                f"Chart.yaml kubeVersion allows {floor}")
    return problems


def main():
    args = sys.argv[1:]
    if args[:1] == ["--manifest"]:
        text = sys.stdin.read() if args[1] == "-" else pathlib.Path(args[1]).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
        problems, checked, skipped = check_manifest(docs)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            sys.exit(f"{len(problems)} object(s) refused by Kubernetes {' / '.join(versions())} schemas")
        print(f"{checked} objects valid in Kubernetes {' and '.join(versions())} "
              f"(kubernetes-validate {kubernetes_validate.__version__}); "
              f"no schema for {len(skipped)}: {', '.join(skipped) or '-'}")
        return
    problems = check_crds()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit("CRDs vs Kubernetes schemas / Chart.yaml kubeVersion: see above")
    print(f"CRDs valid in Kubernetes {' and '.join(versions())}; kubeVersion {kube_version_floor()} "
          "covers their features")


if __name__ == "__main__":
    main()
