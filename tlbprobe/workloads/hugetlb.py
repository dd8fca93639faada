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
tables (FACTS.md: 1, 2, 4 GiB), none for a layout that cannot share, and with
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
and table: --sharers is how the report tells the two apart.

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

import errno
import os
import resource
import select
import signal
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from ..errors import InputError, PreflightError, WorkloadError
from ..measure.host import kernel_version_tuple
from ..measure.procfs import read_meminfo
from ..sysstate import SystemState, read_knob, signals_blocked
from ..units import GiB, format_size
from . import libc
from .base import Option, PhaseOutcome, Progress, Workload
from ..vocab import HUGETLB_OPERATIONS as OPERATIONS
from ..vocab import PMD_SIZE, PUD_SIZE

DEFAULT_SIZE = GiB
#: Cycles per repeat. Measured here (1G, 2 sharers): ~0.1 ms per cycle (exit: ~0.8 ms), so
#: 200 cycles make a 20-160 ms window with 200 broadcasts, against a background of ~6 CAL/s
#: per CPU (0.1-1 in such a window). Ask for more with --cycles for latency runs.
DEFAULT_CYCLES = 200
#: --operation exit forks one helper per op up front; each keeps one pipe open in the driver.
MAX_EXIT_HELPERS = 500
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
HUGEPAGE = PMD_SIZE
#: PMD entries per table: a process that faults a 1 GiB range with its own table takes 512
#: faults, one that finds a shared table takes 1.
ENTRIES_PER_TABLE = PUD_SIZE // PMD_SIZE
#: Where we would like the range: far below where mmap() places things top-down, so a
#: malloc in the driver between a helper's munmap and re-mmap can never take the hole.
#: Only a hint; the kernel chooses elsewhere when it is taken or beyond TASK_SIZE.
ADDRESS_HINT = 0x100000000000  # 16 TiB
#: Seconds to wait for a helper's reply before checking whether it died.
REPLY_POLL_S = 1.0
REPLY_TIMEOUT_S = 120.0
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


@dataclass
class Layout:
    """What every process maps: the memfd at ``addr``, shared (sharing possible) or private."""

    addr: int
    size: int
    fd: int
    shared: bool

    @property
    def flags(self) -> int:
        kind = libc.MAP_SHARED if self.shared else libc.MAP_PRIVATE | libc.MAP_NORESERVE
        return kind | libc.MAP_FIXED_NOREPLACE

    def map(self, offset: int = 0, length: Optional[int] = None) -> None:
        """Map [offset, offset+length) of the file at addr+offset (fixed, never replacing)."""
        length = self.size - offset if length is None else length
        libc.mmap(length, libc.PROT_READ | libc.PROT_WRITE, self.flags, self.fd, self.addr + offset, offset)

    def populate(self) -> int:
        """Fault the whole range in; returns this thread's page faults meanwhile.

        This is how sharing is verified. The faults MADV_POPULATE_* takes (GUP, counted in
        the task's min_flt by mm_account_fault()) are one per 2 MiB entry that is not yet
        present: 512 per 1 GiB for a process that builds its own PMD table, 1 per 1 GiB
        for one whose first fault found a table to share in huge_pmd_share() (all its
        entries are already there). Other signals do not tell: VmPTE in /proc/PID/status
        grows by the same 4 KiB per table either way (huge_pmd_share() calls
        mm_inc_nr_pmds() too), and PageTables in /proc/meminfo is system-wide and moves by
        only 4 KiB per GiB. The private control maps read-only (MADV_POPULATE_READ) so no
        copy-on-write page is ever allocated.
        """
        advice = libc.MADV_POPULATE_WRITE if self.shared else libc.MADV_POPULATE_READ
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        libc.madvise(self.addr, self.size, advice)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    @property
    def tables(self) -> int:
        return self.size // PUD_SIZE

    def looks_shared(self, faults: int, tables: Optional[int] = None) -> bool:
        """Fewer faults than half a table's entries beyond one per table: the table was found."""
        n = self.tables if tables is None else tables
        return faults < n + ENTRIES_PER_TABLE // 2


class HelperOps:
    """A helper's side of one cycle: the unshare operation and the re-share after it.

    Runs in the forked helper only. ``state`` remembers what the last operation left, so
    ``reshare`` knows how to get back to one whole mapping.
    """

    def __init__(self, layout: Layout, operation: str):
        self.layout = layout
        self.operation = operation
        self.state = "mapped"

    def unshare(self) -> None:
        lay = self.layout
        if self.operation == "munmap":
            libc.munmap(lay.addr, lay.size)
            self.state = "unmapped"
        elif self.operation == "mprotect":
            libc.mprotect(lay.addr, lay.size, libc.PROT_READ)
            self.state = "readonly"
        elif self.operation == "madvise-dontneed":
            libc.madvise(lay.addr, lay.size, libc.MADV_DONTNEED)
        elif self.operation == "partial-munmap":
            # The last 2 MiB: the VMA split inside a shared 1 GiB range makes
            # hugetlb_split() unshare that range's table before the unmap.
            libc.munmap(lay.addr + lay.size - HUGEPAGE, HUGEPAGE)
            self.state = "split"
        else:  # pragma: no cover - checked in preflight
            raise ValueError(self.operation)

    def reshare(self) -> int:
        """Back to one whole mapping, then fault it in; returns the faults taken."""
        lay = self.layout
        if self.state == "unmapped":
            lay.map()
        elif self.state == "readonly":
            libc.mprotect(lay.addr, lay.size, libc.PROT_READ | libc.PROT_WRITE)
        elif self.state == "split":
            # The last 1 GiB is now two VMAs that do not merge again (hugetlb VMAs have a
            # close op), and a table is shared only when one VMA covers the whole range:
            # replace them by one. The unmap starts on a 1 GiB boundary, so no split
            # unshares anything here, and its table was unshared by the split already.
            last = lay.size - PUD_SIZE
            libc.munmap(lay.addr + last, PUD_SIZE - HUGEPAGE)
            lay.map(last, PUD_SIZE)
        self.state = "mapped"
        return lay.populate()


def helper_main(idx: int, layout: Layout, operation: str, cmd_fd: int, reply_fd: int,
                cpu: int, parent: int) -> int:
    """A helper process's life: obey one-byte commands from the driver until EOF.

    ``s`` share (re-share) and reply the faults taken, ``u`` unshare, ``x`` exit now (the
    exit operation). Replies are ``<idx> ok <n>`` or ``<idx> err <errno>`` lines on the
    pipe shared by all helpers (writes under PIPE_BUF are atomic).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C: the driver cleans up
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    libc.set_parent_death_signal(signal.SIGKILL)       # driver SIGKILLed: we go too
    if os.getppid() != parent:                         # it died before prctl took effect
        return 1
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.sched_setaffinity(0, {cpu})
    ops = HelperOps(layout, operation)

    def reply(status: str, value: int) -> None:
        os.write(reply_fd, f"{idx} {status} {value}\n".encode())

    while True:
        cmd = os.read(cmd_fd, 1)
        if not cmd:
            return 0
        try:
            if cmd == b"s":
                reply("ok", ops.reshare())
            elif cmd == b"u":
                ops.unshare()
                reply("ok", 0)
            elif cmd == b"x":
                return 0
            else:
                reply("err", errno.EINVAL)
        except OSError as e:
            reply("err", e.errno or 0)


@dataclass
class Helper:
    """The driver's handle on one helper process."""

    idx: int
    pid: int
    cmd_fd: Optional[int]
    reaped: bool = False
    shared: bool = False       # its last (re-)share was verified


class HugetlbUnshareWorkload(Workload):
    name = "hugetlb-unshare"
    ops_unit = "unshares"
    options = (
        Option("operation", "how the sharers unshare: " + ", ".join(OPERATIONS) + " (default: munmap)",
               choices=OPERATIONS, default="munmap"),
        Option("sharers", "processes sharing the page tables (default: 2)", kind=int, default=2, low=2, high=64,
               metavar="N"),
        Option("cycles", f"share/unshare cycles per repeat (default: {DEFAULT_CYCLES}, fewer for exit)", kind=int,
               low=1, high=100000, metavar="M"),
        Option("control", "a layout that cannot share PMD tables (no sync IPIs expected)", flag=True, default=False),
    )

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
        self._helpers: List[Helper] = []
        self._reply_fd: Optional[int] = None
        self._reply_buf = b""

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
        if self.size % PUD_SIZE or self.size < PUD_SIZE:
            raise InputError(f"--size {format_size(self.size)} is not a multiple of 1G: hugetlb shares one PMD "
                             f"table per whole 1 GiB-aligned 1 GiB range (try "
                             f"{format_size(max(1, round(self.size / PUD_SIZE)) * PUD_SIZE)})")
        if operation == "exit" and self.cycles * self.unsharers > MAX_EXIT_HELPERS:
            raise InputError(f"--operation exit forks one process per unshare: --cycles x (--sharers - 1) = "
                             f"{self.cycles * self.unsharers} is above {MAX_EXIT_HELPERS}")
        if kernel_version_tuple(self.facts.kernel_release) < (5, 14):
            raise PreflightError(f"kernel {self.facts.kernel_release} lacks MADV_POPULATE_WRITE (Linux 5.14), "
                                 "which this driver uses to fault in and to verify sharing")
        if not os.path.exists(NR_HUGEPAGES):
            raise PreflightError(f"{NR_HUGEPAGES} is missing: kernel built without CONFIG_HUGETLBFS")
        if resource.getpagesize() != 4096:
            raise PreflightError("hugetlb PMD sharing is driven with 4 KiB base pages only (PMD = 2 MiB, PUD = 1 GiB)")
        hp = hugepage_status()
        if hp["pagesize"] != HUGEPAGE:
            raise PreflightError(f"the default huge page size is {hp['pagesize'] >> 10} kB, not 2048 kB: "
                                 "nr_hugepages would reserve the wrong size (boot without default_hugepagesz)")
        missing = max(0, pages_for(self.size) - hp["available"]) * HUGEPAGE
        margin = 512 << 20
        if missing + margin > self.facts.mem_available:
            raise PreflightError(f"--size {format_size(self.size)} needs {missing >> 20} MiB of new huge pages but "
                                 f"MemAvailable is {self.facts.mem_available >> 20} MiB; pick a smaller --size")

    def configure(self, state: SystemState) -> None:
        """Reserve the huge pages the memfd needs beyond those already available.

        Through the journal, so nr_hugepages goes back on every exit path, and after a
        SIGKILL with `tlbprobe restore`. The kernel allocates them on the write
        (set_max_huge_pages()) and may get fewer than asked when memory is fragmented:
        re-read and refuse rather than die of SIGBUS at a fault later.
        """
        need = pages_for(self.size)
        hp = hugepage_status()
        if hp["available"] >= need:
            self.log(f"huge pages: {hp['available']} x 2 MiB available, {need} needed; nr_hugepages unchanged")
            return
        old = int(read_knob(NR_HUGEPAGES))
        target = old + need - hp["available"]
        state.set_knob(NR_HUGEPAGES, str(target))
        now = int(read_knob(NR_HUGEPAGES))
        got = hugepage_status()
        self.log(f"huge pages: asked for {target - old} more (nr_hugepages {old} -> {target}), got {now - old}; "
                 f"{got['available']} available, {need} needed")
        if got["available"] < need:
            raise PreflightError(
                f"could reserve only {got['available']} of the {need} 2 MiB huge pages {format_size(self.size)} "
                f"needs (nr_hugepages {now} of {target} asked; memory in use or fragmented). Free memory, "
                f"reserve them at boot (hugepages={need}) or pick a smaller --size; nr_hugepages goes back to {old}")

    # -- per repeat -----------------------------------------------------------------------
    def prepare(self) -> None:
        try:
            self._prepare()
        except BaseException:
            self.cleanup()
            raise

    def _prepare(self) -> None:
        self._memfd = os.memfd_create("tlbprobe-hugetlb", os.MFD_CLOEXEC | os.MFD_HUGETLB | MFD_HUGE_2MB)
        try:
            os.ftruncate(self._memfd, self.size)
            # Allocate every page now (hugetlbfs_fallocate()), so a shortage is an error
            # here and never a SIGBUS at a fault; the private control maps these pages too.
            os.posix_fallocate(self._memfd, 0, self.size)
        except OSError as e:
            raise WorkloadError(f"cannot allocate {format_size(self.size)} of 2 MiB huge pages: {e.strerror} "
                                f"(HugePages_Free {hugepage_status()['free']})") from None
        self.layout = Layout(self._aligned_address(), self.size, self._memfd, shared=not self.opt("control"))
        try:
            self.layout.map()
        except OSError as e:
            raise WorkloadError(f"cannot map the hugetlb memfd at {self.layout.addr:#x}: {e.strerror}") from None
        self._mapped = True
        own = self.layout.populate()
        r, w = os.pipe()
        self._reply_fd = r
        count = self.cycles * self.unsharers if self.opt("operation") == "exit" else self.unsharers
        try:
            for i in range(count):
                self._fork_helper(i, w)
        finally:
            os.close(w)  # only the helpers hold the write end: EOF when they are all gone
        first = self._helpers[:self.unsharers]
        faults = [self._share(h) for h in first]
        self._check_first_share(own, faults)

    def _aligned_address(self) -> int:
        """A free 1 GiB-aligned range: reserve size + 1 GiB of address space, keep the aligned
        part's address, give the reservation back (MAP_FIXED_NOREPLACE then claims it)."""
        length = self.size + PUD_SIZE
        base = libc.mmap(length, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE,
                         addr=ADDRESS_HINT)
        libc.munmap(base, length)
        return libc.align_up(base, PUD_SIZE)

    def _fork_helper(self, idx: int, reply_w: int) -> None:
        r, w = os.pipe()
        parent = os.getpid()
        assert self.layout is not None and self._reply_fd is not None
        with signals_blocked():  # no Ctrl-C between fork and the helper's own handlers
            pid = os.fork()
            if pid == 0:  # the helper: never returns into the collector
                code = 1
                try:
                    os.close(w)
                    os.close(self._reply_fd)
                    for h in self._helpers:
                        if h.cmd_fd is not None:
                            os.close(h.cmd_fd)
                    code = helper_main(idx, self.layout, self.opt("operation"), r, reply_w, self.job.cpu, parent)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            os.close(r)
            self._helpers.append(Helper(idx, pid, w))  # tracked before a held-off Ctrl-C lands

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
        ops = 0
        failed: Counter = Counter()
        not_shared = 0
        exit_mode = self.opt("operation") == "exit"
        for k in range(self.cycles):
            batch = (self._helpers[k * self.unsharers:(k + 1) * self.unsharers] if exit_mode
                     else self._helpers[:self.unsharers])
            if k > 0:  # cycle 0 was shared (and verified) in prepare()
                for h in batch:
                    self._share(h)
                    not_shared += 0 if (h.shared or self.opt("control")) else 1
            for h in batch:
                ok = self._exit(h) if exit_mode else self._unshare(h, failed)
                if ok and (h.shared or self.opt("control")):
                    ops += 1
            if k % 20 == 19:
                progress(f"{self.opt('operation')}: cycle {k + 1}/{self.cycles}, {ops} {self.ops_unit}")
        notes = []
        if failed:
            notes.append(f"{self.opt('operation')} failed: " + ", ".join(f"{k} x{v}" for k, v in failed.items()))
        if not_shared:
            notes.append(f"{not_shared} re-share(s) did not share the tables (not counted)")
        return PhaseOutcome(ops=ops, ops_expected=self.cycles * self.unsharers, note="; ".join(notes))

    def _share(self, h: Helper) -> int:
        """Have a helper (re-)share and record whether it found the tables."""
        status, value = self._command(h, b"s")
        if status != "ok":
            raise WorkloadError(f"helper {h.idx} could not map and fault the range: {os.strerror(value)}")
        assert self.layout is not None
        h.shared = self.layout.looks_shared(value)
        return value

    def _unshare(self, h: Helper, failed: Counter) -> bool:
        status, value = self._command(h, b"u")
        if status != "ok":
            failed[errno.errorcode.get(value, str(value))] += 1
            return False
        return True

    def _exit(self, h: Helper) -> bool:
        """The exit operation: the helper exits; reaping it means exit_mmap() is done."""
        assert h.cmd_fd is not None
        try:
            os.write(h.cmd_fd, b"x")
        except BrokenPipeError:
            raise WorkloadError(f"helper {h.idx} (pid {h.pid}) died before its exit operation") from None
        os.close(h.cmd_fd)
        h.cmd_fd = None
        _, status = os.waitpid(h.pid, 0)
        h.reaped = True
        return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    def _command(self, h: Helper, cmd: bytes) -> Tuple[str, int]:
        """Send one command and wait for the helper's reply line: (status, int value)."""
        if h.cmd_fd is None or self._reply_fd is None:
            raise WorkloadError(f"helper {h.idx} is gone")
        try:
            os.write(h.cmd_fd, cmd)
        except BrokenPipeError:
            raise WorkloadError(f"helper {h.idx} (pid {h.pid}) died") from None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while b"\n" not in self._reply_buf:
            ready, _, _ = select.select([self._reply_fd], [], [], REPLY_POLL_S)
            if ready:
                chunk = os.read(self._reply_fd, 4096)
                if not chunk:
                    raise WorkloadError("all helper processes are gone")
                self._reply_buf += chunk
                continue
            pid, status = os.waitpid(h.pid, os.WNOHANG)
            if pid:
                h.reaped = True
                raise WorkloadError(f"helper {h.idx} (pid {h.pid}) died: {describe_status(status)}")
            if time.monotonic() > deadline:
                raise WorkloadError(f"helper {h.idx} (pid {h.pid}) did not answer in {REPLY_TIMEOUT_S:g} s")
        line, self._reply_buf = self._reply_buf.split(b"\n", 1)
        parts = line.decode().split()
        if len(parts) != 3 or parts[0] != str(h.idx):
            raise WorkloadError(f"unexpected reply {line!r} from the helpers (waiting for helper {h.idx})")
        return parts[1], int(parts[2])

    # -- cleanup --------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Reap every helper, unmap, close the memfd (its huge pages are freed with the last
        mapping). Idempotent; runs with Ctrl-C held off so a second one cannot cut it short."""
        with signals_blocked():
            for h in self._helpers:
                if h.cmd_fd is not None:
                    try:
                        os.close(h.cmd_fd)  # EOF: the helper exits by itself
                    except OSError:
                        pass
                    h.cmd_fd = None
            self._reap(self._helpers, timeout=5.0)
            self._helpers = []
            if self._reply_fd is not None:
                os.close(self._reply_fd)
                self._reply_fd = None
            self._reply_buf = b""
            if self._mapped and self.layout is not None:
                libc.munmap(self.layout.addr, self.layout.size)
                self._mapped = False
            if self._memfd is not None:
                os.close(self._memfd)
                self._memfd = None

    def _reap(self, helpers: List[Helper], timeout: float) -> None:
        """Wait for helpers to exit; SIGKILL (by pid, our own children only) those that don't."""
        deadline = time.monotonic() + timeout
        pending = [h for h in helpers if not h.reaped]
        while pending:
            for h in list(pending):
                try:
                    pid, _ = os.waitpid(h.pid, os.WNOHANG)
                except ChildProcessError:
                    pid = h.pid
                if pid:
                    h.reaped = True
                    pending.remove(h)
            if not pending:
                break
            if time.monotonic() > deadline:
                for h in pending:
                    try:
                        os.kill(h.pid, signal.SIGKILL)
                        os.waitpid(h.pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
                    h.reaped = True
                self.log(f"warning: killed {len(pending)} helper process(es) that did not exit")
                break
            time.sleep(0.01)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
