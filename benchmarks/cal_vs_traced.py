#!/usr/bin/env python3
"""How far a CAL-only verdict lands from the traced count, on runs that have both.

For every run directory given (default: analysis/runs/*) whose summary has a traced
tlb_remove_table_smp_sync count, this prints the CAL-only figures the report would use
with tracing off (report/verdict.py: the point estimate, raw CAL-TLB minus the pooled
idle rate times the duration, and the interval [raw - background_max, raw]) beside the
traced count, grouped by idle-window length and CPU count, and whether the interval
holds the traced count. Nothing is measured anew: it reads recorded runs.

    python3 benchmarks/cal_vs_traced.py [RUN ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlbprobe.model import load_params  # noqa: E402
from tlbprobe.report.figures import traced_sync  # noqa: E402
from tlbprobe.report.verdict import cal_bounds  # noqa: E402
from tlbprobe.rundir.reader import load_run  # noqa: E402


def main(argv: list) -> int:
    paths = [Path(a) for a in argv] or sorted(p for p in (REPO / "analysis" / "runs").iterdir()
                                              if (p / "summary.json").exists())
    params = load_params()
    rows = []
    for path in paths:
        run = load_run(path)
        traced = traced_sync(run)
        if traced is None:
            continue
        b = cal_bounds(run, params)
        idle = run.job.get("idle_seconds")
        off = (b.estimate - traced) / traced if traced else None
        rows.append((float(idle or 0), run.online_cpus, run.name, traced, b.raw, b.estimate, b.low, b.high,
                     off, b.low - params.verdict.absolute <= traced <= b.high + params.verdict.relative * traced
                     + params.verdict.absolute))
    print(f"{'idle s':>6} {'CPUs':>4} {'run':<36} {'traced':>8} {'CAL-TLB':>8} {'estimate':>9} {'off':>7} "
          f"{'interval':>17} holds")
    for idle, cpus, name, traced, raw, est, low, high, off, holds in sorted(rows):
        offs = f"{100 * off:+6.1f}%" if off is not None else "     -"
        print(f"{idle:6.1f} {cpus:4d} {name[:36]:<36} {traced:8.0f} {raw:8.0f} {est:9.1f} {offs:>7} "
              f"{low:8.0f}..{high:<7.0f} {'yes' if holds else 'NO'}")
    print(f"{len(rows)} traced run(s); 'off' is the CAL-only point estimate against the traced count; "
          f"'holds' says whether the CAL-only interval (plus the verdict's small relative term) holds it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
