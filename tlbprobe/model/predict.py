"""The engine: how many sync broadcasts and IPIs a scenario should cost.

In short (the rules, in analysis/model.yaml, name the kernel code):

* a workload's operation sends the sync broadcast a fixed number of times (its rule's
  ``per_op``, model.yaml ``workloads:`` names the workload), or as many times as its
  spec's ``broadcasts()`` works out (hugetlb unsharing: once per mmu_gather that left a
  table exclusive, with N sharers once per N-1 operations, or once per table on older
  kernels);
* ``tlb_remove_table_sync_one()`` (mm/mmu_gather.c) is ``smp_call_function()``: one IPI on
  every online CPU except the caller;
* the patch under test makes it return early when ``tlb_table_flush_implies_ipi_broadcast()``,
  which x86 sets only when the TLB flush is ``native_flush_tlb_multi()`` and there is no
  INVLPGB. Under PV flush (``kvm_flush_tlb_multi()``) or INVLPGB the sync stays, and so
  under arm64's broadcast TLBI (``tlbi-broadcast``: arm64 does not define the hook, whose
  generic answer is false), where a patched kernel sends what a baseline sends;
* TLB shootdowns go to the other CPUs of ``mm_cpumask`` (``native_flush_tlb_multi()``):
  exact for native flush, an upper bound under PV flush, unknown under INVLPGB, none
  under broadcast TLBI; a workload whose flushes follow another rule says so in its
  spec's ``tlb_ipis()``.

No workload's name is written here: what differs between workloads is asked of its spec
(tlbprobe/workloads/spec.py, WorkloadSpec). Pure: a :class:`Scenario` in, a
:class:`Prediction` out, the parameters passed in (:class:`ModelParams`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ..errors import InputError
from ..units import format_size
from ..vocab import ADDRESS_SPACE_MAX
from ..workloads import WorkloadSpec
from ..workloads import spec as workload_spec
from ..workloads.spec import plain as _n
from .rules import ModelParams, Rule
from .scenario import Scenario


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
    """Operations a size implies, as the workload's spec says (2 MiB ranges for a
    collapse; for hugetlb the size gives tables, see tables_from_size, and one operation)."""
    if size < 0:
        raise InputError(f"size must not be negative, got {size}")
    if size > ADDRESS_SPACE_MAX:
        raise InputError(f"--size {format_size(size)} is larger than any process can map (at most "
                         f"2^{ADDRESS_SPACE_MAX.bit_length() - 1} bytes = 64 PiB, x86_64's user address space with "
                         f"5-level paging)")
    return workload_spec(workload).ops_from_size(size)


def with_workload_rules(params: ModelParams, specs: Iterable[WorkloadSpec]) -> ModelParams:
    """``params`` with the rules these workloads bring (WorkloadSpec.rules: a plug-in's,
    which cannot be in analysis/model.yaml), where the file has no rule of that id."""
    extra: Dict[str, Rule] = {r.id: r for s in specs for r in s.rules if r.id not in params.rules}
    return replace(params, rules={**params.rules, **extra}) if extra else params


def predict(scenario: Scenario, params: ModelParams) -> Prediction:
    """Apply the rules of ``params`` to ``scenario``."""
    spec = workload_spec(scenario.workload)  # an old spelling (its aliases) becomes the name
    s = spec.validate(replace(scenario.checked(), workload=spec.name))
    params = with_workload_rules(params, (spec,))
    notes: List[str] = []
    base, base_rules, base_why = _unpatched_broadcasts(s, spec, params, notes)
    broadcasts, rules, why, alternatives = _apply_variant(s, params, base, base_rules, base_why)
    fanout = params.rule("sync-fanout")
    others = s.online_cpus - 1
    if broadcasts is None:
        ipis: Optional[float] = None
        ipi_why = "unknown, because the number of broadcasts is unknown"
    else:
        ipis = broadcasts * others
        ipi_why = f"{_n(broadcasts)} broadcasts x {others} other online CPU{'s' if others != 1 else ''}"
    tlb, tlb_max, tlb_rules, tlb_why = (_no_shootdowns(s, params) or spec.tlb_ipis(s, params, notes)
                                        or _mm_cpumask_tlb(s, params, notes))
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


def _unpatched_broadcasts(s: Scenario, spec: WorkloadSpec, params: ModelParams,
                          notes: List[str]) -> Tuple[float, Tuple[str, ...], str]:
    """Broadcasts an unpatched kernel sends for the scenario: the spec's own count, else
    the rule whose ``workloads:`` names it."""
    own = spec.broadcasts(s, params, notes)
    if own is not None:
        return own
    r = per_op_rule(params, s.workload)
    if r is None:
        raise InputError(f"{params.source}: no rule counts the broadcasts of workload {s.workload!r}: name it in "
                         f"a rule's workloads: list, or give its spec a broadcasts()")
    per = r.per_op if r.per_op is not None else 1.0
    if per == 0:
        return 0.0, (r.id,), r.text
    return s.ops * per, (r.id,), f"{_n(s.ops)} {spec.ops_unit} x {_n(per)}: {r.text}"


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


def _no_shootdowns(s: Scenario, params: ModelParams
                   ) -> Optional[Tuple[Optional[float], Optional[float], Tuple[str, ...], str]]:
    """Under arm64's broadcast TLBI no flush sends an IPI, whatever the workload's flushes
    are (so before its spec's tlb_ipis() is asked); None for the other flush modes."""
    if s.flush_mode != "tlbi-broadcast":
        return None
    r = params.rule("tlb-tlbi-broadcast")
    return 0.0, 0.0, (r.id,), r.text


def _mm_cpumask_tlb(
    s: Scenario, params: ModelParams, notes: List[str]
) -> Tuple[Optional[float], Optional[float], Tuple[str, ...], str]:
    """TLB-shootdown IPIs on the other CPUs: they follow mm_cpumask, not the online CPUs
    (one flush per operation, as a collapse's pmdp_collapse_flush() does)."""
    others = s.mm_cpus - 1
    native = params.rule("tlb-native")
    if others == 0:
        notes.append(
            "TLB shootdowns: the mm runs on one CPU, so none are expected; CPUs the task ran on "
            "before pinning can stay in mm_cpumask until it is trimmed and add a few"
        )
        return 0.0, 0.0, (native.id,), "the mm runs on the driver CPU only: no remote flush"
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
