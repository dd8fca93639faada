#!/usr/bin/env python3
"""khugepaged's broadcast rate under the kernel's default knobs (run as root).

Runs `tlbprobe collect --job khugepaged` (256 MiB, pages_to_scan 4096, scan_sleep 10 s:
at least 150 s to collapse, then 30 s of steady state) and prints what a default machine
sees while an application's memory is being made huge: collapses (= sync broadcasts) per
second and per hour, the sync IPIs that landed per second on every CPU, the time to
collapse against what the knobs allow, and the steady state after. With --fast it runs
the khugepaged-fast job instead (the upper end: 64 ranges every 100 ms).

    python3 benchmarks/khugepaged_rate.py [--fast] [--size 256M]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="the khugepaged-fast job (aggressive knobs)")
    ap.add_argument("--size", default="256M")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tlbprobe-bench-")) / "run"
    job = "khugepaged-fast" if args.fast else "khugepaged"
    subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "-q", "--job", job, "--size", args.size,
                    "--repeat", "1", "--out", str(out)], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    s = json.loads((out / "summary.json").read_text())
    w = s["repeats"][0]["phases"]["workload"]
    f = w["workload_figures"]
    syncs = (w.get("queued") or w.get("attributed") or {}).get("tlb_remove_table_smp_sync")
    took = f["seconds_to_collapse"]
    print(f"job {job}, {args.size}, {s['online_cpus']} CPUs, kernel {s['kernel_release']}, flush {s['flush_mode']}")
    print(f"collapses by khugepaged         {f['khugepaged_pages_collapsed']:.0f} "
          f"(region: {f['region_collapsed_ranges']:.0f} ranges of 2 MiB)")
    if took >= 0:
        rate = f["khugepaged_pages_collapsed"] / took
        print(f"time to collapse                {took:.1f} s (the knobs allow {f['least_seconds_to_collapse']:.1f} s "
              f"at best)")
        print(f"broadcasts per second           {rate:.2f} (bound {f.get('max_collapses_per_s', float('nan')):.2f}); "
              f"per hour {rate * 3600:,.0f} while memory is left to collapse")
        if syncs is not None:
            print(f"sync IPIs per second, all CPUs  {syncs / took:.2f} ({syncs:.0f} traced = broadcasts x "
                  f"{s['online_cpus'] - 1} other CPUs)")
    else:
        print("the region was not collapsed in the time allowed")
    print(f"steady state                    {f['steady_collapses']:.0f} collapses in {f['steady_seconds']:.0f} s")
    print(f"run directory                   {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
