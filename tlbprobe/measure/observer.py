"""What runs beside every phase of a collect: the Observer protocol and the Phase it sees.

The collector measures; an observer adds a measurement of its own to every phase
(cyclictest: latency.py, the broadcast's handler and wait times: cost.py, a work loop on
the other CPUs: victim.py) without the collector knowing what it does. Which observers a
run has follows from its resolved job (tlbprobe/run/observers.py, the one place they are
registered and sized). The hooks, in call order: ``preflight(facts)`` before the run
directory exists (refuse early: a missing tool must not cost a half-measured run),
``start(rundir, facts, console, state)`` once (``state``: the run's SystemState, through
which an observer journals what it changes, e.g. a tracefs instance),
``phase_begin(phase)`` before a phase's "before" snapshot and ``phase_end(phase)`` after
its "after" snapshot, ``section(summary)`` whenever summary.json is written (so a killed
run keeps the observer's section too): the observer's typed record
(tlbprobe/rundir/sections.py), which the collector stores under its ``KEY``; and
``stop()`` on every exit path, errors and Ctrl-C included.

Adding an observer: its module here, its section record in rundir/sections.py, its entry
in run/observers.py, its view in report/views/ (what the report and collect's end-of-run
summary show of it) and its section in doc/run-format.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol

if TYPE_CHECKING:
    from .host import HostFacts
    from ..rundir import RunDir
    from .sysstate import SystemState
    from ..rundir.sections import Section
    from ..ui import Console


@dataclass(frozen=True)
class Phase:
    """One measured window: repeat ``repeat`` (from 0), ``name`` 'idle' or 'workload'."""

    repeat: int
    name: str

    @property
    def tag(self) -> str:
        """The name files and trace markers use: 'r0-workload'."""
        return f"r{self.repeat}-{self.name}"

    @classmethod
    def from_tag(cls, tag: str) -> Optional["Phase"]:
        """'r2-workload' -> Phase(2, 'workload'); None for anything else."""
        m = re.fullmatch(r"r(\d+)-(.+)", tag)
        return cls(int(m.group(1)), m.group(2)) if m else None


class Observer(Protocol):
    def preflight(self, facts: "HostFacts") -> None: ...

    def start(self, rundir: "RunDir", facts: "HostFacts", console: "Console", state: "SystemState") -> None: ...

    def phase_begin(self, phase: Phase) -> None: ...

    def phase_end(self, phase: Phase) -> None: ...

    def section(self, summary: Mapping[str, Any]) -> "Section": ...

    def stop(self) -> None: ...
