#!/usr/bin/env python3
"""Where a guest run's time went: for each run directory that `tlbprobe repro` or
`tlbprobe qemu collect` brought back, the QEMU process's wall time (run.yaml
qemu.seconds) split into the guest kernel's boot (console timestamp of the last kernel
line before our init's first line), the start of collect (init to its first log line),
the phases (phases.csv: idle windows, the workload phase), the streamed collapse's steps
between windows (populate and free: summary.json stream_step_seconds), the time between
phases (trace buffers read, snapshots, a window's populate when not streamed) and what is
left (collect's end: the last trace buffers read; then the power-off).

    python3 benchmarks/guest_time.py RUNDIR [RUNDIR...]

It reads only what the runs recorded; it measures nothing itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sys
from pathlib import Path

import yaml

KERNEL_LINE = re.compile(r"^\[\s*(\d+\.\d+)\]")
COLLECT_LINE = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\] ")


def console_times(console: str):
    """(kernel boot, power-off, wall clock at kernel time 0), all on the guest's clock: the
    kernel's printk time of its last line before our init's first (collect's lines carry
    the wall clock instead), of the power-off line, and the epoch of kernel time 0 from the
    audit line's stamp when the kernel printed one."""
    boot = off = zero = None
    in_init = False
    for line in console.splitlines():
        m = KERNEL_LINE.match(line)
        if COLLECT_LINE.match(line):
            in_init = True
        if not m:
            continue
        t = float(m.group(1))
        if not in_init:
            boot = t
        a = re.search(r"audit\((\d+)\.(\d+):", line)
        if a and zero is None:
            zero = int(a.group(1)) + int(a.group(2)) / 1000 - t
        if "Power down" in line or "Restarting system" in line:
            off = t
    return boot, off, zero


def one(run: Path) -> dict:
    """The split of one run, in seconds of the guest's clock, and the factor that turns
    them into the host's (QEMU's wall time over the guest's uptime at power-off): under
    single-threaded TCG with 64 vCPUs the guest's clock was seen to run at 0.6 of the
    host's, with 4 vCPUs at 0.99."""
    meta = yaml.safe_load((run / "run.yaml").read_text())
    qemu = meta.get("qemu") or {}
    phases = list(csv.DictReader((run / "phases.csv").open()))
    summary = json.loads((run / "summary.json").read_text())
    idle = sum(float(p["duration_s"]) for p in phases if p["phase"] == "idle")
    work = sum(float(p["duration_s"]) for p in phases if p["phase"] == "workload")
    first = min(float(p["start"]) for p in phases)
    last = max(float(p["end"]) for p in phases)
    started = dt.datetime.fromisoformat(meta["started"]).timestamp()
    finished = dt.datetime.fromisoformat(meta["finished"]).timestamp() if meta.get("finished") else None
    log = run / "guest" / "console.log"
    boot, off, zero = console_times(log.read_text(errors="replace")) if log.exists() else (None, None, None)
    steps = 0.0
    for r in summary.get("repeats", []):
        for ph in (r.get("phases") or {}).values() if isinstance(r, dict) else ():
            steps += float((ph.get("workload_figures") or {}).get("stream_step_seconds", 0) or 0)
    out = {"run": run.name, "qemu_s": qemu.get("seconds"), "guest_uptime_s": off,
           "clock_ratio": round(qemu["seconds"] / off, 2) if off and qemu.get("seconds") else None,
           "kernel_boot_s": round(boot, 1) if boot is not None else None,
           "init_to_collect_s": round(started - zero - boot, 1) if zero is not None and boot is not None else None,
           "collect_setup_s": round(first - started, 1),
           "idle_windows_s": round(idle, 1), "workload_phases_s": round(work, 1),
           "of_which_stream_steps_s": round(steps, 1) if steps else None,
           "between_phases_s": round(last - first - idle - work, 1),
           "collect_end_s": round(finished - last, 1) if finished else None,
           "to_power_off_s": round(off - (finished - zero), 1) if off and finished and zero is not None else None}
    parts = ("kernel_boot_s", "collect_setup_s", "idle_windows_s", "workload_phases_s", "between_phases_s",
             "collect_end_s")
    if off and all(isinstance(out[k], (int, float)) for k in parts):
        # what the guest's clock saw beyond those: init's mounts and python's start before
        # collect's first line (init_to_collect_s, when the kernel stamped it), the power-off
        out["rest_s"] = round(off - sum(out[k] for k in parts), 1)
    return out


def main(argv) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    rows = [one(Path(a)) for a in argv]
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join("-" if r[k] is None else str(r[k]) for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
