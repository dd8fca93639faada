"""From measured phases to the figures of summary.json (doc/run-format.md): the phases,
the repeats and the run's totals; the observers add their sections (run/collector.py),
and report/summary_text.py prints the one-screen summary at the end of a collect.

Sync IPIs are the function-call IPIs that are not TLB shootdowns, on the CPUs that did
not run the driver, by the running machine's architecture record (tlbprobe/arch/,
IpiLines.sync_ipis): on x86 CAL minus TLB, since the CAL line counts every function-call
IPI, including the TLB-shootdown ones (flush_tlb_func runs as a function call), and TLB
counts those alone; on arm64 the IPI1 line, with nothing to subtract (its flush sends no
IPI). The idle window before each repeat gives the background rate of the same
quantity; scaled to the workload phase's duration it is subtracted (the rate pooled over
all idle windows of the run). summary.json keeps the fields' x86 names (cal_*, tlb_*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .. import arch as arches
from ..arch import IpiLines
from ..measure.procfs import InterruptsDiff
from ..rundir.schema import PhaseFigures, RepeatFigures, run_totals
from ..measure.trace import PhaseCounts
from ..vocab import IDLE_PHASE
from ..workloads.base import PhaseOutcome


@dataclass
class PhaseRecord:
    """Everything measured in one phase."""

    repeat: int
    phase: str                      # idle | workload
    start: float
    end: float
    outcome: PhaseOutcome
    irq: InterruptsDiff
    vmstat_delta: Dict[str, int]
    attribution: Optional[PhaseCounts]
    utime_s: float = 0.0
    stime_s: float = 0.0

    @property
    def duration(self) -> float:
        return self.end - self.start


def ipi_lines(arch_name: Optional[str]) -> IpiLines:
    """The IPI lines and their arithmetic of a run's machine (HostFacts.arch); a machine
    without a record gets the default architecture's, x86_64's, what every run had."""
    return arches.get(arch_name or arches.DEFAULT).interrupts


#: the arithmetic of every run before architectures were records: x86's
DEFAULT_LINES = ipi_lines(None)


def phase_record(rec: PhaseRecord, driver_cpu: Optional[int], background_rate: float,
                 lines: IpiLines = DEFAULT_LINES) -> PhaseFigures:
    """What one phase measured, as summary.json's PHASE record. ``driver_cpu`` is the CPU
    left out of the counts (the sender); None counts every CPU (khugepaged sends from any).
    ``lines``: the machine's IPI lines, which say whether the shootdowns are subtracted."""
    cal = rec.irq.canonical_per_cpu("function_call")
    tlb = rec.irq.canonical_per_cpu("tlb_shootdown")
    others = [c for c in rec.irq.cpus if c != driver_cpu]
    cal_o = sum(cal[c] for c in others)
    tlb_o = sum(tlb[c] for c in others)
    sync_raw = lines.sync_ipis(cal_o, tlb_o)
    background = background_rate * rec.duration if rec.phase != IDLE_PHASE else 0.0
    att = rec.attribution
    queued = att is not None and att.queue_traced  # present only when traced: "none" vs "not traced"
    return PhaseFigures(
        name=rec.phase,
        duration_s=round(rec.duration, 4),
        ops=rec.outcome.ops,
        ops_expected=rec.outcome.ops_expected,
        result=rec.outcome.result,
        note=rec.outcome.note,
        cal_per_cpu=dict(cal),
        tlb_per_cpu=dict(tlb),
        cal_other_cpus=cal_o,
        tlb_other_cpus=tlb_o,
        sync_raw=sync_raw,
        background_sync_ipis=round(background, 2),
        sync_ipis=round(sync_raw - background, 2),
        attributed=att.received(others) if att else {},
        trace_lost_events=att.lost if att else 0,
        trace_error=att.error if att else None,
        queued=att.queued(others) if queued else None,
        woken_without_ipi=att.woken_without_ipi(others) if queued else None,
        queued_by="perf-counter" if queued and att.sync_queued is not None else None,
        driver_utime_s=round(rec.utime_s, 4),
        driver_stime_s=round(rec.stime_s, 4),
        workload_figures=dict(rec.outcome.figures),
    )


def phase_figures(rec: PhaseRecord, driver_cpu: Optional[int], background_rate: float,
                  lines: IpiLines = DEFAULT_LINES) -> Dict[str, Any]:
    """The PHASE object of summary.json."""
    return phase_record(rec, driver_cpu, background_rate, lines).to_dict()


def pooled_idle_rate(records: List[PhaseRecord], driver_cpu: Optional[int],
                     lines: IpiLines = DEFAULT_LINES) -> float:
    """Sync IPIs (x86: CAL minus TLB) per second on the other CPUs over all idle windows of the run.

    Pooled rather than per repeat: the background comes in bursts (scheduler kicks,
    other processes' TLB flushes), so one short window is a noisy estimate and all of
    them together a steadier one.
    """
    idle = [phase_record(r, driver_cpu, 0.0, lines) for r in records if r.phase == IDLE_PHASE]
    seconds = sum(p.duration_s for p in idle)
    return sum(p.sync_raw for p in idle) / seconds if seconds > 0 else 0.0


def repeat_record(repeat: int, records: List[PhaseRecord], driver_cpu: Optional[int], rate: float,
                  lines: IpiLines = DEFAULT_LINES) -> RepeatFigures:
    """One repeat: its phases, and the workload's totals."""
    return RepeatFigures.from_phases(repeat, {r.phase: phase_record(r, driver_cpu, rate, lines) for r in records})


def all_repeats(records_by_repeat: List[List[PhaseRecord]], driver_cpu: Optional[int],
                lines: IpiLines = DEFAULT_LINES) -> List[RepeatFigures]:
    """The finished repeats, background from all idle windows."""
    rate = pooled_idle_rate([r for recs in records_by_repeat for r in recs], driver_cpu, lines)
    return [repeat_record(i, recs, driver_cpu, rate, lines) for i, recs in enumerate(records_by_repeat)]


def build_summary(repeats: List[RepeatFigures], meta: Dict[str, Any]) -> Dict[str, Any]:
    """summary.json from the finished repeats; ``meta`` carries the run-level fields."""
    out: Dict[str, Any] = dict(meta)
    out.update(run_totals(repeats, len(meta.get("other_cpus", [])) or 1))
    return out
