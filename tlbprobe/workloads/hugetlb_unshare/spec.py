"""hugetlb-unshare: N processes share a hugetlb mapping's PMD tables, all but one unshare in turn.

When a sync is sent depends on the kernel (analysis/model.yaml, each rule with its commit):

* batched (8ce720d5bd91 and later): huge_pmd_unshare_flush() -> tlb_flush_unshared_tables()
  sends one broadcast per mmu_gather that left a table exclusive: with N sharers, of which
  N-1 unshare in turn, only the last of each round does, 1/(N-1) per operation, however
  many 1 GiB tables;
* per-table (1013af4f585f until 8ce720d5bd91): huge_pmd_unshare() syncs for every
  unshared table, whatever the share count;
* none (older kernels): no sync at all;
* a MAP_PRIVATE mapping (``--control``) never shares (vma_shareable()): nothing to unshare.

A partial munmap inside a shared range unshares through the VMA split (hugetlb_split() ->
hugetlb_unshare_pmds()), one table per operation. The unsharer's TLB flushes are not
modelled unless its mm runs on one CPU (tlb-hugetlb). A run that does not match may
come from a kernel of another era: :meth:`HugetlbUnshareSpec.alternatives` says which.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List

from ...errors import InputError
from ...vocab import HUGETLB_ERAS, HUGETLB_OPERATION_ALIASES, HUGETLB_OPERATIONS, PUD_SIZE
from ...options import Option
from ..spec import WorkloadSpec, plain, size_text, whole_ranges

#: Cycles per repeat. Measured here (1G, 2 sharers): ~0.1 ms per cycle (exit: ~0.8 ms), so
#: 200 cycles make a 20-160 ms window with 200 broadcasts, against a background of ~6 CAL/s
#: per CPU (0.1-1 in such a window). Ask for more with --cycles for latency runs.
DEFAULT_CYCLES = 200
#: job keys a run may have recorded the unsharing operation under
UNSHARE_KIND_KEYS = ("operation", "op", "unshare_op", "kind")


class HugetlbUnshareSpec(WorkloadSpec):
    def ops_from_size(self, size: int) -> int:
        """The size gives tables (one per GiB), not operations: one operation. Only whole
        1 GiB ranges share a PMD table (mm/hugetlb.c want_pmd_share()), as the driver
        requires of --size."""
        whole_ranges(size, "shared PMD table", PUD_SIZE)
        return 1

    def validate(self, s):
        if s.sharers < 2:
            raise InputError(f"sharers must be at least 2 (the holder and one unsharer), got {s.sharers}")
        kind = s.unshare_kind
        return replace(s, unshare_kind=HUGETLB_OPERATION_ALIASES.get(kind, kind) if kind is not None else None)

    def broadcasts(self, s, params, notes: List[str]):
        """N sharers, one holds, the others unshare in turn."""
        era = s.hugetlb_unshare or params.default_hugetlb_unshare
        if s.unshare_kind is not None and s.unshare_kind not in HUGETLB_OPERATIONS:
            notes.append(f"unshare operation {s.unshare_kind!r} is not one the model knows; treated like munmap")
        if s.control:
            r = params.rule("hugetlb-no-share")
            return 0.0, (r.id,), r.text
        if s.unshare_kind == "partial-munmap":
            notes.append(
                "partial munmap inside a shared 1 GiB range: the VMA split unshares the table it cuts "
                "(hugetlb_split() -> hugetlb_unshare_pmds(), its own mmu_gather); the unmap then finds "
                "nothing shared: one table per operation"
            )
        if era == "batched":
            r = params.rule("hugetlb-unshare-batched")
            per = (r.per_op if r.per_op is not None else 1.0) / (s.sharers - 1)
            why = f"{plain(s.ops)} unshare operations"
            if s.sharers > 2:
                why += f" / {s.sharers - 1} unsharers (only the last of each round leaves a table exclusive)"
            return s.ops * per, (r.id,), f"{why}: {r.text}"
        if era == "per-table":
            r = params.rule("hugetlb-unshare-per-table")
            per = r.per_table if r.per_table is not None else 1.0
            tables = 1 if s.unshare_kind == "partial-munmap" else s.tables_per_op
            n = s.ops * tables * per
            return n, (r.id,), f"{plain(s.ops)} operations x {tables} table{'s' if tables != 1 else ''}: {r.text}"
        r = params.rule("hugetlb-unshare-none")
        return 0.0, (r.id,), r.text

    def alternatives(self, s, params):
        """The kernel of another hugetlb era (--hugetlb-unshare)."""
        now = s.hugetlb_unshare or params.default_hugetlb_unshare
        out = []
        for era in HUGETLB_ERAS:
            r = params.rules.get(f"hugetlb-unshare-{era}")
            if era != now and r is not None:
                out.append((replace(s, hugetlb_unshare=era),
                            f"the kernel behaves as '{era}' ({r.text}; {r.since}); try --hugetlb-unshare {era}"))
        return out

    def scenario_from_flags(self, s, flags):
        return replace(s, unshare_kind=flags["operation"])

    def model_what(self, s) -> str:
        return (f"hugetlb unshare ({s.unshare_kind}): {s.ops} operation{'s' if s.ops != 1 else ''}"
                f" x {s.tables_per_op} PMD table{'s' if s.tables_per_op != 1 else ''}, {s.sharers} sharers"
                f"{', MAP_PRIVATE control' if s.control else ''}")

    def scenario_from_run(self, run, s):
        kind = next((run.job[k] for k in UNSHARE_KIND_KEYS if isinstance(run.job.get(k), str)), None)
        sharers = run.job.get("sharers")
        return replace(s, unshare_kind=kind or "munmap", control=run.job.get("control") is True,
                       sharers=sharers if isinstance(sharers, int) and sharers >= 2 else 2)

    def report_what(self, run, s) -> str:
        return (f"hugetlb PMD unshare by {s.unshare_kind} of {size_text(run)} ({s.tables_per_op} PMD "
                f"table{'s' if s.tables_per_op != 1 else ''}, {s.sharers} sharers"
                f"{', MAP_PRIVATE control' if s.control else ''})")


SPEC = HugetlbUnshareSpec(
    name="hugetlb-unshare",
    description="processes sharing a hugetlb mapping's PMD tables unshare them in turn (munmap, mprotect, ...)",
    driver="tlbprobe.workloads.hugetlb_unshare.driver:HugetlbUnshareWorkload",
    tlb_unmodelled="tlb-hugetlb",  # munmap and exit add flushes: not modelled beyond one CPU
    ops_unit="unshares",
    aliases=("hugetlb", "unshare", "hugetlb_unshare"),
    order=2,
    default_ops=1,
    options=(
        Option("operation", "how the sharers unshare: " + ", ".join(HUGETLB_OPERATIONS) + " (default: munmap)",
               choices=HUGETLB_OPERATIONS, default="munmap"),
        Option("sharers", "processes sharing the page tables (default: 2)", kind=int, default=2, low=2, high=64,
               metavar="N"),
        Option("cycles", f"share/unshare cycles per repeat (default: {DEFAULT_CYCLES}, fewer for exit)", kind=int,
               low=1, high=100000, metavar="M"),
        Option("control", "a layout that cannot share PMD tables (no sync IPIs expected)", flag=True, default=False),
        Option("race", "GUP-fast walker threads inside each unsharing process, on the other "
               "CPUs, walk the range while it unshares; the segment's pattern and the kernel log are checked "
               "(workloads/race.py; not with --operation exit)", flag=True, default=False),
    ),
    model_flags=(
        Option("operation", "hugetlb unsharing operation (default munmap)", choices=HUGETLB_OPERATIONS,
               default="munmap", aliases=("--op",)),
        Option("sharers", "processes mapping the range, one holder plus unsharers taking turns (default 2)",
               kind=int, default=2, metavar="N"),
        Option("control", "hugetlb: MAP_PRIVATE mapping that cannot share", flag=True, default=False),
    ),
)
