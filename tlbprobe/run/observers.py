"""Which observers a run has: the ones its resolved job asks for, each sized from what
the workload will do. The one place observers are registered and built; the collector
calls :func:`observers_for` once the job's defaults are explicit (Workload.resolve) and
the workload knows its planned operations, so nothing is sized from a raw flag (the
cost observer's ring buffers follow the operations one phase asks for, whatever the
workload, with or without --size).

Each entry of OBSERVERS is the observer's section record (rundir/sections.py: its
``KEY`` is both the key of its section in summary.json and its job switch, ``SWITCH``,
on in ``Job.observers``) and the function that builds the observer; they run in this
order. Adding an observer: its module in tlbprobe/measure/ (the Observer protocol of
measure/observer.py), its section record in tlbprobe/rundir/sections.py (with its
switch), its line here, its view in tlbprobe/report/views/, and its section in
doc/run-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Tuple, Type

from ..measure.paths import REAL, KernelPaths
from ..rundir.sections import CheckSection, CostSection, LatencySection, Section, VictimSection
from .job import Job

if TYPE_CHECKING:
    from ..measure.observer import Observer
    from ..workloads import Workload


@dataclass(frozen=True)
class ObserverPlan:
    """What an observer is built and sized from."""

    job: Job                    # resolved: every default explicit, as run.yaml has it
    ops_per_phase: int          # the operations one workload phase asks for (Workload.planned_ops)
    paths: KernelPaths = REAL   # where the kernel's files are (a test's stand-in tree)


def _latency(plan: ObserverPlan) -> "Observer":
    from ..measure.latency import CyclictestObserver

    return CyclictestObserver(plan.job)


def _cost(plan: ObserverPlan) -> "Observer":
    from ..measure.cost import CostObserver

    return CostObserver(ops_per_phase=plan.ops_per_phase, driver_cpu=plan.job.cpu, tracefs=plan.paths.tracefs)


def _victim(plan: ObserverPlan) -> "Observer":
    from ..measure.victim import VictimObserver

    return VictimObserver(plan.job.cpu)


def _check(plan: ObserverPlan) -> "Observer":
    from ..measure.tablesync import CheckObserver

    return CheckObserver(plan.paths.debugfs, plan.paths.kallsyms)


#: (its section: KEY = the job switch, builder), in the order the observers run
OBSERVERS: Tuple[Tuple[Type[Section], Callable[[ObserverPlan], "Observer"]], ...] = (
    (LatencySection, _latency),
    (CostSection, _cost),
    (VictimSection, _victim),
    (CheckSection, _check),
)


def observers_for(job: Job, workload: "Workload", paths: KernelPaths = REAL) -> List["Observer"]:
    """The observers a resolved job asks for, built for its workload."""
    plan = ObserverPlan(job, workload.planned_ops(), paths)
    return [build(plan) for section, build in OBSERVERS if section.KEY in job.observers]
