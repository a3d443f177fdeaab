#!/usr/bin/env python3
"""Regenerates exporter/data/ from its upstream sources. Run by hand, never at build time:

    python3 exporter/data/regenerate.py [codecarbon-version]

1. cpu_power.csv: CPU model -> TDP (W), copied unchanged from the `codecarbon` PyPI package
   (MIT licence, file codecarbon/data/hardware/cpu_power.csv).
2. load_curve.json: the load -> power shape, the mean of published SPECpower_ssj2008 results
   (listed below; each normalised to its 100 % load power).
"""
import glob, json, subprocess, sys, tempfile, zipfile, os

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = sys.argv[1] if len(sys.argv) > 1 else "3.3.2"

# Average active power (W) at active idle, 10 %, ..., 100 % target load, from spec.org.
SPECPOWER = {
    "power_ssj2008-20110406-00368 (IBM x3550, 2x Xeon X5675)": [58.4, 98, 109, 118, 128, 140, 153, 170, 189, 205, 222],
    "power_ssj2008-20100315-00239 (IBM x3550, 2x Xeon X5670)": [66, 107, 120, 131, 143, 156, 173, 191, 211, 229, 247],
    "power_ssj2008-20141023-00677 (IBM x3650 M2, 2x Xeon X5570)": [81.4, 110, 125, 139, 153, 167, 182, 199, 214, 229, 244],
}

with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, f"codecarbon=={VERSION}"], check=True)
    wheel = glob.glob(os.path.join(tmp, "codecarbon-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        data = z.read("codecarbon/data/hardware/cpu_power.csv")
with open(os.path.join(HERE, "cpu_power.csv"), "wb") as f:
    f.write(data)

curves = [[p / c[-1] for p in c] for c in SPECPOWER.values()]
mean = [round(sum(col) / len(col), 4) for col in zip(*curves)]
with open(os.path.join(HERE, "load_curve.json"), "w") as f:
    json.dump({"load_percent": list(range(0, 101, 10)), "power_ratio": mean, "sources": list(SPECPOWER)}, f, indent=2)
    f.write("\n")
print("cpu_power.csv:", data.count(b"\n") - 1, "models; load curve:", mean)
