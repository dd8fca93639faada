"""The words tlbprobe and the kernel share, defined once, each with where its meaning comes from.

Every module that needs a flush mode, a phase's name, a hugetlb operation, a page-table
size or the name of a traced kernel function imports it from here (a workload's name is
its spec's, tlbprobe/workloads/<name>/spec.py); a value that changes
with the kernel names the source (Debian's linux-source 6.1.192, 6.12.117 and this
host's 6.18) that fixes its meaning.
"""

from __future__ import annotations

from typing import Dict, Tuple

# -- what a run measures ------------------------------------------------------------------

#: The phases of a repeat (phases.csv, summary.json, snapshots/r<N>-<phase>-*): the idle
#: control window, which measures the background, and the measured workload window. The
#: idle workload (tlbprobe/workloads/idle/) has the first only.
IDLE_PHASE = "idle"
WORKLOAD_PHASE = "workload"

#: What a compared figure is (report/compare.py FIGURES, the views' figures, a workload's
#: WorkloadSpec.report_figures): it decides how the report writes, tests and words it.
#: EXACT: counted, not sampled (traced calls, operations): exact integers, no spread, no test.
#: COUNT: a noisy count (CAL, TLB, a CAL-TLB estimate): integers, never negative, spread and
#: test, and no percent change on tiny counts. RATE: a ratio or a rate (per operation, per
#: second). TIME: a duration (a time per operation, an initiator's wait, a handler's time,
#: GUP-fast's time or throughput): under emulation (a QEMU TCG guest) it measures vCPUs taking
#: turns on host threads, so it is never tested there nor shown as a saving.
EXACT = "exact"
COUNT = "count"
RATE = "rate"
TIME = "time"
FIGURE_KINDS: Tuple[str, ...] = (EXACT, COUNT, RATE, TIME)

#: The two kernels of an A/B: without and with the patch under test.
KERNEL_VARIANTS: Tuple[str, ...] = ("baseline", "patched")

#: How the kernel flushes remote TLBs, which decides whether the patch may skip the sync:
#: native IPIs (arch/x86/mm/tlb.c native_flush_tlb_multi), paravirtual (KVM, Xen, Hyper-V
#: replace pv_ops.mmu.flush_tlb_multi: arch/x86/kernel/kvm.c "KVM setup pv remote TLB
#: flush"), INVLPGB broadcast invalidation (AMD Zen 3+, 6.15+), or arm64's broadcast TLBI
#: instructions (arch/arm64/include/asm/tlbflush.h: the flush interrupts nobody, so the
#: sync is never implied). "unknown": not detected. Which an architecture can have is its
#: record's (tlbprobe/arch/).
FLUSH_MODES: Tuple[str, ...] = ("native", "pv", "invlpgb", "tlbi-broadcast", "unknown")

#: hugetlb operations that unshare a shared PMD table (mm/hugetlb.c huge_pmd_unshare()).
HUGETLB_OPERATIONS: Tuple[str, ...] = ("munmap", "mprotect", "madvise-dontneed", "exit", "partial-munmap")
HUGETLB_OPERATION_ALIASES: Dict[str, str] = {
    "dontneed": "madvise-dontneed",
    "madv-dontneed": "madvise-dontneed",
    "madv_dontneed": "madvise-dontneed",
    "madvise_dontneed": "madvise-dontneed",
    "partial_munmap": "partial-munmap",
    "munmap-partial": "partial-munmap",
}
#: When an unshare sends its sync: once per unsharing operation, and only when it leaves a
#: table exclusive ("batched": include/asm-generic/tlb.h and mm/hugetlb.c in Debian's
#: 6.1.192 and 6.12.117 and in 6.18), once per table ("per-table": older kernels), or
#: never ("none").
HUGETLB_ERAS: Tuple[str, ...] = ("batched", "per-table", "none")

#: The kernel thread that collapses in the background (mm/khugepaged.c), and its sysfs
#: directory of knobs and counters under /sys/kernel/mm/transparent_hugepage/.
KHUGEPAGED = "khugepaged"

# -- page-table geometry (x86-64, 4 KiB pages) --------------------------------------------

#: One PMD entry maps this much: one MADV_COLLAPSE collapse (mm/khugepaged.c HPAGE_PMD_SIZE).
PMD_SIZE = 2 << 20
#: One PMD table maps this much: the unit of hugetlb PMD sharing (mm/hugetlb.c PUD_SIZE).
PUD_SIZE = 1 << 30
#: The largest mapping a process can have: x86_64's user address space with 5-level
#: paging, 2^56 bytes (64 PiB; arch/x86/include/asm/page_64_types.h TASK_SIZE_MAX, from
#: __VIRTUAL_MASK_SHIFT 56 under LA57). `tlbprobe model` refuses a larger --size.
ADDRESS_SPACE_MAX = 1 << 56

# -- traced kernel functions ----------------------------------------------------------------

#: The sync broadcast's handler (mm/mmu_gather.c, an empty function run on every other
#: CPU by tlb_remove_table_sync_one()).
SYNC_FUNCTION = "tlb_remove_table_smp_sync"
#: The TLB-shootdown handler (arch/x86/mm/tlb.c), counted by the TLB line too.
FLUSH_FUNCTION = "flush_tlb_func"
#: Remote wake-ups and nohz kicks: the other cross-CPU calls seen most during a run
#: (kernel/sched/core.c, kernel/sched/fair.c).
WAKEUP_FUNCTION = "sched_ttwu_pending"
NOHZ_FUNCTION = "nohz_csd_func"

# -- files ------------------------------------------------------------------------------------

#: The run directory format (doc/run-format.md); additions keep the name.
RUN_FORMAT = "tlbprobe-run/1"
