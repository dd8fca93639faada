"""repro --audit's join (tlbprobe/workflows/audit_check.py): the real static audit of the
patched 6.12 tree with check sections as the guests recorded them (the callers' names
are the ones the 4-vCPU runs printed: both audited callers are inlined into their
parents in the minimal build)."""

from __future__ import annotations

import glob

import pytest

from tlbprobe.rundir.sections import CheckCounts, CheckSection
from tlbprobe.workflows import audit_check as ac

pytestmark = pytest.mark.skipif(not glob.glob("/usr/src/linux-source-6.12*.tar.xz"),
                                reason="linux-source-6.12 not installed")

COLLAPSE = "hpage_collapse_scan_pmd"      # collapse_huge_page() inlined into it
UNSHARE = "__unmap_hugepage_range"        # huge_pmd_unshare_flush() inlined into it


@pytest.fixture(scope="module")
def audit():
    return ac.run_static_audit(None, [], log=lambda s: None)


def _checks(patched_collapse: CheckCounts, extra=None):
    base = CheckSection(hook="absent", callers={COLLAPSE: CheckCounts(32, 0), UNSHARE: CheckCounts(20, 0)})
    callers = {COLLAPSE: patched_collapse, UNSHARE: CheckCounts(20, 20, 20)}
    callers.update(extra or {})
    return {"audit-collapse-race": {"baseline": base, "patched": CheckSection(hook="present", callers=callers)}}


def test_inlined_callers_join_their_audited_entries(audit):
    result = ac.join(*audit, _checks(CheckCounts(32, 32, 32)), "native")
    assert result.ok, result.failures()
    rows = {r.caller: r for r in result.rows}
    assert rows["collapse_huge_page"].seen_as == (COLLAPSE,)
    assert rows["huge_pmd_unshare_flush"].seen_as == (UNSHARE,)
    assert (rows["collapse_huge_page"].baseline.sent, rows["collapse_huge_page"].patched.skipped) == (32, 32)
    assert rows["tlb_remove_table_one"].reachable == "no"   # native flush frees tables through RCU, not here
    text = result.text
    assert max(len(line) for line in text.splitlines()) <= ac.WIDTH
    assert "collapse_huge_page*" in text and text.splitlines()[-1].startswith("audit: OK")


def test_a_violation_fails_naming_the_caller_and_cpu(audit):
    result = ac.join(*audit, _checks(CheckCounts(32, 32, 30, 2, 0, (3,))), "native")
    assert not result.ok and result.violations == 2
    [why] = result.failures()
    assert "collapse_huge_page" in why and COLLAPSE in why and "CPU 3" in why
    assert "FAILED" in result.text and result.to_dict()["ok"] is False


def test_a_caller_the_table_does_not_know_fails(audit):
    result = ac.join(*audit, _checks(CheckCounts(32, 32, 32), {"my_new_caller": CheckCounts(1, 1, 1)}), "native")
    assert result.failures() == ["run-time caller my_new_caller is in no entry of the audit table"]
