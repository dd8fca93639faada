"""Which kernel path sent a sync broadcast, from its kernel stack.

Why a stack: the sync is ``smp_call_function(tlb_remove_table_smp_sync, NULL, 1)`` in
tlb_remove_table_sync_one() (mm/mmu_gather.c:269, Debian 6.12.117), and the
csd:csd_queue_cpu event it fires carries only the callsite inside kernel/smp.c and the
function: the same for every caller. Its callers, and the frames that tell them apart
(function names as the unwinder prints them; static functions the compiler inlined do
not appear, and tlb_remove_table_sync_one() itself is usually gone too: its call of
smp_call_function() is a tail call, so the frame above smp_call_function is its caller):

* collapse_huge_page() (mm/khugepaged.c:1184), reached from two places:
  - madvise_collapse() (mm/khugepaged.c:2732): MADV_COLLAPSE by a process, whose name
    and PID the trace records;
  - the khugepaged thread: khugepaged() -> khugepaged_do_scan() ->
    khugepaged_scan_mm_slot() (mm/khugepaged.c:2589, 2521, 2359; the last two inlined on
    6.18, where the stack reads collapse_huge_page, hpage_collapse_scan_pmd, khugepaged).
* tlb_flush_unshared_tables() (include/asm-generic/tlb.h:816), inlined into
  huge_pmd_unshare_flush() (mm/hugetlb.c:7379), after the last sharer of a hugetlb PMD
  table unshares it. Its callers: __unmap_hugepage_range() (munmap, exit, MADV_DONTNEED,
  truncation), hugetlb_change_protection() (mprotect), move_hugetlb_page_tables()
  (mremap), hugetlb_unshare_pmds() (a VMA split, hugetlb_split() mm/hugetlb.c:5149, and
  userfaultfd registration), try_to_unmap_one() / try_to_migrate_one() (mm/rmap.c:1777,
  2168: reclaim and migration). The system call is read from the frames below.
* tlb_remove_table_one() (mm/mmu_gather.c:315, static, usually inlined into
  tlb_remove_table()): the page-table-free fallback when no page could be had for the
  batch of tables to free (MMU_GATHER_RCU_TABLE_FREE kernels).

Anything else is "other", with its stack kept, so that a caller this table does not know
shows up instead of vanishing into a bucket. Recorded stacks of every origin on the 6.18
host are in tests/data/trace-6.18-watch-stacks.txt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ..vocab import KHUGEPAGED as _THREAD

#: the kernel thread's name (vocab.py), which is also its origin's
KHUGEPAGED = _THREAD
MADV_COLLAPSE = "madv_collapse"
#: the last sharer of a hugetlb PMD table unsharing it
HUGETLB_UNSHARE = "hugetlb_pmd_unshare"
PT_FREE_FALLBACK = "pt_free_fallback"
OTHER = "other"
#: counted exactly but without a stack: the ring buffer dropped it, or this kernel has no
#: stack source (doc/watch.md)
UNATTRIBUTED = "unattributed"
#: In the order the records, the metrics and the docs list them.
ORIGINS: Tuple[str, ...] = (KHUGEPAGED, MADV_COLLAPSE, HUGETLB_UNSHARE, PT_FREE_FALLBACK, OTHER, UNATTRIBUTED)

#: Frames that put a stack in an origin, tested in this order (a MADV_COLLAPSE stack
#: also contains collapse_huge_page, as khugepaged's does).
_MADV_COLLAPSE_FRAMES = frozenset({"madvise_collapse"})
_KHUGEPAGED_FRAMES = frozenset({_THREAD, "khugepaged_do_scan", "khugepaged_scan_mm_slot"})
_COLLAPSE_FRAMES = frozenset({"collapse_huge_page", "hpage_collapse_scan_pmd"})
_HUGETLB_FRAMES = frozenset({"huge_pmd_unshare_flush", "tlb_flush_unshared_tables", "__unmap_hugepage_range",
                             "unmap_hugepage_range", "hugetlb_change_protection", "move_hugetlb_page_tables",
                             "hugetlb_unshare_pmds", "hugetlb_unshare_all_pmds", "hugetlb_split",
                             "hugetlb_vm_op_split"})
_PT_FREE_FRAMES = frozenset({"tlb_remove_table_one", "tlb_remove_table"})

#: How a hugetlb unshare was reached, from the frames below it (first match wins): the
#: system call by its entry's name (x86 __x64_sys_*, arm64 __arm64_sys_*), process exit,
#: reclaim and migration through rmap.
_HUGETLB_HOW: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("exit", ("do_exit", "exit_mmap", "do_group_exit")),
    ("munmap", ("sys_munmap", "__vm_munmap")),
    ("mprotect", ("sys_mprotect", "sys_pkey_mprotect", "do_mprotect_pkey")),
    ("mremap", ("sys_mremap",)),
    ("madvise", ("sys_madvise", "sys_process_madvise")),
    ("fallocate", ("sys_fallocate", "hugetlbfs_punch_hole")),
    ("truncate", ("hugetlb_vmtruncate", "hugetlbfs_setattr", "remove_inode_hugepages")),
    ("userfaultfd", ("userfaultfd_register", "userfaultfd_ioctl")),
    ("mmap", ("sys_mmap", "ksys_mmap_pgoff", "do_mmap")),
    ("reclaim", ("try_to_unmap_one",)),
    ("migration", ("try_to_migrate_one",)),
)


@dataclass(frozen=True)
class Origin:
    """What sent one broadcast: its origin, and for MADV_COLLAPSE the process, for a hugetlb
    unshare how it was reached (``how``: munmap, mprotect, exit, ...)."""

    origin: str
    how: str = ""


def frame_name(frame: str) -> str:
    """'collapse_huge_page+0x3a1/0x9c0 [mod]' -> 'collapse_huge_page'; a stack entry of the
    trace (' => collapse_huge_page') the same."""
    name = frame.strip()
    if name.startswith("=>"):
        name = name[2:].strip()
    name = name.split()[0] if name else ""
    return name.split("+", 1)[0]


def _has(frames: Sequence[str], wanted: frozenset) -> bool:
    return any(f in wanted for f in frames)


def _contains(frames: Sequence[str], parts: Tuple[str, ...]) -> bool:
    return any(p in f for f in frames for p in parts)


def classify(frames: Sequence[str], comm: Optional[str] = None) -> Origin:
    """The origin of a broadcast from its stack's function names (innermost first, as the
    trace prints them) and the sending task's name."""
    if _has(frames, _MADV_COLLAPSE_FRAMES):
        return Origin(MADV_COLLAPSE)
    if _has(frames, _KHUGEPAGED_FRAMES) or (comm == _THREAD and _has(frames, _COLLAPSE_FRAMES)):
        return Origin(KHUGEPAGED)
    if _has(frames, _HUGETLB_FRAMES):
        for how, parts in _HUGETLB_HOW:
            if _contains(frames, parts):
                return Origin(HUGETLB_UNSHARE, how)
        return Origin(HUGETLB_UNSHARE, "other")
    if _has(frames, _PT_FREE_FRAMES):
        return Origin(PT_FREE_FALLBACK)
    return Origin(OTHER)


#: Frames common to every sync broadcast above its caller, left out of a kept "other"
#: stack: the trace event's own function and the generic SMP code.
_PLUMBING = frozenset({"trace_event_raw_event_csd_queue_cpu", "perf_trace_csd_queue_cpu",
                       "smp_call_function_many_cond", "smp_call_function", "smp_call_function_many",
                       "on_each_cpu_cond_mask", "tlb_remove_table_sync_one"})


def caller_frames(frames: Sequence[str]) -> Tuple[str, ...]:
    """The stack without the plumbing every broadcast shares: what a person reads."""
    return tuple(f for f in frames if f not in _PLUMBING)
