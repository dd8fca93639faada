"""The interface between the collector and a workload driver.

A driver receives the resolved job: the ``Job`` of tlbprobe/run/job.py, every parameter
explicit, its workload's options in ``job.options``. This module does not import it
(job.py finds the workloads through this package, and a workload needs no more of the
Job than its fields), so the annotations below say ``Any``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from ..options import Option
if TYPE_CHECKING:  # types only
    from ..measure.host import HostFacts
    from ..measure.sysstate import SystemState
    from .race import RaceTools
    from .spec import WorkloadSpec

#: Called with a short status line while a phase runs (shown on a terminal, not logged).
Progress = Callable[[str], None]


@dataclass
class PhaseOutcome:
    """What a driver did in one measured phase."""

    ops: int                 # operations that happened (counted by the kernel where possible)
    ops_expected: int        # operations the driver asked for
    note: str = ""           # why ops < ops_expected, errno of a failed call, ...
    #: figures only this workload measures, into summary.json's workload_figures
    figures: Dict[str, float] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return "ok" if self.ops >= self.ops_expected and not self.note else "partial"


class _FromSpec:
    """A driver's class attribute that is its spec's field of the same name (``default``
    for a driver without a spec); a driver may still set its own."""

    def __init__(self, default: Any):
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.field = name

    def __get__(self, obj: Any, cls: type) -> Any:
        spec = getattr(cls, "spec", None)
        return self.default if spec is None else getattr(spec, self.field)


class Workload:
    """Base class of a workload's driver (tlbprobe/workloads/<name>/driver.py), what runs
    as root. The collector calls, per run: resolve (the job's defaults made explicit,
    before run.yaml is written), preflight, configure; per repeat: prepare, run
    (measured, between the snapshots), cleanup (also on errors); close at the end.

    What the workload is (its name, options, ops_unit, ...) is its spec's
    (workloads/spec.py WorkloadSpec): a driver sets ``spec`` to its spec.py ``SPEC``,
    and the attributes below read it.
    """

    #: the workload's spec (its spec.py ``SPEC``)
    spec: Optional["WorkloadSpec"] = None
    name = _FromSpec("workload")
    ops_unit = _FromSpec("operations")
    #: False when the broadcasts come from a kernel thread on any CPU (khugepaged): every
    #: online CPU is then a receiver, and the count is not limited to the driver's sends
    sender_is_driver = _FromSpec(True)
    #: False: no measured phase of its own (the idle workload)
    has_workload_phase = _FromSpec(True)
    #: options only this workload has, in the order --help lists them
    options: Tuple[Option, ...] = _FromSpec(())  # type: ignore[assignment]

    @classmethod
    def resolve(cls, job: Any, facts: HostFacts) -> Any:
        """The job with this workload's defaults filled in for this host (a new Job)."""
        return job

    def opt(self, key: str) -> Any:
        """One of this workload's options, as the resolved job holds it."""
        return self.job.options[key]

    def __init__(self, job: Any, facts: HostFacts, log: Callable[[str], None]):
        self.job = job
        self.facts = facts
        self.log = log
        #: --race's kernel log and compiled walkers, for a workload that races (configure()
        #: starts them with start_racing(); close() ends them)
        self.racing: Optional[RaceTools] = None

    def start_racing(self) -> None:
        """For a workload with a ``race`` option, when it is set: open the kernel log and
        load the walkers (workloads/race.py) for the whole run."""
        from .race import RaceTools

        if self.opt("race"):
            self.racing = RaceTools(self.log)

    def preflight(self) -> None:
        """Raise PreflightError when this host cannot run the job."""

    def configure(self, state: SystemState) -> None:
        """Set system knobs for the whole run, through the journal."""

    def prepare(self) -> None:
        """Per repeat, before the measured window: allocate and fault in memory."""

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        """The measured operations."""
        raise NotImplementedError

    def count_ops(self, outcome: PhaseOutcome, vmstat_delta: Dict[str, int]) -> PhaseOutcome:
        """Replace the driver's own count by the kernel's, where the kernel keeps one."""
        return outcome

    def cleanup(self) -> None:
        """Per repeat: free everything prepare made. Must be safe to call twice."""

    def close(self) -> None:
        """Once, at the end of the run (every exit path): free what configure made beyond
        the journaled knobs (a compiled helper, a scratch file). An override calls this."""
        if self.racing is not None:
            self.racing.close()
            self.racing = None

    def planned_ops(self) -> int:
        """Operations one workload phase asks for, before it runs (sizes the trace buffers)."""
        return 0

    def describe(self) -> str:
        return self.name
