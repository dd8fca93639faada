"""MADV_COLLAPSE over a large private anonymous range: one sync broadcast per 2 MiB.

What the kernel does per collapsed range (mm/khugepaged.c, collapse_huge_page()): it
clears the PMD with pmdp_collapse_flush(), which flushes the TLBs of the CPUs in the mm's
cpumask, then calls tlb_remove_table_sync_one() (mm/mmu_gather.c) so that no lock-less
GUP-fast walker still looks at the old page table; that call IPIs every other online CPU
(smp_call_function(tlb_remove_table_smp_sync, ...)). So a collapse of S bytes sends
S / 2 MiB broadcasts.

The driver does what MADV_COLLAPSE needs on real kernels (mm/khugepaged.c madvise_collapse()):
* private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS): Python's mmap gives MAP_SHARED
  shmem, which MADV_COLLAPSE refuses for this purpose;
* the range aligned to 2 MiB by us, so every PMD range is whole;
* faulted in as small pages: MADV_NOHUGEPAGE first, then MADV_POPULATE_WRITE;
* MADV_HUGEPAGE, then MADV_COLLAPSE in chunks (a progress line between chunks).
madvise() stops at the first error and may fail after collapsing part of a chunk, so the
count of collapses comes from /proc/vmstat thp_collapse_alloc, not from return codes.

Streamed (``window``): each MADV_COLLAPSE of a 2 MiB range is one collapse_huge_page() and
one sync broadcast whatever the size of the VMA, so the range need not be in memory at
once. The driver maps one window, collapses it, frees it with MADV_DONTNEED and populates
it again as small pages, window after window: the kernel does the same collapses in a
fraction of the memory. MADV_DONTNEED, not munmap: zapping a huge PMD frees its deposited
page table with pte_free() (zap_huge_pmd(), mm/huge_memory.c), no sync, while munmap's
page-table free can fall back to tlb_remove_table_one() on a paravirtual kernel, which
sends a sync of its own. The steps between windows run inside the measured phase; their
own IPIs are counted from /proc/interrupts around each and recorded (stream_step_cal,
stream_step_tlb), and the perf counter's exact count is the collapses' syncs alone.

khugepaged is stopped for the run by setting THP ``enabled`` to ``never`` (restored at the
end): khugepaged would otherwise wake as soon as MADV_HUGEPAGE registers our mm
(__khugepaged_enter()) and collapse some of our ranges itself, from another CPU, sending
its broadcasts to our driver CPU and bumping the same counter. Pausing it with a long
scan_sleep_millisecs is not enough for that reason. MADV_COLLAPSE does not depend on the
sysfs mode (madvise_collapse() does not enforce it), so it works under ``never``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from dataclasses import replace
from collections import Counter
from typing import Dict, List, Optional

from ...errors import PreflightError, WorkloadError
from ...measure.host import THP_DIR, kernel_version_tuple
from ...measure.procfs import diff_interrupts, read_interrupts
from ...measure.sysstate import SystemState
from ...units import MiB, format_size
from .. import libc
from ...vocab import PMD_SIZE
from ..base import PhaseOutcome, Progress, Workload
from ..race import Walkers, corrupted_bytes, record, write_pattern
from .spec import SPEC

CHUNK = 128 * MiB
#: Memory we leave free beside the range: page tables, the copies a collapse makes, the rest
#: of the system.
MARGIN_MIN = 512 * MiB


def default_size(mem_available: int) -> int:
    """A size that shows the effect clearly and fits: up to 4 GiB, at most a third of free memory."""
    size = min(4 << 30, max(mem_available - MARGIN_MIN, 0) // 3)
    return max(size // PMD_SIZE * PMD_SIZE, 0)


class CollapseWorkload(Workload):
    spec = SPEC

    @classmethod
    def resolve(cls, job, facts):
        """A size sized to this host's free memory unless given."""
        return job if job.size is not None else replace(job, size=default_size(facts.mem_available))

    def __init__(self, job, facts, log):
        super().__init__(job, facts, log)
        self.size = job.size // PMD_SIZE * PMD_SIZE
        window = self.opt("window")
        #: the bytes mapped at once: a window of the range when streaming, else all of it
        self.window = self.size if not window or window >= self.size else window
        self.base: Optional[int] = None
        self.addr = 0
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()
        self.walkers: Optional[Walkers] = None

    def planned_ops(self) -> int:
        return self.size // PMD_SIZE

    @property
    def streamed(self) -> bool:
        return self.window < self.size

    def describe(self) -> str:
        threads = f", {self.job.threads} touching thread(s)" if self.job.threads else ""
        stream = f", streamed {format_size(self.window)} at a time" if self.streamed else ""
        return f"MADV_COLLAPSE of {format_size(self.size)} ({self.size // PMD_SIZE} x 2 MiB){stream}{threads}"

    # -- per run --------------------------------------------------------------------------
    def preflight(self) -> None:
        if kernel_version_tuple(self.facts.kernel_release) < (6, 1):
            raise PreflightError(
                f"kernel {self.facts.kernel_release} has no MADV_COLLAPSE (added in Linux 6.1)")
        if not THP_DIR.is_dir():
            raise PreflightError(f"{THP_DIR} is missing: kernel built without CONFIG_TRANSPARENT_HUGEPAGE")
        if self.job.size % PMD_SIZE:
            raise PreflightError(f"--size {self.job.size} is not a multiple of 2 MiB (try {format_size(self.size)})")
        if self.size < PMD_SIZE:
            raise PreflightError("--size must be at least 2M (one huge page)")
        if self.streamed and self.opt("race"):
            raise PreflightError("--race checks the whole range at once: it cannot be streamed (drop --window)")
        need = self.window + max(MARGIN_MIN, self.window // 10)
        if need > self.facts.mem_available:
            what = f"--window {format_size(self.window)}" if self.streamed else f"--size {format_size(self.size)}"
            raise PreflightError(
                f"{what} needs about {need >> 20} MiB free but MemAvailable is "
                f"{self.facts.mem_available >> 20} MiB; pick a smaller {what.split()[0]}"
                + ("" if self.streamed else " or stream it with --window"))
        others = [c for c in self.facts.online_cpus if c != self.job.cpu]
        if (self.job.threads or self.opt("race")) and not others:
            raise PreflightError("--threads and --race need a second online CPU")

    def configure(self, state: SystemState) -> None:
        self.start_racing()
        state.set_knob(str(THP_DIR / "enabled"), "never")
        # Linux 6.8+ has per-size knobs; khugepaged keeps running while the PMD size is
        # enabled there ("always"/"madvise"; "inherit" follows the top-level knob).
        pmd = THP_DIR / f"hugepages-{PMD_SIZE >> 10}kB" / "enabled"
        if pmd.exists() and self.facts.thp.get(f"hugepages-{PMD_SIZE >> 10}kB/enabled", "inherit") != "inherit":
            state.set_knob(str(pmd), "never")

    # -- per repeat -----------------------------------------------------------------------
    def prepare(self) -> None:
        try:
            self.base, self.addr = libc.map_small_pages(self.window, PMD_SIZE)
        except OSError as e:
            raise WorkloadError(f"cannot map and fault in {format_size(self.window)}: {e.strerror}") from None
        libc.madvise(self.addr, self.window, libc.MADV_HUGEPAGE)
        self._start_threads()
        if self.opt("race"):
            write_pattern(self.addr, self.size)
            assert self.racing is not None
            self.walkers = Walkers(self.racing.lib, self.addr, self.size,
                                   [c for c in self.facts.online_cpus if c != self.job.cpu])
            self.walkers.start()

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        if self.walkers:
            self.walkers.window(True)
        try:
            return self._collapse(progress)
        finally:
            if self.walkers:
                self.walkers.window(False)

    def _collapse(self, progress: Progress) -> PhaseOutcome:
        errors: Counter = Counter()
        refused = raced = 0
        done = 0
        total = self.size
        # --race: one call per 2 MiB range, so that refusals and races count ranges
        step = PMD_SIZE if self.walkers else CHUNK
        steps = _StepCounter(self.job.cpu) if self.streamed else None
        while done < total:
            offset = done % self.window  # the window is the range itself when not streamed
            if steps is not None and done and offset == 0:
                steps.between_windows(self._refill)
            n = min(step, total - done, self.window - offset)
            calls = self.walkers.calls_so_far() if self.walkers else 0
            for attempt in (1, 2):
                try:
                    libc.madvise(self.addr + offset, n, libc.MADV_COLLAPSE)
                    break
                except OSError as e:
                    refused += 1 if e.errno == errno.EAGAIN else 0
                    if e.errno == errno.EAGAIN and attempt == 1:
                        continue  # transient (a page was busy): retry once
                    errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
                    break
            if self.walkers and self.walkers.calls_so_far() > calls:
                raced += 1  # a walker pinned pages while this range collapsed
            done += n
            progress(f"collapse {done >> 20}/{total >> 20} MiB ({100 * done // total}%)")
        note = ""
        if errors:
            calls = -(-total // step) if not self.streamed else -(-total // self.window) * -(-self.window // step)
            note = "MADV_COLLAPSE failed on " + ", ".join(f"{k} x{v}" for k, v in errors.items()) + \
                   f" of {calls} call(s)"
        # a refused range (EAGAIN: a page's reference count, e.g. a walker's pin) may have
        # allocated its huge page and sent its sync already: vmstat counts it as a collapse
        figures = {"collapses_refused": float(refused), "ops_raced": float(raced)} if self.walkers else {}
        if steps is not None:
            figures.update(steps.figures(windows=-(-total // self.window)))
        return PhaseOutcome(ops=0, ops_expected=total // PMD_SIZE, note=note, figures=figures)

    def _refill(self) -> None:
        """Between two windows: free the collapsed window and fault it in again as small
        pages, ready for the next window's collapses."""
        libc.madvise(self.addr, self.window, libc.MADV_DONTNEED)
        libc.madvise(self.addr, self.window, libc.MADV_NOHUGEPAGE)
        try:
            libc.madvise(self.addr, self.window, libc.MADV_POPULATE_WRITE)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise WorkloadError(f"cannot fault in the next window: {e.strerror}") from None
            libc.touch(self.addr, self.window)
        libc.madvise(self.addr, self.window, libc.MADV_HUGEPAGE)

    def count_ops(self, outcome: PhaseOutcome, vmstat_delta: Dict[str, int]) -> PhaseOutcome:
        outcome.ops = vmstat_delta.get("thp_collapse_alloc", 0)
        failed = vmstat_delta.get("thp_collapse_alloc_failed", 0)
        notes = [outcome.note] if outcome.note else []
        if failed:
            notes.append(f"{failed} huge page allocation(s) failed (thp_collapse_alloc_failed)")
        if outcome.ops > outcome.ops_expected:
            retried = int(outcome.figures.get("collapses_refused", 0))
            why = (f"{retried} range(s) refused with EAGAIN and retried (a refusal after the huge page's "
                   f"allocation counts as a collapse)" if retried else "khugepaged or another process")
            notes.append(f"{outcome.ops - outcome.ops_expected} collapse(s) beyond ours: {why}")
        if self.walkers is not None:
            self._race_figures(outcome, notes)
        outcome.note = "; ".join(notes)
        return outcome

    def _race_figures(self, outcome: PhaseOutcome, notes: List[str]) -> None:
        """After the operation: the walkers stop, the pattern is checked, the log scanned."""
        assert self.walkers is not None
        self.walkers.stop()
        record(outcome, notes, self.walkers.figures, corrupted_bytes(self.addr, self.size),
               self.racing.reports() if self.racing else [])
        self.walkers = None

    def cleanup(self) -> None:
        if self.walkers is not None:
            self.walkers.stop()
            self.walkers = None
        self._stop_threads()
        if self.base is not None:
            libc.munmap(self.base, self.window + PMD_SIZE)
            self.base = None

    # -- touching threads -----------------------------------------------------------------
    def _start_threads(self) -> None:
        others = [c for c in self.facts.online_cpus if c != self.job.cpu]
        self._stop.clear()
        for i in range(self.job.threads):
            cpu = others[i % len(others)]
            t = threading.Thread(target=self._touch_loop, args=(cpu, i), name=f"toucher-{cpu}", daemon=True)
            t.start()
            self._threads.append(t)

    def _touch_loop(self, cpu: int, index: int) -> None:
        """Read the range in 256 KiB steps from another CPU, so the mm stays live there and
        the collapse's TLB flush must reach that CPU (shootdowns appear in TLB)."""
        os.sched_setaffinity(0, {cpu})
        step = 256 << 10
        scratch = ctypes.create_string_buffer(step)
        off = (index * 64 * MiB) % self.window
        while not self._stop.is_set():
            libc.read_into(ctypes.addressof(scratch), self.addr + off, step)
            off = (off + step) % self.window

    def _stop_threads(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []


class _StepCounter:
    """The IPIs and time of a streamed collapse's steps between windows (free, populate):
    /proc/interrupts read around each step, CAL and TLB summed over the CPUs other than
    the driver's, so the run can say how much of its workload phase's counts they are."""

    def __init__(self, driver_cpu: int):
        self.driver_cpu = driver_cpu
        self.cal = self.tlb = 0
        self.seconds = 0.0

    def between_windows(self, step) -> None:
        import time

        before, t0 = read_interrupts(), time.monotonic()
        step()
        self.seconds += time.monotonic() - t0
        diff = diff_interrupts(before, read_interrupts())
        for name, attr in (("function_call", "cal"), ("tlb_shootdown", "tlb")):
            per_cpu = diff.canonical_per_cpu(name)
            setattr(self, attr, getattr(self, attr) + sum(n for c, n in per_cpu.items() if c != self.driver_cpu))

    def figures(self, windows: int) -> Dict[str, float]:
        return {"stream_windows": float(windows), "stream_step_cal": float(self.cal),
                "stream_step_tlb": float(self.tlb), "stream_step_seconds": round(self.seconds, 3)}
