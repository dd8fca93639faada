#!/usr/bin/env python3
"""What --cost and --victim cost the measurement itself (run as root on a quiet machine).

For a collapse of --size (default 1G) it runs `tlbprobe collect` --rounds times each with
no observer, with --cost (seven trace events and a tracefs instance of their own) and with
--victim (a busy loop on every other CPU), and prints per way the workload phase's ms per
collapse (the observer effect on the operation measured), the CAL and TLB the other CPUs
received in the workload phase beyond the collapses' own sync IPIs (what the observer adds
to the count), and the figures the observer itself reported.

    python3 benchmarks/cost_observer.py [--size 1G] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tlbprobe.rundir.sections import CostSection, VictimSection  # noqa: E402
WAYS = {"plain": [], "--cost": ["--cost"], "--victim": ["--victim"], "--cost --victim": ["--cost", "--victim"]}


def collect(size: str, extra: list) -> dict:
    out = Path(tempfile.mkdtemp(prefix="tlbprobe-bench-")) / "run"
    subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "-q", "--size", size, "--repeat", "1",
                    "--idle-seconds", "2", "--out", str(out), *extra], check=True, stdout=subprocess.DEVNULL,
                   cwd=REPO)
    return json.loads((out / "summary.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"{'way':<16} {'ms/collapse':>12} {'extra CAL':>10} {'TLB':>5}  observer's own figures")
    base = None
    for way, extra in WAYS.items():
        ms, cal, tlb, note = [], [], [], ""
        for _ in range(args.rounds):
            s = collect(args.size, extra)
            note = ""  # the last round's own figures
            w = s["repeats"][0]["phases"]["workload"]
            ms.append(1000 * w["duration_s"] / max(w["ops"], 1))
            cal.append(w["cal_other_cpus"] - w["ops"] * len(s["other_cpus"]))
            tlb.append(w["tlb_other_cpus"])
            cost, victim = CostSection.of(s), VictimSection.of(s)  # the typed sections (tlbprobe/rundir/sections.py)
            if cost is not None and cost.per_ipi_ns_corrected is not None:
                note = f"handler {cost.per_ipi_ns_corrected / 1e3:.2f} us/IPI, tracepoint {cost.tracepoint_ns:.0f} ns"
            if victim is not None and victim.extra_interruptions_per_s_mean is not None:
                note += (f"{'; ' if note else ''}victim {victim.extra_interruptions_per_s_mean:+,.0f} irq/s, "
                         f"throughput {-(victim.loss_pct_mean or 0.0):+.1f}%")
        m = statistics.median(ms)
        base = base or m
        print(f"{way:<16} {m:9.3f} ({100 * (m / base - 1):+4.0f}%) {statistics.median(cal):7.0f} "
              f"{statistics.median(tlb):5.0f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
