#!/usr/bin/env python3
"""What counting the sync calls costs, per way of counting (run as root on a quiet machine).

For a collapse of --size (default 2G) on this host it runs `tlbprobe collect` --rounds
times with each of: no tracing, the ring buffer counting the sync calls
(--sync-counter trace), and the in-kernel perf counter (--sync-counter perf, the
default), and prints per way: the workload phase's ms per collapse (the observer effect
on the operation measured), the sync calls counted against collapses x other CPUs
(exactness), events dropped, and the trace buffer memory the run said it took. Then it
prints what the ring buffer would need on bigger machines (trace.TracePlan), for the
seed's 20 GiB at 64 and 256 CPUs, with and without the counter.

    python3 benchmarks/trace_scale.py [--size 2G] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tlbprobe.measure.trace import TracePlan  # noqa: E402

WAYS = {"no trace": ["--no-trace"], "ring buffer": ["--sync-counter", "trace"], "perf counter": []}


def collect(size: str, extra: list) -> Path:
    out = Path(tempfile.mkdtemp(prefix="tlbprobe-bench-")) / "run"
    subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "-q", "--size", size, "--repeat", "1",
                    "--idle-seconds", "1", "--out", str(out), *extra], check=True, stdout=subprocess.DEVNULL,
                   cwd=REPO)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print(f"{a.size} MADV_COLLAPSE on this host, {a.rounds} round(s) per way (ways interleaved)")
    results = {w: [] for w in WAYS}
    for _ in range(a.rounds):
        for way, extra in WAYS.items():
            run = collect(a.size, extra)
            s = json.loads((run / "summary.json").read_text())
            w = s["repeats"][0]["phases"]["workload"]
            counted = (s.get("queued") or {}).get("tlb_remove_table_smp_sync")
            log = (run / "log.txt").read_text()
            mem = re.search(r"trace buffers: ([\d.]+) MiB", log)
            results[way].append((1000 * w["duration_s"] / max(w["ops"], 1), counted,
                                 s["ops"] * len(s["other_cpus"]), s.get("trace_lost_events", 0),
                                 float(mem.group(1)) if mem else 0.0))
    print(f"{'way':<13} {'ms/collapse (median, min..max)':>31} {'sync counted / expected':>24} "
          f"{'dropped':>8} {'buffers MiB':>12}")
    for way, rows in results.items():
        ms = [r[0] for r in rows]
        exact = ", ".join("-" if r[1] is None else f"{r[1]}/{r[2]}" for r in rows)
        print(f"{way:<13} {statistics.median(ms):>13.3f} ({min(ms):.3f}..{max(ms):.3f})      {exact:>24} "
              f"{max(r[3] for r in rows):>8} {rows[0][4]:>12.1f}")
    print("\nring buffer memory the sizing asks for (TracePlan), 20 GiB collapse = 10,240 collapses per phase:")
    print(f"{'CPUs':>5} {'with counter':>13} {'without':>9}  (MiB in all; sender CPU alone without counter)")
    for n in (2, 16, 64, 256):
        p = TracePlan(tuple(range(n)), 0, 10240)
        print(f"{n:>5} {p.total_kb(True) / 1024:>13.0f} {p.total_kb(False) / 1024:>9.0f}  "
              f"({p.driver_kb(False) / 1024:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
