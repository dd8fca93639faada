"""collapse: MADV_COLLAPSE over a private anonymous range, one sync broadcast per 2 MiB.

collapse_huge_page() (mm/khugepaged.c) calls tlb_remove_table_sync_one() once per
collapsed PMD (analysis/model.yaml collapse-sync, whose ``workloads:`` names this
workload), after pmdp_collapse_flush() flushed the mm's CPUs: the default TLB rule. The
driver is driver.py's CollapseWorkload.
"""

from __future__ import annotations

from dataclasses import replace

from ..base import Option
from ..spec import WorkloadSpec, whole_ranges, size_text


class CollapseSpec(WorkloadSpec):
    def ops_from_size(self, size: int) -> int:
        """One collapse per 2 MiB range (HPAGE_PMD_SIZE)."""
        return whole_ranges(size, "collapse")

    def scenario_from_run(self, run, s):
        """Under --race a walker thread of the mm runs on every other CPU."""
        return replace(s, mm_cpus=run.online_cpus) if run.job.get("race") is True else s

    def model_what(self, s) -> str:
        return f"MADV_COLLAPSE: {s.ops} collapse{'s' if s.ops != 1 else ''}"

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
