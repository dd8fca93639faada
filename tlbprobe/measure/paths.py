"""Where the kernel's files are, in one typed value the collector hands to every reader.

The defaults are the real paths; ``KernelPaths.under(root)`` puts every one of them
under a directory, so that a test can run the whole collector against a stand-in tree
(recorded /proc files, a fake THP sysfs directory, a kernel log in a file) without root
(tests/test_collect_fake.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Optional

#: The journal of knob changes (sysstate.py): a tmpfs, so a reboot forgets it with the knobs.
DEFAULT_STATE_DIR = Path(os.environ.get("TLBPROBE_STATE_DIR", "/run/tlbprobe"))


@dataclass(frozen=True)
class KernelPaths:
    """The kernel interfaces a collect reads (and the journal directory it writes)."""

    interrupts: Path = Path("/proc/interrupts")
    vmstat: Path = Path("/proc/vmstat")
    meminfo: Path = Path("/proc/meminfo")
    cpuinfo: Path = Path("/proc/cpuinfo")
    cmdline: Path = Path("/proc/cmdline")
    #: online, possible
    cpu_dir: Path = Path("/sys/devices/system/cpu")
    thp_dir: Path = Path("/sys/kernel/mm/transparent_hugepage")
    hypervisor_type: Path = Path("/sys/hypervisor/type")
    tracefs: Path = Path("/sys/kernel/tracing")
    #: the check flavour's file is in debugfs (measure/tablesync.py); kallsyms says
    #: whether the kernel has its recorder while debugfs is not mounted
    debugfs: Path = Path("/sys/kernel/debug")
    kallsyms: Path = Path("/proc/kallsyms")
    state_dir: Path = DEFAULT_STATE_DIR
    #: None: the kernel log is read with dmesg; a file: read from it (a recorded log)
    kernel_log: Optional[Path] = None

    @classmethod
    def under(cls, root: Path) -> "KernelPaths":
        """Every path below ``root`` (/proc/vmstat -> root/proc/vmstat), the kernel log
        from root/dmesg.txt and the journal in root/run/tlbprobe."""
        root = Path(root)
        moved = {f.name: root / Path(getattr(REAL, f.name)).relative_to("/")
                 for f in fields(cls) if f.name not in ("kernel_log", "state_dir")}
        return replace(REAL, **moved, state_dir=root / "run" / "tlbprobe", kernel_log=root / "dmesg.txt")


#: the real kernel's paths
REAL = KernelPaths()
