"""collapse: MADV_COLLAPSE over a private anonymous range, one sync broadcast per 2 MiB.

collapse_huge_page() (mm/khugepaged.c) calls tlb_remove_table_sync_one() once per
collapsed PMD (analysis/model.yaml collapse-sync, whose ``workloads:`` names this
workload), after pmdp_collapse_flush() flushed the mm's CPUs: the default TLB rule. The
driver is driver.py's CollapseWorkload.
"""

from __future__ import annotations

from dataclasses import replace

from ...vocab import PMD_SIZE
from ..base import Option
from ..spec import WorkloadSpec, size_text


class CollapseSpec(WorkloadSpec):
    def ops_from_size(self, size: int) -> int:
        """One collapse per 2 MiB range (HPAGE_PMD_SIZE)."""
        return size // PMD_SIZE

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
        return f"MADV_COLLAPSE of {size_text(run)}"


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
    ),
    refused_label="collapses refused",
)
