"""gup-fast: the lock-less page-table walk's throughput, the cost a step-2 patch would add.

GUP-fast (mm/gup.c gup_fast()) only reads page tables, with interrupts off: it sends no
sync broadcast (analysis/model.yaml gup-fast-none names this workload). What it measures
is its own speed: calls per second and ns per pinned page, which the report compares
repeat by repeat (``report_figures``). Which kernel path pinned the pages is recorded as a
number (summary.json's workload_figures hold numbers only): :data:`PATHS` is the one
table of them, for the driver that writes the code and the report that reads it.
"""

from __future__ import annotations

from typing import Dict, Optional

from ...ui.numbers import fmt_num
from ...options import Option
from ..spec import ReportFigure, WorkloadSpec, median
from ...vocab import TIME

#: how pages are pinned -> what the report says of it; workload_figures' gup_path is the
#: position in this table, from 1 (``auto`` is resolved to one of them before the run)
PATHS: Dict[str, str] = {
    "gup_test": "gup_test (pin_user_pages_fast in the kernel's loop)",
    "vmsplice": "vmsplice (get_user_pages_fast, pipe work included)",
    "odirect": "O_DIRECT reads (the read included)",
}
BACKINGS = ("4k", "2m")


def path_code(path: str) -> float:
    """The number workload_figures records for a pinning path."""
    return float(list(PATHS).index(path) + 1)


def path_of(code: Optional[float]) -> Optional[str]:
    """The pinning path a recorded code stands for (None for an unknown code)."""
    paths = list(PATHS)
    return paths[int(code) - 1] if code is not None and float(code).is_integer() and 1 <= code <= len(paths) else None


class GupFastSpec(WorkloadSpec):
    def model_what(self, s) -> str:
        return f"GUP-fast: {s.ops} pinning call{'s' if s.ops != 1 else ''}"

    def report_what(self, run, s) -> str:
        return "GUP-fast throughput"

    def figures_line(self, figs, run, s, race):
        path = path_of(median(figs, "gup_path"))
        huge = median(figs, "huge_fraction") or 0.0
        text = (f"via {PATHS[path] if path else '?'}, {fmt_num(median(figs, 'pages_per_call'))} page(s) per call, "
                f"{fmt_num(median(figs, 'threads'))} thread(s), {'2 MiB' if huge >= 0.5 else '4 KiB'} pages: "
                f"{fmt_num(median(figs, 'calls_per_s'))} calls/s, {median(figs, 'ns_per_page'):.1f} ns per pinned page "
                f"(median of {len(figs)} repeat{'s' if len(figs) != 1 else ''})")
        if (run.run_yaml.get("qemu") or {}).get("accel") == "tcg":
            text += "; under TCG these times are the emulator's: compare within an A/B, quote a host's"
        return text


SPEC = GupFastSpec(
    name="gup-fast",
    description="GUP-fast pinning throughput (gup_test, vmsplice or O_DIRECT): no broadcast, the walk's cost",
    driver="tlbprobe.workloads.gup_fast.driver:GupFastWorkload",
    ops_unit="GUP-fast calls",
    order=6,
    options=(
        Option("gup_path", "how pages are pinned: auto (gup_test when the kernel has it, else vmsplice), "
               "gup_test, vmsplice or odirect", choices=("auto",) + tuple(PATHS), default="auto"),
        Option("pages_per_call", "4 KiB pages pinned per call (default 8; vmsplice: at most 16)", kind=int,
               default=8, low=1, high=512, metavar="N"),
        Option("calls", "calls per thread and repeat (default 200000; odirect: 2000)", kind=int, low=1,
               high=100_000_000, metavar="N"),
        Option("backing", "the buffer in 4k pages or 2m huge pages", choices=BACKINGS, default="4k"),
        Option("odirect_dir", "odirect: where the file read with O_DIRECT lives (a real filesystem; default "
               "/var/tmp)", default="/var/tmp", metavar="DIR"),
    ),
    report_figures=(
        ReportFigure("gup_ns_per_page", "GUP-fast ns per page", "ns", 2, figure="ns_per_page", kind=TIME),
        # a throughput: the inverse of a time per call, the emulator's speed under TCG
        ReportFigure("gup_calls_per_s", "GUP-fast calls/s", "", 0, figure="calls_per_s", kind=TIME),
    ),
)
