#!/usr/bin/env python3
"""What tlbprobe's own presence costs while it measures (run as root on a quiet machine).

Prints two figures:
1. IPIs attributable to tlbprobe in an idle window with tracing on: function-call IPIs
   (CAL) the other CPUs receive during `tlbprobe collect --workload idle` (tracing on,
   everything idle) minus what they receive in a window of the same length with no
   tlbprobe at all (a bare sleep between two reads of /proc/interrupts). Target: none
   beyond the background.
2. The collapse driver's user CPU time as a fraction of a collapse phase (default 4 GiB;
   target under 2%): from phases.csv, driver_utime_s / duration_s.

Usage: benchmarks/collect_overhead.py [--seconds 30] [--size 4G] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tlbprobe.measure import procfs  # noqa: E402


def other_cal(before: procfs.Interrupts, after: procfs.Interrupts, driver: int = 0) -> int:
    d = procfs.diff_interrupts(before, after).canonical_per_cpu("function_call")
    return sum(n for c, n in d.items() if c != driver)


def bare_window(seconds: float) -> int:
    """CAL on the CPUs other than 0 during a plain sleep: the machine's own background."""
    before = procfs.parse_interrupts(procfs.read_text("/proc/interrupts"))
    time.sleep(seconds)
    after = procfs.parse_interrupts(procfs.read_text("/proc/interrupts"))
    return other_cal(before, after)


def tlbprobe(*args: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="tlbprobe-bench-")) / "run"
    subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "-q", "--out", str(out), *args],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()

    print(f"1. IPIs attributable to tlbprobe in a {a.seconds:g} s idle window, tracing on "
          f"(CAL received by the CPUs other than 0)")
    print(f"{'round':>5} {'bare sleep':>11} {'tlbprobe idle':>14} {'difference':>11}")
    for r in range(a.rounds):
        bare = bare_window(a.seconds)
        run = tlbprobe("--workload", "idle", "--idle-mode", "sleep", "--repeat", "1",
                       "--idle-seconds", str(a.seconds))
        s = json.loads((run / "summary.json").read_text())
        probe = s["repeats"][0]["phases"]["idle"]["cal_other_cpus"]
        print(f"{r + 1:>5} {bare:>11} {probe:>14} {probe - bare:>+11}")
        attributed = s["repeats"][0]["phases"]["idle"]["attributed"]
        print(f"      traced in the tlbprobe window: {attributed}")

    print(f"\n2. collapse driver's user CPU time, {a.size} collapse phase")
    run = tlbprobe("--size", a.size, "--repeat", "1", "--idle-seconds", "0")
    with open(run / "phases.csv") as f:
        for row in csv.DictReader(f):
            if row["phase"] == "workload":
                dur, ut, st = float(row["duration_s"]), float(row["driver_utime_s"]), float(row["driver_stime_s"])
                print(f"phase {dur:.2f} s, {row['ops']} collapses; driver user {ut:.3f} s = {100 * ut / dur:.2f}% "
                      f"(system {st:.2f} s = {100 * st / dur:.0f}%: the kernel's collapse work)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
