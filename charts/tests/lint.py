#!/usr/bin/env python3
"""`helm lint` of charts/edgewatt with Helm's own library (PyPI helm-sdkpy), offline.
Fails on any warning or error. Helm's lint messages come back without their text through
helm-sdkpy (Go errors serialise as {}), so a failure names the file; `chart_install.rs` shows
Helm's full message for rendering errors."""
import asyncio
import pathlib
import sys

import helm_sdkpy as helm

CHART = pathlib.Path(__file__).resolve().parent.parent / "edgewatt"
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


async def lint(path):
    return await helm.Lint(helm.Configuration(namespace="edgewatt-system")).run(str(path))


def problems(result):
    return [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 2]


def main():
    result = asyncio.run(lint(CHART))
    bad = problems(result)
    for m in result.get("Messages") or []:
        print(f"lint {SEVERITY.get(m.get('Severity'), m.get('Severity'))}: {m.get('Path')} {m.get('Err') or ''}")
    if bad or result.get("Errors"):
        sys.exit(f"helm lint: {len(bad)} problem(s) in {CHART}")
    # the lint really renders the templates: a broken copy must fail
    if not lint_changed(lambda c: (c / "templates" / "broken.yaml").write_text("{{ .Values.nope.missing }}\n")):
        sys.exit("helm lint accepted a template that cannot render: the lint is not real")
    # values.schema.json: a wrongly typed or misspelt value is refused before anything renders
    for path, value in [(["exporter", "port"], "nine"), (["controller", "replicas"], "two"),
                        (["exporter", "interval"], "10 seconds"), (["monitoring", "additonalLabels"], {})]:
        if not lint_changed(lambda c: set_value(c / "values.yaml", path, value)):
            sys.exit(f"helm lint accepted {'.'.join(path)}={value!r}: values.schema.json does not guard it")
    print(f"helm lint ok ({helm.get_version()}); values.schema.json refuses wrongly typed values")


def lint_changed(change):
    """Whether `helm lint` reports a problem for a copy of the chart changed by `change(dir)`."""
    import shutil, tempfile
    with tempfile.TemporaryDirectory() as d:
        copy = pathlib.Path(d) / "edgewatt"
        shutil.copytree(CHART, copy)
        change(copy)
        return bool(problems(asyncio.run(lint(copy))))


def set_value(values_file, path, value):
    import yaml
    values = yaml.safe_load(values_file.read_text())
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    values_file.write_text(yaml.safe_dump(values))


if __name__ == "__main__":
    main()
