"""khugepaged: the kernel thread's background collapse, and the rate its knobs allow.

khugepaged collapses through the same collapse_huge_page() as MADV_COLLAPSE (analysis/
model.yaml collapse-sync names both), one broadcast per collapsed anonymous 2 MiB range,
sent from whatever CPU the kernel thread runs on (``sender_is_driver`` False). Its
pmdp_collapse_flush() flushes the mm's CPUs from there (tlb-khugepaged: at most one IPI
per collapse per mm CPU). How fast it goes is its knobs' business (khugepaged-rate):

mm/khugepaged.c khugepaged_do_scan(): each wake-up scans until ``pages_to_scan`` pages of
progress, khugepaged_scan_mm_slot() adding HPAGE_PMD_NR (512) per 2 MiB range it looks
at, collapsed or not; then khugepaged_wait_work() sleeps ``scan_sleep_millisecs``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from ...errors import InputError
from ...vocab import PMD_SIZE
from ...options import Option
from ..spec import WorkloadSpec, median, plain, size_text, whole_ranges
from ...ui.numbers import fmt_num

#: HPAGE_PMD_NR with 4 KiB pages: khugepaged_scan_mm_slot() counts this much progress per
#: 2 MiB range it scans, collapsed or not (mm/khugepaged.c)
PAGES_PER_RANGE = PMD_SIZE // 4096
THP_MODES = ("always", "madvise")
THP_DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")

#: job key -> (file under the THP sysfs directory, the kernel's default); mm/khugepaged.c
#: khugepaged_init() and its static initialisers, mm/huge_memory.c transparent_hugepage_flags
KNOBS: Dict[str, tuple] = {
    "pages_to_scan": ("khugepaged/pages_to_scan", 8 * PAGES_PER_RANGE),
    "scan_sleep_millisecs": ("khugepaged/scan_sleep_millisecs", 10000),
    "alloc_sleep_millisecs": ("khugepaged/alloc_sleep_millisecs", 60000),
    "max_ptes_none": ("khugepaged/max_ptes_none", PAGES_PER_RANGE - 1),
    "khugepaged_defrag": ("khugepaged/defrag", 1),
    "thp_enabled": ("enabled", "madvise"),
    "thp_defrag": ("defrag", "madvise"),
}


def max_rate(pages_to_scan: int, scan_sleep_ms: int) -> Optional[float]:
    """The most collapses (= sync broadcasts) per second khugepaged can make (model.yaml
    khugepaged-rate): pages_to_scan / 512 ranges per wake-up, one wake-up per scan_sleep
    interval; the scan's own time only lowers it. None when scan_sleep is 0 (it then never
    sleeps while it has work)."""
    if scan_sleep_ms <= 0:
        return None
    return (pages_to_scan // PAGES_PER_RANGE) / (scan_sleep_ms / 1000.0)


def seconds_to_collapse(ranges: int, pages_to_scan: int, scan_sleep_ms: int) -> float:
    """The least time khugepaged needs to collapse ``ranges`` 2 MiB ranges: the first
    wake-up comes at once (MADV_HUGEPAGE wakes it), each further one after a sleep."""
    per_wake = max(1, pages_to_scan // PAGES_PER_RANGE)
    return (-(-ranges // per_wake) - 1) * scan_sleep_ms / 1000.0


PAGES_TO_SCAN = Option("pages_to_scan", "khugepaged: pages scanned per wake-up (kernel default 4096)", kind=int,
                       default=KNOBS["pages_to_scan"][1], low=1, high=1 << 24, metavar="N")
SCAN_SLEEP = Option("scan_sleep_millisecs", "khugepaged: sleep between wake-ups (kernel default 10000)", kind=int,
                    default=KNOBS["scan_sleep_millisecs"][1], low=0, high=3600000, metavar="MS")


class KhugepagedSpec(WorkloadSpec):
    def ops_from_size(self, size: int) -> int:
        """One collapse per 2 MiB range of the region."""
        return whole_ranges(size, "range")

    def tlb_ipis(self, s, params, notes):
        """Sent from khugepaged's CPU, to every CPU the mm ran on: only an upper bound."""
        r = params.rule("tlb-khugepaged")
        upper = float(s.ops * s.mm_cpus)
        return None, upper, (r.id,), f"at most {plain(upper)}: {r.text}"

    def model_what(self, s) -> str:
        return f"khugepaged: {s.ops} collapse{'s' if s.ops != 1 else ''} of anonymous 2 MiB ranges"

    def model_lines(self, s, flags) -> List[str]:
        """[khugepaged-rate] the broadcast rate the knobs allow, and the time for the size."""
        pages, sleep = flags["pages_to_scan"], flags["scan_sleep_millisecs"]
        if pages < 1 or sleep < 0:
            raise InputError("--pages-to-scan must be at least 1 and --scan-sleep-millisecs not negative")
        rate = max_rate(pages, sleep)
        least = seconds_to_collapse(s.ops, pages, sleep)
        bound = (f"at most {rate:g} collapses (sync broadcasts) a second, {rate * 3600:,.0f} an hour"
                 if rate is not None else "no sleep between scans: as fast as it can scan")
        return [f"Rate:      [khugepaged-rate] pages_to_scan {pages}, scan_sleep {sleep} ms: {bound}, while memory "
                f"is left to collapse; {s.ops} ranges take at least {least:,.1f} s, then none (steady state)"]

    def report_what(self, run, s) -> str:
        return f"khugepaged collapsing {size_text(run)}"

    def figures_line(self, figs, run, s, race):
        """How fast it collapsed against what its knobs allow, and the steady state."""
        took, least = median(figs, "seconds_to_collapse"), median(figs, "least_seconds_to_collapse")
        rate, bound = median(figs, "collapses_per_s"), median(figs, "max_collapses_per_s")
        parts = []
        if took is not None and took >= 0:
            parts.append(f"collapsed in {took:.2f} s (its knobs allow {least:.2f} s at best)" if least is not None
                         else f"collapsed in {took:.2f} s")
        else:
            parts.append("the region was NOT fully collapsed in the time allowed")
        if rate is not None:
            parts.append(f"{rate:,.1f} collapses/s" + (f" (at most {bound:,.1f}/s)" if bound is not None else ""))
        steady, steady_n = median(figs, "steady_seconds"), median(figs, "steady_collapses")
        if steady:
            parts.append(f"then {steady:.1f} s of steady state with {fmt_num(steady_n)} collapses")
        scans = median(figs, "khugepaged_full_scans")
        if scans is not None:
            parts.append(f"{fmt_num(scans)} full scans")
        return "; ".join(parts) + f" (median of {len(figs)} repeat{'s' if len(figs) != 1 else ''})"


SPEC = KhugepagedSpec(
    name="khugepaged",
    description="khugepaged's background collapse of an MADV_HUGEPAGE region, at the rate its knobs allow",
    driver="tlbprobe.workloads.khugepaged.driver:KhugepagedWorkload",
    ops_unit="collapses",
    sender_is_driver=False,
    order=4,
    default_ops=None,
    options=(
        PAGES_TO_SCAN,
        SCAN_SLEEP,
        Option("alloc_sleep_millisecs", "khugepaged: sleep after a failed huge page allocation (kernel default "
               "60000)", kind=int, default=KNOBS["alloc_sleep_millisecs"][1], low=0, high=3600000, metavar="MS"),
        Option("max_ptes_none", "khugepaged: empty PTEs a range may have and still collapse (kernel default 511)",
               kind=int, default=KNOBS["max_ptes_none"][1], low=0, high=PAGES_PER_RANGE - 1, metavar="N"),
        Option("khugepaged_defrag", "khugepaged/defrag: 1 lets it compact memory for a huge page (kernel default "
               "1)", kind=int, default=1, low=0, high=1, metavar="0|1"),
        Option("thp_enabled", "THP enabled for the run: madvise (only this region) or always (every process's "
               "memory too; many distributions' default)", choices=THP_MODES, default="madvise"),
        Option("thp_defrag", "THP defrag for the run (kernel default madvise)", choices=THP_DEFRAG,
               default="madvise"),
        Option("max_wait", "seconds to wait for the region to be collapsed (default: 3 x what the knobs allow, "
               "+ 30)", kind=int, low=1, high=86400, metavar="S"),
        Option("steady_seconds", "seconds measured after the region is collapsed (default: 10)", kind=int,
               default=10, low=0, high=86400, metavar="S"),
    ),
    model_flags=(PAGES_TO_SCAN, SCAN_SLEEP),
)
