"""The victim observer's view (collect --victim, tlbprobe/measure/victim.py): what the
work loop on the other CPUs lost in the workload phases against the idle windows. Reads
summary.json ``victim`` (rundir/sections.py VictimSection)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from ...rundir.sections import VictimSection
from ...vocab import RATE
from .base import Analysed, Figure, View
from .cost import NOT_SEEN

if TYPE_CHECKING:
    from ...rundir.reader import Run


def victim_lines(v: Optional[VictimSection]) -> List[str]:
    """One line: extra interruptions per second, the throughput lost, the worst gap, each
    with the widest 95% interval of the CPUs."""
    if v is None:
        return []
    bits = []
    if v.extra_interruptions_per_s_mean is not None:
        ci = [c.extra_interruptions_ci95 for c in v.per_cpu.values() if c.extra_interruptions_ci95 is not None]
        bits.append(f"{v.extra_interruptions_per_s_mean:+,.0f} interruptions/s" + (f" (±{max(ci):,.0f})" if ci else ""))
    if v.loss_pct_mean is not None:
        ci = [c.loss_ci95_pct for c in v.per_cpu.values() if c.loss_ci95_pct is not None]
        bits.append(f"throughput {-v.loss_pct_mean:+.2f}%" + (f" (±{max(ci):.2f})" if ci else ""))
    if v.worst_gap_us is not None:
        bits.append(f"worst gap {v.worst_gap_us:,.0f} us (idle windows: {v.worst_gap_idle_us or 0:,.0f} us)")
    return ["victim loop on the other CPUs, workload vs idle: " + ", ".join(bits)] if bits else []


class VictimView(View):
    section = VictimSection
    label = "cost"      # beside the cost observer's lines: what the broadcast costs
    note = NOT_SEEN
    figures = (Figure("victim_extra_irq_per_s", "victim interruptions/s", "", 0, RATE),)

    def lines(self, a: "Analysed") -> List[str]:
        return victim_lines(a.run.section(VictimSection))

    def summary_lines(self, summary: Mapping[str, Any]) -> List[str]:
        return victim_lines(VictimSection.of(summary))

    def per_repeat(self, run: "Run") -> Dict[str, List[float]]:
        """The victims' interruptions per second in each repeat's workload phase beyond its
        idle window (the mean over the CPUs)."""
        out: Dict[str, List[float]] = {"victim_extra_irq_per_s": []}
        v = run.section(VictimSection)
        if v is None:
            return out
        for r in range(len(run.repeats)):
            idle, work = v.phases.get(f"r{r}-idle"), v.phases.get(f"r{r}-workload")
            if idle is not None and work is not None:
                out["victim_extra_irq_per_s"].append(float(work.interruptions_per_s) - float(idle.interruptions_per_s))
        return out
