"""CAL and TLB per CPU over the course of a phase: is the IPI rate steady, or bursty?

The before/after snapshots give a phase's totals; a 20 GiB collapse runs for tens of
seconds, and a reviewer wants to see whether its broadcasts come at a steady rate (one
per collapsed 2 MiB) or in bursts (khugepaged, a stall in compaction). So the collector
reads /proc/interrupts during the phase, on the driver CPU, between the workload's
chunks (the workloads call their progress hook after each one), at most every
``interval_s``. Reading /proc/interrupts sends no IPI (it sums per-CPU counters), so the
CPUs that receive the broadcasts are not disturbed; the driver CPU pays the read
(well under a millisecond on small machines, a few on hundreds of CPUs).

The samples are cumulative counts since the phase's 'before' snapshot, and the phase's
'after' snapshot is the last sample: a phase's last rows are its deltas in interrupts.csv.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import TlbprobeError
from . import procfs
from .paths import REAL

INTERVAL_S = 0.1


def cal_tlb(snapshot: procfs.Interrupts) -> Dict[int, Tuple[int, int]]:
    """{cpu: (CAL, TLB)} of a snapshot; zeros where the architecture has no such line."""
    cal = snapshot.by_canonical("function_call")
    tlb = snapshot.by_canonical("tlb_shootdown")
    return {c: (cal.per_cpu.get(c, 0) if cal else 0, tlb.per_cpu.get(c, 0) if tlb else 0)
            for c in snapshot.cpus}


@dataclass
class PhaseSeries:
    """Samples of one phase: ``(seconds since its start, {cpu: (CAL, TLB)})``, absolute
    counts; :meth:`rows` makes them relative to the phase's 'before' snapshot, which is
    parsed only after the phase (parsing it before would lengthen the phase)."""

    start: float                       # time.time() of the 'before' snapshot, as phases.csv
    interval_s: float = INTERVAL_S
    interrupts: Path = REAL.interrupts  # the file sampled
    samples: List[Tuple[float, Dict[int, Tuple[int, int]]]] = field(default_factory=list)
    _last: Optional[float] = None

    def maybe_sample(self, now: Optional[float] = None) -> None:
        """Read /proc/interrupts if ``interval_s`` has passed since the last sample."""
        now = time.time() if now is None else now
        if now - (self.start if self._last is None else self._last) < self.interval_s:
            return
        self._last = now
        try:
            snap = procfs.read_interrupts(str(self.interrupts))
        except (OSError, TlbprobeError):  # a failed sample costs a point of the plot, never the run
            return
        self.add(now, snap)

    def add(self, when: float, snapshot: procfs.Interrupts) -> None:
        self.samples.append((when - self.start, cal_tlb(snapshot)))

    def rows(self, repeat: int, phase: str, before: procfs.Interrupts, after: procfs.Interrupts,
             end: float) -> List[list]:
        """timeseries.csv rows (doc/run-format.md): counts since ``before``; the 'after'
        snapshot (taken at ``end``) is the last sample, so a phase's last rows equal its
        CAL and TLB deltas in interrupts.csv, however short the phase was."""
        base = cal_tlb(before)
        out = []
        for t, per_cpu in self.samples + [(end - self.start, cal_tlb(after))]:
            for cpu, (cal, tlb) in sorted(per_cpu.items()):
                b_cal, b_tlb = base.get(cpu, (cal, tlb))
                out.append([repeat, phase, f"{t:.4f}", cpu, cal - b_cal, tlb - b_tlb])
        return out
