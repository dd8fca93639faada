"""WorkloadSpec: everything tlbprobe knows about a workload without running it.

Every workload has one ``WorkloadSpec`` instance: ``SPEC`` in its folder's spec.py
(tlbprobe/workloads/<folder>/spec.py), or, for a workload of another package, the object
its ``tlbprobe.workloads`` entry point names (tlbprobe/workloads/__init__.py finds both).
The model, `tlbprobe model`, `tlbprobe collect --help`, job files and the report take
from it all they need to know about the workload, so none of them names one.

A spec is pure: importable on any machine, without root. It imports no driver, no pandas,
nothing that reads the kernel; it names its driver (what runs as root, a subclass of
workloads/base.py ``Workload``) as ``"module:Class"``, imported only when a collect asks
for it.

The fields say what the workload is. The methods are small hooks, each with a default
that fits a workload which sends a fixed number of sync broadcasts per operation (the
analysis/model.yaml rule whose ``workloads:`` list names it) and whose TLB flushes follow
mm_cpumask like a collapse's: such a workload sets the fields and overrides
``ops_from_size`` at most (tests/data/plugin_example/ is one, as a plug-in). The hooks
get the model's :class:`Scenario` (tlbprobe/model/scenario.py), its parameters
(:class:`ModelParams`, tlbprobe/model/rules.py) and, in the report, the recorded run
(:class:`Run`, tlbprobe/rundir/reader.py); they only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError
from ..units import format_size
from ..ui.numbers import fmt_num
from ..options import Option
from ..vocab import FIGURE_KINDS, PMD_SIZE, RATE

if TYPE_CHECKING:
    from ..rundir.reader import Run
# "Scenario", "ModelParams" and "Rule" in the annotations below are the model's records
# (tlbprobe/model/scenario.py, model/rules.py). They are not imported, not even for type
# checking: the model's engine (model/predict.py) asks the specs, so the specs stand
# below the model and receive its records as arguments.

#: (broadcasts an unpatched kernel sends, the rules behind the number, why): a model answer
Count = Tuple[float, Tuple[str, ...], str]
#: (TLB-shootdown IPIs on the other CPUs or None, their upper bound or None, rules, why)
TlbCount = Tuple[Optional[float], Optional[float], Tuple[str, ...], str]
#: One repeat's workload_figures (summary.json), the driver's own figures
Figures = Mapping[str, float]


@dataclass(frozen=True)
class ReportFigure:
    """A per-repeat figure a workload adds to the report's comparison table (with spread
    and significance, like the common ones of report/compare.py FIGURES), read from its
    driver's ``PhaseOutcome.figures`` (summary.json ``workload_figures``)."""

    key: str         # the report's name of it (JSON per_repeat, comparisons' figures)
    label: str       # the table's row label
    unit: str
    digits: int
    figure: str      # the workload_figures key it is read from
    #: what it is (vocab.py FIGURE_KINDS): a time (GUP-fast's ns per page, its calls per
    #: second) is never tested nor shown as a saving in an emulated run
    kind: str = RATE

    def __post_init__(self) -> None:
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f"report figure {self.key}: kind {self.kind!r} is none of {', '.join(FIGURE_KINDS)}")


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload, described. See the module docstring; each hook says its default."""

    #: the name job files, --workload, run.yaml and summary.json use
    name: str
    #: one line: what the workload does (listings, the architecture notes)
    description: str
    #: "module:Class" of its driver (a workloads/base.py Workload), imported only to run it
    driver: str
    #: what one operation is called in summaries ("collapses", "unshares")
    ops_unit: str = "operations"
    #: other spellings of the name that older job files, summaries and `tlbprobe model` used;
    #: `tlbprobe model --workload` offers the first beside the names
    aliases: Tuple[str, ...] = ()
    #: its own job keys and collect --flags, in the order --help lists them (workloads/base.py)
    options: Tuple[Option, ...] = ()
    #: False when the broadcasts come from a kernel thread on any CPU (khugepaged): every
    #: online CPU is then a receiver, and the count is not limited to the driver's sends
    sender_is_driver: bool = True
    #: False: it has no measured phase of its own, its idle windows are the measurement
    has_workload_phase: bool = True
    #: the workload collect runs when none is named (one built-in has it)
    default: bool = False
    #: where listings (--workload choices, --help groups) put it: ascending, plug-ins last
    order: int = 100
    #: operations `tlbprobe model` assumes without --size or --ops; None: it needs one of them
    default_ops: Optional[int] = 0
    #: its `tlbprobe model` flags (Option records; kind may be float there): a flag named
    #: like a Scenario field sets that field, the others reach scenario_from_flags()
    model_flags: Tuple[Option, ...] = ()
    #: figures of its own the report compares repeat by repeat
    report_figures: Tuple[ReportFigure, ...] = ()
    #: rules it brings to the model (a plug-in, which cannot add to analysis/model.yaml):
    #: used where the parameter file has no rule of the same id
    rules: Tuple["Rule", ...] = ()
    #: the report's race line: what its ``collapses_refused`` figure counts under --race
    refused_label: str = "operations not counted"
    #: the model rule that says why this workload's TLB flushes are not modelled once its mm
    #: runs on more than one CPU (the hugetlb workloads: munmap and exit flush on their own)
    tlb_unmodelled: Optional[str] = None

    # -- the guest ------------------------------------------------------------------------
    def memory_for(self, job: Any) -> Optional[int]:
        """The bytes a resolved job holds in memory at once (None: not known before the
        host sizes it): its size, unless the workload holds less (a streamed collapse).
        Sizes the QEMU guest (commands/qemu.py guest_memory_for_jobs)."""
        return job.size

    # -- the model ------------------------------------------------------------------------
    def ops_from_size(self, size: int) -> int:
        """Operations a size in bytes implies (`tlbprobe model --size`). Default 0."""
        return 0

    def validate(self, s: "Scenario") -> "Scenario":
        """Check and normalise the scenario fields only this workload uses (InputError for
        what the model cannot reason about). Default: sharers as the hugetlb layout needs
        them (a holder and an unsharer), no unshare operation."""
        if s.sharers < 2:
            raise InputError(f"sharers must be at least 2 (the holder and one unsharer), got {s.sharers}")
        return replace(s, unshare_kind=None)

    def broadcasts(self, s: "Scenario", params: "ModelParams", notes: List[str]) -> Optional[Count]:
        """The sync broadcasts an unpatched kernel sends for ``s``, when they do not follow
        from a per-operation rule; may add notes. Default None: the analysis/model.yaml rule
        whose ``workloads:`` names this workload, ``per_op`` per operation."""
        return None

    def tlb_ipis(self, s: "Scenario", params: "ModelParams", notes: List[str]) -> Optional[TlbCount]:
        """The TLB-shootdown IPIs on the other CPUs, when they do not follow the default
        rule; may add notes. Default None: one flush per operation of every other CPU in
        mm_cpumask (tlb-native, tlb-pv, tlb-invlpgb), as a collapse sends; with
        ``tlb_unmodelled`` set, that rule's "not modelled" once the mm runs on more than
        one CPU."""
        if self.tlb_unmodelled and s.mm_cpus > 1:
            r = params.rule(self.tlb_unmodelled)
            return None, None, (r.id,), r.text
        return None

    def alternatives(self, s: "Scenario", params: "ModelParams") -> Sequence[Tuple["Scenario", str]]:
        """Other readings of the kernel to try when a run does not match (after the flush
        mode and the variant): (scenario, the likely reason if it fits). Default none."""
        return ()

    # -- `tlbprobe model` -----------------------------------------------------------------
    def scenario_from_flags(self, s: "Scenario", flags: Mapping[str, Any]) -> "Scenario":
        """The scenario with what this workload's model flags say (``flags``: every model
        flag's value by key, defaults filled in). Default: ``s`` as it is."""
        return s

    def model_what(self, s: "Scenario") -> str:
        """`tlbprobe model`'s "Workload:" line. Default: the name and the operations."""
        return f"{self.name}: {s.ops} {self.ops_unit}"

    def model_lines(self, s: "Scenario", flags: Mapping[str, Any]) -> List[str]:
        """Lines `tlbprobe model` prints after the prediction (text format). Default none."""
        return []

    # -- the report -----------------------------------------------------------------------
    def scenario_from_run(self, run: "Run", s: "Scenario") -> "Scenario":
        """The scenario of a recorded run: ``s`` holds what every run records (ops, CPUs,
        threads, kernel, flush, tables from the size); add what this workload's job keys
        and figures say. Default: ``s`` as it is."""
        return s

    def report_what(self, run: "Run", s: "Scenario") -> str:
        """What the report's workload line says was run (it adds CPU, threads, repeats).
        Default: the name."""
        return self.name

    def check_failure(self, per_repeat: Sequence[Figures]) -> Optional[str]:
        """Why the run failed its safety check, from its figures (one mapping per repeat,
        {} for a repeat without any), or None. Default: the --race check of
        workloads/race.py (corrupted bytes of the pattern, lost walker stores, kernel
        reports), each count per repeat so that a reader sees what failed it where."""
        keys = (("lost_writes", "lost writes"), ("corrupted_bytes", "corrupted bytes"),
                ("kernel_reports", "kernel reports"))
        if not any(f.get(k) for f in per_repeat for k, _ in keys):
            return None
        parts = []
        for k, label in keys:
            counts = [f.get(k, 0.0) for f in per_repeat]
            per = ", ".join(fmt_num(c) for c in counts)
            parts.append(f"{label} {fmt_num(sum(counts))}" + (f" ({per} per repeat)" if len(counts) > 1 else ""))
        writes = total(per_repeat, "race_writes")
        tail = f" of {fmt_num(writes)} walker stores" if writes else ""
        return (f"the race check failed: {parts[0]}{tail}; {'; '.join(parts[1:])} (a lost store is a TLB "
                f"flush that missed a walker's CPU; the kernel's report lines are in the run's phases.csv)")

    def ops_note(self, run: "Run") -> Optional[str]:
        """Why the counted operations differ from those asked for, when the workload knows
        more than the phases' notes say (default: nothing to add)."""
        return None

    def figures_line(self, figs: Sequence[Figures], run: "Run", s: "Scenario", race: str) -> Optional[str]:
        """The report's line of this workload's own figures (``figs``: one per repeat that
        has any; ``race``: the --race line, "" when it did not race). Default: the race
        line, else every figure as "key median"."""
        if race:
            return race
        keys = sorted({k for f in figs for k in f})
        return ", ".join(f"{k} {fmt_num(median(figs, k), 2)}" for k in keys)


# -- helpers for the hooks ------------------------------------------------------------------

def whole_ranges(size: int, what: str, unit: int = PMD_SIZE) -> int:
    """``size`` in whole ranges of ``unit`` bytes (2 MiB: one PMD), for a workload whose
    operation is one such range (a collapse); one InputError for a size that is not a
    whole number of them, or less than one (`tlbprobe model` used to round 3M down to one
    collapse, and 1 byte to "0 collapses", without a word)."""
    n, rest = divmod(size, unit)
    if n == 0:
        raise InputError(f"--size {format_size(size)} is less than one {format_size(unit)} {what}: "
                         f"no operation to predict")
    if rest:
        raise InputError(f"--size {format_size(size)} is not a whole number of {format_size(unit)} {what}s "
                         f"({n} {what}{'s are' if n != 1 else ' is'} {format_size(n * unit)}, {n + 1} are "
                         f"{format_size((n + 1) * unit)}): give one of those")
    return n


def plain(x: float) -> str:
    """A count in a rule's explanation, without a spurious '.0'."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def median(figs: Sequence[Figures], key: str) -> Optional[float]:
    """The median (the upper one of an even count) of a figure over the repeats that have it."""
    vals = sorted(f[key] for f in figs if key in f)
    return vals[len(vals) // 2] if vals else None


def total(figs: Sequence[Figures], key: str) -> float:
    """A figure summed over the repeats."""
    return sum(f.get(key, 0.0) for f in figs)


def size_text(run: "Run") -> str:
    """The job's size as the report writes it ("256M"), "?" when not recorded."""
    size = run.job.get("size")
    return format_size(int(size)) if isinstance(size, int) else "?"


__all__ = ["Count", "Figures", "ReportFigure", "TlbCount", "WorkloadSpec", "median", "plain", "size_text",
           "total", "whole_ranges"]
