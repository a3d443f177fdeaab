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
    import shutil, tempfile
    with tempfile.TemporaryDirectory() as d:
        broken = pathlib.Path(d) / "edgewatt"
        shutil.copytree(CHART, broken)
        (broken / "templates" / "broken.yaml").write_text("{{ .Values.nope.missing }}\n")
        if not problems(asyncio.run(lint(broken))):
            sys.exit("helm lint accepted a template that cannot render: the lint is not real")
    print(f"helm lint ok ({helm.get_version()})")


if __name__ == "__main__":
    main()
