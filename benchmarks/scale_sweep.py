#!/usr/bin/env python3
"""The broadcast's growth with the CPU count, in QEMU: `tlbprobe repro --smp 4,16,64`
(run as root on a quiet machine; minutes per vCPU count under TCG).

Runs the sweep (one collapse of --size at each vCPU count, baseline and patched kernels),
then prints its table, the wall time of each guest, and per N the ratio of the measured
sync IPIs to the model's ops x (N-1). The last figures go into benchmarks/README.md.

    python3 benchmarks/scale_sweep.py [--smp 4,16,64] [--size 256M] [--out DIR] [--accel tcg]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smp", default="4,16,64")
    ap.add_argument("--size", default="256M")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--accel", default="auto", help="auto, kvm or tcg (as tlbprobe repro)")
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="tlbprobe-sweep-")) / "sweep"
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "repro", "--smp", a.smp, "--size", a.size,
                          "--out", str(out), "--accel", a.accel], cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t
    print(res.stdout.rstrip())
    if res.returncode not in (0, 1):
        print(res.stderr, file=sys.stderr)
        return res.returncode
    data = json.loads((out / "repro.json").read_text())
    print(f"\nwall time {wall / 60:.1f} min in all; per guest (boot + collect):")
    for key, seconds in data["timings"].items():
        print(f"  {key:<22} {seconds:8.1f} s")
    print("measured / model sync IPIs (baseline):")
    for row in data["sweep"]:
        if row["variant"] == "baseline" and row["model_total"]:
            print(f"  {row['cpus']:>3} vCPUs: {row['sync_total']:,.0f} / {row['model_total']:,.0f} = "
                  f"{row['sync_total'] / row['model_total']:.4f}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
