"""The one-screen summary printed at the end of `tlbprobe collect` (and kept as
summary.txt of a guest's run): the phases' counts, then what each observer measured,
from its view (tlbprobe/report/views/: pure, no pandas, so a guest's small root can print
it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from ..rundir import sync_count
from ..ui.numbers import format_cpulist, format_number, summarize_per_cpu
from ..ui.tables import MAX_CPU_COLUMNS
from ..vocab import IDLE_PHASE, SYNC_FUNCTION, WORKLOAD_PHASE
from . import views


def per_cpu_line(name: str, values: Dict[str, int]) -> str:
    """'CAL per CPU: CPU1 512  CPU2 510 ...', or min/median/max beyond MAX_CPU_COLUMNS CPUs."""
    if not values:
        return f"{name}: none"
    if len(values) <= MAX_CPU_COLUMNS:
        return f"{name}: " + "  ".join(f"CPU{c} {n}" for c, n in values.items())
    s = summarize_per_cpu({int(c): n for c, n in values.items()})
    return (f"{name}: {s.cpus} CPUs, min {s.min}  median {format_number(s.median)}  max {s.max} "
            f"(CPU {format_cpulist(s.max_cpus)}), {s.nonzero} non-zero; per CPU in interrupts.csv")


def _sum_per_cpu(phases: List[Dict[str, Any]], key: str, cpus: List[int]) -> Dict[str, int]:
    out = {str(c): 0 for c in cpus}
    for ph in phases:
        for c in out:
            out[c] += ph[key].get(c, 0)
    return out


def _shown(sync_ipis: float) -> str:
    """A phase's background-subtracted sync IPIs, never a negative count ("<0" marks one
    whose background estimate exceeded what the CPUs received; summary.json keeps it)."""
    return f"{sync_ipis:.1f}" if sync_ipis >= 0 else "0 (<bg)"


def render_summary(summary: Dict[str, Any], path: Path) -> str:
    unit = summary.get("ops_unit", "operations")
    # traced: a --no-trace run (or a kernel with nothing to trace) has no counts anywhere
    traced = "queued" in summary or any(
        ph.get("attributed") for r in summary["repeats"] for ph in r["phases"].values())
    others = summary.get("other_cpus", [])
    n_other = len(others) or 1
    state = "complete" if summary.get("complete") else f"INCOMPLETE ({summary.get('status')})"
    lines = [
        f"tlbprobe: {summary['workload']}, {summary['repeats_done']}/{summary['repeats_planned']} repeat(s), {state}",
        f"kernel {summary['kernel_release']} ({summary.get('kernel_variant') or 'variant not given'}), "
        f"{summary['online_cpus']} CPUs online, flush mode {summary['flush_mode']}, driver on CPU {summary['driver_cpu']}",
        f"run directory: {path}",
        "",
        f"{'repeat':>6} {'phase':<9}{'secs':>7} {unit:>10} {'CAL other':>10} {'TLB other':>10} "
        f"{'bg':>7} {'sync IPIs':>10} {'/op/CPU':>8}" + (f" {'traced':>7}" if traced else ""),
    ]
    for rep in summary["repeats"]:
        for name, ph in rep["phases"].items():
            per = ""
            if name != IDLE_PHASE and ph["ops"]:
                per = f"{max(ph['sync_ipis'], 0.0) / ph['ops'] / n_other:8.3f}"
            lines.append(
                f"{rep['repeat'] + 1:>6} {name:<9}{ph['duration_s']:7.2f} {ph['ops']:>10} {ph['cal_other_cpus']:>10} "
                f"{ph['tlb_other_cpus']:>10} {ph['background_sync_ipis']:7.1f} {_shown(ph['sync_ipis']):>10} {per:>8}"
                + (f" {sync_count(ph):>7}" if traced else ""))
    work = [r["phases"][WORKLOAD_PHASE] for r in summary["repeats"] if WORKLOAD_PHASE in r["phases"]]
    lines.append("")
    if work:
        ratio = summary.get("sync_ipis_per_op_per_cpu")
        lines.append(
            f"workload total: {summary['ops']} {unit} (asked for {summary['ops_expected']}); other CPUs received "
            f"CAL {summary['cal_other_cpus']}, TLB {summary['tlb_other_cpus']}")
        measured = summary["sync_ipis_measured"]
        raw = summary["cal_other_cpus"] - summary["tlb_other_cpus"]
        lines.append(
            f"sync IPIs (CAL - TLB - background {summary['background_sync_ipis']:,.0f}): " +
            (f"0 (below background, at most {raw})" if measured < 0 else f"{measured:,.0f}") +
            (f" = {max(ratio, 0.0):.3f} per {unit.rstrip('s')} per other CPU" if ratio is not None else ""))
        lines.append(per_cpu_line("CAL per CPU", _sum_per_cpu(work, "cal_per_cpu", others)))
        lines.append(per_cpu_line("TLB per CPU", _sum_per_cpu(work, "tlb_per_cpu", others)))
    if summary.get("attributed"):
        top = ", ".join(f"{f} {n}" for f, n in list(summary["attributed"].items())[:6])
        lines.append(f"traced IPIs received by the other CPUs: {top}")
    if summary.get("queued"):
        top = ", ".join(f"{f} {n}" for f, n in list(summary["queued"].items())[:4])
        lines.append(f"calls queued for the other CPUs: {top}")
        if summary.get("woken_without_ipi"):
            lines.append(f"  {summary['woken_without_ipi']} of the other CPUs' calls and wake-ups came without an "
                         f"interrupt (the CPU was polling in idle): queued counts them, CAL does not")
    if summary.get("trace_lost_events") or summary.get("trace_errors"):
        exact = (f"the {SYNC_FUNCTION} count is exact (in-kernel counter)" if summary.get("queued_by") == "perf-counter"
                 else "the report judges on CAL minus TLB")
        where = "; ".join(summary.get("trace_errors", [])) or f"{summary.get('trace_lost_events')} event(s) dropped"
        lines.append(f"warning: the trace buffer missed part of the run ({where}): the received counts are short; "
                     f"{exact}")
    lines.extend(views.summary_lines(summary))  # the observers' (report/views/): latency, cost, victim
    notes = {ph.get("note") for r in summary["repeats"] for ph in r["phases"].values() if ph.get("note")}
    lines.extend(f"note: {n}" for n in sorted(notes))
    if summary.get("error"):
        lines.append(f"error: {summary['error']}")
    return "\n".join(lines)
