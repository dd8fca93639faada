"""The guest architectures: one record each (record.py's :class:`Arch`), found by scanning
this package: every module here but ``record`` defines ``ARCH``. Adding an architecture
is one more module; kernel/, vm/ and measure/ ask the record (no ``if arch ==`` there,
tests/test_arch.py checks it).

Two architectures are asked for, and they can differ: the guest's, which a
GuestSpec or KernelSpec names (``arch``, default :data:`DEFAULT`, the one every run so
far was made on), and the running machine's, for measuring, which
:func:`running` finds from ``os.uname().machine``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Dict, Optional, Tuple

from ..errors import InputError
from .record import Arch, FlushDetection, IpiLines, IrqLine, KernelBuild, KernelImage, Qemu

__all__ = ["Arch", "FlushDetection", "IpiLines", "IrqLine", "KernelBuild", "KernelImage", "Qemu", "DEFAULT",
           "registry", "names", "get", "for_machine", "running", "ipi_descriptions"]

#: The guest architecture when none is named: every kernel, guest and run so far.
DEFAULT = "x86_64"

#: name -> record, found on first use (a test may put its own in with monkeypatch.setitem)
_ARCHES: Optional[Dict[str, Arch]] = None


def registry() -> Dict[str, Arch]:
    """Every architecture's record by name, the default first, then by name."""
    global _ARCHES
    if _ARCHES is None:
        found: Dict[str, Arch] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name == "record":
                continue
            record = getattr(importlib.import_module(f"{__name__}.{info.name}"), "ARCH", None)
            if isinstance(record, Arch):
                found[record.name] = record
        _ARCHES = dict(sorted(found.items(), key=lambda kv: (kv[0] != DEFAULT, kv[0])))
    return _ARCHES


def names() -> Tuple[str, ...]:
    """The architectures' names: --arch's choices."""
    return tuple(registry())


def get(name: str) -> Arch:
    """An architecture's record by name; InputError naming the choices."""
    try:
        return registry()[name]
    except KeyError:
        raise InputError(f"unknown architecture {name!r}: choose {', '.join(names())}") from None


def for_machine(machine: str) -> Optional[Arch]:
    """The record of a running kernel's ``os.uname().machine`` ('x86_64', 'aarch64'), or
    None for a machine tlbprobe has no record of."""
    return next((a for a in registry().values() if a.runs_natively_on(machine)), None)


def running() -> Optional[Arch]:
    """The record of the machine this process runs on (None: not one tlbprobe knows)."""
    return for_machine(os.uname().machine)


def ipi_descriptions() -> Dict[str, str]:
    """Every architecture's IPI-line descriptions, normalised (lower case, single
    spaces) -> canonical name ('function_call', 'tlb_shootdown'): how measure/procfs.py
    recognises the lines in a /proc/interrupts of any architecture it has a record of."""
    out: Dict[str, str] = {}
    for a in registry().values():
        for canonical, line in (("function_call", a.interrupts.function_call),
                                ("tlb_shootdown", a.interrupts.tlb_shootdown)):
            if line is not None:
                out[" ".join(line.description.lower().split())] = canonical
    return out
