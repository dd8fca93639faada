"""collapse: MADV_COLLAPSE over a private anonymous range, one sync broadcast per 2 MiB.

collapse_huge_page() (mm/khugepaged.c) calls tlb_remove_table_sync_one() once per
collapsed PMD (analysis/model.yaml collapse-sync, whose ``workloads:`` names this
workload), after pmdp_collapse_flush() flushed the mm's CPUs: the default TLB rule. The
driver is driver.py's CollapseWorkload.
"""

from __future__ import annotations

from dataclasses import replace

from ...options import Option
from ...units import format_size, parse_size
from ...ui.numbers import fmt_num
from ...vocab import PMD_SIZE
from ..spec import WorkloadSpec, median, size_text, total, whole_ranges


def _window(value) -> int:
    """A window size ('1G' or bytes): whole 2 MiB ranges."""
    size = parse_size(str(value))
    if size % PMD_SIZE:
        raise ValueError(f"{format_size(size)} is not a whole number of 2 MiB ranges")
    return size


class CollapseSpec(WorkloadSpec):
    def memory_for(self, job):
        """Streamed (--window), the window is all the range holds at once."""
        window = job.options.get("window")
        return min(window, job.size) if window and job.size else job.size

    def ops_from_size(self, size: int) -> int:
        """One collapse per 2 MiB range (HPAGE_PMD_SIZE)."""
        return whole_ranges(size, "collapse")

    def scenario_from_run(self, run, s):
        """Under --race a walker thread of the mm runs on every other CPU."""
        return replace(s, mm_cpus=run.online_cpus) if run.job.get("race") is True else s

    def model_what(self, s) -> str:
        return f"MADV_COLLAPSE: {s.ops} collapse{'s' if s.ops != 1 else ''}"

    def ops_note(self, run):
        """Collapses beyond the ranges asked for. thp_collapse_alloc (the count) counts
        huge-page allocations: collapse_huge_page() (mm/khugepaged.c) allocates before it
        isolates the pages, so an attempt that fails there is counted too. khugepaged is
        not the cause when THP was set to ``never`` for the run (the driver does that, and
        khugepaged does not scan then); a range refused and retried is (collapses_refused)."""
        extra = run.ops - run.ops_expected
        if extra <= 0:
            return None
        figs = [r.workload.workload_figures for r in run.repeats if r.workload]
        refused = sum(f.get("collapses_refused", 0.0) for f in figs)
        per = ", ".join(str(r.ops - r.ops_expected) for r in run.repeats)
        if refused:
            return (f"{extra} beyond those asked for ({per} per repeat): {refused:.0f} range(s) refused with "
                    f"EAGAIN after the allocation and retried")
        raced = run.job.get("race") is True
        return (f"{extra} beyond those asked for ({per} per repeat): thp_collapse_alloc counts allocations; "
                f"not khugepaged (THP was never for the run, so it does not scan) nor a refused range "
                f"(0 refused){'; seen only with the walkers racing' if raced else ''}: the run does not "
                f"record which attempt allocated them")

    def report_what(self, run, s) -> str:
        window = run.job.get("window")
        streamed = f", streamed {format_size(int(window))} at a time" if isinstance(window, int) else ""
        return f"MADV_COLLAPSE of {size_text(run)}{streamed}"

    def figures_line(self, figs, run, s, race):
        """A streamed collapse says what its steps between windows cost; else the race line."""
        if not any("stream_windows" in f for f in figs):
            return super().figures_line(figs, run, s, race)
        line = (f"streamed in {fmt_num(median(figs, 'stream_windows'))} windows: the populate and free steps "
                f"between them took {total(figs, 'stream_step_seconds'):.2f} s and received "
                f"{fmt_num(total(figs, 'stream_step_cal'))} CAL and {fmt_num(total(figs, 'stream_step_tlb'))} TLB "
                f"on the other CPUs (counted in the workload phase's CAL and TLB; the traced count is the "
                f"collapses' own sync calls)")
        return f"{line}; {race}" if race else line


SPEC = CollapseSpec(
    name="collapse",
    description="MADV_COLLAPSE of a private anonymous range: one sync broadcast per 2 MiB collapsed",
    driver="tlbprobe.workloads.collapse.driver:CollapseWorkload",
    ops_unit="collapses",
    default=True,
    order=1,
    default_ops=None,
    options=(
        Option("race", "walker threads on the other CPUs pin pages of the range with GUP-fast while it "
               "collapses and store to it, checking their stores; the range's pattern is checked after every "
               "repeat and the kernel log scanned (workloads/race.py)", flag=True, default=False),
        Option("window", "stream the range: populate, collapse and free (MADV_DONTNEED) one window of this "
               "size at a time, e.g. 1G, so that memory holds the window, not the whole --size; each 2 MiB "
               "collapse is one collapse_huge_page() and one broadcast whatever the window; the populate and "
               "free steps' own IPIs are counted and said (default: the whole range at once)",
               kind=int, parse=_window, expects="a size of whole 2 MiB ranges, e.g. 1G", metavar="SIZE",
               low=PMD_SIZE, message="{flag} {value} is too small: a window holds at least one 2 MiB range"),
    ),
    refused_label="collapses refused",
)
