"""A victim on every receiving CPU: what "disrupts all CPUs" costs an application.

One process per CPU other than the driver's runs victim.c: a pinned user-space loop of
identical work units (no Python: an interpreter's loop is neither cheap nor steady),
counting units per time slice and the longest gap between two units. They are separate
processes, not the driver's threads: threads would share the driver's mm and draw its
TLB shootdowns. They run through the idle windows and the workload phases alike, and the
observer splits their slices by phase (both use CLOCK_MONOTONIC).

Per CPU it reports the throughput in the workload phases against the idle windows (the
loss, with a 95% interval from the slices' spread; slices are not independent, so read
it as a guide) and the worst gap in each (the longest one CPU was taken away). It needs
no tracing at all, so it works on any kernel. It also changes what it measures: a busy
CPU is never idle, so it shows nothing of the cost of waking an idle CPU, which the cost
observer's handler times on idle receivers do; the report puts the two side by side.

The victim is compiled from victim.c with the system's C compiler at the start of a run
(gcc, build-essential), into a private temporary directory.
"""

from __future__ import annotations

import math
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from ..cbuild import Program
from ..errors import PreflightError
from ..rundir.schema import VICTIM_COLUMNS
from ..vocab import IDLE_PHASE, WORKLOAD_PHASE
from ..rundir.sections import VictimCpu, VictimFigures, VictimPhase, VictimSection
from .observer import Phase

if TYPE_CHECKING:
    from .host import HostFacts
    from ..rundir import RunDir
    from ..ui import Console

SOURCE = Path(__file__).with_name("victim.c")
RECORD = struct.Struct("6q")
SLICE_MS = 10
#: A gap longer than the unit's own time by this much is an interruption (an IPI's entry
#: and exit in a guest take a few microseconds; the loop's own jitter is well under one).
GAP_NS = 1000


@dataclass(frozen=True)
class Slice:
    start: float      # seconds, CLOCK_MONOTONIC
    end: float
    units: int
    max_gap_ns: int
    gaps: int = 0         # interruptions: gaps longer than the unit's time + GAP_NS
    excess_ns: int = 0    # what they took beyond the unit's own time

    @property
    def rate(self) -> float:
        return self.units / (self.end - self.start) if self.end > self.start else 0.0


def read_slices(path: Path, offset: int = 0) -> Tuple[List[Slice], int]:
    """The whole records in a victim's file from byte ``offset``; returns them and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    n = len(data) // RECORD.size
    out = []
    for i in range(n):
        s, e, units, gap, gaps, excess = RECORD.unpack_from(data, i * RECORD.size)
        out.append(Slice(s / 1e9, e / 1e9, units, gap, gaps, excess))
    return out, offset + n * RECORD.size


def _mean_se(values: List[float]) -> Tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd / math.sqrt(len(values))


def phase_figures(slices: List[Slice]) -> VictimFigures:
    """Over a phase's slices: units/s, interruptions/s and the time they took (µs per s),
    each with its standard error over the slices, and the worst gap."""
    if not slices:
        return VictimFigures(slices=0, rate=0.0, rate_se=0.0, worst_gap_us=0.0)
    rate, rate_se = _mean_se([s.rate for s in slices])
    gaps, gaps_se = _mean_se([s.gaps / (s.end - s.start) for s in slices if s.end > s.start])
    lost, lost_se = _mean_se([s.excess_ns / 1e3 / (s.end - s.start) for s in slices if s.end > s.start])
    return VictimFigures(slices=len(slices), rate=round(rate, 1), rate_se=round(rate_se, 2),
                         interruptions_per_s=round(gaps, 1), interruptions_se=round(gaps_se, 2),
                         lost_us_per_s=round(lost, 1), lost_se=round(lost_se, 2),
                         worst_gap_us=round(max(s.max_gap_ns for s in slices) / 1e3, 1))


def loss(idle: VictimFigures, work: VictimFigures) -> Tuple[Optional[float], Optional[float]]:
    """Throughput lost in the workload phases against the idle ones, % and its 95% half-width."""
    if not idle.rate or not work.slices:
        return None, None
    ratio = work.rate / idle.rate
    rel = math.sqrt((work.rate_se / work.rate) ** 2 + (idle.rate_se / idle.rate) ** 2) if work.rate else 0.0
    return round(100 * (1 - ratio), 3), round(100 * 1.96 * ratio * rel, 3)


def difference(idle: VictimFigures, work: VictimFigures, key: str, se: str) -> Tuple[Optional[float], Optional[float]]:
    """workload minus idle of a per-second figure (``key``, its standard error ``se``), and
    its 95% half-width."""
    if not idle.slices or not work.slices:
        return None, None
    return (round(getattr(work, key) - getattr(idle, key), 2),
            round(1.96 * math.sqrt(getattr(work, se) ** 2 + getattr(idle, se) ** 2), 2))


class VictimObserver:
    """Victims on the other CPUs, their slices split by phase (module doc). Writes
    victim.csv (every slice) and summary.json ``victim`` (rundir/sections.py VictimSection)."""

    def __init__(self, driver_cpu: int, slice_ms: int = SLICE_MS):
        self.driver_cpu = driver_cpu
        self.slice_ms = slice_ms
        self.program: Optional[Program] = None
        self.procs: Dict[int, subprocess.Popen] = {}
        self.files: Dict[int, Path] = {}
        self.offsets: Dict[int, int] = {}
        self.slices: Dict[int, List[Slice]] = {}
        self.windows: Dict[str, Tuple[float, float]] = {}
        self._begun: Dict[str, float] = {}
        self.rundir: Optional["RunDir"] = None
        self.unit_ns: Dict[int, int] = {}

    def preflight(self, facts: "HostFacts") -> None:
        if len(facts.online_cpus) < 2:
            raise PreflightError("--victim needs a CPU besides the driver's")
        self.program = Program(SOURCE, what="--victim")
        self.cpus = [c for c in facts.online_cpus if c != self.driver_cpu]

    def start(self, rundir: "RunDir", facts: "HostFacts", console: "Console", state: Any = None) -> None:
        assert self.program is not None
        self.rundir = rundir
        for cpu in self.cpus:
            path = Path(self.program.dir) / f"cpu{cpu}.bin"  # removed with the program
            p = subprocess.Popen([str(self.program.path), str(cpu), str(self.slice_ms * 1_000_000), str(GAP_NS), str(path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs[cpu], self.files[cpu], self.offsets[cpu], self.slices[cpu] = p, path, 0, []
        for cpu, p in self.procs.items():
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line.startswith("ready "):
                self.unit_ns[cpu] = int(line.split()[1])
            else:
                err = p.stderr.read().strip() if p.stderr and p.poll() is not None else ""
                raise PreflightError(f"the victim on CPU {cpu} did not start: {line or err or 'no answer'}")
        console.log(f"victim: a pinned loop on each of the {len(self.cpus)} other CPU(s), {self.slice_ms} ms slices")

    def phase_begin(self, phase: Phase) -> None:
        self._begun[phase.tag] = time.monotonic()

    def phase_end(self, phase: Phase) -> None:
        end = time.monotonic()
        self.windows[phase.tag] = (self._begun.pop(phase.tag, end), end)
        time.sleep(self.slice_ms / 1000.0 * 1.5)  # let the slice that spans the end be written
        rows = []
        for cpu, path in self.files.items():
            new, self.offsets[cpu] = read_slices(path, self.offsets[cpu])
            self.slices[cpu].extend(new)
            rows += [[cpu, f"{s.start:.6f}", f"{s.end:.6f}", s.units, s.max_gap_ns, s.gaps, s.excess_ns] for s in new]
        if self.rundir is not None and rows:
            self.rundir.append_csv("victim.csv", VICTIM_COLUMNS, rows)

    def _in(self, cpu: int, name: str) -> List[Slice]:
        """The slices of ``cpu`` wholly inside the phases called ``name``."""
        out = []
        for tag, (a, b) in self.windows.items():
            ph = Phase.from_tag(tag)
            if ph and ph.name == name:
                out += [s for s in self.slices[cpu] if s.start >= a and s.end <= b]
        return out

    def summary(self) -> VictimSection:
        per_cpu: Dict[int, VictimCpu] = {}
        losses, gaps = [], []
        for cpu in self.cpus:
            idle, work = phase_figures(self._in(cpu, IDLE_PHASE)), phase_figures(self._in(cpu, WORKLOAD_PHASE))
            pct, half = loss(idle, work)
            extra, extra_ci = difference(idle, work, "interruptions_per_s", "interruptions_se")
            lost, lost_ci = difference(idle, work, "lost_us_per_s", "lost_se")
            per_cpu[cpu] = VictimCpu(unit_ns=self.unit_ns.get(cpu), idle=idle, workload=work,
                                     loss_pct=pct, loss_ci95_pct=half,
                                     extra_interruptions_per_s=extra, extra_interruptions_ci95=extra_ci,
                                     extra_lost_us_per_s=lost, extra_lost_ci95=lost_ci)
            if pct is not None:
                losses.append(pct)
            if work.slices:
                gaps.append(work.worst_gap_us)
        idle_gaps = [v.idle.worst_gap_us for v in per_cpu.values() if v.idle.slices]
        # per phase (for the A/B's per-repeat figures): the mean rate over the CPUs, the worst gap
        phases: Dict[str, VictimPhase] = {}
        for tag, (a, b) in self.windows.items():
            figs = [phase_figures([s for s in self.slices[c] if s.start >= a and s.end <= b]) for c in self.cpus]
            figs = [f for f in figs if f.slices]
            if figs:
                phases[tag] = VictimPhase(rate=round(sum(f.rate for f in figs) / len(figs), 1),
                                          interruptions_per_s=round(sum(f.interruptions_per_s for f in figs) / len(figs), 1),
                                          lost_us_per_s=round(sum(f.lost_us_per_s for f in figs) / len(figs), 1),
                                          worst_gap_us=max(f.worst_gap_us for f in figs))
        extras = [v.extra_interruptions_per_s for v in per_cpu.values() if v.extra_interruptions_per_s is not None]
        lost = [v.extra_lost_us_per_s for v in per_cpu.values() if v.extra_lost_us_per_s is not None]
        return VictimSection(
            slice_ms=self.slice_ms, gap_ns=GAP_NS, per_cpu=per_cpu, phases=phases,
            # CLOCK_MONOTONIC seconds, as victim.csv's start_s/end_s
            windows={tag: (round(a, 6), round(b, 6)) for tag, (a, b) in self.windows.items()},
            loss_pct_mean=round(sum(losses) / len(losses), 3) if losses else None,
            extra_interruptions_per_s_mean=round(sum(extras) / len(extras), 2) if extras else None,
            extra_lost_us_per_s_mean=round(sum(lost) / len(lost), 2) if lost else None,
            worst_gap_us=max(gaps) if gaps else None,
            worst_gap_idle_us=max(idle_gaps) if idle_gaps else None)

    def section(self, summary: Mapping[str, Any]) -> VictimSection:
        return self.summary()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        self.procs = {}
        if self.program is not None:
            self.program.close()
            self.program = None
