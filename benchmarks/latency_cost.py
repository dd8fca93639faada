#!/usr/bin/env python3
"""The latency cost of sync broadcasts on a CPU that only receives them (run as root).

The question an RT user asks of the patch: what does one `tlb_remove_table_smp_sync`
broadcast cost a real-time thread on another CPU? cyclictest (one SCHED_FIFO thread per
online CPU, every 200 us) runs beside windows of equal length:
  * idle: the driver CPU spins in user space (as in `collect`'s idle window, so the
    scheduler's busy-CPU kicks are in the baseline too);
  * paced collapse at R collapses per second: one MADV_COLLAPSE of one 2 MiB range, then
    spinning until the next slot, so every receiving CPU gets R sync IPIs per second at
    an even pace (one broadcast per collapse: analysis/runs/host-collapse-256M traced 384 for
    384); rate `max` collapses back to back.
Each condition runs twice: with the idle states as the system sets them
(cyclictest --default-system, what `collect --latency` does) and with cyclictest's own
default of holding /dev/cpu_dma_latency at 0, under which an idle receiving CPU polls and
takes the sync call without an interrupt (see tlbprobe/measure/latency.py): the usual RT tuning,
and the reason the IPI counts differ between the two tables.
Conditions are interleaved within each round, so slow drifts of a shared machine hit all
of them alike; every condition's histograms are pooled over rounds and receiving CPUs.
For each condition it prints the achieved collapse rate, the CAL and TLB interrupt rates
on the receiving CPUs, the traced csd_function_entry rate of tlb_remove_table_smp_sync
there (which also sees few of them while the receiver polls), the receiving CPUs' p50/p99/p99.9/max, and the difference to idle in p99 and p99.9, with the
driver CPU's lost cycles for contrast. No assertions. Needs a quiet machine: anything
else running on the receiving CPUs shows up in its percentiles.

Usage: python3 benchmarks/latency_cost.py [--seconds 5] [--rates 50,200,max] [--rounds 2] [--cpu 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tlbprobe.measure import host, procfs  # noqa: E402
from tlbprobe.errors import TlbprobeError  # noqa: E402
from tlbprobe.run.job import Job  # noqa: E402
from tlbprobe.measure.latency import Cyclictest  # noqa: E402
from tlbprobe.rundir.cyclictest import CpuLatency, percentile_us  # noqa: E402
from tlbprobe.measure.sysstate import DEFAULT_STATE_DIR, SystemState, stop_signals_raise  # noqa: E402
from tlbprobe.measure.trace import TraceSession, open_session  # noqa: E402
from tlbprobe.workloads import libc  # noqa: E402
from tlbprobe.vocab import PMD_SIZE  # noqa: E402
from tlbprobe.workloads.collapse.driver import CollapseWorkload  # noqa: E402

MAX_RANGES = 1024        # 2 GiB: the most one window collapses (the `max` rate stops there)


@dataclass
class Condition:
    """One condition, pooled over rounds: receivers' and driver's latency, counts, time."""

    name: str
    rate: Optional[float]                 # collapses/s asked; None = idle; 0 = back to back
    pm_qos_zero: bool = False             # cyclictest holds /dev/cpu_dma_latency at 0 (idle CPUs poll)
    receivers: CpuLatency = field(default_factory=CpuLatency)
    driver: CpuLatency = field(default_factory=CpuLatency)
    seconds: float = 0.0
    collapses: int = 0
    cal_per_receiver: float = 0.0         # function-call IPIs, summed over rounds, mean over receivers
    tlb_per_receiver: float = 0.0         # TLB-shootdown IPIs (also counted in CAL on x86), likewise
    sync_per_receiver: float = 0.0        # traced tlb_remove_table_smp_sync runs, likewise


def spin_until(deadline: float) -> None:
    while time.monotonic() < deadline:
        pass


def paced_collapses(addr: int, ranges: int, rate: float, seconds: float) -> None:
    """Collapse one 2 MiB range per 1/rate s (back to back when rate is 0), spinning between."""
    start = time.monotonic()
    end = start + seconds
    for i in range(ranges):
        if rate:
            slot = start + i / rate
            if slot >= end:
                break
            spin_until(slot)
        try:
            libc.madvise(addr + i * PMD_SIZE, PMD_SIZE, libc.MADV_COLLAPSE)
        except OSError:
            pass  # counted from vmstat, like collect does
    if rate:
        spin_until(end)


def window(cond: Condition, seconds: float, driver: int, cpus: List[int], workdir: Path,
           tag: str, facts: host.HostFacts, trace: TraceSession) -> None:
    """One measured window of one condition, added to its pooled figures."""
    wl = None
    if cond.rate is not None:
        ranges = MAX_RANGES if not cond.rate else min(MAX_RANGES, int(cond.rate * seconds) + 1)
        wl = CollapseWorkload(Job(workload="collapse", size=ranges * PMD_SIZE, cpu=driver), facts,
                              lambda s: None)
        wl.prepare()
    ct = Cyclictest(cpus=cpus, json_path=workdir / f"{tag}.json", hist_path=workdir / f"{tag}.hist",
                    log_path=workdir / f"{tag}.log", main_cpu=driver, pm_qos_zero=cond.pm_qos_zero)
    try:
        ct.start()
        irq0 = procfs.parse_interrupts(procfs.read_text("/proc/interrupts"))
        vm0 = procfs.parse_keyvalue(procfs.read_text("/proc/vmstat"), "/proc/vmstat")
        trace.begin(tag)
        t0 = time.monotonic()
        if wl is None:
            spin_until(t0 + seconds)
        else:
            paced_collapses(wl.addr, wl.size // PMD_SIZE, cond.rate, seconds)
        t1 = time.monotonic()
        trace.end(tag)
        irq1 = procfs.parse_interrupts(procfs.read_text("/proc/interrupts"))
        vm1 = procfs.parse_keyvalue(procfs.read_text("/proc/vmstat"), "/proc/vmstat")
        out = ct.stop()
        traced = trace.counts(tag)
    finally:
        ct.kill()
        if wl is not None:
            wl.cleanup()
    diff = procfs.diff_interrupts(irq0, irq1)
    cal, tlb = diff.canonical_per_cpu("function_call"), diff.canonical_per_cpu("tlb_shootdown")
    others = [c for c in cpus if c != driver]
    cond.seconds += t1 - t0
    cond.collapses += vm1.get("thp_collapse_alloc", 0) - vm0.get("thp_collapse_alloc", 0)
    cond.cal_per_receiver += sum(cal[c] for c in others) / len(others)
    cond.tlb_per_receiver += sum(tlb[c] for c in others) / len(others)
    cond.sync_per_receiver += traced.received(others).get("tlb_remove_table_smp_sync", 0) / len(others)
    for t in out.threads:
        (cond.driver if t.cpu == driver else cond.receivers).add(t, ct.expected_cycles(t.cpu))


def row(c: Condition, idle: Condition) -> List[str]:
    r = c.receivers
    p = {q: percentile_us(r.histogram, r.overflows, r.max_us, q) for q in (50, 99, 99.9)}
    base = {q: percentile_us(idle.receivers.histogram, idle.receivers.overflows, idle.receivers.max_us, q)
            for q in (99, 99.9)}
    d = c.driver
    lost = 100.0 * max(d.expected - d.cycles, 0) / d.expected if d.expected else 0.0
    delta = ["", ""] if c is idle else [f"{p[q] - base[q]:+d}" for q in (99, 99.9)]
    return [c.name, f"{c.seconds:.1f}", f"{c.collapses / c.seconds:.0f}", f"{c.cal_per_receiver / c.seconds:.0f}",
            f"{c.tlb_per_receiver / c.seconds:.0f}", f"{c.sync_per_receiver / c.seconds:.0f}",
            str(r.cycles), str(p[50]), str(p[99]), str(p[99.9]), str(r.max_us), *delta, f"{lost:.1f}%"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each window (default 5)")
    ap.add_argument("--rates", default="50,200,max", help="collapses per second, comma-separated; max = back to back")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; each runs every condition once (default 2)")
    ap.add_argument("--cpu", type=int, default=0, help="driver CPU (default 0)")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("cyclictest"):
        print("needs root and cyclictest (apt-get install rt-tests)", file=sys.stderr)
        return 2
    facts = host.gather()
    cpus = facts.online_cpus
    if len(cpus) < 2 or args.cpu not in cpus:
        print(f"needs two online CPUs and --cpu among them (online: {cpus})", file=sys.stderr)
        return 2
    modes = {False: "idle states as the system sets them (cyclictest --default-system)",
             True: "cyclictest holding /dev/cpu_dma_latency at 0 (its default: idle CPUs poll)"}
    tables: Dict[bool, List[Condition]] = {}
    for zero in modes:
        tables[zero] = [Condition("idle", None, zero)]
        for r in args.rates.split(","):
            tables[zero].append(Condition(f"{r}/s" if r != "max" else "max", 0.0 if r == "max" else float(r), zero))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tlbprobe-latency-cost-") as tmp:
        stack.enter_context(stop_signals_raise())
        state = stack.enter_context(SystemState(DEFAULT_STATE_DIR, lambda s: None))
        state.set_knob(str(host.THP_DIR / "enabled"), "never")   # keep khugepaged out, as collect does
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {args.cpu})
        stack.callback(os.sched_setaffinity, 0, old)
        trace = stack.enter_context(open_session(state, lambda s: print(s, file=sys.stderr), len(cpus)))
        for rnd in range(args.rounds):
            for zero, conds in tables.items():
                for c in conds:
                    print(f"round {rnd + 1}/{args.rounds}: {c.name}{' (dma_latency 0)' if zero else ''}",
                          file=sys.stderr, flush=True)
                    tag = f"r{rnd}-{c.name.replace('/', '')}-{int(zero)}"
                    window(c, args.seconds, args.cpu, cpus, Path(tmp), tag, facts, trace)
    heads = ["condition", "secs", "collapses/s", "CAL/s", "TLB/s", "sync/s", "samples", "p50", "p99", "p99.9", "max",
             "dp99", "dp99.9", "driver lost"]
    print(f"receiving CPUs {','.join(str(c) for c in cpus if c != args.cpu)} (driver CPU {args.cpu}), "
          f"cyclictest every 200 us, latencies in us, {args.rounds} round(s) x {args.seconds:g} s pooled; "
          f"CAL/s, TLB/s: interrupts per receiving CPU; sync/s: traced csd_function_entry of "
          f"tlb_remove_table_smp_sync per receiving CPU; "
          f"dp = difference to idle; driver lost = cycles the driver CPU's thread lost")
    kernel = f"{facts.kernel_release}, flush mode {facts.flush_mode}, {len(cpus)} CPUs"
    print(kernel)
    for zero, conds in tables.items():
        rows = [heads] + [row(c, conds[0]) for c in conds]
        widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
        print(f"\n{modes[zero]}:")
        for r in rows:
            print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TlbprobeError as e:   # another run active, cyclictest failed, ...: one line, not a traceback
        print(f"latency_cost: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
