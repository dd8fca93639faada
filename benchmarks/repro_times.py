#!/usr/bin/env python3
"""How long the QEMU A/B takes, cold and warm, and what it measures (run as root).

Runs `tlbprobe repro` twice with a fresh kernel cache (a temporary $TLBPROBE_CACHE):
first cold (unpack Debian's linux-source, build baseline, build patched incrementally),
then warm (both kernels from the cache). Prints: total time of each, each kernel
build's time, boot-to-result time per guest, and the sync IPIs per collapse per other
CPU for baseline and patched (native flush under TCG).

Usage: benchmarks/repro_times.py [--keep-cache DIR] [--warm-only]
  --warm-only uses your normal cache (no cold run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tlbprobe.rundir import sync_count  # noqa: E402


def repro(out: Path, env: dict) -> tuple:
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "repro", "--out", str(out)], cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - t
    if not (out / "repro.json").exists():
        sys.exit(f"repro failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return seconds, res.returncode, json.loads((out / "repro.json").read_text())


def per_op(run: Path) -> str:
    s = json.loads((run / "summary.json").read_text())
    others = max(s["online_cpus"] - 1, 1)
    traced = sync_count(s) / s["ops"] / others if s["ops"] else 0  # queued: every call, interrupt or not
    return f"{s['sync_ipis_per_op_per_cpu']:.3f} (CAL-TLB), {traced:.3f} (traced)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-cache", type=Path, help="use (and keep) this cache directory for the cold run")
    ap.add_argument("--warm-only", action="store_true")
    a = ap.parse_args()
    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="tlbprobe-repro-bench-"))
    if not a.warm_only:
        env["TLBPROBE_CACHE"] = str(a.keep_cache or work / "cache")
    runs = []
    for kind in (["warm"] if a.warm_only else ["cold", "warm"]):
        seconds, rc, data = repro(work / kind, env)
        runs.append((kind, seconds, rc, data))
    print(f"{'run':<5} {'total s':>8} {'exit':>5} {'baseline build s':>17} {'patched build s':>16} "
          f"{'baseline guest s':>17} {'patched guest s':>16}")
    for kind, seconds, rc, d in runs:
        k, t = d["kernels"], d["timings"]
        print(f"{kind:<5} {seconds:8.0f} {rc:>5} {k['baseline']['build_seconds']:17.0f} "
              f"{k['patched']['build_seconds']:16.0f} {t['guest_baseline_s']:17.0f} {t['guest_patched_s']:16.0f}")
    print("\n(each guest boots once and runs three collects: collapse 1G, collapse 1G with threads, "
          "hugetlb unshare 1G)")
    d = runs[-1][3]
    print("\nsync IPIs per collapse per other CPU (TCG guest, native flush):")
    for job in ("collapse-1G", "collapse-1G-threads"):
        for variant in ("baseline", "patched"):
            print(f"  {job:<20} {variant:<9} {per_op(Path(d['runs'][job][variant]))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
