"""The observers' sections of summary.json, as typed records: ``latency`` (collect
--latency, tlbprobe/measure/latency.py), ``cost`` (--cost, measure/cost.py), ``victim``
(--victim, measure/victim.py) and ``check`` (--check, measure/tablesync.py).
doc/run-format.md describes each for people.

An observer builds its section and the collector writes ``to_dict()`` under the
section's ``KEY``; the reader gives it back with ``Run.section(LatencySection)`` (None
for a run without it), and the report's views (tlbprobe/report/views/) and the end-of-run
summary read those records, never the dicts. The records live here, beside the rest of
the run directory's schema, because both sides use them: the observers need root to
measure, the report must run anywhere.

Each record's dict form is exactly what the observer writes (keys, their order, their
values: a count stays an int, a figure a float), so ``from_dict(d).to_dict() == d`` for
every run an observer wrote. Reading is lenient as schema.py's records are: a key an
older run lacks takes the value the observer would have written, anything of the wrong
type is one InputError naming the file and the key.

Adding an observer: its module in tlbprobe/measure/, its section record here (with
``KEY``, its job switch ``SWITCH``, ``from_dict``, ``to_dict``, and its class in
SECTIONS), its entry in tlbprobe/run/observers.py, its view in tlbprobe/report/views/
(found there by itself), and its section in doc/run-format.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from ..errors import InputError
from ..options import Option
from ..vocab import IDLE_PHASE, WORKLOAD_PHASE

Number = Union[int, float]
S = TypeVar("S", bound="Section")


class Section:
    """What every observer's record has: the summary.json key it is stored under, and its
    dict form both ways."""

    KEY: ClassVar[str] = ""
    #: the job switch that turns the observer on: an Option whose key is KEY (collect
    #: --help, job files and run.yaml take it from here, run/job.py COMMON_OPTIONS)
    SWITCH: ClassVar[Option]

    @classmethod
    def from_dict(cls: Type[S], where: str, d: Any) -> S:  # pragma: no cover - each record has its own
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def of(cls: Type[S], summary: Mapping[str, Any], where: str = "summary.json") -> Optional[S]:
        """This section of a summary.json object (a dict), or None when it has none."""
        raw = summary.get(cls.KEY)
        return None if raw is None else cls.from_dict(where, raw)


# -- latency (collect --latency) -----------------------------------------------------------

@dataclass(frozen=True)
class LatencyCpu:
    """One CPU's cyclictest figures in one phase, or in one phase kind pooled over the
    repeats (rundir/cyclictest.py CpuLatency.figures): microseconds, None without samples."""

    samples: Optional[Number] = None
    cycles_lost: Optional[Number] = None
    p50_us: Optional[Number] = None
    p99_us: Optional[Number] = None
    p999_us: Optional[Number] = None
    max_us: Optional[Number] = None
    avg_us: Optional[Number] = None
    overflows: Optional[Number] = None
    role: Optional[str] = None          # driver | receiver

    FIELDS: ClassVar[Tuple[str, ...]] = ("samples", "cycles_lost", "p50_us", "p99_us", "p999_us", "max_us",
                                         "avg_us", "overflows")

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {k: getattr(self, k) for k in self.FIELDS}
        out["role"] = self.role
        return out

    @classmethod
    def from_dict(cls, where: str, d: Mapping[str, Any]) -> "LatencyCpu":
        values = {}
        for k in cls.FIELDS:
            v = d.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise InputError(f"{where} holds non-numbers")
            values[k] = v
        role = d.get("role")
        return cls(**values, role=role if isinstance(role, str) else None)


def _cpu_table(where: str, per_cpu: Any) -> Dict[int, LatencyCpu]:
    """{cpu: figures} of one phase; entries that are not CPUs (a flat layout's
    ``driver_cpu``) are left out, as the report always did."""
    out: Dict[int, LatencyCpu] = {}
    if not isinstance(per_cpu, dict):
        return out
    for cpu, v in per_cpu.items():
        if isinstance(v, dict) and str(cpu).lstrip("-").isdigit():
            out[int(cpu)] = LatencyCpu.from_dict(f"{where}.{cpu}", v)
    return out


def _phase_tables(where: str, d: Any) -> Dict[str, Dict[int, LatencyCpu]]:
    if not isinstance(d, dict):
        return {}
    return {str(phase): _cpu_table(f"{where} {phase}", per_cpu) for phase, per_cpu in d.items()
            if isinstance(per_cpu, dict)}


@dataclass(frozen=True)
class LatencySection(Section):
    """summary.json ``latency``: cyclictest beside every phase (measure/latency.py)."""

    KEY: ClassVar[str] = "latency"
    SWITCH: ClassVar[Option] = Option("latency", "run cyclictest on every online CPU beside each phase", flag=True)

    tool: str = "cyclictest"
    interval_us: Optional[int] = None
    priority: Optional[int] = None
    histogram_us: Optional[int] = None
    cpu_dma_latency: Optional[str] = None
    driver_cpu: Optional[int] = None
    #: phase tag ('r0-workload') -> CPU -> figures
    phases: Dict[str, Dict[int, LatencyCpu]] = field(default_factory=dict)
    #: phase kind ('idle', 'workload') -> CPU -> figures pooled over the repeats
    aggregate: Dict[str, Dict[int, LatencyCpu]] = field(default_factory=dict)
    #: phase tag -> why it has no latency (cyclictest failed)
    missing: Dict[str, str] = field(default_factory=dict)
    #: phase tag -> what was wrong with its cyclictest output
    damaged: Dict[str, str] = field(default_factory=dict)

    def by_kind(self) -> Dict[str, Dict[int, LatencyCpu]]:
        """What the report shows: each phase kind pooled over the repeats, or where a run
        has no pooled figures, each phase."""
        return self.aggregate if self.aggregate else self.phases

    def to_dict(self) -> Dict[str, Any]:
        def table(t: Dict[str, Dict[int, LatencyCpu]]) -> Dict[str, Any]:
            return {p: {str(c): f.to_dict() for c, f in per.items()} for p, per in t.items()}

        return {"tool": self.tool, "interval_us": self.interval_us, "priority": self.priority,
                "histogram_us": self.histogram_us, "cpu_dma_latency": self.cpu_dma_latency,
                "driver_cpu": self.driver_cpu, "phases": table(self.phases), "aggregate": table(self.aggregate),
                "missing": dict(self.missing), "damaged": dict(self.damaged)}

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "LatencySection":
        """Two layouts: the collector's (``aggregate``, ``phases``, ...), and the plain
        ``{phase: {cpu: figures}, "driver_cpu": n}`` of early runs, read as ``phases``
        (which by_kind() then gives, there being no pooled figures)."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: 'latency' should be an object")
        drv = d.get("driver_cpu")
        driver = int(drv) if isinstance(drv, int) and not isinstance(drv, bool) else None
        name = f"{where}: damaged: latency"
        if "aggregate" not in d and "phases" not in d:  # the plain layout
            return cls(driver_cpu=driver, phases={p: t for p, t in _phase_tables(name, d).items() if t})
        return cls(
            tool=str(d.get("tool") or "cyclictest"),
            interval_us=_opt_int(d.get("interval_us")), priority=_opt_int(d.get("priority")),
            histogram_us=_opt_int(d.get("histogram_us")),
            cpu_dma_latency=d.get("cpu_dma_latency") if isinstance(d.get("cpu_dma_latency"), str) else None,
            driver_cpu=driver,
            phases=_phase_tables(name, d.get("phases")), aggregate=_phase_tables(name, d.get("aggregate")),
            missing=_texts(d.get("missing")), damaged=_texts(d.get("damaged")))


# -- cost (collect --cost) ------------------------------------------------------------------

#: the kinds of duration the cost observer times (doc/run-format.md "cost.csv")
COST_KINDS = ("vector_all", "vector_sync", "sync", "initiator")


@dataclass(frozen=True)
class CostFigures:
    """Durations of one kind in one phase kind: count, total, the median of the per-CPU
    medians and the worst per-CPU p99 (ns)."""

    count: int = 0
    total_ns: Number = 0.0
    max_ns: Number = 0.0
    p50_ns: Number = 0.0
    p99_ns: Number = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"count": self.count, "total_ns": self.total_ns, "max_ns": self.max_ns, "p50_ns": self.p50_ns,
                "p99_ns": self.p99_ns}

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "CostFigures":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: expected an object")
        return cls(count=int(_num(where, d, "count", 0)), total_ns=_num(where, d, "total_ns", 0.0),
                   max_ns=_num(where, d, "max_ns", 0.0), p50_ns=_num(where, d, "p50_ns", 0.0),
                   p99_ns=_num(where, d, "p99_ns", 0.0))


@dataclass(frozen=True)
class CostSection(Section):
    """summary.json ``cost``: the receivers' handler times and the initiator's wait
    (measure/cost.py); the headline figures only when the workload phases handled sync IPIs."""

    KEY: ClassVar[str] = "cost"
    SWITCH: ClassVar[Option] = Option(
        "cost", "time what the broadcast costs: the receivers' function-call handlers (irq_vectors and csd trace "
                "events) and the initiator's wait in tlb_remove_table_sync_one (kprobes); the events cost time "
                "themselves (benchmarks/cost_observer.py)", flag=True)

    tracepoint_ns: Optional[Number] = None
    #: phase kind -> kind (COST_KINDS) -> figures
    phases: Dict[str, Dict[str, CostFigures]] = field(default_factory=dict)
    #: phase kind -> vector_sync | vector_all -> upper bucket edge (ns) -> count, other CPUs
    histograms: Dict[str, Dict[str, Dict[int, int]]] = field(default_factory=dict)
    lost_events: int = 0
    per_ipi_ns_corrected: Optional[Number] = None
    cpu_time_taken_ms: Optional[Number] = None
    ms_per_gib: Optional[Number] = None          # collapse workloads only
    us_per_broadcast_per_cpu: Optional[Number] = None
    broadcasts_seen: Optional[Number] = None

    HEADLINE: ClassVar[Tuple[str, ...]] = ("per_ipi_ns_corrected", "cpu_time_taken_ms", "ms_per_gib",
                                           "us_per_broadcast_per_cpu", "broadcasts_seen")

    def figures(self, phase: str, kind: str) -> CostFigures:
        """One kind's figures in one phase kind; all zero where there were none."""
        return self.phases.get(phase, {}).get(kind) or CostFigures()

    def histogram(self, phase: str, kind: str) -> Dict[int, int]:
        return self.histograms.get(phase, {}).get(kind) or {}

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "tracepoint_ns": self.tracepoint_ns,
            "phases": {p: {k: f.to_dict() for k, f in kinds.items()} for p, kinds in self.phases.items()},
            "histograms": {p: {k: {str(e): n for e, n in h.items()} for k, h in kinds.items()}
                           for p, kinds in self.histograms.items()},
            "lost_events": self.lost_events,
        }
        for k in self.HEADLINE:
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "CostSection":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: 'cost' should be an object")
        phases = {str(p): {str(k): CostFigures.from_dict(f"{where}: cost.phases.{p}.{k}", f)
                           for k, f in _obj(where, kinds, f"cost.phases.{p}").items()}
                  for p, kinds in _obj(where, d.get("phases"), "cost.phases").items()}
        hist: Dict[str, Dict[str, Dict[int, int]]] = {}
        for p, kinds in _obj(where, d.get("histograms"), "cost.histograms").items():
            for k, h in _obj(where, kinds, f"cost.histograms.{p}").items():
                try:
                    hist.setdefault(str(p), {})[str(k)] = {int(e): int(n) for e, n in
                                                           _obj(where, h, f"cost.histograms.{p}.{k}").items()}
                except (TypeError, ValueError):
                    raise InputError(f"{where}: damaged: cost.histograms.{p}.{k} should map bucket edges "
                                     f"to counts") from None
        head = {k: _num(f"{where}: cost", d, k, None) for k in cls.HEADLINE}
        return cls(tracepoint_ns=_num(f"{where}: cost", d, "tracepoint_ns", None), phases=phases, histograms=hist,
                   lost_events=int(_num(f"{where}: cost", d, "lost_events", 0)), **head)


# -- victim (collect --victim) ---------------------------------------------------------------

@dataclass(frozen=True)
class VictimFigures:
    """One victim's slices in one kind of phase: units per second, interruptions per
    second and the time they took (us per s), each with its standard error over the
    slices, and the worst gap. Without slices only slices, rate, rate_se and the gap."""

    slices: int = 0
    rate: Number = 0.0
    rate_se: Number = 0.0
    interruptions_per_s: Optional[Number] = None
    interruptions_se: Optional[Number] = None
    lost_us_per_s: Optional[Number] = None
    lost_se: Optional[Number] = None
    worst_gap_us: Number = 0.0

    ORDER: ClassVar[Tuple[str, ...]] = ("slices", "rate", "rate_se", "interruptions_per_s", "interruptions_se",
                                        "lost_us_per_s", "lost_se", "worst_gap_us")

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.ORDER if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "VictimFigures":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: expected an object")
        return cls(slices=int(_num(where, d, "slices", 0)), rate=_num(where, d, "rate", 0.0),
                   rate_se=_num(where, d, "rate_se", 0.0),
                   interruptions_per_s=_num(where, d, "interruptions_per_s", None),
                   interruptions_se=_num(where, d, "interruptions_se", None),
                   lost_us_per_s=_num(where, d, "lost_us_per_s", None), lost_se=_num(where, d, "lost_se", None),
                   worst_gap_us=_num(where, d, "worst_gap_us", 0.0))


@dataclass(frozen=True)
class VictimCpu:
    """One other CPU's victim: its idle and workload figures and what the workload cost
    it (a change and its 95% half-width; None where a side had no slices)."""

    unit_ns: Optional[int] = None
    idle: VictimFigures = field(default_factory=VictimFigures)
    workload: VictimFigures = field(default_factory=VictimFigures)
    loss_pct: Optional[Number] = None
    loss_ci95_pct: Optional[Number] = None
    extra_interruptions_per_s: Optional[Number] = None
    extra_interruptions_ci95: Optional[Number] = None
    extra_lost_us_per_s: Optional[Number] = None
    extra_lost_ci95: Optional[Number] = None

    CHANGES: ClassVar[Tuple[str, ...]] = ("loss_pct", "loss_ci95_pct", "extra_interruptions_per_s",
                                          "extra_interruptions_ci95", "extra_lost_us_per_s", "extra_lost_ci95")

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"unit_ns": self.unit_ns, IDLE_PHASE: self.idle.to_dict(),
                               WORKLOAD_PHASE: self.workload.to_dict()}
        out.update({k: getattr(self, k) for k in self.CHANGES})
        return out

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "VictimCpu":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: expected an object")
        unit = _num(where, d, "unit_ns", None)
        return cls(unit_ns=None if unit is None else int(unit),
                   idle=VictimFigures.from_dict(f"{where}.{IDLE_PHASE}", d.get(IDLE_PHASE) or {}),
                   workload=VictimFigures.from_dict(f"{where}.{WORKLOAD_PHASE}", d.get(WORKLOAD_PHASE) or {}),
                   **{k: _num(where, d, k, None) for k in cls.CHANGES})


@dataclass(frozen=True)
class VictimPhase:
    """One phase (a tag): the mean over the CPUs of rate, interruptions and lost time,
    and the worst gap."""

    rate: Number = 0.0
    interruptions_per_s: Number = 0.0
    lost_us_per_s: Number = 0.0
    worst_gap_us: Number = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"rate": self.rate, "interruptions_per_s": self.interruptions_per_s,
                "lost_us_per_s": self.lost_us_per_s, "worst_gap_us": self.worst_gap_us}

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "VictimPhase":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: expected an object")
        return cls(**{k: _num(where, d, k, 0.0) for k in ("rate", "interruptions_per_s", "lost_us_per_s",
                                                           "worst_gap_us")})


@dataclass(frozen=True)
class VictimSection(Section):
    """summary.json ``victim``: a pinned work loop on every other CPU (measure/victim.py)."""

    KEY: ClassVar[str] = "victim"
    SWITCH: ClassVar[Option] = Option(
        "victim", "run a pinned work loop on every other CPU and report the throughput it loses in the workload "
                  "phases and its longest gap (needs a C compiler)", flag=True)

    slice_ms: Optional[Number] = None
    gap_ns: Optional[Number] = None
    per_cpu: Dict[int, VictimCpu] = field(default_factory=dict)
    #: phase tag -> the CPUs' mean figures
    phases: Dict[str, VictimPhase] = field(default_factory=dict)
    #: phase tag -> (start, end), CLOCK_MONOTONIC seconds, as victim.csv's start_s/end_s
    windows: Dict[str, Tuple[Number, Number]] = field(default_factory=dict)
    loss_pct_mean: Optional[Number] = None
    extra_interruptions_per_s_mean: Optional[Number] = None
    extra_lost_us_per_s_mean: Optional[Number] = None
    worst_gap_us: Optional[Number] = None
    worst_gap_idle_us: Optional[Number] = None

    MEANS: ClassVar[Tuple[str, ...]] = ("loss_pct_mean", "extra_interruptions_per_s_mean", "extra_lost_us_per_s_mean",
                                        "worst_gap_us", "worst_gap_idle_us")

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "slice_ms": self.slice_ms, "gap_ns": self.gap_ns,
            "per_cpu": {str(c): v.to_dict() for c, v in self.per_cpu.items()},
            "phases": {t: p.to_dict() for t, p in self.phases.items()},
            "windows": {t: [a, b] for t, (a, b) in self.windows.items()},
        }
        out.update({k: getattr(self, k) for k in self.MEANS})
        return out

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "VictimSection":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: 'victim' should be an object")
        w = f"{where}: victim"
        per_cpu: Dict[int, VictimCpu] = {}
        for c, v in _obj(where, d.get("per_cpu"), "victim.per_cpu").items():
            if not str(c).lstrip("-").isdigit():
                raise InputError(f"{w}.per_cpu: damaged: {c!r} is not a CPU number")
            per_cpu[int(c)] = VictimCpu.from_dict(f"{w}.per_cpu.{c}", v)
        windows: Dict[str, Tuple[Number, Number]] = {}
        for t, ab in _obj(where, d.get("windows"), "victim.windows").items():
            if (not isinstance(ab, (list, tuple)) or len(ab) != 2
                    or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in ab)):
                raise InputError(f"{w}.windows.{t}: damaged: expected [start, end]")
            windows[str(t)] = (ab[0], ab[1])
        return cls(slice_ms=_num(w, d, "slice_ms", None), gap_ns=_num(w, d, "gap_ns", None), per_cpu=per_cpu,
                   phases={str(t): VictimPhase.from_dict(f"{w}.phases.{t}", p)
                           for t, p in _obj(where, d.get("phases"), "victim.phases").items()},
                   windows=windows, **{k: _num(w, d, k, None) for k in cls.MEANS})


# -- check (collect --check) ------------------------------------------------------------------

@dataclass(frozen=True)
class CheckCounts:
    """One caller's table syncs in a window (a phase, or the run): the calls, the skips
    the hook allowed, and of those the covered, violating and unverified ones
    (measure/tablesync.py), the CPUs a violating flush missed, and the kernel's symbols
    of its call sites ('hpage_collapse_scan_pmd+0xa7f/0x17b0')."""

    calls: int = 0
    skipped: int = 0
    covered: int = 0
    violations: int = 0
    unverified: int = 0
    missed_cpus: Tuple[int, ...] = ()
    symbols: Tuple[str, ...] = ()

    COUNTS: ClassVar[Tuple[str, ...]] = ("calls", "skipped", "covered", "violations", "unverified")

    @property
    def sent(self) -> int:
        """The broadcasts actually sent: the calls not skipped."""
        return self.calls - self.skipped

    def plus(self, o: "CheckCounts") -> "CheckCounts":
        return CheckCounts(*(getattr(self, k) + getattr(o, k) for k in self.COUNTS),
                           missed_cpus=tuple(sorted(set(self.missed_cpus) | set(o.missed_cpus))),
                           symbols=self.symbols + tuple(x for x in o.symbols if x not in self.symbols))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {k: getattr(self, k) for k in self.COUNTS}
        out["missed_cpus"] = list(self.missed_cpus)
        out["symbols"] = list(self.symbols)
        return out

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "CheckCounts":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: expected an object")
        counts = {k: _num(where, d, k, 0) for k in cls.COUNTS}
        if any(not isinstance(v, int) or v < 0 for v in counts.values()):
            raise InputError(f"{where}: damaged: the counts should be whole numbers, none negative")
        cpus, symbols = d.get("missed_cpus") or [], d.get("symbols") or []
        if not isinstance(cpus, list) or any(isinstance(c, bool) or not isinstance(c, int) for c in cpus):
            raise InputError(f"{where}: damaged: 'missed_cpus' should be a list of CPU numbers")
        if not isinstance(symbols, list) or any(not isinstance(x, str) for x in symbols):
            raise InputError(f"{where}: damaged: 'symbols' should be a list of strings")
        return cls(**counts, missed_cpus=tuple(cpus), symbols=tuple(symbols))


@dataclass(frozen=True)
class CheckSection(Section):
    """summary.json ``check``: the instrumented kernel's own account of every table sync
    (measure/tablesync.py), per phase and caller (the function a call site is compiled
    into: an inlined caller is named by its parent)."""

    KEY: ClassVar[str] = "check"
    SWITCH: ClassVar[Option] = Option(
        "check", "read the check instrumentation's account of every table sync around each phase (a kernel "
                 "built with kernels/instrumentation/, e.g. by repro --audit): a skip whose flush missed a "
                 "CPU that could be walking fails the run", flag=True)

    file: Optional[str] = None
    format: Optional[int] = None
    hook: Optional[str] = None          # present | absent: whether the kernel has the series' hook
    #: phase tag -> caller function -> counts in that phase
    phases: Dict[str, Dict[str, CheckCounts]] = field(default_factory=dict)
    #: caller function -> counts over every phase
    callers: Dict[str, CheckCounts] = field(default_factory=dict)
    overflow: int = 0                   # calls the recorder could not attribute (its table was full)
    malformed: int = 0                  # lines of the file not understood, over every read
    #: phase tag -> why the file could not be read around it
    unread: Dict[str, str] = field(default_factory=dict)

    def total(self) -> CheckCounts:
        out = CheckCounts()
        for c in self.callers.values():
            out = out.plus(replace(c, symbols=()))
        return out

    def failures(self, variant: Optional[str]) -> List[str]:
        """Why this run fails the check: a skip whose flush missed a CPU (the caller, the
        CPUs), a baseline kernel that skipped at all, calls the recorder lost."""
        out: List[str] = []
        for fn, c in sorted(self.callers.items()):
            if c.violations:
                cpus = ",".join(str(x) for x in c.missed_cpus) or "unknown"
                out.append(f"table-sync check: {c.violations} of {c.skipped} skipped syncs at {fn} followed a "
                           f"flush that missed CPU {cpus}")
        skipped = self.total().skipped
        if variant == "baseline" and skipped:
            out.append(f"table-sync check: the baseline kernel skipped {skipped} syncs (it has no hook to skip with)")
        if self.overflow:
            out.append(f"table-sync check: {self.overflow} calls beyond the recorder's table of callers went "
                       f"unjudged")
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"file": self.file, "format": self.format, "hook": self.hook,
                "phases": {t: {f: c.to_dict() for f, c in per.items()} for t, per in self.phases.items()},
                "callers": {f: c.to_dict() for f, c in self.callers.items()},
                "overflow": self.overflow, "malformed": self.malformed, "unread": dict(self.unread)}

    @classmethod
    def from_dict(cls, where: str, d: Any) -> "CheckSection":
        if not isinstance(d, dict):
            raise InputError(f"{where}: damaged: 'check' should be an object")
        w = f"{where}: check"

        def table(raw: Any, what: str) -> Dict[str, CheckCounts]:
            return {str(f): CheckCounts.from_dict(f"{w}.{what}.{f}", c) for f, c in _obj(where, raw, f"check.{what}").items()}

        fmt = _num(w, d, "format", None)
        hook = d.get("hook")
        return cls(file=d.get("file") if isinstance(d.get("file"), str) else None,
                   format=None if fmt is None else int(fmt), hook=hook if isinstance(hook, str) else None,
                   phases={str(t): table(per, f"phases.{t}") for t, per in _obj(where, d.get("phases"),
                                                                                "check.phases").items()},
                   callers=table(d.get("callers"), "callers"),
                   overflow=int(_num(w, d, "overflow", 0)), malformed=int(_num(w, d, "malformed", 0)),
                   unread=_texts(d.get("unread")))


#: Every observer's section, in the order of the observers (run/observers.py): the reader
#: checks each that a run has when it loads the run.
SECTIONS: Tuple[Type[Section], ...] = (LatencySection, CostSection, VictimSection, CheckSection)


# -- lenient typed reads ------------------------------------------------------------------------

def _num(where: str, d: Mapping[str, Any], key: str, default: Optional[Number]) -> Any:
    """A number as written (an int stays an int), ``default`` when absent or null."""
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        raise InputError(f"{where}: damaged: '{key}' should be a number, is {v!r}")
    return v


def _opt_int(v: Any) -> Optional[int]:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _obj(where: str, d: Any, what: str) -> Dict[Any, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise InputError(f"{where}: damaged: {what} should be an object")
    return d


def _texts(d: Any) -> Dict[str, str]:
    return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}


__all__: List[str] = ["COST_KINDS", "CheckCounts", "CheckSection", "CostFigures", "CostSection", "LatencyCpu", "LatencySection", "SECTIONS",
                      "Section", "VictimCpu", "VictimFigures", "VictimPhase", "VictimSection"]
