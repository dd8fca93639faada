"""Workload drivers: the operations whose IPIs tlbprobe measures.

A driver prepares its memory outside the measured window, performs the operations inside
it, and says how many it performed. Adding a workload is one new module here plus one
entry in DRIVERS.
"""

from __future__ import annotations

from typing import Dict, Type

from .base import PhaseOutcome, Workload
from .collapse import CollapseWorkload
from .idle import IdleWorkload

DRIVERS: Dict[str, Type[Workload]] = {
    "collapse": CollapseWorkload,
    "idle": IdleWorkload,
}

try:  # built by the hugetlb issue
    from .hugetlb import HugetlbUnshareWorkload

    DRIVERS["hugetlb-unshare"] = HugetlbUnshareWorkload
except ImportError:  # pragma: no cover
    pass

__all__ = ["DRIVERS", "PhaseOutcome", "Workload"]
