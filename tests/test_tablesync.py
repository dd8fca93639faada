"""The run-time check (collect --check): the instrumented kernel's table-sync file,
parsed from what real 4-vCPU guests printed after a 64M collapse (tests/data/tablesync/,
kernels/instrumentation/), the per-phase deltas, the section's round trip, the view, and
the verdict a violation or a skipping baseline gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.runfactory import make_run
from tlbprobe.errors import InputError, PreflightError
from tlbprobe.measure import tablesync as ts
from tlbprobe.measure.observer import Phase
from tlbprobe.rundir.sections import CheckCounts, CheckSection

DATA = Path(__file__).parent / "data" / "tablesync"
NATIVE = dict(flush_mode="native", flush_evidence="no PV TLB flush", hypervisor=None, online_cpus=4, ops=32,
              work_s=1.0, idle_s=1.0)


def test_recorded_files_parse_to_the_collapse_caller():
    base = ts.read(DATA / "baseline-collapse-64M.txt")
    patched = ts.read(DATA / "patched-collapse-64M.txt")
    assert (base.format, base.hook, base.overflow, base.malformed) == (1, "absent", 0, 0)
    assert patched.hook == "present"
    [b], [p] = base.lines, patched.lines
    # collapse_huge_page() is inlined into its caller in the minimal build: %pS names the parent
    assert b.symbol == "hpage_collapse_scan_pmd+0xa7f/0x17b0" and b.function == "hpage_collapse_scan_pmd"
    assert (b.calls, b.skipped) == (32, 0)
    assert (p.calls, p.skipped, p.covered, p.violations, p.unverified) == (32, 32, 32, 0, 0)


def test_malformed_lines_are_counted_not_fatal():
    text = (DATA / "patched-collapse-64M.txt").read_text()
    text += ("caller=x+0x1/0x2 calls=many skipped=0 covered=0 violations=0 unverified=0 last_missed=\n"
             "caller=y+0x1/0x2 calls=1 skipped=2 covered=0 violations=0 unverified=0 last_missed=\n"
             "caller=z+0x1/0x2 calls=3 skipped=3 covered=0 violations=3 unverified=0 last_missed=1-x\n"
             "garbage\n")
    snap = ts.parse(text)
    assert snap.malformed == 4 and len(snap.lines) == 1
    # a header of an unknown format: its lines are not read as format 1's
    future = ts.parse("# tlbprobe table-sync check, format 2, hook present, overflow 0\ncaller=a calls=1\n")
    assert future.format == 2 and future.lines == () and future.malformed == 1


def test_read_is_bounded_and_refuses_special_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        ts.read(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"#" * (ts.LIMIT + 1))
    with pytest.raises(InputError, match="larger than"):
        ts.read(big)


def test_delta_per_function_with_the_cpus_missed():
    before = ts.parse("# tlbprobe table-sync check, format 1, hook present, overflow 0\n"
                      "caller=hpage_collapse_scan_pmd+0xa7f/0x17b0 calls=10 skipped=10 covered=10 violations=0 "
                      "unverified=0 last_missed=\n")
    after = ts.parse("# tlbprobe table-sync check, format 1, hook present, overflow 0\n"
                     "caller=hpage_collapse_scan_pmd+0xa7f/0x17b0 calls=42 skipped=42 covered=40 violations=2 "
                     "unverified=0 last_missed=3\n"
                     "caller=hpage_collapse_scan_pmd+0xb00/0x17b0 calls=1 skipped=1 covered=0 violations=0 "
                     "unverified=1 last_missed=\n"
                     "caller=huge_pmd_unshare_flush+0x1/0x90 calls=5 skipped=5 covered=5 violations=0 "
                     "unverified=0 last_missed=\n")
    d = ts.delta(before, after)
    c = d["hpage_collapse_scan_pmd"]
    assert (c.calls, c.skipped, c.covered, c.violations, c.unverified) == (33, 33, 30, 2, 1)
    assert c.missed_cpus == (3,) and len(c.symbols) == 2
    assert d["huge_pmd_unshare_flush"].calls == 5
    assert ts.delta(after, after) == {}


def test_section_round_trip_and_failures():
    sec = CheckSection(file="/sys/kernel/debug/tlbprobe_table_sync", format=1, hook="present",
                       phases={"r0-workload": {"collapse_huge_page": CheckCounts(8, 8, 7, 1, 0, (3,), ("a+0x1/0x2",))}},
                       callers={"collapse_huge_page": CheckCounts(8, 8, 7, 1, 0, (3,), ("a+0x1/0x2",))})
    d = json.loads(json.dumps(sec.to_dict()))
    assert CheckSection.from_dict("summary.json", d).to_dict() == d
    [why] = sec.failures("patched")
    assert "collapse_huge_page" in why and "CPU 3" in why
    ok = CheckSection(hook="absent", callers={"f": CheckCounts(4, 0)})
    assert ok.failures("baseline") == []
    bad = CheckSection(hook="absent", callers={"f": CheckCounts(4, 1, 1)})
    assert "baseline kernel skipped 1" in bad.failures("baseline")[0]
    with pytest.raises(InputError, match="check"):
        CheckSection.from_dict("summary.json", {"callers": {"f": {"calls": -1}}})
    with pytest.raises(InputError, match="missed_cpus"):
        CheckSection.from_dict("summary.json", {"callers": {"f": {"calls": 1, "missed_cpus": "3"}}})


def _with_check(path: Path, sec: CheckSection) -> Path:
    s = json.loads((path / "summary.json").read_text())
    s["check"] = sec.to_dict()
    (path / "summary.json").write_text(json.dumps(s))
    return path


def _report(paths):
    from tlbprobe.report import ReportOptions, build_report
    return build_report([str(p) for p in paths], ReportOptions(allow_incomplete=True))


def test_a_violation_fails_the_verdict_naming_caller_and_cpu(tmp_path):
    ok_counts = CheckCounts(96, 96, 96, 0, 0, (), ("hpage_collapse_scan_pmd+0xa7f/0x17b0",))
    good = _with_check(make_run(tmp_path, "good", kernel_variant="patched", sync_per_op=0.0, **NATIVE),
                       CheckSection(hook="present", callers={"hpage_collapse_scan_pmd": ok_counts}))
    bad_counts = CheckCounts(96, 96, 95, 1, 0, (3,), ok_counts.symbols)
    bad = _with_check(make_run(tmp_path, "bad", kernel_variant="patched", sync_per_op=0.0, **NATIVE),
                      CheckSection(hook="present", callers={"hpage_collapse_scan_pmd": bad_counts}))
    [g] = _report([good]).runs
    assert g.verdict.status == "matches"
    [b] = _report([bad]).runs
    assert b.verdict.status == "differs" and b.verdict.ok is False
    assert "hpage_collapse_scan_pmd" in b.verdict.failed_check and "CPU 3" in b.verdict.failed_check
    skipping_base = _with_check(make_run(tmp_path, "base", kernel_variant="baseline", sync_per_op=1.0, **NATIVE),
                                CheckSection(hook="absent", callers={"f": CheckCounts(96, 3, 3)}))
    [s] = _report([skipping_base]).runs
    assert s.verdict.status == "differs" and "baseline kernel skipped 3" in s.verdict.reason


def test_view_lines_table_and_ab_rows(tmp_path):
    from tlbprobe.report.render_text import render as render_text
    from tlbprobe.report.views.check import ab_rows, check_lines

    b = CheckSection(hook="absent", callers={"hpage_collapse_scan_pmd": CheckCounts(96, 0)})
    p = CheckSection(hook="present", callers={"hpage_collapse_scan_pmd": CheckCounts(96, 96, 95, 1, 0, (3,))})
    assert ab_rows(b, p) == [("hpage_collapse_scan_pmd", "96", "96", "95", "1", "0")]
    lines = check_lines(p)
    assert "96 skipped: 95 covered, 1 violations" in lines[0]
    assert lines[1].startswith("VIOLATION") and "CPU 3" in lines[1]
    run = _with_check(make_run(tmp_path, "p", kernel_variant="patched", sync_per_op=0.0, **NATIVE), p)
    text = render_text(_report([run]))
    assert "table syncs per caller" in text and "VIOLATION" in text


def test_observer_reads_around_phases_and_refuses_a_kernel_without_it(tmp_path):
    debugfs = tmp_path / "debug"
    debugfs.mkdir()
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("0000000000000000 T tlb_remove_table_sync_one\n")
    obs = ts.CheckObserver(debugfs, kallsyms)
    # not a mount point and kallsyms has no recorder: refused in one line
    with pytest.raises(PreflightError, match="no tlbprobe check instrumentation"):
        obs.preflight(None)
    f = debugfs / ts.FILE_NAME
    f.write_text((DATA / "baseline-collapse-64M.txt").read_text())
    obs.preflight(None)

    class Log:
        def log(self, s):
            pass

    obs.start(None, None, Log(), None)
    ph = Phase(0, "workload")
    obs.phase_begin(ph)
    f.write_text((DATA / "baseline-collapse-64M.txt").read_text().replace("calls=32", "calls=64"))
    obs.phase_end(ph)
    sec = obs.section({})
    assert sec.callers["hpage_collapse_scan_pmd"].calls == 32 and sec.hook == "absent"
    assert sec.phases["r0-workload"]["hpage_collapse_scan_pmd"].sent == 32


def test_ab_reports_carry_the_per_caller_table(tmp_path):
    from tlbprobe.report import render_lkml
    from tlbprobe.report.render_text import render as render_text

    base = _with_check(make_run(tmp_path, "base", kernel_variant="baseline", sync_per_op=1.0, seed=1, **NATIVE),
                       CheckSection(hook="absent", callers={"hpage_collapse_scan_pmd": CheckCounts(96, 0)}))
    patched = _with_check(make_run(tmp_path, "patched", kernel_variant="patched", sync_per_op=0.0, seed=2, **NATIVE),
                          CheckSection(hook="present", callers={"hpage_collapse_scan_pmd": CheckCounts(96, 96, 96)}))
    report = _report([base, patched])
    lkml = render_lkml.render(report)
    table = lkml.split("Table syncs per caller")[1].split("\n\n")[0].splitlines()
    assert table[1].split() == ["caller", "sent", "A", "skip", "B", "cover", "B", "viol", "B", "unver", "B"]
    assert table[2].split() == ["hpage_collapse_scan_pmd", "96", "96", "96", "0", "0"]
    assert max(len(line) for line in lkml.splitlines()) <= 72
    assert "skip B" in render_text(report)
