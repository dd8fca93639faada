"""hugetlb PMD-table unsharing: the second operation that sends the sync broadcast.

Sharing (mm/hugetlb.c). A MAP_SHARED hugetlb mapping that covers a whole 1 GiB-aligned
range (PUD_SIZE) may share its PMD table with every other process that maps the same file
range at the same address with the same flags: at a fault, huge_pte_alloc() calls
huge_pmd_share() when want_pmd_share()/vma_shareable() agree (VM_MAYSHARE, the VMA covers
the aligned 1 GiB), and huge_pmd_share() looks through the file's i_mmap for a sharer
whose page_table_shareable() table it can point its own PUD entry at.

Unsharing. Whenever one process stops using a shared table -- munmap, mprotect
(hugetlb_change_protection()), MADV_DONTNEED and exit (__unmap_hugepage_range()), a VMA
split inside the 1 GiB range (hugetlb_split() -> hugetlb_unshare_pmds()) -- huge_pmd_unshare()
clears its PUD entry. Once a table is no longer shared it can be reused as a normal page
table, so a lock-less GUP-fast walker on another CPU must not still be looking at it:
the kernel waits for all of them with tlb_remove_table_sync_one() (mm/mmu_gather.c),
i.e. smp_call_function(tlb_remove_table_smp_sync) to every other online CPU.
* Kernels with 1013af4f585f ("mm/hugetlb: fix huge_pmd_unshare() vs GUP-fast race") but
  not 8ce720d5bd91 ("mm/hugetlb: fix excessive IPI broadcasts when unsharing PMD tables
  using mmu_gather", Dec 2025, backported to stable): one broadcast per unshared table,
  from huge_pmd_unshare() itself.
* With 8ce720d5bd91: huge_pmd_unshare() only records the unsharing in the mmu_gather
  (tlb_unshare_pmd_ptdesc(), include/asm-generic/tlb.h) and huge_pmd_unshare_flush() ->
  tlb_flush_unshared_tables() sends ONE broadcast per operation, and only when a table
  became exclusive (``fully_unshared_tables``: the caller was the last other sharer).
The 6.18 kernel here behaves the second way: one broadcast per operation however many
tables (1, 2 and 4 GiB: analysis/runs/host-hugetlb-unshare-1G has 600 traced syncs for 600
operations), none for a layout that cannot share, and with
--sharers 3 one broadcast per two unshares (measured with this driver).

The driver. The driver process (the collector, pinned to --cpu) is the *holder*: it maps
a MAP_SHARED hugetlb memfd at a 1 GiB-aligned fixed address and faults it in, so its PMD
tables exist for the whole repeat. ``--sharers N`` - 1 helper processes, forked in
prepare() (inheriting the pinning, so nothing of ours runs on the CPUs whose interrupts
we count), fault the same range and thereby share the holder's tables. In the measured
window each cycle is: every helper performs the unshare operation (the last one makes
the tables exclusive again), then every helper re-shares (maps again if needed and
faults the range in). One op = one unsharing system call (or exit). With N = 2 that is
one broadcast per op; with N > 2 only the last helper of a cycle fully unshares, so a
kernel with the mmu_gather fix sends 1/(N-1) broadcasts per op and an older one 1 per op
and table: --sharers is how the report tells the two apart. The helpers and their
command protocol are workloads/sharers.py's (``Sharers``), the segment's workloads/segment.py's,
both shared with hugetlb-db.

Why helpers, not the driver, unshare: their mms only ever ran on the driver CPU, so the
TLB flush of the unsharing stays local and the window holds only the sync broadcasts.
Re-sharing inside the window is fine: huge_pmd_share() only populates a PUD entry (no
flush, no IPI), mmap() sends none, and the helpers are woken on the driver CPU itself.
A run confirms it: attributed tlb_remove_table_smp_sync equals the ops and CAL minus TLB
on the other CPUs shows nothing else above the background.

The operations (--operation), as a helper performs them on the whole --size range:
``munmap``; ``mprotect`` to PROT_READ (re-share: back to read-write); ``madvise-dontneed``;
``exit``; ``partial-munmap``, the last 2 MiB only, so the VMA split inside a shared 1 GiB
range is what unshares (hugetlb_split()), one table per op whatever the size.

For ``--operation exit`` one helper per op is forked in prepare() (they only share when
their cycle comes: had they all shared at once, only the last exit would fully unshare);
the driver reaps each one inside the window, so the exit is complete when it is counted.

``--control`` maps the same memfd MAP_PRIVATE (with MAP_NORESERVE, read-only faults of the
page-cache pages, so no copies are allocated) at the same aligned address, and does the
same operations. vma_shareable() requires VM_MAYSHARE, so a private mapping never shares,
at any size. (A mapping that is merely not 1 GiB aligned still shares every whole aligned
1 GiB range it covers once --size is 2G or more, so misalignment is not a control.)
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from typing import Dict, List, Optional

from ...errors import InputError, WorkloadError
from ...measure.sysstate import SystemState, signals_blocked
from ...units import GiB, format_size
from ...vocab import PUD_SIZE
from .. import libc
from ..base import PhaseOutcome, Progress, Workload
from ..race import WalkerFigures, corrupted_bytes, record, write_pattern
from ..segment import aligned_address, pages_for, preflight_segment, reserve_huge_pages, segment_memfd
from ..sharers import ENTRIES_PER_TABLE, Layout, Sharer, Sharers
from .spec import DEFAULT_CYCLES, SPEC

__all__ = ["DEFAULT_SIZE", "HugetlbUnshareWorkload", "MAX_EXIT_HELPERS", "pages_for"]

DEFAULT_SIZE = GiB
#: --operation exit forks one helper per op up front; each keeps one pipe open in the driver.
MAX_EXIT_HELPERS = 500
class HugetlbUnshareWorkload(Workload):
    spec = SPEC

    @classmethod
    def resolve(cls, job, facts):
        """Size 1G and 200 cycles unless given; for ``exit`` (one forked helper per
        unshare) few enough cycles to stay under MAX_EXIT_HELPERS."""
        opts = dict(job.options)
        if opts.get("cycles") is None:
            opts["cycles"] = DEFAULT_CYCLES
            if opts["operation"] == "exit":
                opts["cycles"] = max(1, min(DEFAULT_CYCLES, MAX_EXIT_HELPERS // max(opts["sharers"] - 1, 1)))
        return replace(job, size=job.size or DEFAULT_SIZE, options=opts)

    def __init__(self, job, facts, log):
        super().__init__(job, facts, log)
        self.size = job.size
        self.cycles = self.opt("cycles")
        self.unsharers = self.opt("sharers") - 1   # the driver holds; the helpers unshare
        self.layout: Optional[Layout] = None
        self._memfd: Optional[int] = None
        self._mapped = False
        self._sharers: Optional[Sharers] = None

    def planned_ops(self) -> int:
        return self.cycles * self.unsharers

    def describe(self) -> str:
        kind = ("control: MAP_PRIVATE, no table can be shared" if self.opt("control")
                else f"{self.size // PUD_SIZE} shared PMD table(s)")
        return (f"hugetlb {self.opt('operation')} of {format_size(self.size)} ({kind}), "
                f"{self.opt('sharers')} sharers, {self.cycles} cycle(s)")

    # -- per run --------------------------------------------------------------------------
    def preflight(self) -> None:
        operation = self.opt("operation")
        if self.opt("race") and operation == "exit":
            raise InputError("--race with --operation exit races nothing: an exiting process's threads are gone "
                             "before exit_mmap() unshares; choose another --operation")
        if self.size % PUD_SIZE or self.size < PUD_SIZE:
            raise InputError(f"--size {format_size(self.size)} is not a multiple of 1G: hugetlb shares one PMD "
                             f"table per whole 1 GiB-aligned 1 GiB range (try "
                             f"{format_size(max(1, round(self.size / PUD_SIZE)) * PUD_SIZE)})")
        if operation == "exit" and self.cycles * self.unsharers > MAX_EXIT_HELPERS:
            raise InputError(f"--operation exit forks one process per unshare: --cycles x (--sharers - 1) = "
                             f"{self.cycles * self.unsharers} is above {MAX_EXIT_HELPERS}")
        preflight_segment(self.size, self.facts)

    def configure(self, state: SystemState) -> None:
        self.start_racing()
        reserve_huge_pages(state, self.size, self.log)

    # -- per repeat -----------------------------------------------------------------------
    def prepare(self) -> None:
        try:
            self._prepare()
        except BaseException:
            self.cleanup()
            raise

    def _prepare(self) -> None:
        self._memfd = segment_memfd(self.size)
        self.layout = Layout(aligned_address(self.size), self.size, self._memfd, shared=not self.opt("control"))
        try:
            self.layout.map()
        except OSError as e:
            raise WorkloadError(f"cannot map the hugetlb memfd at {self.layout.addr:#x}: {e.strerror}") from None
        self._mapped = True
        own = self.layout.populate()
        count = self.cycles * self.unsharers if self.opt("operation") == "exit" else self.unsharers
        if self.opt("race") and self.layout.shared:
            write_pattern(self.layout.addr, self.size)  # in the file's pages, through our mapping
        walker_cpus = [c for c in self.facts.online_cpus if c != self.job.cpu] if self.opt("race") else []
        self._sharers = Sharers(self.layout, self.job.cpu, self.log, self.opt("operation"), walker_cpus=walker_cpus,
                                walker_lib=self.racing.lib if self.racing else None)
        helpers = self._sharers.start(count)  # they inherit the mapping, not its tables
        faults = [self._sharers.share(h) for h in helpers[:self.unsharers]]
        self._check_first_share(own, faults)
        if self.opt("race"):
            for h in helpers[:self.unsharers]:
                self._sharers.race(h, True)

    def _check_first_share(self, own: int, faults: List[int]) -> None:
        lay = self.layout
        assert lay is not None
        shared = [lay.looks_shared(f) for f in faults]
        detail = (f"the driver faulted {own} times building its own tables, the helpers "
                  f"{', '.join(map(str, faults))} time(s) ({lay.tables} table(s) of {ENTRIES_PER_TABLE} entries)")
        if self.opt("control"):
            if any(shared):
                raise WorkloadError(f"the control layout shared page tables, which it must not: {detail}")
            self.log(f"control: no sharing, as intended: {detail}")
        else:
            if not all(shared):
                raise WorkloadError(f"the kernel did not share the PMD tables (CONFIG_HUGETLB_PMD_PAGE_TABLE_SHARING "
                                    f"off, or an architecture without it): {detail}")
            self.log(f"PMD tables shared: {detail}")

    # -- the measured window --------------------------------------------------------------
    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        assert self._sharers is not None
        sharers = self._sharers
        helpers = sharers.members
        ops = 0
        failed: Counter = Counter()
        not_shared = 0
        exit_mode = self.opt("operation") == "exit"
        for k in range(self.cycles):
            batch = (helpers[k * self.unsharers:(k + 1) * self.unsharers] if exit_mode
                     else helpers[:self.unsharers])
            if k > 0:  # cycle 0 was shared (and verified) in prepare()
                for h in batch:
                    sharers.share(h)
                    not_shared += 0 if (h.shared or self.opt("control")) else 1
            for h in batch:
                ok = sharers.exit(h) if exit_mode else self._unshare(h, failed)
                if ok and (h.shared or self.opt("control")):
                    ops += 1
            if k % 20 == 19:
                progress(f"{self.opt('operation')}: cycle {k + 1}/{self.cycles}, {ops} {self.ops_unit}")
        notes = []
        if failed:
            notes.append(f"{self.opt('operation')} failed: " + ", ".join(f"{k} x{v}" for k, v in failed.items()))
        if not_shared:
            notes.append(f"{not_shared} re-share(s) did not share the tables (not counted)")
        outcome = PhaseOutcome(ops=ops, ops_expected=self.cycles * self.unsharers)
        if self.opt("race"):
            self._race_figures(outcome, notes)
        outcome.note = "; ".join(notes)
        return outcome

    def _race_figures(self, outcome: PhaseOutcome, notes: List[str]) -> None:
        """The unsharers' walkers stop (their calls are all in the window, which they
        bracket), the segment's pattern is checked through our mapping, the log scanned."""
        assert self._sharers is not None and self.layout is not None
        calls = sum(self._sharers.race(h, False) for h in self._sharers.members[:self.unsharers])
        bad = corrupted_bytes(self.layout.addr, self.size) if self.layout.shared else 0
        record(outcome, notes, WalkerFigures(calls=calls, during=calls), bad,
               self.racing.reports() if self.racing else [])

    def _unshare(self, h: Sharer, failed: Counter) -> bool:
        assert self._sharers is not None
        reply = self._sharers.unshare(h)
        if not reply.ok:
            failed[reply.error] += 1
        return reply.ok

    # -- cleanup --------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Reap every helper, unmap, close the memfd (its huge pages are freed with the last
        mapping). Idempotent; runs with Ctrl-C held off so a second one cannot cut it short."""
        with signals_blocked():
            if self._sharers is not None:
                self._sharers.close()
                self._sharers = None
            if self._mapped and self.layout is not None:
                libc.munmap(self.layout.addr, self.layout.size)
                self._mapped = False
            if self._memfd is not None:
                os.close(self._memfd)
                self._memfd = None
