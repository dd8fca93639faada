"""From measured phases to the figures of summary.json (doc/run-format.md), and the
one-screen text summary printed at the end of a collect.

Sync IPIs are CAL minus TLB on the CPUs that did not run the driver: on x86 the CAL line
counts every function-call IPI, including the TLB-shootdown ones (flush_tlb_func runs as
a function call), and TLB counts those alone. The idle window before each repeat gives
the background rate of the same quantity; scaled to the workload phase's duration it is
subtracted (the rate pooled over all idle windows of the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .procfs import InterruptsDiff
from .trace import PhaseCounts
from .workloads.base import PhaseOutcome


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


def phase_figures(rec: PhaseRecord, driver_cpu: int, background_rate: float) -> Dict[str, Any]:
    """The PHASE object of summary.json."""
    cal = rec.irq.canonical_per_cpu("function_call")
    tlb = rec.irq.canonical_per_cpu("tlb_shootdown")
    others = [c for c in rec.irq.cpus if c != driver_cpu]
    cal_o = sum(cal[c] for c in others)
    tlb_o = sum(tlb[c] for c in others)
    background = background_rate * rec.duration if rec.phase != "idle" else 0.0
    return {
        "duration_s": round(rec.duration, 4),
        "ops": rec.outcome.ops,
        "ops_expected": rec.outcome.ops_expected,
        "result": rec.outcome.result,
        "note": rec.outcome.note,
        "cal_per_cpu": {str(c): n for c, n in cal.items()},
        "tlb_per_cpu": {str(c): n for c, n in tlb.items()},
        "cal_other_cpus": cal_o,
        "tlb_other_cpus": tlb_o,
        "sync_raw": cal_o - tlb_o,
        "background_sync_ipis": round(background, 2),
        "sync_ipis": round(cal_o - tlb_o - background, 2),
        "attributed": rec.attribution.received(others) if rec.attribution else {},
        "trace_lost_events": rec.attribution.lost if rec.attribution else 0,
        **({"trace_error": rec.attribution.error} if rec.attribution and rec.attribution.error else {}),
        **_queued_figures(rec.attribution, others),
        "driver_utime_s": round(rec.utime_s, 4),
        "driver_stime_s": round(rec.stime_s, 4),
    }


def _queued_figures(attribution: Optional[PhaseCounts], others: List[int]) -> Dict[str, Any]:
    """``queued`` and ``woken_without_ipi``, present only when csd_queue_cpu was traced, so
    that a reader can tell "none queued" from "not traced" (doc/run-format.md)."""
    if attribution is None or not attribution.queue_traced:
        return {}
    out: Dict[str, Any] = {"queued": attribution.queued(others),
                           "woken_without_ipi": attribution.woken_without_ipi(others)}
    if attribution.sync_queued is not None:
        out["queued_by"] = "perf-counter"  # the sync's count is exact even when the ring lost events
    return out


def _add_counts(dicts: List[Dict[str, int]]) -> Dict[str, int]:
    """{function: n} summed over repeats, largest first."""
    total: Dict[str, int] = {}
    for d in dicts:
        for func, n in d.items():
            total[func] = total.get(func, 0) + n
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def pooled_idle_rate(records: List[PhaseRecord], driver_cpu: int) -> float:
    """CAL-minus-TLB per second on the other CPUs over all idle windows of the run.

    Pooled rather than per repeat: the background comes in bursts (scheduler kicks,
    other processes' TLB flushes), so one short window is a noisy estimate and all of
    them together a steadier one.
    """
    idle = [phase_figures(r, driver_cpu, 0.0) for r in records if r.phase == "idle"]
    seconds = sum(p["duration_s"] for p in idle)
    return sum(p["sync_raw"] for p in idle) / seconds if seconds > 0 else 0.0


def repeat_figures(repeat: int, records: List[PhaseRecord], driver_cpu: int, rate: float) -> Dict[str, Any]:
    """One entry of summary.json ``repeats``: its phases, and the workload's totals."""
    phases: Dict[str, Any] = {r.phase: phase_figures(r, driver_cpu, rate) for r in records}
    main = phases.get("workload") or phases.get("idle") or {}
    return {
        "repeat": repeat,
        "ops": main.get("ops", 0),
        "ops_expected": main.get("ops_expected", 0),
        "cal_other_cpus": main.get("cal_other_cpus", 0),
        "tlb_other_cpus": main.get("tlb_other_cpus", 0),
        "background_sync_ipis": main.get("background_sync_ipis", 0.0),
        "sync_ipis_measured": main.get("sync_ipis", 0.0),
        "attributed": main.get("attributed", {}),
        **{k: main[k] for k in ("queued", "woken_without_ipi", "queued_by") if k in main},
        "phases": phases,
    }


def all_repeats(records_by_repeat: List[List[PhaseRecord]], driver_cpu: int) -> List[Dict[str, Any]]:
    """summary.json ``repeats`` for the finished repeats, background from all idle windows."""
    rate = pooled_idle_rate([r for recs in records_by_repeat for r in recs], driver_cpu)
    return [repeat_figures(i, recs, driver_cpu, rate) for i, recs in enumerate(records_by_repeat)]


def build_summary(repeats: List[Dict[str, Any]], meta: Dict[str, Any]) -> Dict[str, Any]:
    """summary.json from the finished repeats; ``meta`` carries the run-level fields."""
    out: Dict[str, Any] = dict(meta)
    n_other = len(meta.get("other_cpus", [])) or 1
    for key in ("ops", "ops_expected", "cal_other_cpus", "tlb_other_cpus"):
        out[key] = sum(r[key] for r in repeats)
    out["background_sync_ipis"] = round(sum(r["background_sync_ipis"] for r in repeats), 2)
    out["sync_ipis_measured"] = round(sum(r["sync_ipis_measured"] for r in repeats), 2)
    out["sync_ipis_per_op_per_cpu"] = (
        round(out["sync_ipis_measured"] / out["ops"] / n_other, 4) if out["ops"] else None)
    out["attributed"] = _add_counts([r["attributed"] for r in repeats])
    if repeats and all("queued" in r for r in repeats):
        out["queued"] = _add_counts([r["queued"] for r in repeats])
        out["woken_without_ipi"] = sum(r["woken_without_ipi"] for r in repeats)
    out["trace_lost_events"] = sum(
        p.get("trace_lost_events", 0) for r in repeats for p in r["phases"].values())
    errors = [f"r{r['repeat']}-{name}: {p['trace_error']}" for r in repeats for name, p in r["phases"].items()
              if p.get("trace_error")]
    if errors:
        out["trace_errors"] = errors
    if repeats and all(r.get("queued_by") == "perf-counter" for r in repeats):
        out["queued_by"] = "perf-counter"
    out["repeats_done"] = len(repeats)
    out["repeats"] = repeats
    return out
