"""khugepaged: the background collapse every machine with THP runs, and its broadcasts.

What khugepaged does (mm/khugepaged.c). A kernel thread, on whatever CPU the scheduler
gives it (niced to MAX_NICE). Each wake-up, khugepaged_do_scan() walks the registered mms
(an mm is registered by khugepaged_enter_vma(), e.g. from madvise(MADV_HUGEPAGE)) for at
most ``pages_to_scan`` pages of progress: khugepaged_scan_mm_slot() adds HPAGE_PMD_NR
(512) per 2 MiB range it looks at, collapsed or not. Then khugepaged_wait_work() sleeps
``scan_sleep_millisecs``. A range it collapses goes through collapse_huge_page(), the same
function as MADV_COLLAPSE: pmdp_collapse_flush() then tlb_remove_table_sync_one(), one
broadcast to every other online CPU, sent from khugepaged's CPU. So:

* the collapse rate is bounded by pages_to_scan / 512 ranges per scan_sleep interval
  (kernel defaults 4096 and 10000 ms: 8 ranges per 10 s, 0.8 broadcasts per second while
  there is anything to collapse, 2,880 an hour; measured here: 128 ranges in 153.6 s,
  benchmarks/khugepaged_rate.py);
* only anonymous collapse sends the sync: file and shmem collapse (collapse_file()) free
  the old table with pte_free_defer(), an RCU callback, and no broadcast; vmstat
  thp_collapse_alloc counts both, khugepaged's ``pages_collapsed`` (one per collapsed
  range, despite its name) too. This driver collapses anonymous memory only;
* once everything eligible is collapsed, khugepaged keeps waking and scanning, and sends
  nothing: the steady state.

The driver. It maps a private anonymous region (2 MiB aligned), faults it in as small
pages under MADV_NOHUGEPAGE (touching an MADV_HUGEPAGE region would fault huge pages
directly and leave nothing to collapse), and at the start of the measured window turns
it MADV_HUGEPAGE, which registers the mm with khugepaged and wakes it. The window lasts
until the region is collapsed (AnonHugePages of its VMA in /proc/self/smaps) and then
``steady_seconds`` more. Since khugepaged sends from any CPU, every online CPU is counted
(``sender_is_driver = False``): the driver itself only sleeps.

The knobs are the kernel's defaults unless the job says otherwise, so a default run shows
what a default machine sees; every one is journaled and restored (`tlbprobe restore` after
a SIGKILL). THP ``enabled`` defaults to ``madvise``, which lets khugepaged work on this
region only; ``always`` (many distributions' default) makes it also scan every other
process on the machine, which is what such a machine sees, and what a clean count cannot
tell apart from ours.
"""

from __future__ import annotations

import errno
import time
from dataclasses import replace
from typing import Dict, Optional

from ...errors import PreflightError, WorkloadError
from ...measure import procfs
from ...measure.host import THP_DIR, kernel_version_tuple
from ...measure.sysstate import SystemState, read_knob
from ...units import MiB, format_size
from ...vocab import PMD_SIZE
from .. import libc
from ..base import PhaseOutcome, Progress, Workload
from .spec import KNOBS, SPEC, max_rate, seconds_to_collapse

KHUGEPAGED_DIR = THP_DIR / "khugepaged"
__all__ = ["KNOBS", "KhugepagedWorkload", "max_rate", "region_huge_bytes", "seconds_to_collapse"]
DEFAULT_SIZE = 256 * MiB
#: How often the driver looks at the region (and samples CAL/TLB for the time series)
POLL_S = 0.25


def region_huge_bytes(addr: int, length: int, smaps: str) -> int:
    """AnonHugePages of the VMAs inside [addr, addr+length) in /proc/self/smaps text (the
    region may be one VMA or, after a split at its edges, several)."""
    total, inside = 0, False
    for line in smaps.splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:  # a VMA's first line: start-end perms ...
            try:
                start = int(head.split("-", 1)[0], 16)
            except ValueError:
                inside = False
                continue
            inside = addr <= start < addr + length
        elif inside and line.startswith("AnonHugePages:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                total += int(parts[1]) * 1024
    return total


class KhugepagedWorkload(Workload):
    spec = SPEC

    @classmethod
    def resolve(cls, job, facts):
        """256M unless given; max_wait from what the knobs allow for that size."""
        size = job.size or DEFAULT_SIZE
        opts = dict(job.options)
        if opts.get("max_wait") is None:
            least = seconds_to_collapse(size // PMD_SIZE, opts["pages_to_scan"], opts["scan_sleep_millisecs"])
            opts["max_wait"] = int(3 * least + 30)
        return replace(job, size=size, options=opts)

    def __init__(self, job, facts, log):
        super().__init__(job, facts, log)
        self.size = job.size // PMD_SIZE * PMD_SIZE
        self.base: Optional[int] = None
        self.addr = 0

    def planned_ops(self) -> int:
        return self.size // PMD_SIZE

    def describe(self) -> str:
        rate = max_rate(self.opt("pages_to_scan"), self.opt("scan_sleep_millisecs"))
        bound = f"at most {rate:g} collapses/s" if rate is not None else "no sleep between scans"
        return (f"khugepaged collapsing {format_size(self.size)} ({self.size // PMD_SIZE} x 2 MiB; pages_to_scan "
                f"{self.opt('pages_to_scan')}, scan_sleep {self.opt('scan_sleep_millisecs')} ms: {bound}), then "
                f"{self.opt('steady_seconds')} s of steady state")

    # -- per run --------------------------------------------------------------------------
    def preflight(self) -> None:
        if not KHUGEPAGED_DIR.is_dir():
            raise PreflightError(f"{KHUGEPAGED_DIR} is missing: kernel built without CONFIG_TRANSPARENT_HUGEPAGE")
        if kernel_version_tuple(self.facts.kernel_release) < (5, 14):
            raise PreflightError(f"kernel {self.facts.kernel_release} lacks MADV_POPULATE_WRITE (Linux 5.14)")
        if self.size < PMD_SIZE or self.job.size % PMD_SIZE:
            raise PreflightError(f"--size must be a multiple of 2M, at least 2M (try {format_size(self.size)})")
        need = self.size * 2 + 512 * MiB  # the small pages and the huge ones khugepaged allocates beside them
        if need > self.facts.mem_available:
            raise PreflightError(f"--size {format_size(self.size)} needs about {need >> 20} MiB free but "
                                 f"MemAvailable is {self.facts.mem_available >> 20} MiB; pick a smaller --size")

    def configure(self, state: SystemState) -> None:
        for key, (rel, _default) in KNOBS.items():
            path = THP_DIR / rel
            if not path.exists():
                raise PreflightError(f"{path} is missing: this kernel's THP has no {key} knob")
            state.set_knob(str(path), str(self.opt(key)))
        # Linux 6.8+: the PMD size's own knob; "inherit" (its default) follows `enabled`.
        pmd = THP_DIR / f"hugepages-{PMD_SIZE >> 10}kB" / "enabled"
        if pmd.exists():
            state.set_knob(str(pmd), "inherit")
        self.log("khugepaged knobs: " + ", ".join(f"{k} {self.opt(k)}" for k in KNOBS))

    # -- per repeat -----------------------------------------------------------------------
    def prepare(self) -> None:
        try:
            self.base, self.addr = libc.map_small_pages(self.size, PMD_SIZE)
        except OSError as e:
            raise WorkloadError(f"cannot map and fault in {format_size(self.size)}: {e.strerror}") from None
        huge = self._huge()
        if huge:
            raise WorkloadError(f"{huge >> 20} MiB of the region faulted in as huge pages despite MADV_NOHUGEPAGE")

    def _huge(self) -> int:
        return region_huge_bytes(self.addr, self.size, procfs.read_text("/proc/self/smaps"))

    def _counter(self, name: str) -> int:
        return int(read_knob(str(KHUGEPAGED_DIR / name)))

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        ranges = self.size // PMD_SIZE
        collapsed0, scans0 = self._counter("pages_collapsed"), self._counter("full_scans")
        start = time.monotonic()
        libc.madvise(self.addr, self.size, libc.MADV_HUGEPAGE)  # registers the mm, wakes khugepaged
        deadline = start + self.opt("max_wait")
        done_at: Optional[float] = None
        huge = 0
        while done_at is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
            huge = self._huge()
            progress(f"khugepaged: {huge // PMD_SIZE}/{ranges} ranges collapsed, "
                     f"{time.monotonic() - start:5.1f} s (waiting at most {self.opt('max_wait')} s)")
            if huge >= self.size:
                done_at = time.monotonic()
        collapsed_at = self._counter("pages_collapsed")
        steady_end = time.monotonic() + (self.opt("steady_seconds") if done_at is not None else 0)
        while (now := time.monotonic()) < steady_end:
            time.sleep(min(POLL_S, steady_end - now))
            progress(f"khugepaged: steady state, {steady_end - time.monotonic():4.1f} s left")
        end = time.monotonic()
        collapses = self._counter("pages_collapsed") - collapsed0
        figures = {
            "khugepaged_pages_collapsed": float(collapses),
            "khugepaged_full_scans": float(self._counter("full_scans") - scans0),
            "region_collapsed_ranges": float(huge // PMD_SIZE),
            "seconds_to_collapse": round(done_at - start, 3) if done_at is not None else -1.0,
            "least_seconds_to_collapse": seconds_to_collapse(ranges, self.opt("pages_to_scan"),
                                                             self.opt("scan_sleep_millisecs")),
            "steady_seconds": round(end - done_at, 3) if done_at is not None else 0.0,
            "steady_collapses": float(self._counter("pages_collapsed") - collapsed_at),
        }
        rate = max_rate(self.opt("pages_to_scan"), self.opt("scan_sleep_millisecs"))
        if rate is not None:
            figures["max_collapses_per_s"] = rate
        if done_at is not None and done_at > start:
            figures["collapses_per_s"] = round(collapses / (done_at - start), 3)
        note = "" if done_at is not None else (
            f"the region was not collapsed after {self.opt('max_wait')} s ({huge // PMD_SIZE} of {ranges} ranges): "
            f"khugepaged is slower than its knobs allow (busy machine, failed allocations: see "
            f"thp_collapse_alloc_failed), or --max-wait is too short")
        return PhaseOutcome(ops=collapses, ops_expected=ranges, note=note, figures=figures)

    def count_ops(self, outcome: PhaseOutcome, vmstat_delta: Dict[str, int]) -> PhaseOutcome:
        """The collapses are khugepaged's own count (pages_collapsed): vmstat's
        thp_collapse_alloc also counts MADV_COLLAPSE and file collapses."""
        failed = vmstat_delta.get("thp_collapse_alloc_failed", 0)
        if failed:
            outcome.note = "; ".join(x for x in (outcome.note, f"{failed} huge page allocation(s) failed "
                                                 f"(thp_collapse_alloc_failed)") if x)
        if outcome.ops > outcome.ops_expected:
            outcome.note = "; ".join(x for x in (outcome.note, f"{outcome.ops - outcome.ops_expected} collapse(s) "
                                                 f"beyond our region: other processes' memory (THP always?)") if x)
        return outcome

    def cleanup(self) -> None:
        if self.base is not None:
            try:
                libc.munmap(self.base, self.size + PMD_SIZE)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
            self.base = None
