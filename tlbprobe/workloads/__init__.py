"""Workload drivers: the operations whose IPIs tlbprobe measures.

A driver prepares its memory outside the measured window, performs the operations inside
it, and says how many it performed. Each lives in its own module here, as a subclass of
:class:`Workload` whose ``name`` is the workload's name; MODULES says which module holds
which name. Drivers are imported when first asked for, so a module that fails to import
is one clear error naming it when that workload is run, not a silently missing workload
and not a failure of every other command.
"""

from __future__ import annotations

import importlib
from typing import Dict, List, Type

from ..errors import InputError, InternalError
from .base import Option, PhaseOutcome, Workload

#: workload name -> module of this package that defines its driver
MODULES: Dict[str, str] = {"collapse": "collapse", "hugetlb-unshare": "hugetlb", "idle": "idle",
                           "khugepaged": "khugepaged", "hugetlb-db": "hugetlb_db", "gup-fast": "gup_fast"}

#: the drivers imported so far (tests may put their own in)
DRIVERS: Dict[str, Type[Workload]] = {}


def driver(name: str) -> Type[Workload]:
    """The driver class of a workload, imported on first use."""
    if name in DRIVERS:
        return DRIVERS[name]
    module = MODULES.get(name)
    if module is None:
        raise InputError(f"unknown workload {name!r}: choose one of {', '.join(MODULES)}")
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ImportError as e:
        raise InternalError(f"workload {name!r}: its module tlbprobe/workloads/{module}.py cannot be imported "
                            f"({type(e).__name__}: {e})") from None
    found = [cls for cls in vars(mod).values()
             if isinstance(cls, type) and issubclass(cls, Workload) and cls.name == name]
    if len(found) != 1:
        raise InternalError(f"workload {name!r}: tlbprobe/workloads/{module}.py defines {len(found)} Workload "
                            f"classes named {name!r}, not one")
    DRIVERS[name] = found[0]
    return found[0]


def all_drivers() -> List[Type[Workload]]:
    """Every workload's driver (imports every module: for --help and job-file checks)."""
    return [driver(name) for name in MODULES]


def all_options() -> Dict[str, List[str]]:
    """Option key -> the workloads that declare it."""
    out: Dict[str, List[str]] = {}
    for cls in all_drivers():
        for opt in cls.options:
            out.setdefault(opt.key, []).append(cls.name)
    return out


__all__ = ["DRIVERS", "MODULES", "Option", "PhaseOutcome", "Workload", "all_drivers", "all_options", "driver"]
