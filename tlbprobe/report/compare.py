"""Baseline against the other runs, figure by figure, with spread and significance, as
far as each figure's kind (vocab.py FIGURE_KINDS) allows.

The first run given is the baseline. A change is marked significant only when Welch's
t-test says p < 0.05 *and* the [min, max] ranges of the repeats do not overlap (LKP's
rule): with 3-5 repeats each test alone is too easy to fool. No test, and the row says why
(``FigureComparison.mark``), when:

* the figure is an exact count (traced calls, operations): counted, not sampled, a change
  is a fact ("exact");
* it is a time measured under emulation (either run in a QEMU TCG guest): the vCPUs took
  turns on the host's threads, so it measures the emulator; no change is given either
  ("emulated");
* it is a count whose sides are both under TINY_COUNT, or whose change is within the
  counts' Poisson noise (POISSON_SIGMAS standard deviations of the difference of the
  means): no percent change either ("few", "noise"); a count whose baseline alone is
  under TINY_COUNT is tested, but its change is not given in percent;
* a side has fewer than MIN_REPEATS repeats ("n=1", "n=2/5": the repeats of each side);
* neither side varies (Welch's statistic is undefined; a constant side beside a varying
  one is tested: that is the one-sample case of the same test) ("sd=0").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..vocab import COUNT, EXACT, RATE, SYNC_FUNCTION, TIME
from .analyze import RunAnalysis
from .figures import all_queued, emulated, is_traced, other_functions, without_interrupt
from .stats import ALPHA, Spread, Welch, describe, ranges_overlap, welch
from .views import FIGURES as VIEW_FIGURES
from .views import Figure
from .views.latency import LatencyRow, latency_rows

#: Repeats each side needs for a significance test: with two, a t-test has one degree of
#: freedom per side and the [min, max] rule compares two points.
MIN_REPEATS = 3
#: Below this on both sides a count's percent change means nothing (1 -> 0 is "-100%").
TINY_COUNT = 10
#: A change of a count within this many standard deviations of its Poisson noise
#: (sqrt(mean_a/n_a + mean_b/n_b)) is noise, not a change, whatever the repeats say.
POISSON_SIGMAS = 2.0

#: The common rows, in the table's order. A workload adds its own after these
#: (WorkloadSpec.report_figures, see figures_for), the observers theirs (report/views/).
FIGURES: Tuple[Figure, ...] = (
    Figure("ops", "operations", "", 0, EXACT),
    Figure("sync_ipis", "sync IPIs, other CPUs", "", 0, COUNT),
    Figure("sync_per_op_per_cpu", "sync IPIs/op/CPU", "", 3, RATE),
    Figure("attributed_sync", SYNC_FUNCTION, "", 0, EXACT),
    Figure("cal_other_cpus", "CAL, other CPUs", "", 0, COUNT),
    Figure("tlb_other_cpus", "TLB, other CPUs", "", 0, COUNT),
    Figure("background_rate", "background/s", "", 1, RATE),
    Figure("ms_per_op", "ms per operation", "ms", 3, TIME),
    *VIEW_FIGURES,  # the observers' rows (report/views/): handler, initiator wait, victim
)


def figures_for(*runs: RunAnalysis) -> Tuple[Figure, ...]:
    """FIGURES, then the figures the runs' workloads add (gup-fast's ns per page), once each."""
    out = [f.checked() for f in FIGURES]
    for a in runs:
        for f in a.spec.report_figures:
            if all(key != f.key for key, *_ in out):
                out.append(Figure(f.key, f.label, f.unit, f.digits, f.kind).checked())
    return tuple(out)


@dataclass(frozen=True)
class FigureComparison:
    key: str
    label: str
    digits: int
    base: Spread
    other: Spread
    change_pct: Optional[float]  # of the means; None when the baseline mean is 0, or no change is given
    welch: Optional[Welch]       # None when not tested (see untested)
    overlap: Optional[bool]      # None when not tested
    kind: str = RATE
    #: why there is no test ("exact", "emulated", "few", "noise", "n=1", "sd=0"), None when tested
    untested: Optional[str] = None

    @property
    def testable(self) -> bool:
        return self.welch is not None

    @property
    def emulated(self) -> bool:
        """A time measured under emulation: the emulator's, never a saving."""
        return self.untested == "emulated"

    @property
    def significant(self) -> Optional[bool]:
        if self.welch is None or self.overlap is None:
            return None
        return self.welch.p < ALPHA and not self.overlap

    @property
    def mark(self) -> str:
        """"*" significant, "" tested and not, else why untested ("n=1", "exact", ...)."""
        if self.untested is not None:
            return self.untested
        return "*" if self.significant else ""


def untested_reason(kind: str, a: Sequence[float], b: Sequence[float], sa: Spread, sb: Spread,
                    emulation: bool) -> Optional[str]:
    """Why a figure gets no test (module docstring), None when it gets one."""
    if kind == EXACT:
        return "few" if max(abs(sa.mean), abs(sb.mean)) < TINY_COUNT else "exact"
    if kind == TIME and emulation:
        return "emulated"
    if kind == COUNT:
        if max(abs(sa.mean), abs(sb.mean)) < TINY_COUNT:
            return "few"
        noise = math.sqrt(max(sa.mean, 0.0) / sa.n + max(sb.mean, 0.0) / sb.n)
        if abs(sb.mean - sa.mean) <= POISSON_SIGMAS * noise:
            return "noise"
    if len(a) < MIN_REPEATS or len(b) < MIN_REPEATS:
        return f"n={len(a)}" if len(a) == len(b) else f"n={len(a)}/{len(b)}"
    if not sa.sd and not sb.sd:
        return "sd=0"
    return None


def compare_figure(fig: Figure, a: Sequence[float], b: Sequence[float], emulation: bool) -> FigureComparison:
    """One row: the two sides' spreads, the change of the means where one is given, the
    test where one is possible."""
    sa, sb = describe(a), describe(b)
    assert sa is not None and sb is not None
    why = untested_reason(fig.kind, a, b, sa, sb, emulation)
    # a count's change in percent of a baseline under TINY_COUNT says nothing (0.3 -> 128 is
    # "+38300%"): none is given, the test still is
    small_base = fig.kind in (COUNT, EXACT) and abs(sa.mean) < TINY_COUNT
    change = ((sb.mean - sa.mean) / abs(sa.mean) * 100
              if sa.mean and not small_base and why not in ("emulated", "few", "noise") else None)
    w = welch(a, b) if why is None else None
    ov = ranges_overlap(a, b) if why is None else None
    return FigureComparison(fig.key, fig.label, fig.digits, sa, sb, change, w, ov, fig.kind, why)


@dataclass(frozen=True)
class Comparison:
    base: RunAnalysis
    other: RunAnalysis
    figures: List[FigureComparison]
    latency: List[LatencyRow]
    warnings: List[str] = field(default_factory=list)
    #: either run was measured in a QEMU TCG guest: its times are the emulator's
    emulated: bool = False
    #: what a reader needs beside the table (which sync count the verdict uses, and why the
    #: CAL-TLB estimate differs from it)
    notes: List[str] = field(default_factory=list)


#: Job keys that must agree for two runs to be comparable (a kernel A/B changes nothing else).
SAME_JOB = ("workload", "size", "threads", "operation", "sharers", "cycles", "control", "cpu")


def mismatches(base: RunAnalysis, other: RunAnalysis) -> List[str]:
    """What differs between two runs besides the kernel: then a change is not the kernel's."""
    out = [f"{k}: {base.run.job.get(k)!r} vs {other.run.job.get(k)!r}" for k in SAME_JOB
           if base.run.job.get(k) != other.run.job.get(k)]
    if base.run.online_cpus != other.run.online_cpus:
        out.append(f"online CPUs: {base.run.online_cpus} vs {other.run.online_cpus}")
    warnings = [f"not the same job ({'; '.join(out)}): the changes below are not the kernel's alone"] if out else []
    if is_traced(base.run) and is_traced(other.run) and all_queued(base.run) != all_queued(other.run):
        q, r = (base, other) if all_queued(base.run) else (other, base)
        warnings.append(f"the traced sync calls of {q.label} are those queued (csd_queue_cpu), of {r.label} those "
                        f"received (recorded before queued counts, or by kprobes): they can differ by the calls "
                        f"that found a CPU polling in idle")
    return warnings


def compare(base: RunAnalysis, other: RunAnalysis) -> Comparison:
    emulation = emulated(base.run) or emulated(other.run)
    rows: List[FigureComparison] = []
    for fig in figures_for(base, other):
        a, b = base.per_repeat.get(fig.key), other.per_repeat.get(fig.key)
        if not a or not b:
            continue
        rows.append(compare_figure(fig, a, b, emulation))
    return Comparison(base, other, rows, latency_rows(base, other), mismatches(base, other), emulation,
                      estimate_notes(base, other))


def estimate_notes(*runs: RunAnalysis) -> List[str]:
    """For a run judged on its traced sync count whose CAL-TLB estimate (the "sync IPIs"
    row) differs from it beyond the noise (TINY_COUNT, the counts' Poisson noise, 1%):
    which the verdict uses, and why the two differ. Above the traced count: CAL counts
    every function-call IPI, and the idle window's background, a rate measured at another
    time, does not cover the others the workload phase sent. Below it: the traced count
    is of the calls queued, and a call that found its CPU polling in idle needed no
    interrupt (tlbprobe/measure/trace.py)."""
    out: List[str] = []
    for a in runs:
        est = a.stats.get("sync_ipis")
        if a.verdict.basis != "traced" or est is None:
            continue
        traced, total = a.verdict.measured or 0.0, est.mean * est.n
        if abs(total - traced) <= max(TINY_COUNT, POISSON_SIGMAS * math.sqrt(max(total, traced)),
                                      0.01 * max(total, traced)):
            continue
        if total > traced:
            why = (f"CAL counts every function-call IPI, and the idle window's background, subtracted, "
                   f"does not cover the others the workload phase sent (traced: {other_functions(a.run)})")
        else:
            why = (f"the traced calls are those queued, and {without_interrupt(a.run):,.0f} of them found "
                   f"their CPU polling in idle and needed no interrupt")
        out.append(f"{a.label}: the verdict uses the traced count ({traced:,.0f} sync calls in total), not "
                   f"the CAL-TLB estimate of the sync IPIs row ({total:,.0f} in total): {why}")
    return out


def compare_all(runs: Sequence[RunAnalysis]) -> List[Comparison]:
    """Every run after the first against the first."""
    return [compare(runs[0], r) for r in runs[1:]]
