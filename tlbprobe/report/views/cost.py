"""The cost observer's view (collect --cost, tlbprobe/measure/cost.py): what the broadcast
took in time, on the receivers and on the initiator, and plainly what these figures
include and cannot see. Reads summary.json ``cost`` (rundir/sections.py CostSection) and,
for the per-repeat figures of the A/B, cost.csv."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from ...rundir.schema import COST_COLUMNS
from ...rundir.sections import CostSection
from ...vocab import TIME, WORKLOAD_PHASE
from .base import Analysed, Figure, View

if TYPE_CHECKING:
    from ...rundir.reader import Run

#: What neither the handler times nor the victim's loop can see (said once after them).
NOT_SEEN = ("not seen: the IPI's delivery before its handler (a guest's VM exit), leaving idle, "
            "cache and TLB refill after it")


def us(ns: float) -> str:
    """A duration in microseconds, three significant digits, thousands separated."""
    value = ns / 1e3
    return f"{value:,.0f} us" if value >= 1000 else f"{value:.3g} us"


def cost_lines(cost: Optional[CostSection]) -> List[str]:
    """The receivers' CPU time and handler times, the initiator's wait, lost events."""
    if cost is None:
        return []
    out: List[str] = []
    vs, ini = cost.figures(WORKLOAD_PHASE, "vector_sync"), cost.figures(WORKLOAD_PHASE, "initiator")
    if cost.cpu_time_taken_ms is not None:
        per_gib = f" ({cost.ms_per_gib:.3g} ms per GiB collapsed)" if cost.ms_per_gib is not None else ""
        out.append(f"CPU time taken from the other CPUs by the sync broadcast: {cost.cpu_time_taken_ms:.3g} ms"
                   f"{per_gib}, {cost.us_per_broadcast_per_cpu:.3g} us per broadcast per CPU")
        out.append(f"handler per sync IPI p50 {us(vs.p50_ns)}, p99 {us(vs.p99_ns)}, max {us(vs.max_ns)} "
                   f"(tracepoints: {cost.tracepoint_ns or 0:.0f} ns each, 2 subtracted)")
    else:
        out.append("no sync IPI handled in the workload phases (none sent, or none traced)")
    if ini.count:
        out.append(f"initiator waited p50 {us(ini.p50_ns)}, p99 {us(ini.p99_ns)}, max {us(ini.max_ns)} per "
                   f"broadcast ({ini.count} broadcasts)")
    else:
        out.append("initiator: no broadcast to wait for")
    if cost.lost_events:
        out.append(f"warning: the cost trace lost {cost.lost_events} events: its figures are short")
    return out


class CostView(View):
    section = CostSection
    label = "cost"
    note = NOT_SEEN
    figures = (Figure("handler_us_per_sync_ipi", "handler us per sync IPI", "us", 2, TIME),
               Figure("initiator_us_p50", "initiator wait us, p50", "us", 1, TIME))

    def lines(self, a: "Analysed") -> List[str]:
        return cost_lines(a.run.section(CostSection))

    def summary_lines(self, summary: Mapping[str, Any]) -> List[str]:
        return cost_lines(CostSection.of(summary))

    def per_repeat(self, run: "Run") -> Dict[str, List[float]]:
        """The receivers' handler time per sync IPI and the initiator's median wait, one
        value per repeat, from cost.csv's rows over every CPU."""
        out: Dict[str, List[float]] = {"handler_us_per_sync_ipi": [], "initiator_us_p50": []}
        c = run.csv("cost.csv", COST_COLUMNS, ("count", "total_ns", "p50_ns", "p99_ns", "max_ns"))
        if c.empty:
            return out
        rows = c[(c["phase"] == WORKLOAD_PHASE) & (c["cpu"].astype(str) == "all")]
        for r in sorted(set(rows["repeat"])):
            mine = rows[rows["repeat"] == r]
            vs = mine[mine["kind"] == "vector_sync"]
            if len(vs) and float(vs["count"].iloc[0]) > 0:
                out["handler_us_per_sync_ipi"].append(float(vs["total_ns"].iloc[0]) / float(vs["count"].iloc[0]) / 1e3)
            ini = mine[mine["kind"] == "initiator"]
            out["initiator_us_p50"].append(float(ini["p50_ns"].iloc[0]) / 1e3 if len(ini) and float(ini["count"].iloc[0])
                                           else 0.0)
        return out
