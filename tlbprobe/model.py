"""The reference model: how many sync broadcasts and IPIs a page-table operation should cost.

Every number the model gives comes from a rule in ``analysis/model.yaml``, and every rule
mirrors a kernel function (the YAML names it, with the commit that introduced the
behaviour). In short:

* ``collapse_huge_page()`` (mm/khugepaged.c) calls ``tlb_remove_table_sync_one()`` once
  per collapsed PMD (since 2ba99c5e0881).
* hugetlb PMD unsharing calls it once per mmu_gather that left a table exclusive, via
  ``huge_pmd_unshare_flush()`` -> ``tlb_flush_unshared_tables()`` (since 8ce720d5bd91),
  so with N sharers unsharing in turn once per N-1 operations; once per unshared table
  between 1013af4f585f and that commit; not at all before 1013af4f585f, nor for a
  mapping that cannot share (``vma_shareable()``).
* ``tlb_remove_table_sync_one()`` (mm/mmu_gather.c) is ``smp_call_function()``: one IPI on
  every online CPU except the caller.
* The patch under test makes it return early when ``tlb_table_flush_implies_ipi_broadcast()``,
  which x86 sets only when the TLB flush is ``native_flush_tlb_multi()`` and there is no
  INVLPGB. Under PV flush (``kvm_flush_tlb_multi()``) or INVLPGB the sync stays.
* TLB shootdowns go to the other CPUs of ``mm_cpumask`` (``native_flush_tlb_multi()``):
  exact for native flush, an upper bound under PV flush, unknown under INVLPGB.

The model is pure: a :class:`Scenario` in, a :class:`Prediction` out, parameters passed in
explicitly (:class:`ModelParams`), no global state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .datafiles import locate
from .errors import InputError
from .vocab import FLUSH_MODES, HUGETLB_ERAS, PMD_SIZE, PUD_SIZE, WORKLOAD_ALIASES, WORKLOADS  # noqa: F401
from .vocab import HUGETLB_OPERATION_ALIASES as UNSHARE_ALIASES
from .vocab import HUGETLB_OPERATIONS as UNSHARE_KINDS
from .vocab import KERNEL_VARIANTS as VARIANTS  # noqa: F401


DEFAULT_PARAMS_PATH = locate("analysis", "model.yaml")


@dataclass(frozen=True)
class Rule:
    """One rule of the model, as written in analysis/model.yaml."""

    id: str
    function: str
    file: str
    since: str
    text: str
    per_op: Optional[float] = None
    per_table: Optional[float] = None
    per_op_per_mm_cpu: Optional[float] = None
    skips_when_flush_mode: Tuple[str, ...] = ()
    #: workloads whose broadcasts this rule counts, ``per_op`` per operation (model.yaml
    #: ``workloads:``): a new workload that syncs once per operation is one entry here
    workloads: Tuple[str, ...] = ()

    def cite(self) -> str:
        """'function (file)' for one-line citations."""
        return f"{self.function}() ({self.file})" if self.function != "none" else self.text


@dataclass(frozen=True)
class Tolerance:
    """How far measured may be from expected before the verdict says 'does not match'."""

    sigma: float = 3.0
    relative: float = 0.02
    absolute: float = 3.0
    noisy_fraction: float = 0.25


@dataclass(frozen=True)
class ModelParams:
    rules: Mapping[str, Rule]
    default_hugetlb_unshare: str = "batched"
    verdict: Tolerance = Tolerance()
    source: str = "built-in"

    def rule(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise InputError(f"{self.source}: the model needs rule {rule_id!r}, which is missing") from None


REQUIRED_RULES = (
    "collapse-sync",
    "sync-fanout",
    "hugetlb-unshare-batched",
    "hugetlb-unshare-per-table",
    "hugetlb-unshare-none",
    "hugetlb-no-share",
    "patched-skip",
    "tlb-native",
    "tlb-pv",
    "tlb-invlpgb",
    "tlb-hugetlb",
    "idle",
)


def load_params(path: Optional[Path] = None) -> ModelParams:
    """Read the model's parameters from YAML (analysis/model.yaml unless ``path`` is given).

    Raises InputError naming the file when it is missing or malformed, so a typo in the
    parameters never silently turns into a wrong prediction.
    """
    import yaml  # imported here so `tlbprobe --help` stays fast

    p = Path(path) if path else DEFAULT_PARAMS_PATH
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: model parameters not found (pass --params FILE)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{p}{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or data.get("format") != "tlbprobe-model/1":
        raise InputError(f"{p}: not a tlbprobe model file (expected 'format: tlbprobe-model/1')")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, dict):
        raise InputError(f"{p}: 'rules' must be a mapping of rule id to rule")
    rules: Dict[str, Rule] = {}
    for rid, r in raw_rules.items():
        if not isinstance(r, dict):
            raise InputError(f"{p}: rule {rid!r} must be a mapping")
        missing = [k for k in ("function", "file", "since", "text") if k not in r]
        if missing:
            raise InputError(f"{p}: rule {rid!r} lacks {', '.join(missing)}")
        try:
            rules[rid] = Rule(
                id=str(rid),
                function=str(r["function"]),
                file=str(r["file"]),
                since=str(r["since"]),
                text=str(r["text"]),
                per_op=_opt_float(r.get("per_op")),
                per_table=_opt_float(r.get("per_table")),
                per_op_per_mm_cpu=_opt_float(r.get("per_op_per_mm_cpu")),
                skips_when_flush_mode=tuple(r.get("skips_when_flush_mode") or ()),
                workloads=tuple(str(w) for w in (r.get("workloads") or ())),
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"{p}: rule {rid!r}: {e}") from None
    for rid in REQUIRED_RULES:
        if rid not in rules:
            raise InputError(f"{p}: rule {rid!r} is missing")
    era = data.get("default_hugetlb_unshare", "batched")
    if era not in HUGETLB_ERAS:
        raise InputError(f"{p}: default_hugetlb_unshare must be one of {', '.join(HUGETLB_ERAS)}")
    v = data.get("verdict") or {}
    try:
        tol = Tolerance(**{k: float(v[k]) for k in ("sigma", "relative", "absolute", "noisy_fraction") if k in v})
    except (TypeError, ValueError) as e:
        raise InputError(f"{p}: verdict: {e}") from None
    return ModelParams(rules=rules, default_hugetlb_unshare=era, verdict=tol, source=str(p))


def _opt_float(v: Any) -> Optional[float]:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Scenario:
    """What was (or will be) run: the model's inputs.

    ``ops`` counts operations: collapsed PMDs, or unsharing calls (munmap, mprotect, ...).
    ``mm_cpus`` counts CPUs that run the process's mm (the driver plus its threads).
    Hugetlb: ``sharers`` processes map the range (one holds it, the others unshare in
    turn, as the hugetlb workload does), ``control`` means a MAP_PRIVATE mapping that
    cannot share.
    ``variant`` None and ``flush_mode`` "unknown" are allowed: the model then answers
    only where the answer does not depend on them.
    """

    workload: str
    ops: int
    online_cpus: int
    mm_cpus: int = 1
    variant: Optional[str] = "baseline"
    flush_mode: str = "native"
    unshare_kind: Optional[str] = None
    tables_per_op: int = 1
    hugetlb_unshare: Optional[str] = None
    sharers: int = 2
    control: bool = False
    #: hugetlb-db: client exits that left the tables exclusive, as the driver counted them
    exclusive_ops: Optional[int] = None

    def validated(self) -> "Scenario":
        """A normalised copy; InputError for anything the model cannot reason about."""
        workload = WORKLOAD_ALIASES.get(self.workload, self.workload)
        if workload not in WORKLOADS:
            raise InputError(f"unknown workload {self.workload!r}: use one of {', '.join(WORKLOADS)}")
        if self.flush_mode not in FLUSH_MODES:
            raise InputError(f"unknown flush mode {self.flush_mode!r}: use one of {', '.join(FLUSH_MODES)}")
        if self.variant is not None and self.variant not in VARIANTS:
            raise InputError(f"unknown kernel variant {self.variant!r}: use baseline or patched")
        if int(self.online_cpus) < 1:
            raise InputError(f"online CPUs must be at least 1, got {self.online_cpus}")
        if int(self.ops) < 0:
            raise InputError(f"operation count must not be negative, got {self.ops}")
        if not 1 <= int(self.mm_cpus) <= int(self.online_cpus):
            raise InputError(
                f"CPUs running the mm ({self.mm_cpus}) must be between 1 and the online CPUs ({self.online_cpus})"
            )
        if int(self.tables_per_op) < 1:
            raise InputError(f"PMD tables per operation must be at least 1, got {self.tables_per_op}")
        if workload == "hugetlb-db" and int(self.sharers) < 1:
            raise InputError(f"servers (--sharers) must be at least 1, got {self.sharers}")
        if workload != "hugetlb-db" and int(self.sharers) < 2:
            raise InputError(f"sharers must be at least 2 (the holder and one unsharer), got {self.sharers}")
        if self.hugetlb_unshare is not None and self.hugetlb_unshare not in HUGETLB_ERAS:
            raise InputError(f"unknown hugetlb unshare behaviour {self.hugetlb_unshare!r}: use {', '.join(HUGETLB_ERAS)}")
        kind = self.unshare_kind
        if kind is not None:
            kind = UNSHARE_ALIASES.get(kind, kind)
        return Scenario(
            workload=workload,
            ops=int(self.ops),
            online_cpus=int(self.online_cpus),
            mm_cpus=int(self.mm_cpus),
            variant=self.variant,
            flush_mode=self.flush_mode,
            unshare_kind=kind if workload == "hugetlb-unshare" else None,
            tables_per_op=int(self.tables_per_op),
            hugetlb_unshare=self.hugetlb_unshare,
            sharers=int(self.sharers),
            control=bool(self.control),
            exclusive_ops=None if self.exclusive_ops is None else int(self.exclusive_ops),
        )


@dataclass(frozen=True)
class Figure:
    """One predicted number with the rules that produced it. ``value`` None: the model cannot say."""

    value: Optional[float]
    rules: Tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Prediction:
    scenario: Scenario
    sync_broadcasts: Figure
    sync_ipis: Figure
    tlb_ipis: Figure
    tlb_ipis_max: Optional[float] = None
    notes: Tuple[str, ...] = ()
    #: When the answer depends on an unknown input: {"baseline": n, "patched": m} etc.
    alternatives: Mapping[str, float] = field(default_factory=dict)

    @property
    def cal_other_cpus(self) -> Optional[float]:
        """CAL expected on the other CPUs beyond background: on x86 CAL counts TLB IPIs too."""
        if self.sync_ipis.value is None or self.tlb_ipis.value is None:
            return None
        return self.sync_ipis.value + self.tlb_ipis.value

    @property
    def sync_ipis_per_other_cpu(self) -> Optional[float]:
        """Each other online CPU receives every broadcast once."""
        return self.sync_broadcasts.value

    def to_dict(self) -> Dict[str, Any]:
        return {
            # exclusive_ops only where a workload counts it (hugetlb-db): older keys unchanged
            "scenario": {k: v for k, v in asdict(self.scenario).items() if k != "exclusive_ops" or v is not None},
            "sync_broadcasts_expected": self.sync_broadcasts.value,
            "sync_ipis_expected": self.sync_ipis.value,
            "sync_ipis_per_other_cpu_expected": self.sync_ipis_per_other_cpu,
            "tlb_ipis_expected": self.tlb_ipis.value,
            "tlb_ipis_max": self.tlb_ipis_max,
            "cal_other_cpus_expected": self.cal_other_cpus,
            "figures": {
                name: {"value": f.value, "rules": list(f.rules), "why": f.why}
                for name, f in (
                    ("sync_broadcasts", self.sync_broadcasts),
                    ("sync_ipis", self.sync_ipis),
                    ("tlb_ipis", self.tlb_ipis),
                )
            },
            "alternatives": dict(self.alternatives),
            "notes": list(self.notes),
        }


def ops_from_size(workload: str, size: int) -> int:
    """Operations a size implies: 2 MiB ranges for collapse; for hugetlb the size gives
    tables (see :func:`tables_from_size`), and the operation count defaults to one."""
    workload = WORKLOAD_ALIASES.get(workload, workload)
    if size < 0:
        raise InputError(f"size must not be negative, got {size}")
    if workload in ("collapse", "khugepaged"):
        return size // PMD_SIZE
    if workload in ("hugetlb-unshare", "hugetlb-db"):
        return 1
    return 0


def tables_from_size(size: int) -> int:
    """Shared PMD tables a hugetlb mapping of ``size`` bytes uses: one per 1 GiB (PUD_SIZE)."""
    return max(1, size // PUD_SIZE)


def predict(scenario: Scenario, params: ModelParams) -> Prediction:
    """Apply the rules of ``params`` to ``scenario``."""
    s = scenario.validated()
    notes: List[str] = []
    base, base_rules, base_why = _unpatched_broadcasts(s, params, notes)
    broadcasts, rules, why, alternatives = _apply_variant(s, params, base, base_rules, base_why)
    fanout = params.rule("sync-fanout")
    others = s.online_cpus - 1
    if broadcasts is None:
        ipis: Optional[float] = None
        ipi_why = "unknown, because the number of broadcasts is unknown"
    else:
        ipis = broadcasts * others
        ipi_why = f"{_n(broadcasts)} broadcasts x {others} other online CPU{'s' if others != 1 else ''}"
    tlb, tlb_max, tlb_rules, tlb_why = _tlb_ipis(s, params, notes)
    if others == 0:
        notes.append("one online CPU: a broadcast has no target")
    return Prediction(
        scenario=s,
        sync_broadcasts=Figure(broadcasts, rules, why),
        sync_ipis=Figure(ipis, rules + (fanout.id,), ipi_why),
        tlb_ipis=Figure(tlb, tlb_rules, tlb_why),
        tlb_ipis_max=tlb_max,
        notes=tuple(notes),
        alternatives={k: v * others for k, v in alternatives.items()},
    )


def per_op_rule(params: ModelParams, workload: str) -> Optional[Rule]:
    """The rule that names ``workload`` in its ``workloads:`` list, if one does."""
    found = [r for r in params.rules.values() if workload in r.workloads]
    return found[0] if found else None


def _unpatched_broadcasts(s: Scenario, params: ModelParams, notes: List[str]) -> Tuple[float, Tuple[str, ...], str]:
    """Broadcasts an unpatched kernel sends for the scenario."""
    r = per_op_rule(params, s.workload)
    if r is not None:  # a workload that syncs a fixed number of times per operation
        per = r.per_op if r.per_op is not None else 1.0
        if per == 0:
            return 0.0, (r.id,), r.text
        return s.ops * per, (r.id,), f"{_n(s.ops)} collapses x {_n(per)}: {r.text}"
    return _BROADCASTS[s.workload](s, params, notes)


def _hugetlb_unshare(s: Scenario, params: ModelParams, notes: List[str]) -> Tuple[float, Tuple[str, ...], str]:
    """hugetlb-unshare: N sharers, one holds, the others unshare in turn."""
    era = s.hugetlb_unshare or params.default_hugetlb_unshare
    if s.unshare_kind is not None and s.unshare_kind not in UNSHARE_KINDS:
        notes.append(f"unshare operation {s.unshare_kind!r} is not one the model knows; treated like munmap")
    if s.control:
        r = params.rule("hugetlb-no-share")
        return 0.0, (r.id,), r.text
    if s.unshare_kind == "partial-munmap":
        notes.append(
            "partial munmap inside a shared 1 GiB range: the VMA split unshares the table it cuts "
            "(hugetlb_split() -> hugetlb_unshare_pmds(), its own mmu_gather); the unmap then finds "
            "nothing shared: one table per operation"
        )
    if era == "batched":
        r = params.rule("hugetlb-unshare-batched")
        per = (r.per_op if r.per_op is not None else 1.0) / (s.sharers - 1)
        why = f"{_n(s.ops)} unshare operations"
        if s.sharers > 2:
            why += f" / {s.sharers - 1} unsharers (only the last of each round leaves a table exclusive)"
        return s.ops * per, (r.id,), f"{why}: {r.text}"
    if era == "per-table":
        r = params.rule("hugetlb-unshare-per-table")
        per = r.per_table if r.per_table is not None else 1.0
        tables = 1 if s.unshare_kind == "partial-munmap" else s.tables_per_op
        n = s.ops * tables * per
        return n, (r.id,), f"{_n(s.ops)} operations x {tables} table{'s' if tables != 1 else ''}: {r.text}"
    r = params.rule("hugetlb-unshare-none")
    return 0.0, (r.id,), r.text


def _hugetlb_db(s: Scenario, params: ModelParams, notes: List[str]) -> Tuple[float, Tuple[str, ...], str]:
    """hugetlb-db: ``ops`` client sessions exit from a segment ``sharers`` servers keep
    mapped. Batched unshare: a broadcast only for an exit that leaves the tables
    exclusive (``exclusive_ops``, counted by the driver: with one server and no other
    client attached); per-table: every exit, for every table it shared."""
    era = s.hugetlb_unshare or params.default_hugetlb_unshare
    if era == "batched":
        r = params.rule("hugetlb-unshare-batched")
        per = r.per_op if r.per_op is not None else 1.0
        if s.exclusive_ops is not None:
            n = s.exclusive_ops
            why = f"{_n(n)} of {_n(s.ops)} client exits left the tables to one server alone"
        elif s.sharers == 1:
            n = s.ops
            why = f"{_n(n)} client exits, each leaving the tables to the one server (sessions not overlapping)"
        else:
            n = 0
            why = f"{s.sharers} servers keep the tables shared: no client exit leaves them exclusive"
        if s.sharers > 1:
            notes.append("0 expected: evidence only with the sharing shown (sessions_shared) and a positive control "
                         "(--sharers 1) that sends one broadcast per session")
        return n * per, (r.id,), f"{why}: {r.text}"
    if era == "per-table":
        r = params.rule("hugetlb-unshare-per-table")
        per = r.per_table if r.per_table is not None else 1.0
        return (s.ops * s.tables_per_op * per, (r.id,),
                f"{_n(s.ops)} client exits x {s.tables_per_op} table{'s' if s.tables_per_op != 1 else ''}: {r.text}")
    r = params.rule("hugetlb-unshare-none")
    return 0.0, (r.id,), r.text


def db_exclusive_exits(sessions: int, rate: float, work_ms: float) -> int:
    """hugetlb-db with one server, sessions started every 1/rate s and attached work_ms
    each: an exit leaves the tables exclusive when no other client is attached. On that
    even schedule, either each session ends before the next starts (every exit does), or
    each next one starts before the last ends (only the final exit does). A real run's
    timing jitters, which is why a run's own count (exclusive_exits) is what the report
    predicts from."""
    if sessions <= 0:
        return 0
    return sessions if work_ms / 1000.0 < 1.0 / rate else 1


#: Workloads whose broadcasts are not a fixed number per operation (model.yaml has no
#: ``workloads:`` rule for them): how their count follows from the scenario.
_BROADCASTS = {"hugetlb-unshare": _hugetlb_unshare, "hugetlb-db": _hugetlb_db}


def _apply_variant(
    s: Scenario, params: ModelParams, base: float, base_rules: Tuple[str, ...], base_why: str
) -> Tuple[Optional[float], Tuple[str, ...], str, Dict[str, float]]:
    """The patch removes the broadcast only where the preceding flush already IPI'd everyone."""
    if base == 0:
        return base, base_rules, base_why, {}
    skip = params.rule("patched-skip")
    skips = s.flush_mode in (skip.skips_when_flush_mode or ("native",))
    rules = base_rules + (skip.id,)
    if s.variant == "baseline":
        return base, base_rules, base_why, {}
    if s.flush_mode == "unknown":
        if s.variant == "patched":
            why = f"flush mode unknown: a patched kernel sends {_n(base)} under pv/invlpgb, 0 under native"
        else:
            why = f"kernel variant and flush mode unknown: {_n(base)} unless a patched kernel runs native flush"
        return None, rules, why, {"if native": 0.0, "if pv or invlpgb": base}
    if s.variant == "patched":
        if skips:
            return 0.0, rules, f"{skip.text}: flush mode is {s.flush_mode}, all {_n(base)} skipped", {}
        return base, rules, f"{base_why}; {skip.text}: flush mode {s.flush_mode} keeps them", {}
    # variant unknown
    if skips:
        why = f"kernel variant unknown: baseline sends {_n(base)}, patched 0 under {s.flush_mode} flush"
        return None, rules, why, {"baseline": base, "patched": 0.0}
    return base, rules, f"{base_why} (either variant: {s.flush_mode} flush keeps the sync)", {}


def _tlb_ipis(
    s: Scenario, params: ModelParams, notes: List[str]
) -> Tuple[Optional[float], Optional[float], Tuple[str, ...], str]:
    """TLB-shootdown IPIs on the other CPUs: they follow mm_cpumask, not the online CPUs."""
    others = s.mm_cpus - 1
    if s.workload == "idle":
        r = params.rule("idle")
        return 0.0, 0.0, (r.id,), r.text
    if s.workload == "khugepaged":  # sent from khugepaged's CPU, to every CPU the mm ran on
        r = params.rule("tlb-khugepaged")
        upper = float(s.ops * s.mm_cpus)
        return None, upper, (r.id,), f"at most {_n(upper)}: {r.text}"
    native = params.rule("tlb-native")
    if others == 0:
        notes.append(
            "TLB shootdowns: the mm runs on one CPU, so none are expected; CPUs the task ran on "
            "before pinning can stay in mm_cpumask until it is trimmed and add a few"
        )
        return 0.0, 0.0, (native.id,), "the mm runs on the driver CPU only: no remote flush"
    if s.workload in ("hugetlb-unshare", "hugetlb-db"):
        r = params.rule("tlb-hugetlb")
        return None, None, (r.id,), r.text
    per = native.per_op_per_mm_cpu if native.per_op_per_mm_cpu is not None else 1.0
    upper = s.ops * others * per
    if s.flush_mode == "native":
        return upper, upper, (native.id,), f"{_n(s.ops)} collapses x {others} other mm CPUs: {native.text}"
    if s.flush_mode == "pv":
        r = params.rule("tlb-pv")
        return None, upper, (r.id,), f"at most {_n(upper)}: {r.text}"
    if s.flush_mode == "invlpgb":
        r = params.rule("tlb-invlpgb")
        return None, upper, (r.id,), f"at most {_n(upper)}: {r.text}"
    return None, upper, (native.id,), f"flush mode unknown: at most {_n(upper)}"


def _n(x: float) -> str:
    """A count without a spurious '.0'."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class CostProjection:
    """What the broadcasts of a prediction cost in time, from a run's measured figures
    (collect --cost): the receivers' CPU time adds up over the other CPUs; the initiator
    waits for the slowest target of each broadcast."""

    broadcasts: float
    other_cpus: int
    per_ipi_ns: float              # the receiver's handler per sync IPI, tracepoints subtracted
    wait_p50_ns: float             # the initiator's wait per broadcast, measured at measured_cpus
    wait_p99_ns: float
    measured_cpus: int
    receivers_ms: float
    initiator_ms_low: float        # every broadcast waits the measured median: a floor
    initiator_ms_likely: float     # the measured p99: the slowest of more targets is slower
    warnings: Tuple[str, ...]


def project_cost(pred: "Prediction", cost: "CostSection | Mapping[str, Any] | None", measured_cpus: int,
                 flush_mode: str, emulated: bool) -> CostProjection:
    """Project a run's measured cost figures (its summary.json ``cost``: ``run.section(CostSection)``,
    or the section's dict) onto ``pred``'s machine and operation count."""
    from .rundir.sections import CostSection

    if isinstance(cost, Mapping):
        cost = CostSection.from_dict("summary.json", cost) if cost else None
    if cost is None or cost.per_ipi_ns_corrected is None:
        raise InputError("the run has no handler time per sync IPI (collect it with --cost, on a kernel that "
                         "sends the broadcast)")
    broadcasts = pred.sync_broadcasts.value
    if broadcasts is None:
        raise InputError("the model has no single broadcast count for this scenario: give --kernel and --flush")
    ini = cost.figures("workload", "initiator")
    others = pred.scenario.online_cpus - 1
    per_ipi = float(cost.per_ipi_ns_corrected)
    p50, p99 = float(ini.p50_ns or 0.0), float(ini.p99_ns or 0.0)
    warnings = []
    if emulated:
        warnings.append("measured under TCG emulation: times are the emulator's, not a CPU's; do not quote them")
    elif flush_mode == "pv":
        warnings.append("measured in a paravirtual guest: interrupt delivery and VM exits cost more than on bare "
                        "metal; not transferable to bare metal")
    if measured_cpus != pred.scenario.online_cpus:
        warnings.append(f"measured on {measured_cpus} CPUs: the initiator's wait at {pred.scenario.online_cpus} is "
                        f"extrapolated (it waits for the slowest of {others} targets)")
    return CostProjection(broadcasts, others, per_ipi, p50, p99, measured_cpus,
                          receivers_ms=broadcasts * others * per_ipi / 1e6,
                          initiator_ms_low=broadcasts * p50 / 1e6, initiator_ms_likely=broadcasts * p99 / 1e6,
                          warnings=tuple(warnings))


#: HPAGE_PMD_NR with 4 KiB pages: khugepaged_scan_mm_slot() counts this much progress per
#: 2 MiB range it scans, collapsed or not (mm/khugepaged.c).
KHUGEPAGED_PAGES_PER_RANGE = PMD_SIZE // 4096


def khugepaged_max_rate(pages_to_scan: int, scan_sleep_ms: int) -> Optional[float]:
    """The most collapses (= sync broadcasts) per second khugepaged can make (model.yaml
    khugepaged-rate): pages_to_scan / 512 ranges per wake-up, one wake-up per scan_sleep
    interval; the scan's own time only lowers it. None when scan_sleep is 0 (it then never
    sleeps while it has work)."""
    if scan_sleep_ms <= 0:
        return None
    return (pages_to_scan // KHUGEPAGED_PAGES_PER_RANGE) / (scan_sleep_ms / 1000.0)


def khugepaged_seconds_to_collapse(ranges: int, pages_to_scan: int, scan_sleep_ms: int) -> float:
    """The least time khugepaged needs to collapse ``ranges`` 2 MiB ranges: the first
    wake-up comes at once (MADV_HUGEPAGE wakes it), each further one after a sleep."""
    per_wake = max(1, pages_to_scan // KHUGEPAGED_PAGES_PER_RANGE)
    return (-(-ranges // per_wake) - 1) * scan_sleep_ms / 1000.0
