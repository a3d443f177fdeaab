#!/usr/bin/env python3
"""Installs charts/edgewatt with Helm's own engine (PyPI helm-sdkpy bundles Helm's Go library)
into the cluster of a kubeconfig; the e2e test chart_install.rs points it at the API server
double. The namespace must exist (Helm's own --create-namespace path validates the Namespace
against the server's OpenAPI document, which the double does not serve). Prints Helm's release (manifest, notes) as JSON on stdout.

    helm_install.py <kubeconfig> <release> <namespace> '<values JSON>'
"""
import asyncio
import json
import pathlib
import sys

import helm_sdkpy as helm

CHART = str(pathlib.Path(__file__).resolve().parent.parent / "edgewatt")


async def main(kubeconfig, release, namespace, values):
    cfg = helm.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    try:
        result = await helm.Install(cfg).run(
            release, CHART, values=values, create_namespace=False, wait=False, timeout=60,
            server_side_apply=False)
    except helm.HelmError as e:
        sys.exit(f"helm install failed: {e}")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    kc, rel, ns, vals = sys.argv[1:5]
    asyncio.run(main(kc, rel, ns, json.loads(vals)))
