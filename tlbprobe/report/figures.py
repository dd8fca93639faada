"""A run's figures, one value per finished repeat, and the traced sync count the verdict
rests on: the common ones here, the observers' from their views (report/views/), the
workload's own from its spec (WorkloadSpec.report_figures)."""

from __future__ import annotations

from typing import Dict, List, Optional

from ..rundir.reader import Run
from ..rundir.schema import RepeatFigures
from ..vocab import FLUSH_FUNCTION, SYNC_FUNCTION
from ..workloads import WorkloadSpec
from ..workloads import spec as workload_spec
from . import views


def per_repeat_figures(run: Run) -> Dict[str, List[float]]:
    """Each compared figure, one value per finished repeat."""
    n_other = max(1, len(run.other_cpus))
    traced = is_traced(run)
    out: Dict[str, List[float]] = {
        "ops": [],
        "sync_ipis": [],
        "sync_ipis_estimate_raw": [],
        "sync_per_op_per_cpu": [],
        "cal_other_cpus": [],
        "tlb_other_cpus": [],
        "background_sync_ipis": [],
        "background_rate": [],
        "attributed_sync": [],
        "ms_per_op": [],
    }
    for r in run.repeats:
        out["ops"].append(r.ops)
        # A background estimate larger than the raw count is no negative IPI count: the
        # figure shows 0 (JSON keeps the raw estimate under sync_ipis_estimate_raw).
        shown = max(r.sync_ipis_measured, 0.0)
        out["sync_ipis"].append(shown)
        out["sync_ipis_estimate_raw"].append(r.sync_ipis_measured)
        if r.ops:
            out["sync_per_op_per_cpu"].append(shown / (r.ops * n_other))
        out["cal_other_cpus"].append(r.cal_other_cpus)
        out["tlb_other_cpus"].append(r.tlb_other_cpus)
        out["background_sync_ipis"].append(r.background_sync_ipis)
        idle = r.idle
        if idle is not None and idle.duration_s > 0:
            out["background_rate"].append(idle.sync_raw / idle.duration_s)
        if traced:  # a traced repeat without the function received none: that is a 0, not a gap
            out["attributed_sync"].append(traced_sync_of(r, all_queued(run)))
        w = r.workload
        if w is not None and r.ops:
            out["ms_per_op"].append(1000.0 * w.duration_s / r.ops)
    out.update(cost_per_repeat(run))
    out.update(workload_per_repeat(run, workload_spec(run.workload)))
    return {k: v for k, v in out.items() if v}


def workload_per_repeat(run: Run, spec: WorkloadSpec) -> Dict[str, List[float]]:
    """The workload's own per-repeat figures (WorkloadSpec.report_figures, e.g. gup-fast's
    ns per page), from its workload_figures, one value per repeat that has it."""
    out: Dict[str, List[float]] = {f.key: [] for f in spec.report_figures}
    for r in run.repeats:
        figs = r.workload.workload_figures if r.workload else {}
        for f in spec.report_figures:
            if f.figure in figs:
                out[f.key].append(figs[f.figure])
    return out


def cost_per_repeat(run: Run) -> Dict[str, List[float]]:
    """The observers' figures one value per repeat (collect --cost, --victim: report/views/)."""
    return views.per_repeat(run)


def traced_sync(run: Run) -> Optional[float]:
    """The traced tlb_remove_table_smp_sync calls for the other CPUs in the workload phases,
    or None for a run collected without tracing (--no-trace).

    Counted where the kernel queues them (csd_queue_cpu) when the run traced that: a
    receiving CPU that polls in idle runs the call without an interrupt, and neither CAL
    nor csd_function_entry sees it (tlbprobe/measure/trace.py). Older runs have only the received
    count (csd_function_entry), which is then used.
    """
    if not is_traced(run) or (ring_lost(run) and not counted_in_kernel(run)):
        return None
    queued = all_queued(run)
    return float(sum(traced_sync_of(r, queued) for r in run.repeats))


def all_queued(run: Run) -> bool:
    """Whether every repeat has the queued counts (mixing bases would mix quantities)."""
    return bool(run.repeats) and all(r.queued is not None for r in run.repeats)


def traced_sync_of(r: RepeatFigures, queued: bool) -> float:
    counts = r.queued if queued and r.queued is not None else r.attributed
    return float(counts.get(SYNC_FUNCTION, 0.0))


def without_interrupt(run: Run) -> float:
    """Sync calls queued for the other CPUs that no interrupt delivered (0 without queue data)."""
    if not all_queued(run) or ring_lost(run):  # a short received count would inflate it
        return 0.0
    return sum(max(traced_sync_of(r, True) - traced_sync_of(r, False), 0.0) for r in run.repeats)


def trace_lost(run: Run) -> int:
    """Events the trace buffer dropped: then the traced count is a lower bound, not a count."""
    lost = run.summary.get("trace_lost_events")
    return int(lost) if isinstance(lost, (int, float)) and lost > 0 else 0


def ring_lost(run: Run) -> bool:
    """Whether the trace buffer missed part of some phase (events dropped, a marker refused)."""
    return bool(trace_lost(run) or run.summary.get("trace_errors"))


def counted_in_kernel(run: Run) -> bool:
    """Whether every repeat's sync count came from the perf counter (tlbprobe/measure/perfcount.py)."""
    return all_queued(run) and all(r.queued_by_counter for r in run.repeats)


def emulated(run: Run) -> bool:
    """Whether the run was measured in a QEMU TCG guest (run.yaml ``qemu.accel``, or host
    facts that say TCG: the CPU model QEMU's TCG reports, a hypervisor recorded as tcg).
    There the vCPUs take turns on the host's threads, so a time is the emulator's speed,
    not the kernel's (vocab.py TIME)."""
    qemu = run.run_yaml.get("qemu")
    if isinstance(qemu, dict) and str(qemu.get("accel") or "").lower() == "tcg":
        return True
    host = run.host if isinstance(run.host, dict) else {}
    return "TCG" in str(host.get("cpu_model") or "") or str(host.get("hypervisor") or "").lower() == "tcg"


def is_traced(run: Run) -> bool:
    """Whether the run attributed IPIs with tracefs (attribution.csv is written only then)."""
    return run.job.get("trace") is not False and (run.path / "attribution.csv").exists()


def other_functions(run: Run, top: int = 3) -> str:
    """The most frequent traced functions other than the sync and the TLB flush."""
    counts = {f: n for f, n in run.function_totals().items() if f not in (SYNC_FUNCTION, FLUSH_FUNCTION)}
    best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{f} {n:.0f}" for f, n in best) or "none traced"
