"""Machine-readable report: every run with its prediction and verdict, and the comparisons.

Key names follow summary.json where they mean the same thing (``ops``, ``attributed``,
``queued``: null for runs without it; ``sync_ipis_measured`` is the shown estimate, never
below 0, the raw one is ``sync_ipis_estimate_raw``) and the
model's JSON where they are predictions (``sync_ipis_expected``, ``sync_broadcasts_expected``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional

from ..vocab import COUNT, EXACT, RATE
from . import Report, views
from .analyze import RunAnalysis
from .figures import all_queued
from .compare import Comparison, figures_for
from .rows import per_cpu_rows, prov
from .stats import Spread

FORMAT = "tlbprobe-report/1"


def render(report: Report) -> str:
    return json.dumps(_clean(to_dict(report)), indent=2, allow_nan=False, default=_default) + "\n"


def _clean(o: Any) -> Any:
    """Strict JSON: infinities and NaN (a t statistic of two constant samples) become null."""
    if isinstance(o, float) and (math.isinf(o) or math.isnan(o)):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def to_dict(report: Report) -> Dict[str, Any]:
    return {
        "format": FORMAT,
        "tool_version": report.tool_version,
        "model_params": report.params.source,
        "warnings": list(report.warnings),
        "runs": [run_dict(a) for a in report.runs],
        "comparisons": [comparison_dict(c) for c in report.comparisons],
        "plots": [{"path": str(p.path), "kind": p.kind, "run": p.run, "title": p.title} for p in report.plots],
    }


def run_dict(a: RunAnalysis) -> Dict[str, Any]:
    run, v, pred = a.run, a.verdict, a.prediction
    attributed = run.function_totals()
    queued = run.function_totals("queued") if all_queued(run) else None
    return {
        "label": a.label,
        "path": str(run.path),
        "name": run.name,
        "complete": run.complete,
        "status": run.status,
        "repeats_planned": run.summary.get("repeats_planned"),
        "repeats_done": len(run.repeats),
        "workload": a.scenario.workload,
        "kernel_release": run.kernel_release,
        "provenance": prov(a).to_dict(),  # where it was measured, how to make it again (report/provenance.py)
        "variant": {"value": a.variant.value, "source": a.variant.source},
        "flush_mode": {"value": a.flush.value, "source": a.flush.source},
        "online_cpus": run.online_cpus,
        "driver_cpu": run.driver_cpu,
        "other_cpus": run.other_cpus,
        "threads": int(run.job.get("threads") or 0),
        "ops": run.ops,
        "ops_expected": run.ops_expected,
        **views.json_parts(a, "figures"),  # summary.json cost, victim (report/views/)
        **({"workload_figures": [r.workload.workload_figures for r in run.repeats if r.workload]}
           if any(r.workload and r.workload.workload_figures for r in run.repeats) else {}),
        # the CAL-TLB estimate as the text shows it (never below 0), the raw estimate beside
        # it (below 0 when the idle background exceeded the count: doc/run-format.md), and
        # the interval a CAL-only verdict rests on
        "sync_ipis_measured": _shown_estimate(v),
        "sync_ipis_estimate_raw": v.estimate if v.estimate is not None else v.measured,
        "sync_ipis_shown": v.measured if v.basis == "traced" else _shown_estimate(v),
        "sync_ipis_bounds": ({"low": v.bounds.low, "high": v.bounds.high, "raw_cal_minus_tlb": v.bounds.raw,
                              "background": v.bounds.background, "background_max": v.bounds.background_max}
                             if v.bounds is not None else None),
        "sync_ipis_traced": v.measured if v.basis == "traced" else None,
        "verdict_basis": v.basis,
        "sync_ipis_expected": pred.sync_ipis.value,
        "sync_broadcasts_expected": pred.sync_broadcasts.value,
        "tlb_ipis_expected": pred.tlb_ipis.value,
        "tlb_ipis_max": pred.tlb_ipis_max,
        "tlb_ipis_measured": sum(r.tlb_other_cpus for r in run.repeats),
        "background_sync_ipis": sum(r.background_sync_ipis for r in run.repeats),
        "ratio": v.ratio,
        "verdict": {
            "status": v.status,
            "ok": v.ok,
            "tolerance": v.tolerance,
            "method": ("traced count, no background" if v.basis == "traced" else
                       v.bounds.method() if v.bounds is not None else None),
            "reason": v.reason,
            "warnings": list(v.warnings),
        },
        "attributed": attributed,
        "queued": queued,
        "stats": {k: spread_dict(s, _kinds(a).get(k, RATE)) for k, s in a.stats.items()},
        "per_repeat": a.per_repeat,
        "per_cpu": {
            str(r.cpu): {"role": r.role, "cal": r.cal, "tlb": r.tlb, "sync_raw": r.sync_raw,
                         "expected_sync": r.expected_sync}
            for r in per_cpu_rows(a)
        },
        "prediction": pred.to_dict(),
        **views.json_parts(a, "detail"),  # latency
        "warnings": list(run.warnings),
    }


def _shown_estimate(v) -> Optional[float]:
    raw = v.estimate if v.estimate is not None else v.measured
    return None if raw is None else max(raw, 0.0)


def _kinds(a: RunAnalysis) -> Dict[str, str]:
    """Each compared figure's kind (report/compare.py figures_for), by its key."""
    return {f.key: f.kind for f in figures_for(a)}


def spread_dict(s: Optional[Spread], kind: str = RATE) -> Optional[Dict[str, Any]]:
    """A spread; a count's 95% interval is cut at 0 (a count is never negative)."""
    if s is None:
        return None
    ci = list(s.ci95) if s.ci95 else None
    if ci is not None and kind in (COUNT, EXACT):
        ci = [max(ci[0], 0.0), max(ci[1], 0.0)]
    return {"n": s.n, "mean": s.mean, "median": s.median, "min": s.min, "max": s.max, "sd": s.sd, "ci95": ci}


def comparison_dict(c: Comparison) -> Dict[str, Any]:
    return {
        "base": c.base.run.name,
        "base_path": str(c.base.run.path),
        "other": c.other.run.name,
        "other_path": str(c.other.run.path),
        "figures": [
            {
                "key": f.key,
                "label": f.label,
                "kind": f.kind,
                # why there is no test (report/compare.py: exact, emulated, few, noise, n=N, sd=0)
                "untested": f.untested,
                "emulated": f.emulated,
                "base": spread_dict(f.base, f.kind),
                "other": spread_dict(f.other, f.kind),
                "change_pct": f.change_pct,
                "t": f.welch.t if f.welch else None,
                "df": f.welch.df if f.welch else None,
                "p_value": f.welch.p if f.welch else None,
                "ranges_overlap": f.overlap,
                "significant": f.significant,
            }
            for f in c.figures
        ],
        "emulated": c.emulated,
        "notes": list(c.notes),
        "latency": [
            {"phase": r.phase, "role": r.role, "metric": r.metric, "base": r.base, "other": r.other}
            for r in c.latency
        ],
    }


def _default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars from pandas
        return o.item()
    raise TypeError(f"cannot serialise {type(o).__name__}")
