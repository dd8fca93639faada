"""The run directory's schema, once: file format name, CSV columns, and the typed records
of summary.json (a phase, a repeat) with their dict form. doc/run-format.md describes
the same thing for people; the collector writes through these records (summary.py),
the report reads through them (reader.py), and the tests' run factory builds runs
through them.

The records are lenient when read: keys that older runs lack take the value the
collector would have written then (doc/run-format.md "Changes"), and anything of the
wrong type is one InputError naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..errors import InputError
from ..vocab import IDLE_PHASE, RUN_FORMAT, SYNC_FUNCTION, WORKLOAD_PHASE

FORMAT = RUN_FORMAT

PHASES_COLUMNS = ["repeat", "phase", "start", "end", "duration_s", "ops", "ops_expected", "result",
                  "note", "driver_utime_s", "driver_stime_s"]
INTERRUPTS_COLUMNS = ["repeat", "phase", "label", "canonical", "description", "cpu", "delta"]
VMSTAT_COLUMNS = ["repeat", "phase", "counter", "before", "after", "delta"]
ATTRIBUTION_COLUMNS = ["repeat", "phase", "event", "function", "callsite", "cpu", "count"]
TIMESERIES_COLUMNS = ["repeat", "phase", "t_s", "cpu", "cal", "tlb"]
#: cost.csv (collect --cost, measure/cost.py): durations per phase, CPU ("all": every CPU) and kind
COST_COLUMNS = ["repeat", "phase", "cpu", "kind", "count", "total_ns", "p50_ns", "p99_ns", "max_ns"]
#: victim.csv (collect --victim, measure/victim.py): every slice of every victim
VICTIM_COLUMNS = ["cpu", "start_s", "end_s", "units", "max_gap_ns", "gaps", "excess_ns"]


def sync_count(figures: Mapping[str, Any]) -> int:
    """The traced sync count of a summary.json object (a phase, a repeat or the whole run):
    the calls queued for the other CPUs where the run traced them (``queued``), else the
    calls they ran (``attributed``: csd_function_entry or kprobes). The one place this rule
    lives; the report applies it per repeat (report/figures.py traced_sync_of())."""
    counts = figures.get("queued") if figures.get("queued") is not None else figures.get("attributed")
    return int((counts or {}).get(SYNC_FUNCTION, 0))


@dataclass
class PhaseFigures:
    """summary.json PHASE: what one phase (idle window or workload) measured."""

    name: str                          # idle | workload (the key it is stored under)
    duration_s: float
    ops: int
    cal_per_cpu: Dict[int, float]
    tlb_per_cpu: Dict[int, float]
    cal_other_cpus: float
    tlb_other_cpus: float
    sync_raw: float                    # CAL minus TLB on the other CPUs
    background_sync_ipis: float        # the idle rate x this phase's duration (0 when idle)
    sync_ipis: float                   # sync_raw - background_sync_ipis; may be < 0
    attributed: Dict[str, float]       # received (csd_function_entry) or run (kprobe)
    ops_expected: int = 0
    result: str = "ok"
    note: str = ""
    trace_lost_events: int = 0
    trace_error: Optional[str] = None
    queued: Optional[Dict[str, float]] = None   # None: csd_queue_cpu not traced
    woken_without_ipi: Optional[float] = None
    queued_by: Optional[str] = None             # "perf-counter" when the kernel counted the sync
    driver_utime_s: float = 0.0
    driver_stime_s: float = 0.0
    #: figures only this workload has (khugepaged: seconds until the range was collapsed, ...)
    workload_figures: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """The PHASE object, keys in the documented order, optional keys only when set."""
        out: Dict[str, Any] = {
            "duration_s": self.duration_s, "ops": self.ops, "ops_expected": self.ops_expected,
            "result": self.result, "note": self.note,
            "cal_per_cpu": {str(c): n for c, n in self.cal_per_cpu.items()},
            "tlb_per_cpu": {str(c): n for c, n in self.tlb_per_cpu.items()},
            "cal_other_cpus": self.cal_other_cpus, "tlb_other_cpus": self.tlb_other_cpus,
            "sync_raw": self.sync_raw, "background_sync_ipis": self.background_sync_ipis,
            "sync_ipis": self.sync_ipis, "attributed": self.attributed,
            "trace_lost_events": self.trace_lost_events,
        }
        if self.trace_error:
            out["trace_error"] = self.trace_error
        if self.queued is not None:
            out["queued"] = self.queued
            out["woken_without_ipi"] = self.woken_without_ipi or 0
            if self.queued_by:
                out["queued_by"] = self.queued_by
        out["driver_utime_s"] = self.driver_utime_s
        out["driver_stime_s"] = self.driver_stime_s
        if self.workload_figures:
            out["workload_figures"] = dict(self.workload_figures)
        return out

    @classmethod
    def from_dict(cls, where: str, name: str, ph: Any) -> "PhaseFigures":
        if not isinstance(ph, dict):
            raise InputError(f"{where}: damaged: expected an object")
        return cls(
            name=name,
            duration_s=_num(where, ph, "duration_s"),
            ops=_int(where, ph, "ops", default=0),
            cal_per_cpu=_per_cpu(where, ph.get("cal_per_cpu")),
            tlb_per_cpu=_per_cpu(where, ph.get("tlb_per_cpu")),
            cal_other_cpus=_num(where, ph, "cal_other_cpus", default=0.0),
            tlb_other_cpus=_num(where, ph, "tlb_other_cpus", default=0.0),
            sync_raw=_num(where, ph, "sync_raw", default=0.0),
            background_sync_ipis=_num(where, ph, "background_sync_ipis", default=0.0),
            sync_ipis=_num(where, ph, "sync_ipis", default=0.0),
            attributed=_counts(where, ph.get("attributed")),
            ops_expected=_int(where, ph, "ops_expected", default=0),
            result=str(ph.get("result") or "ok"),
            note=str(ph.get("note") or ""),
            trace_lost_events=_int(where, ph, "trace_lost_events", default=0),
            trace_error=ph.get("trace_error") if isinstance(ph.get("trace_error"), str) else None,
            queued=_counts(where, ph["queued"]) if ph.get("queued") is not None else None,
            woken_without_ipi=_num(where, ph, "woken_without_ipi", default=0.0) if "woken_without_ipi" in ph else None,
            queued_by=ph.get("queued_by") if isinstance(ph.get("queued_by"), str) else None,
            driver_utime_s=_num(where, ph, "driver_utime_s", default=0.0),
            driver_stime_s=_num(where, ph, "driver_stime_s", default=0.0),
            workload_figures=_counts(where, ph.get("workload_figures")),
        )


@dataclass
class RepeatFigures:
    """summary.json ``repeats[i]``: one repeat's phases, and its main phase's totals (the
    workload phase, or the idle one for the idle workload)."""

    repeat: int
    ops: int
    ops_expected: int
    cal_other_cpus: float
    tlb_other_cpus: float
    background_sync_ipis: float
    sync_ipis_measured: float
    attributed: Dict[str, float]
    phases: Dict[str, PhaseFigures] = field(default_factory=dict)
    queued: Optional[Dict[str, float]] = None
    woken_without_ipi: Optional[float] = None
    #: the sync's queued count came from the in-kernel perf counter: exact even when the
    #: ring buffer lost events
    queued_by_counter: bool = False

    @property
    def workload(self) -> Optional[PhaseFigures]:
        return self.phases.get(WORKLOAD_PHASE)

    @property
    def idle(self) -> Optional[PhaseFigures]:
        return self.phases.get(IDLE_PHASE)

    @classmethod
    def from_phases(cls, repeat: int, phases: Dict[str, PhaseFigures]) -> "RepeatFigures":
        main = phases.get(WORKLOAD_PHASE) or phases.get(IDLE_PHASE)
        if main is None:
            return cls(repeat, 0, 0, 0, 0, 0.0, 0.0, {}, phases)
        return cls(repeat, main.ops, main.ops_expected, main.cal_other_cpus, main.tlb_other_cpus,
                   main.background_sync_ipis, main.sync_ipis, main.attributed, phases, main.queued,
                   main.woken_without_ipi, main.queued_by == "perf-counter")

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "repeat": self.repeat, "ops": self.ops, "ops_expected": self.ops_expected,
            "cal_other_cpus": self.cal_other_cpus, "tlb_other_cpus": self.tlb_other_cpus,
            "background_sync_ipis": self.background_sync_ipis, "sync_ipis_measured": self.sync_ipis_measured,
            "attributed": self.attributed,
        }
        if self.queued is not None:
            out["queued"] = self.queued
            out["woken_without_ipi"] = self.woken_without_ipi or 0
            if self.queued_by_counter:
                out["queued_by"] = "perf-counter"
        out["phases"] = {name: ph.to_dict() for name, ph in self.phases.items()}
        return out

    @classmethod
    def from_dict(cls, where: str, i: int, r: Any) -> "RepeatFigures":
        if not isinstance(r, dict):
            raise InputError(f"{where}: damaged: expected an object")
        phases_raw = r.get("phases") or {}
        if not isinstance(phases_raw, dict):
            raise InputError(f"{where}.phases: damaged: expected an object")
        phases = {str(name): PhaseFigures.from_dict(f"{where}.phases.{name}", str(name), ph)
                  for name, ph in phases_raw.items()}
        return cls(
            repeat=_int(where, r, "repeat", default=i),
            ops=_int(where, r, "ops"),
            ops_expected=_int(where, r, "ops_expected", default=_int(where, r, "ops")),
            cal_other_cpus=_num(where, r, "cal_other_cpus"),
            tlb_other_cpus=_num(where, r, "tlb_other_cpus"),
            background_sync_ipis=_num(where, r, "background_sync_ipis", default=0.0),
            sync_ipis_measured=_num(where, r, "sync_ipis_measured"),
            attributed=_counts(where, r.get("attributed")),
            phases=phases,
            queued=_counts(where, r["queued"]) if r.get("queued") is not None else None,
            woken_without_ipi=_num(where, r, "woken_without_ipi", default=0.0) if "woken_without_ipi" in r else None,
            queued_by_counter=r.get("queued_by") == "perf-counter",
        )


def add_counts(dicts: List[Mapping[str, float]]) -> Dict[str, float]:
    """{function: n} summed over repeats, largest first."""
    total: Dict[str, float] = {}
    for d in dicts:
        for func, n in d.items():
            total[func] = total.get(func, 0) + n
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def run_totals(repeats: List[RepeatFigures], n_other: int) -> Dict[str, Any]:
    """summary.json's run-level figures over the finished repeats (their workload phases)."""
    out: Dict[str, Any] = {}
    for key in ("ops", "ops_expected", "cal_other_cpus", "tlb_other_cpus"):
        out[key] = sum(getattr(r, key) for r in repeats)
    out["background_sync_ipis"] = round(sum(r.background_sync_ipis for r in repeats), 2)
    out["sync_ipis_measured"] = round(sum(r.sync_ipis_measured for r in repeats), 2)
    out["sync_ipis_per_op_per_cpu"] = (
        round(out["sync_ipis_measured"] / out["ops"] / max(n_other, 1), 4) if out["ops"] else None)
    out["attributed"] = add_counts([r.attributed for r in repeats])
    if repeats and all(r.queued is not None for r in repeats):
        out["queued"] = add_counts([r.queued or {} for r in repeats])
        out["woken_without_ipi"] = sum(r.woken_without_ipi or 0 for r in repeats)
    out["trace_lost_events"] = sum(p.trace_lost_events for r in repeats for p in r.phases.values())
    errors = [f"r{r.repeat}-{name}: {p.trace_error}" for r in repeats for name, p in r.phases.items()
              if p.trace_error]
    if errors:
        out["trace_errors"] = errors
    if repeats and all(r.queued_by_counter for r in repeats):
        out["queued_by"] = "perf-counter"
    out["repeats_done"] = len(repeats)
    out["repeats"] = [r.to_dict() for r in repeats]
    return out


# -- lenient typed reads ------------------------------------------------------------------------

def _num(where: str, d: Mapping[str, Any], key: str, default: Optional[float] = None) -> float:
    v = d.get(key, default)
    if v is None:
        if default is not None:
            return default
        raise InputError(f"{where}: damaged: '{key}' is missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        raise InputError(f"{where}: damaged: '{key}' should be a number, is {v!r}")
    return float(v)


def _int(where: str, d: Mapping[str, Any], key: str, default: Optional[int] = None) -> int:
    v = _num(where, d, key, None if default is None else float(default))
    return int(v)


def _per_cpu(where: str, d: Any) -> Dict[int, float]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise InputError(f"{where}: damaged: per-CPU counts should be an object")
    try:
        return {int(k): float(v) for k, v in d.items()}
    except (TypeError, ValueError):
        raise InputError(f"{where}: damaged: per-CPU counts should map CPU numbers to numbers") from None


def _counts(where: str, d: Any) -> Dict[str, float]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise InputError(f"{where}: damaged: function counts ('attributed', 'queued') should be an object")
    try:
        return {str(k): float(v) for k, v in d.items()}
    except (TypeError, ValueError):
        raise InputError(f"{where}: damaged: function counts ('attributed', 'queued') should map "
                         f"functions to numbers") from None
