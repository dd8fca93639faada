"""Baseline against the other runs, figure by figure, with spread and significance.

The first run given is the baseline. A change is marked significant only when Welch's
t-test says p < 0.05 *and* the [min, max] ranges of the repeats do not overlap (LKP's
rule): with 3-5 repeats each test alone is too easy to fool. With fewer than two repeats
on a side there is no test, and the report says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..vocab import SYNC_FUNCTION
from .analyze import RunAnalysis
from .figures import all_queued, is_traced
from .stats import ALPHA, Spread, Welch, describe, ranges_overlap, welch
from .views import FIGURES as VIEW_FIGURES
from .views.latency import LatencyRow, latency_rows

#: (key, label, unit, digits); order is the order of the table. A workload adds its own
#: after these (WorkloadSpec.report_figures, see figures_for).
FIGURES: Tuple[Tuple[str, str, str, int], ...] = (
    ("ops", "operations", "", 0),
    ("sync_ipis", "sync IPIs, other CPUs", "", 1),
    ("sync_per_op_per_cpu", "sync IPIs/op/CPU", "", 3),
    ("attributed_sync", SYNC_FUNCTION, "", 0),
    ("cal_other_cpus", "CAL, other CPUs", "", 0),
    ("tlb_other_cpus", "TLB, other CPUs", "", 0),
    ("background_rate", "background/s", "", 1),
    ("ms_per_op", "ms per operation", "ms", 3),
    *VIEW_FIGURES,  # the observers' rows (report/views/): handler, initiator wait, victim
)


def figures_for(*runs: RunAnalysis) -> Tuple[Tuple[str, str, str, int], ...]:
    """FIGURES, then the figures the runs' workloads add (gup-fast's ns per page), once each."""
    out = list(FIGURES)
    for a in runs:
        for f in a.spec.report_figures:
            if all(key != f.key for key, *_ in out):
                out.append((f.key, f.label, f.unit, f.digits))
    return tuple(out)


@dataclass(frozen=True)
class FigureComparison:
    key: str
    label: str
    digits: int
    base: Spread
    other: Spread
    change_pct: Optional[float]  # of the means; None when the baseline mean is 0
    welch: Optional[Welch]
    overlap: Optional[bool]  # None: a side has fewer than 2 repeats

    @property
    def testable(self) -> bool:
        return self.welch is not None

    @property
    def significant(self) -> Optional[bool]:
        if self.welch is None or self.overlap is None:
            return None
        return self.welch.p < ALPHA and not self.overlap

    @property
    def mark(self) -> str:
        return {True: "*", False: "", None: "?"}[self.significant]


@dataclass(frozen=True)
class Comparison:
    base: RunAnalysis
    other: RunAnalysis
    figures: List[FigureComparison]
    latency: List[LatencyRow]
    warnings: List[str] = field(default_factory=list)


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
    rows: List[FigureComparison] = []
    for key, label, _unit, digits in figures_for(base, other):
        a, b = base.per_repeat.get(key), other.per_repeat.get(key)
        if not a or not b:
            continue
        sa, sb = describe(a), describe(b)
        assert sa is not None and sb is not None
        change = (sb.mean - sa.mean) / abs(sa.mean) * 100 if sa.mean else None
        w = welch(a, b)
        ov = ranges_overlap(a, b) if len(a) >= 2 and len(b) >= 2 else None
        rows.append(FigureComparison(key, label, digits, sa, sb, change, w, ov))
    return Comparison(base, other, rows, latency_rows(base, other), mismatches(base, other))


def compare_all(runs: Sequence[RunAnalysis]) -> List[Comparison]:
    """Every run after the first against the first."""
    return [compare(runs[0], r) for r in runs[1:]]
