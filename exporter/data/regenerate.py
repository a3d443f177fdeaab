#!/usr/bin/env python3
"""Regenerates exporter/data/ from its upstream sources. Run by hand, never at build time:

    python3 exporter/data/regenerate.py [codecarbon-version]   # both files (needs PyPI)
    python3 exporter/data/regenerate.py --curves-only           # load_curve.json only, offline

1. cpu_power.csv: CPU model -> TDP (W), copied unchanged from the `codecarbon` PyPI package
   (MIT licence, file codecarbon/data/hardware/cpu_power.csv).
2. load_curve.json: the load -> power shapes, built from the published SPECpower_ssj2008 results
   recorded in specpower_results.json (sources per result there and in README.md): each result is
   normalised to its own 100 % load power, the results are split by CPU era (`is_legacy_cpu`, the
   same rule as `LoadCurveEra::of` in src/estimator.rs) and each era's curve is the per-level median.
   The exporter reads load_curve.json; its unit test checks that the file equals what the Rust code
   computes from specpower_results.json, and benches/estimator.rs validates the method by
   leave-one-out cross-validation. This script prints the same cross-validation.
"""
import glob, json, os, statistics, subprocess, sys, tempfile, zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
LEGACY_PREFIXES = ("30", "31", "32", "33", "51", "53", "54", "73")


def is_legacy_cpu(model_name):
    """Intel parts before Nehalem (Core 2 / NetBurst Xeons, Pentium D): no package C6, so a busy
    idle loop costs 60-75 % of full-load power. Mirrors LoadCurveEra::of in src/estimator.rs."""
    lower = model_name.lower()
    if "pentium d" in lower or "pentium(r) d" in lower:
        return True
    if "xeon" not in lower:
        return False
    words = [w for w in lower.replace("(", " ").replace(")", " ").split() if w]
    for i, w in enumerate(words):
        digits = w[1:] if w[:1] in ("e", "x", "l") else w
        if (len(digits) == 4 and digits.isdigit() and digits[:2] in LEGACY_PREFIXES
                and not (i > 0 and words[i - 1] in ("bronze", "silver", "gold", "platinum"))):
            return True
    return False


def median_curve(watts_lists):
    norm = [[p / w[-1] for p in w] for w in watts_lists]
    return [statistics.median(col) for col in zip(*norm)]


def build_curves():
    results = json.load(open(os.path.join(HERE, "specpower_results.json")))["results"]
    eras = {"modern": [], "legacy": []}
    for r in results:
        eras["legacy" if is_legacy_cpu(r["cpu"]) else "modern"].append(r)
    doc = {
        "load_percent": list(range(0, 101, 10)),
        "method": "per-level median of the results in specpower_results.json, each normalised to its 100 % load power, split by CPU era (regenerate.py is_legacy_cpu)",
    }
    for era, rs in eras.items():
        doc[era] = {"power_ratio": [round(x, 4) for x in median_curve([r["watts"] for r in rs])],
                    "results": len(rs)}
    with open(os.path.join(HERE, "load_curve.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    for era in eras:
        print(f"{era} ({doc[era]['results']} results):", doc[era]["power_ratio"])
    # Leave-one-out: each result against the median of the other results of its era.
    ape = [[] for _ in range(11)]
    for i, r in enumerate(results):
        legacy = is_legacy_cpu(r["cpu"])
        train = [o["watts"] for j, o in enumerate(results) if j != i and is_legacy_cpu(o["cpu"]) == legacy]
        curve = median_curve(train)
        for k, measured in enumerate(r["watts"]):
            ape[k].append(abs(curve[k] * r["watts"][-1] - measured) / measured * 100)
    mape = [statistics.mean(a) for a in ape]
    print("leave-one-out MAPE per level:", " ".join(f"{m:.1f}" for m in mape), f"(mean {statistics.mean(mape):.1f} %)")


def fetch_cpu_power(version):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, f"codecarbon=={version}"], check=True)
        wheel = glob.glob(os.path.join(tmp, "codecarbon-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            data = z.read("codecarbon/data/hardware/cpu_power.csv")
    with open(os.path.join(HERE, "cpu_power.csv"), "wb") as f:
        f.write(data)
    print("cpu_power.csv:", data.count(b"\n") - 1, "models")


if __name__ == "__main__":
    if "--curves-only" not in sys.argv:
        fetch_cpu_power(sys.argv[1] if len(sys.argv) > 1 else "3.3.2")
    build_curves()
