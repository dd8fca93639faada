"""A shared hugetlb segment, as both hugetlb workloads map it: its 2 MiB huge pages
reserved through the journal, a hugetlb memfd with every page allocated up front, and a
free 1 GiB-aligned address (a PMD table is shared per whole aligned GiB, mm/hugetlb.c
want_pmd_share()). Used by the hugetlb-unshare and hugetlb-db drivers (root)."""

from __future__ import annotations

import os
import resource
from typing import Dict, Optional

from ..errors import PreflightError, WorkloadError
from ..measure.host import kernel_version_tuple
from ..measure.procfs import read_meminfo
from ..measure.sysstate import SystemState, read_knob
from ..units import format_size
from ..vocab import PUD_SIZE
from . import libc
from .sharers import HUGEPAGE

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
#: Where we would like the range: far below where mmap() places things top-down, so a
#: malloc in the driver between a helper's munmap and re-mmap can never take the hole.
#: Only a hint; the kernel chooses elsewhere when it is taken or beyond TASK_SIZE.
ADDRESS_HINT = 0x100000000000  # 16 TiB
MFD_HUGE_2MB = getattr(os, "MFD_HUGE_2MB", 21 << 26)


def hugepage_status(meminfo: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """nr_hugepages, free and available (free minus reserved-but-unfaulted) 2 MiB pages."""
    mi = meminfo if meminfo is not None else read_meminfo()
    free = mi.get("HugePages_Free", 0)
    return {"total": mi.get("HugePages_Total", 0), "free": free,
            "available": free - mi.get("HugePages_Rsvd", 0), "pagesize": mi.get("Hugepagesize", 0)}


def pages_for(size: int) -> int:
    """2 MiB pages the memfd needs: its page cache is all the hugetlb memory we use (the
    helpers' mappings only map it; the control's MAP_NORESERVE private mapping reserves none)."""
    return size // HUGEPAGE


def preflight_segment(size: int, facts) -> None:
    """What a shared hugetlb segment of ``size`` needs of the host (both hugetlb workloads)."""
    if kernel_version_tuple(facts.kernel_release) < (5, 14):
        raise PreflightError(f"kernel {facts.kernel_release} lacks MADV_POPULATE_WRITE (Linux 5.14), "
                             "which this driver uses to fault in and to verify sharing")
    if not os.path.exists(NR_HUGEPAGES):
        raise PreflightError(f"{NR_HUGEPAGES} is missing: kernel built without CONFIG_HUGETLBFS")
    if resource.getpagesize() != 4096:
        raise PreflightError("hugetlb PMD sharing is driven with 4 KiB base pages only (PMD = 2 MiB, PUD = 1 GiB)")
    hp = hugepage_status()
    if hp["pagesize"] != HUGEPAGE:
        raise PreflightError(f"the default huge page size is {hp['pagesize'] >> 10} kB, not 2048 kB: "
                             "nr_hugepages would reserve the wrong size (boot without default_hugepagesz)")
    missing = max(0, pages_for(size) - hp["available"]) * HUGEPAGE
    margin = 512 << 20
    if missing + margin > facts.mem_available:
        raise PreflightError(f"--size {format_size(size)} needs {missing >> 20} MiB of new huge pages but "
                             f"MemAvailable is {facts.mem_available >> 20} MiB; pick a smaller --size")


def reserve_huge_pages(state: SystemState, size: int, log) -> None:
    """Reserve the huge pages a segment of ``size`` needs beyond those already available.

    Through the journal, so nr_hugepages goes back on every exit path, and after a
    SIGKILL with `tlbprobe restore`. The kernel allocates them on the write
    (set_max_huge_pages()) and may get fewer than asked when memory is fragmented:
    re-read and refuse rather than die of SIGBUS at a fault later.
    """
    need = pages_for(size)
    hp = hugepage_status()
    if hp["available"] >= need:
        log(f"huge pages: {hp['available']} x 2 MiB available, {need} needed; nr_hugepages unchanged")
        return
    old = int(read_knob(NR_HUGEPAGES))
    target = old + need - hp["available"]
    state.set_knob(NR_HUGEPAGES, str(target))
    now = int(read_knob(NR_HUGEPAGES))
    got = hugepage_status()
    log(f"huge pages: asked for {target - old} more (nr_hugepages {old} -> {target}), got {now - old}; "
        f"{got['available']} available, {need} needed")
    if got["available"] < need:
        raise PreflightError(
            f"could reserve only {got['available']} of the {need} 2 MiB huge pages {format_size(size)} "
            f"needs (nr_hugepages {now} of {target} asked; memory in use or fragmented). Free memory, "
            f"reserve them at boot (hugepages={need}) or pick a smaller --size; nr_hugepages goes back to {old}")


def segment_memfd(size: int) -> int:
    """A hugetlb memfd of ``size`` with every page allocated now (hugetlbfs_fallocate()), so
    a shortage is an error here and never a SIGBUS at a fault."""
    fd = os.memfd_create("tlbprobe-hugetlb", os.MFD_CLOEXEC | os.MFD_HUGETLB | MFD_HUGE_2MB)
    try:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        os.close(fd)
        raise WorkloadError(f"cannot allocate {format_size(size)} of 2 MiB huge pages: {e.strerror} "
                            f"(HugePages_Free {hugepage_status()['free']})") from None
    return fd


def aligned_address(size: int) -> int:
    """A free 1 GiB-aligned range: reserve size + 1 GiB of address space, keep the aligned
    part's address, give the reservation back (MAP_FIXED_NOREPLACE then claims it)."""
    length = size + PUD_SIZE
    base = libc.mmap(length, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE,
                     addr=ADDRESS_HINT)
    libc.munmap(base, length)
    return libc.align_up(base, PUD_SIZE)
