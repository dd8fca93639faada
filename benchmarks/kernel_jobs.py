#!/usr/bin/env python3
"""Do the jobs still do what they did on another kernel build? Runs the same `tlbprobe
qemu collect` jobs in TCG guests of each kernel given, one guest at a time, and prints per
job and kernel: the collapses or unshares, the traced sync calls (csd_queue_cpu of
tlb_remove_table_smp_sync, counted in the kernel) beside ops x (vCPUs - 1), the CAL the
other CPUs took, and the idle windows' background rate (CAL on the other CPUs per second
of idle window). Run it as root on a quiet machine (guests under TCG take minutes).

    python3 benchmarks/kernel_jobs.py --kernel old=BZIMAGE --kernel new=BZIMAGE
        [--job 'collapse=--size 256M --repeat 1 --idle-seconds 1'] [--smp 4] [--out DIR]

Without --job: the collapse of 256 MiB, the same with --latency (cyclictest beside it),
the gup-fast job and hugetlb-unshare-1G, each with one repeat.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNC = "tlb_remove_table_smp_sync"
JOBS = {
    "collapse-256M": "--size 256M --repeat 1 --idle-seconds 1",
    "collapse-256M --latency": "--size 256M --repeat 1 --idle-seconds 1 --latency",
    "gup-fast": "--job gup-fast --repeat 1",
    "hugetlb-unshare-1G": "--job hugetlb-unshare-1G --repeat 1",
}


def figures(summary: dict) -> dict:
    """What the table shows, from a run's summary.json."""
    others = len(summary.get("other_cpus") or [])
    idle_cal = idle_s = 0.0
    for r in summary.get("repeats", []):
        for name, ph in r.get("phases", {}).items():
            if name.startswith("idle"):
                idle_cal += ph.get("cal_other_cpus", 0)
                idle_s += ph.get("duration_s", 0.0)
    queued = summary.get("queued")
    return {"complete": summary.get("complete"), "ops": summary.get("ops"), "others": others,
            "traced": queued.get(SYNC, 0) if isinstance(queued, dict) else None,
            # one sync per collapse or unshare; other jobs' ops (GUP calls) send none of their own
            "expected": (summary.get("ops") or 0) * others if summary.get("ops_unit") in ("collapses", "unshares")
            else None, "ops_unit": summary.get("ops_unit"), "cal": summary.get("cal_other_cpus"),
            "idle_ipis_per_s": round(idle_cal / idle_s, 1) if idle_s else None,
            "release": summary.get("kernel_release")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", action="append", required=True, metavar="NAME=BZIMAGE")
    ap.add_argument("--job", action="append", default=[], metavar="NAME=COLLECT ARGS")
    ap.add_argument("--smp", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary directory)")
    a = ap.parse_args()
    kernels = [k.split("=", 1) for k in a.kernel]
    jobs = dict(j.split("=", 1) for j in a.job) if a.job else JOBS
    out = a.out or Path(tempfile.mkdtemp(prefix="tlbprobe-kernel-jobs-"))
    rows = []
    for job, args in jobs.items():
        for name, bzimage in kernels:
            run = out / f"{name}-{job.replace(' ', '').replace('--', '-')}"
            cmd = [sys.executable, "-m", "tlbprobe", "qemu", "collect", "--kernel", bzimage, "--smp", str(a.smp),
                   "--accel", "tcg", "--out", str(run), "--", *shlex.split(args)]
            t = time.monotonic()
            res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            wall = time.monotonic() - t
            try:
                f = figures(json.loads((run / "summary.json").read_text()))
            except (OSError, ValueError):
                f = {"complete": False}
            f.update(job=job, kernel=name, rc=res.returncode, wall_s=round(wall))
            rows.append(f)
            print(json.dumps(f), flush=True)
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
    print()
    print(f"{'job':<26} {'kernel':<8} {'rc':>3} {'ops':>6} {'traced sync':>11} {'ops x others':>12} {'CAL':>7} "
          f"{'idle IPIs/s':>11} {'guest s':>7}")
    for r in rows:
        print(f"{r['job']:<26} {r['kernel']:<8} {r['rc']:>3} {r.get('ops')!s:>6} {r.get('traced')!s:>11} "
              f"{r.get('expected')!s:>12} {r.get('cal')!s:>7} {r.get('idle_ipis_per_s')!s:>11} {r['wall_s']:>7}")
    print(f"runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
