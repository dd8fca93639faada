"""The idle workload's driver: nothing to do (it has no measured phase; the collector runs
its idle windows, spec.py ``has_workload_phase``)."""

from __future__ import annotations

from typing import Dict

from ..base import PhaseOutcome, Progress, Workload
from .spec import SPEC


class IdleWorkload(Workload):
    spec = SPEC

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        return PhaseOutcome(0, 0)
