"""The interface between the collector and a workload driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from ..host import HostFacts
from ..job import Job
from ..sysstate import SystemState

#: Called with a short status line while a phase runs (shown on a terminal, not logged).
Progress = Callable[[str], None]


@dataclass
class PhaseOutcome:
    """What a driver did in one measured phase."""

    ops: int                 # operations that happened (counted by the kernel where possible)
    ops_expected: int        # operations the driver asked for
    note: str = ""           # why ops < ops_expected, errno of a failed call, ...

    @property
    def result(self) -> str:
        return "ok" if self.ops >= self.ops_expected and not self.note else "partial"


class Workload:
    """Base class. The collector calls, per run: preflight, configure; per repeat:
    prepare, run (measured, between the snapshots), cleanup (also on errors)."""

    name = "workload"
    ops_unit = "operations"

    def __init__(self, job: Job, facts: HostFacts, log: Callable[[str], None]):
        self.job = job
        self.facts = facts
        self.log = log

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

    def planned_ops(self) -> int:
        """Operations one workload phase asks for, before it runs (sizes the trace buffers)."""
        return 0

    def describe(self) -> str:
        return self.name
