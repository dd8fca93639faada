"""The check observer's view (collect --check, tlbprobe/measure/tablesync.py): the
instrumented kernel's own account of every table sync, per caller. Reads summary.json
``check`` (rundir/sections.py CheckSection). A violation fails the run's verdict
(report/verdict.py check_failure); this view says where."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...rundir.sections import CheckCounts, CheckSection
from ...vocab import EXACT, WORKLOAD_PHASE
from .base import Analysed, Figure, Table, View

if TYPE_CHECKING:
    from ...rundir.reader import Run

HEADERS = ("caller", "calls", "skipped", "covered", "violations", "unverified", "missed CPUs")


def _cpus(c: CheckCounts) -> str:
    return ",".join(str(x) for x in c.missed_cpus) if c.violations else "-"


def check_lines(sec: Optional[CheckSection]) -> List[str]:
    """One line for the run, then one per violating caller."""
    if sec is None:
        return []
    t = sec.total()
    out = [f"table-sync check (hook {sec.hook or 'unknown'}): {t.calls:,} syncs by {len(sec.callers)} "
           f"caller(s), {t.skipped:,} skipped: {t.covered:,} covered, {t.violations:,} violations, "
           f"{t.unverified:,} unverified"]
    for fn, c in sorted(sec.callers.items()):
        if c.violations:
            out.append(f"VIOLATION: {c.violations} skipped syncs at {fn} followed a flush that missed CPU {_cpus(c)}")
    if sec.overflow:
        out.append(f"warning: {sec.overflow} calls beyond the recorder's table of callers went unjudged")
    if sec.malformed:
        out.append(f"warning: {sec.malformed} lines of {sec.file or 'the check file'} were not understood")
    for tag, why in sorted(sec.unread.items()):
        out.append(f"warning: {tag}: not read: {why}")
    return out


def caller_rows(sec: CheckSection) -> List[Tuple[str, ...]]:
    return [(fn, f"{c.calls:,}", f"{c.skipped:,}", f"{c.covered:,}", f"{c.violations:,}", f"{c.unverified:,}",
             _cpus(c)) for fn, c in sorted(sec.callers.items())]


def ab_rows(baseline: Optional[CheckSection], patched: Optional[CheckSection]) -> List[Tuple[str, ...]]:
    """Per caller of either run: the broadcasts the baseline sent (calls - skipped) against
    what the patched kernel skipped and, of that, saw covered; its violations."""
    b = baseline.callers if baseline else {}
    p = patched.callers if patched else {}
    rows = []
    for fn in sorted(set(b) | set(p)):
        cb, cp = b.get(fn, CheckCounts()), p.get(fn, CheckCounts())
        rows.append((fn, f"{cb.sent:,}", f"{cp.skipped:,}", f"{cp.covered:,}", f"{cp.violations:,}",
                     f"{cp.unverified:,}"))
    return rows


AB_HEADERS = ("caller", "sent A", "skip B", "cover B", "viol B", "unver B")


class CheckView(View):
    section = CheckSection
    label = "check"
    note = ("check: a caller is the function its call site was compiled into (an inlined caller, such as "
            "collapse_huge_page in hpage_collapse_scan_pmd, is named by its parent); unverified: skipped "
            "with no flush of the same task on the same CPU to judge by")
    figures = (Figure("check_sent", "table syncs sent (check)", "", 0, EXACT),)

    def lines(self, a: "Analysed") -> List[str]:
        return check_lines(a.run.section(CheckSection))

    def table(self, a: "Analysed") -> Optional[Table]:
        sec = a.run.section(CheckSection)
        if sec is None or not sec.callers:
            return None
        return Table("table syncs per caller (collect --check)", HEADERS, caller_rows(sec), "lrrrrrl")

    def summary_lines(self, summary: Mapping[str, Any]) -> List[str]:
        return check_lines(CheckSection.of(summary))

    def ab_table(self, a: "Analysed", b: "Analysed") -> Optional[Table]:
        """Per caller: the broadcasts A (the baseline) sent against what B skipped and saw
        covered, when both runs have the check."""
        sa, sb = a.run.section(CheckSection), b.run.section(CheckSection)
        if sa is None or sb is None:
            return None
        return Table("table syncs per caller (collect --check)", AB_HEADERS, ab_rows(sa, sb), "lrrrrr")

    def per_repeat(self, run: "Run") -> Dict[str, List[float]]:
        """The syncs actually broadcast (calls - skipped) in each repeat's workload phase."""
        out: Dict[str, List[float]] = {"check_sent": []}
        sec = run.section(CheckSection)
        if sec is None:
            return out
        for r in range(len(run.repeats)):
            per = sec.phases.get(f"r{r}-{WORKLOAD_PHASE}")
            if per is not None:
                out["check_sent"].append(float(sum(c.sent for c in per.values())))
        return out


