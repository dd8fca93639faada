"""The idle workload: no operations, only the idle control window of every repeat."""

from __future__ import annotations

from typing import Dict

from .base import PhaseOutcome, Progress, Workload


class IdleWorkload(Workload):
    name = "idle"
    ops_unit = "operations"
    has_workload_phase = False

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        return PhaseOutcome(0, 0)
