"""The latency observer's view (collect --latency, tlbprobe/measure/latency.py): cyclictest's
wake-up latency per phase kind and CPU. Reads summary.json ``latency``
(rundir/sections.py LatencySection): the run's table (text and HTML reports), its JSON,
the percentiles side by side in an A/B (report/compare.py), and the block of collect's
end-of-run summary. The histograms of latency/*.json are the reader's (Run.histograms),
for the plots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from ...rundir.sections import LatencyCpu, LatencySection
from ...ui.numbers import fmt_num
from ...ui.tables import MAX_CPU_COLUMNS
from ...vocab import IDLE_PHASE, WORKLOAD_PHASE
from .base import Analysed, Table, View

if TYPE_CHECKING:
    from ...rundir.reader import Run

METRICS = ("samples", "cycles_lost", "p50_us", "p99_us", "p999_us", "max_us")


@dataclass(frozen=True)
class LatencyStats:
    """One CPU's figures as the report compares them (floats, None without samples)."""

    samples: Optional[float]
    cycles_lost: Optional[float]
    p50_us: Optional[float]
    p99_us: Optional[float]
    p999_us: Optional[float]
    max_us: Optional[float]

    @classmethod
    def of(cls, f: LatencyCpu) -> "LatencyStats":
        return cls(*(None if getattr(f, k) is None else float(getattr(f, k)) for k in METRICS))


def stats(run: "Run") -> Dict[str, Dict[int, LatencyStats]]:
    """Phase kind -> CPU -> figures, each phase kind pooled over the repeats (or per phase
    for a run without pooled figures); empty without --latency."""
    lat = run.section(LatencySection)
    if lat is None:
        return {}
    return {phase: {cpu: LatencyStats.of(f) for cpu, f in per_cpu.items()}
            for phase, per_cpu in lat.by_kind().items() if per_cpu}


def driver_cpu(run: "Run") -> int:
    """The CPU cyclictest saw as the driver's: as the section says, else the run's."""
    lat = run.section(LatencySection)
    return lat.driver_cpu if lat is not None and lat.driver_cpu is not None else run.driver_cpu


def latency_table(run: "Run") -> Dict[str, Dict[int, Dict[str, Optional[float]]]]:
    """A run's latency percentiles as plain dicts, for JSON."""
    return {phase: {cpu: {k: getattr(s, k) for k in METRICS} for cpu, s in per_cpu.items()}
            for phase, per_cpu in stats(run).items()}


# -- the A/B --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyRow:
    phase: str
    role: str  # "driver" or "other"
    cpu: Optional[int]  # None when summarised over the other CPUs
    metric: str  # p50_us, p99_us, p999_us, max_us
    base: Optional[float]
    other: Optional[float]


def latency_rows(base: "Analysed", other: "Analysed") -> List[LatencyRow]:
    """Percentiles side by side: the driver CPU, and the worst of the CPUs that only receive.

    The driver CPU starves under a collapse loop (with preempt=none, cyclictest's thread
    there cannot run until a collapse ends: analysis/runs/host-collapse-256M-latency lost
    most of its cycles on CPU 0), the receiving CPUs are where a removed sync IPI should
    show, so they are kept apart.
    """
    a, b = stats(base.run), stats(other.run)
    if not a and not b:
        return []
    out: List[LatencyRow] = []
    phases = [p for p in (IDLE_PHASE, WORKLOAD_PHASE) if p in a or p in b]
    phases += sorted(p for p in set(a) | set(b) if p not in phases)
    for phase in phases:
        for role in ("driver", "other"):
            for metric in ("p50_us", "p99_us", "p999_us", "max_us"):
                va = _latency_value(a, driver_cpu(base.run), phase, role, metric)
                vb = _latency_value(b, driver_cpu(other.run), phase, role, metric)
                if va is None and vb is None:
                    continue
                out.append(LatencyRow(phase, role, None, metric, va, vb))
    return out


def _latency_value(table: Dict[str, Dict[int, LatencyStats]], drv: int, phase: str, role: str,
                   metric: str) -> Optional[float]:
    per_cpu = table.get(phase)
    if not per_cpu:
        return None
    if role == "driver":
        s = per_cpu.get(drv)
        return None if s is None else getattr(s, metric)
    vals = [getattr(s, metric) for c, s in per_cpu.items() if c != drv and getattr(s, metric) is not None]
    return max(vals) if vals else None


# -- collect's end-of-run summary -------------------------------------------------------------

def _latency_row(kind: str, cpu: str, role: str, fig: Dict[str, Any]) -> str:
    cells = ["-" if fig.get(k) is None else str(fig[k]) for k in METRICS]
    return f"{kind:<9}{cpu:>5} {role:<9}" + "".join(f"{c:>9}" for c in cells)


def latency_lines(lat: LatencySection, repeats_done: int) -> List[str]:
    """cyclictest per phase kind (idle vs workload) and CPU (driver vs receivers), pooled
    over repeats. Beyond 16 CPUs the receiving CPUs share one row: the sum of samples and
    lost cycles, the worst CPU's percentiles."""
    interval = lat.interval_us if lat.interval_us is not None else "?"
    lines = [f"latency (cyclictest every {interval} us, microseconds, {repeats_done} repeat(s) pooled):",
             f"{'phase':<9}{'CPU':>5} {'role':<9}{'samples':>9}{'lost':>9}{'p50':>9}{'p99':>9}"
             f"{'p99.9':>9}{'max':>9}"]
    for kind, cpus in lat.aggregate.items():
        figs = {str(c): f.to_dict() for c, f in cpus.items()}
        if len(figs) <= MAX_CPU_COLUMNS:
            lines.extend(_latency_row(kind, c, f.get("role") or "", f) for c, f in figs.items())
            continue
        driver = {c: f for c, f in figs.items() if f.get("role") == "driver"}
        lines.extend(_latency_row(kind, c, "driver", f) for c, f in driver.items())
        recv = [f for c, f in figs.items() if c not in driver]
        worst: Dict[str, Any] = {k: sum(f.get(k) or 0 for f in recv) for k in ("samples", "cycles_lost")}
        for k in METRICS[2:]:
            vals = [f[k] for f in recv if f.get(k) is not None]
            worst[k] = max(vals) if vals else None
        lines.append(_latency_row(kind, f"{len(recv)}x", "receivers", worst))
    if not lat.aggregate:
        lines.append("no cyclictest results")
    for tag, why in lat.missing.items():
        lines.append(f"latency missing for {tag}: {why}")
    for tag, why in lat.damaged.items():
        lines.append(f"latency incomplete for {tag}: {why}")
    return lines


class LatencyView(View):
    section = LatencySection
    json_slot = "detail"

    def table(self, a: "Analysed") -> Optional[Table]:
        """Every phase kind and CPU of the run, the driver's CPU marked."""
        table = stats(a.run)
        if not table:
            return None
        drv = driver_cpu(a.run)
        rows = [(phase, f"{cpu}{' (driver)' if cpu == drv else ''}", fmt_num(s.samples), fmt_num(s.cycles_lost),
                 fmt_num(s.p50_us, 1), fmt_num(s.p99_us, 1), fmt_num(s.p999_us, 1), fmt_num(s.max_us, 1))
                for phase, per_cpu in table.items() for cpu, s in sorted(per_cpu.items())]
        return Table("latency (cyclictest):", ("phase", "CPU", "samples", "lost", "p50 us", "p99 us", "p99.9 us",
                                               "max us"), rows, "llrrrrrr")

    def json(self, a: "Analysed") -> Dict[str, Any]:
        """``latency``: phase -> CPU -> percentiles, null without --latency."""
        table = latency_table(a.run)
        return {self.section.KEY: {p: {str(c): s for c, s in per.items()} for p, per in table.items()} or None}

    def summary_lines(self, summary: Mapping[str, Any]) -> List[str]:
        lat = LatencySection.of(summary)
        return [] if lat is None else latency_lines(lat, summary.get("repeats_done", 0))
