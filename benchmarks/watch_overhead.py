#!/usr/bin/env python3
"""What `tlbprobe watch` costs the machine it watches (run as root; nothing else of yours
measuring at the same time).

Two conditions, each with the watch off and then on, in the same run:

* idle: nothing started by this script;
* load: a loop of MADV_COLLAPSE processes (tests/collapse_helper.py, --load-size MiB each)
  runs through both windows, so the watch parses a stack per broadcast.

For each window it prints:

* the watcher's CPU time (utime + stime of its process, /proc/PID/stat) as a percentage
  of one CPU over the window;
* its resident memory at the window's start and end (VmRSS) and its peak (VmHWM);
* the cross-CPU calls it queued, measured independently of it: this script's own perf
  counter on csd:csd_queue_cpu filtered to ``common_pid == <the watcher's PID>`` on every
  CPU, per hour and per other CPU per interval; beside it what the watch itself counted
  and subtracted (its records' ``own``);
* CAL summed over all CPUs, per second, off against on (the watcher runs on any CPU, so
  every CPU's CAL is where its IPIs land; on a busy machine this difference drowns in the
  background, which is why the exact count above is the figure to quote);
* under load, collapses per second (/proc/vmstat thp_collapse_alloc), off against on:
  what the watch does to the workload it watches.

Usage: benchmarks/watch_overhead.py [--seconds 60] [--interval 10] [--load-seconds 20] [--load-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tlbprobe.measure import procfs  # noqa: E402
from tlbprobe.measure.perfcount import TracepointCounter  # noqa: E402

TRACEFS = Path("/sys/kernel/tracing")
HELPER = ROOT / "tests" / "collapse_helper.py"


def cal_total() -> int:
    irq = procfs.parse_interrupts(procfs.read_text("/proc/interrupts"))
    line = irq.by_canonical("function_call")
    return line.total if line else 0


def collapses() -> int:
    return procfs.read_vmstat().get("thp_collapse_alloc", 0)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of the process, in ns precision (/proc/PID/task/*/schedstat's
    first field, the scheduler's sum_exec_runtime; /proc/PID/stat's utime and stime come in
    clock ticks, too coarse for a process that runs a millisecond every few seconds)."""
    total = 0
    for st in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(st.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Load:
    """MADV_COLLAPSE processes one after another, until stopped."""

    def __init__(self, size_mib: int):
        self.proc = subprocess.Popen(
            ["sh", "-c", f"while :; do {sys.executable} {HELPER} {size_mib} --name bench-collapse >/dev/null; done"],
            start_new_session=True)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait()


def window_off(seconds: float) -> dict:
    cal0, col0, t0 = cal_total(), collapses(), time.monotonic()
    time.sleep(seconds)
    t = time.monotonic() - t0
    return {"seconds": t, "cal_per_s": (cal_total() - cal0) / t, "collapses_per_s": (collapses() - col0) / t}


def window_on(seconds: float, interval: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="tlbprobe-watch-bench-")) / "w"
    watch = subprocess.Popen([sys.executable, "-m", "tlbprobe", "watch", "-q", "--interval", str(interval),
                              "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        while not (out / "watch.yaml").exists():
            if watch.poll() is not None:
                raise SystemExit("the watch did not start")
            time.sleep(0.1)
        records = out / "records.jsonl"

        def count() -> int:
            return len(records.read_text().splitlines()) if records.exists() else 0

        def wait_for(n: int) -> None:
            while count() < n:
                if watch.poll() is not None:
                    raise SystemExit("the watch ended early")
                time.sleep(0.02)

        wait_for(1)  # past its start (the counters opened, the tracepoint enabled)
        cpus = list(range(os.cpu_count() or 1))
        # the calls queued in the watcher's own context (not those of an interrupt that
        # came while it ran: the same rule as the watch's, counters.own_filter()), and all
        counter = TracepointCounter.open(TRACEFS, "csd/csd_queue_cpu",
                                         f"common_pid == {watch.pid} && !(common_flags & 0x58)", cpus)
        counter_all = TracepointCounter.open(TRACEFS, "csd/csd_queue_cpu", f"common_pid == {watch.pid}", cpus)
        # the window runs from one record to the one k intervals later: the watch's own
        # records cover the same span as this script's counter
        seq0 = count() + 1
        wait_for(seq0)
        k = max(1, round(seconds / interval))
        rss0, cpu0 = status_kb(watch.pid, "VmRSS"), cpu_seconds(watch.pid)
        cal0, col0, t0 = cal_total(), collapses(), time.monotonic()
        own0, all0 = counter.read(), counter_all.read()
        wait_for(seq0 + k)
        own, own_all = counter.read() - own0, counter_all.read() - all0
        t = time.monotonic() - t0
        cal, col = cal_total() - cal0, collapses() - col0
        cpu, rss1, hwm = cpu_seconds(watch.pid) - cpu0, status_kb(watch.pid, "VmRSS"), status_kb(watch.pid, "VmHWM")
        counter.close()
        counter_all.close()
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=60)
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()][seq0:seq0 + k]
    self_counted = sum(sum(r["own"].values()) for r in recs)
    broadcasts = sum(r["broadcasts"] or 0 for r in recs)
    rec_s = sum(r["duration_s"] for r in recs) or 1.0
    cpus = len(recs[0]["online"]) if recs else (os.cpu_count() or 1)
    return {"seconds": t, "cpu_pct": 100 * cpu / t, "rss0_kb": rss0, "rss1_kb": rss1, "hwm_kb": hwm,
            "own_per_hour": own * 3600 / t, "own_all_per_hour": own_all * 3600 / t,
            "own_per_cpu_interval": own / max(1, cpus - 1) / (t / interval),
            "self_counted_per_hour": self_counted * 3600 / rec_s, "cal_per_s": cal / t,
            "collapses_per_s": col / t, "broadcasts_per_s": broadcasts / rec_s, "out": str(out)}


def show(name: str, off: dict, on: dict, interval: float) -> None:
    print(f"{name}: off {off['seconds']:.0f} s, on {on['seconds']:.0f} s (interval {interval:g} s)")
    print(f"  watcher CPU time          {on['cpu_pct']:.3f} % of one CPU")
    print(f"  watcher memory (VmRSS)    {on['rss0_kb'] / 1024:.1f} MiB -> {on['rss1_kb'] / 1024:.1f} MiB "
          f"(peak {on['hwm_kb'] / 1024:.1f} MiB)")
    print(f"  its cross-CPU calls       {on['own_per_hour']:.0f} per hour, {on['own_per_cpu_interval']:.2f} per "
          f"other CPU per interval (exact: this script's counter); it counted {on['self_counted_per_hour']:.0f} "
          f"per hour itself; {on['own_all_per_hour']:.0f} per hour with those interrupts queued while it ran")
    print(f"  CAL, all CPUs             {off['cal_per_s']:.1f}/s off, {on['cal_per_s']:.1f}/s on")
    if on["broadcasts_per_s"] or off["collapses_per_s"]:
        print(f"  collapses                 {off['collapses_per_s']:.1f}/s off, {on['collapses_per_s']:.1f}/s on; "
              f"the watch counted {on['broadcasts_per_s']:.1f} broadcasts/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="each idle window")
    ap.add_argument("--interval", type=float, default=10.0, help="the watch's --interval")
    ap.add_argument("--load-seconds", type=float, default=20.0, help="each window under load (0: no load part)")
    ap.add_argument("--load-size", type=int, default=128, help="MiB per collapsing process")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    started = time.time()
    show("idle", window_off(a.seconds), window_on(a.seconds, a.interval), a.interval)
    if a.load_seconds > 0:
        load = Load(a.load_size)
        try:
            time.sleep(2)
            off = window_off(a.load_seconds)
            on = window_on(a.load_seconds, a.interval)
        finally:
            load.stop()
        show(f"load ({a.load_size} MiB MADV_COLLAPSE processes in a loop)", off, on, a.interval)
    print(f"ran {time.time() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
