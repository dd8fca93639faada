"""The comparison's statistics are honest by construction (report/compare.py): each figure
declares its kind, and the kind decides the test. One test per rule, on synthetic runs
(tests/runfactory.py) and on the recorded runs in analysis/runs: fewer than 3 repeats,
zero variance, exact counts, times under emulation, no negative count, tiny counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runfactory import RunSpec, make_run
from tlbprobe.report import build_report, render_json, render_lkml, render_markdown, render_text
from tlbprobe.report.compare import FIGURES, compare_figure, figures_for
from tlbprobe.report.rows import fmt_mean_ci, fmt_spread
from tlbprobe.report.stats import describe
from tlbprobe.report.views import Figure
from tlbprobe.vocab import COUNT, EXACT, FIGURE_KINDS, RATE, TIME
from tlbprobe.workloads import all_specs
from tlbprobe.workloads.spec import ReportFigure

RUNS = Path(__file__).resolve().parents[1] / "analysis" / "runs"


def _pair(tmp_path, base: RunSpec, other: RunSpec):
    a = make_run(tmp_path, "base", base)
    b = make_run(tmp_path, "patched", other)
    return build_report([str(a), str(b)])


def _row(report, key):
    return next(f for f in report.comparisons[0].figures if f.key == key)


def _table(lkml: str) -> list:
    """The lines of the lkml per-repeat table (up to the model's row)."""
    lines = lkml.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("per repeat"))
    end = next(i for i, line in enumerate(lines) if line.startswith("model, per repeat"))
    return lines[start:end + 1]


# -- every figure says what it is ------------------------------------------------------------

def test_every_compared_figure_declares_its_kind():
    specs = list(all_specs())
    class _A:  # figures_for reads only .spec
        def __init__(self, spec):
            self.spec = spec
    figs = figures_for(*(_A(s) for s in specs))
    assert figs and all(f.kind in FIGURE_KINDS for f in figs)
    kinds = {f.key: f.kind for f in figs}
    assert kinds["ops"] == EXACT and kinds["attributed_sync"] == EXACT
    assert kinds["sync_ipis"] == COUNT and kinds["cal_other_cpus"] == COUNT and kinds["tlb_other_cpus"] == COUNT
    for key in ("ms_per_op", "handler_us_per_sync_ipi", "initiator_us_p50", "gup_ns_per_page"):
        assert kinds[key] == TIME, key
    assert {f.key for f in FIGURES} <= set(kinds)


def test_a_figure_of_no_known_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        ReportFigure("x", "x", "", 0, figure="x", kind="speed")
    with pytest.raises(ValueError, match="kind"):
        Figure("x", "x", "", 0, "speed").checked()


# -- a test only with 3 repeats a side ---------------------------------------------------------

def test_fewer_than_three_repeats_get_no_test_and_say_their_n(tmp_path):
    report = _pair(tmp_path, RunSpec(repeats=2, seed=1), RunSpec(repeats=2, sync_per_op=0.0, seed=2))
    row = _row(report, "sync_ipis")
    assert row.welch is None and row.significant is None and row.mark == "n=2"
    assert row.change_pct == pytest.approx(-100, abs=5)  # the change is still given
    lkml = render_lkml.render(report)
    assert any(line.startswith("sync IPIs, other CPUs") and line.endswith("n=2") for line in _table(lkml))
    assert "<0.001" not in render_text.render(report)
    data = json.loads(render_json.render(report))
    fig = next(f for f in data["comparisons"][0]["figures"] if f["key"] == "sync_ipis")
    assert fig["p_value"] is None and fig["significant"] is None and fig["untested"] == "n=2"


def test_uneven_repeats_name_both_sides(tmp_path):
    report = _pair(tmp_path, RunSpec(repeats=1, seed=1), RunSpec(repeats=3, sync_per_op=0.0, seed=2))
    assert _row(report, "sync_ipis").mark == "n=1/3"


def test_three_repeats_a_side_are_tested(tmp_path):
    report = _pair(tmp_path, RunSpec(repeats=3, seed=1), RunSpec(repeats=3, sync_per_op=0.0, seed=2))
    row = _row(report, "cal_other_cpus")
    assert row.untested is None and row.welch is not None and row.significant is True and row.mark == "*"


def test_the_recorded_one_repeat_pair_says_n_1():
    report = build_report([str(RUNS / "tcg64-baseline-collapse-12G-traced"),
                           str(RUNS / "tcg64-patched-collapse-12G-traced")])
    assert _row(report, "cal_other_cpus").mark == "n=1"
    table = _table(render_lkml.render(report))
    assert not any(line.rstrip().endswith("?") for line in table)


# -- no test on zero variance ------------------------------------------------------------------

def test_zero_variance_on_both_sides_gets_no_test():
    fig = Figure("cal_other_cpus", "CAL, other CPUs", "", 0, COUNT)
    row = compare_figure(fig, [500, 500, 500], [200, 200, 200], emulation=False)
    assert row.untested == "sd=0" and row.welch is None and row.significant is None
    assert row.change_pct == pytest.approx(-60)
    # one constant side beside a varying one is the same test's one-sample case
    row = compare_figure(fig, [500, 520, 480], [200, 200, 200], emulation=False)
    assert row.untested is None and row.welch is not None


# -- exact counts -------------------------------------------------------------------------------

def test_exact_counts_are_exact_integers_without_a_test(tmp_path):
    report = _pair(tmp_path, RunSpec(repeats=5, seed=1), RunSpec(repeats=5, sync_per_op=0.0, seed=2))
    for key in ("ops", "attributed_sync"):
        row = _row(report, key)
        assert row.kind == EXACT and row.welch is None and row.untested == "exact", key
    assert _row(report, "attributed_sync").change_pct == pytest.approx(-100)
    table = _table(render_lkml.render(report))
    ops = next(line for line in table if line.startswith("operations"))
    assert "±" not in ops and "+-" not in ops and ops.split()[1] == "128" and ops.endswith("exact")
    traced = next(line for line in table if line.startswith("traced sync calls"))
    assert "±" not in traced and "*" not in traced


def test_an_exact_count_that_varies_shows_its_range():
    s = describe([128, 130, 131])
    assert fmt_mean_ci(s, 0, EXACT) == "128..131"
    assert fmt_mean_ci(describe([6144.0]), 0, EXACT) == "6,144"


# -- times under emulation ------------------------------------------------------------------------

def _timed(accel, work_s):
    return RunSpec(repeats=5, qemu_accel=accel, cpu_model="QEMU TCG CPU version 2.5+" if accel else "AMD EPYC",
                   hypervisor=None if accel else "kvm", flush_mode="native",
                   work_s_per_repeat=[work_s * (1 + 0.01 * i) for i in range(5)])


def test_an_emulated_time_is_never_significant_nor_a_saving(tmp_path):
    report = _pair(tmp_path, _timed("tcg", 2.0), _timed("tcg", 1.0))
    row = _row(report, "ms_per_op")
    assert row.emulated and row.significant is None and row.change_pct is None and row.mark == "emulated"
    assert report.comparisons[0].emulated
    lkml = render_lkml.render(report)
    assert not any(line.startswith("ms per operation") for line in _table(lkml))
    assert "Emulator time, not the kernel's" in lkml and "-50.0%" not in lkml
    block = lkml[lkml.index("Emulator time"):].splitlines()
    assert len(block[0]) <= 72 and block[2].startswith("ms per operation")
    text = render_text.render(report)
    ms = next(line for line in text.splitlines() if line.strip().startswith("ms per operation"))
    assert "emulated" in ms and "%" not in ms and "*" not in ms
    assert "emulated" in next(line for line in render_markdown.render(report).splitlines()
                              if line.startswith("| ms per operation"))
    data = json.loads(render_json.render(report))
    fig = next(f for f in data["comparisons"][0]["figures"] if f["key"] == "ms_per_op")
    assert fig["emulated"] is True and fig["change_pct"] is None and fig["significant"] is None
    assert fig["kind"] == "time" and data["comparisons"][0]["emulated"] is True


def test_the_same_times_on_a_host_are_tested(tmp_path):
    report = _pair(tmp_path, _timed(None, 2.0), _timed(None, 1.0))
    row = _row(report, "ms_per_op")
    assert not row.emulated and row.significant is True and row.change_pct == pytest.approx(-50, abs=1)


def test_host_facts_alone_say_emulated(tmp_path):
    """An old run without run.yaml's qemu section: the CPU model QEMU's TCG reports."""
    spec = _timed(None, 2.0)
    spec.cpu_model = "QEMU TCG CPU version 2.5+"
    report = _pair(tmp_path, spec, _timed(None, 1.0))
    assert _row(report, "ms_per_op").emulated


def test_the_recorded_tcg_pair_shows_no_emulator_saving():
    report = build_report([str(RUNS / "tcg64-baseline-collapse-12G-traced"),
                           str(RUNS / "tcg64-patched-collapse-12G-traced")])
    lkml = render_lkml.render(report)
    assert "-43.9%" not in lkml and not any(line.startswith("ms per operation") for line in _table(lkml))
    assert re.search(r"^ms per operation +17\.468 +9\.796$", lkml, re.M)


# -- no negative count --------------------------------------------------------------------------------

def test_no_negative_count_anywhere_in_the_recorded_pair():
    report = build_report([str(RUNS / "tcg64-baseline-collapse-12G-notrace"),
                           str(RUNS / "tcg64-patched-collapse-12G-notrace")])
    for text in (render_lkml.render(report), render_text.render(report), render_markdown.render(report)):
        assert "-634" not in text and "-556" not in text
    data = json.loads(render_json.render(report))
    run_b = data["runs"][1]
    assert run_b["sync_ipis_measured"] == 0 and run_b["sync_ipis_estimate_raw"] == pytest.approx(-634.34)
    assert min(run_b["per_repeat"]["sync_ipis"]) >= 0
    assert run_b["per_repeat"]["sync_ipis_estimate_raw"] == [pytest.approx(-634.34)]
    assert all(f["other"]["min"] >= 0 for f in data["comparisons"][0]["figures"] if f["kind"] in ("count", "exact"))


def test_a_count_is_never_written_below_zero():
    s = describe([-5.0, 2.0, 6.0])
    assert not fmt_mean_ci(s, 0, COUNT).startswith("-")
    assert "-" not in fmt_spread(describe([0.0, 1.0, 30.0]), 0, COUNT).replace("..", "")
    assert fmt_mean_ci(describe([-2.5]), 3, RATE) == "-2.500"  # a rate or a time may be negative


def test_counts_are_whole_numbers_in_the_table():
    report = build_report([str(RUNS / "tcg64-baseline-collapse-12G-traced"),
                           str(RUNS / "tcg64-patched-collapse-12G-traced")])
    lkml = render_lkml.render(report)
    assert "385,648.4" not in lkml and "387,072.0" not in lkml
    for line in _table(lkml):
        if line.startswith(("sync IPIs, other", "CAL", "TLB", "traced", "operations", "model")):
            cells = line.split()[:-2] if "%" in line else line.split()  # the change is a percent
            assert not any(re.search(r"\d\.\d", c) for c in cells), line


# -- tiny counts ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, why", [([1, 1, 1], [0, 0, 0], "few"), ([0, 1, 0], [0, 0, 0], "few"),
                                       ([44], [61], "noise"), ([1536, 1530, 1540], [1536, 1541, 1532], "noise")])
def test_tiny_counts_and_changes_in_their_noise_get_no_percent(a, b, why):
    row = compare_figure(Figure("tlb_other_cpus", "TLB, other CPUs", "", 0, COUNT), a, b, emulation=False)
    assert row.untested == why and row.change_pct is None and row.welch is None


def test_a_count_from_almost_nothing_is_tested_but_not_in_percent():
    row = compare_figure(Figure("tlb_other_cpus", "TLB, other CPUs", "", 0, COUNT), [0, 1, 0], [128, 129, 127],
                         emulation=False)
    assert row.change_pct is None and row.significant is True


def test_the_recorded_tlb_of_one_is_not_minus_fifty_percent():
    report = build_report([str(RUNS / "tcg-baseline-collapse-1G"), str(RUNS / "tcg-patched-collapse-1G")])
    tlb = next(line for line in _table(render_lkml.render(report)) if line.startswith("TLB"))
    assert "%" not in tlb and tlb.endswith("few")


# -- the contradictions said ---------------------------------------------------------------------------------

def test_a_cal_tlb_estimate_beside_a_traced_zero_says_which_the_verdict_uses():
    report = build_report([str(RUNS / "tcg-baseline-collapse-1G-threads"),
                           str(RUNS / "tcg-patched-collapse-1G-threads")])
    notes = report.comparisons[0].notes
    b = next(n for n in notes if n.startswith("B:"))
    assert "the verdict uses the traced count (0 sync calls in total)" in b and "CAL-TLB estimate" in b
    lkml = " ".join(render_lkml.render(report).split())
    assert "B: the verdict uses the traced count" in lkml
    data = json.loads(render_json.render(report))
    assert data["comparisons"][0]["notes"] == notes


def test_the_table_says_it_is_per_repeat():
    report = build_report([str(RUNS / "tcg-baseline-collapse-1G"), str(RUNS / "tcg-patched-collapse-1G")])
    assert _table(render_lkml.render(report))[0].startswith("per repeat")
    assert "figure, per repeat" in render_text.render(report)


def test_an_emulated_latency_gets_no_change(tmp_path):
    """cyclictest's wake-up latency in a TCG guest is a time too: no change given."""
    def spec(seed):
        s = _timed("tcg", 2.0)
        s.latency, s.seed = True, seed
        return s
    report = _pair(tmp_path, spec(1), spec(2))
    assert report.comparisons[0].latency
    for text in (render_text.render(report), render_lkml.render(report)):
        rows = [line for line in text.splitlines() if line.strip().startswith(("idle", "workload"))
                and ("p99" in line or "max" in line)]
        assert rows and all("%" not in line and "emulated" in line for line in rows), rows


def test_no_fractional_count_in_the_run_facts():
    report = build_report([str(RUNS / "tcg64-baseline-collapse-12G-traced")])
    text = render_text.render(report)
    background = next(line for line in text.splitlines() if line.strip().startswith("background"))
    assert not re.search(r"\d\.\d+ subtracted", background), background


def test_a_counts_interval_is_cut_at_zero_in_the_json(tmp_path):
    report = _pair(tmp_path, RunSpec(repeats=3, seed=1), RunSpec(repeats=3, sync_per_op=0.0, background_rate=5.0,
                                                                 seed=3))
    data = json.loads(render_json.render(report))
    for run in data["runs"]:
        for key in ("sync_ipis", "cal_other_cpus", "tlb_other_cpus", "ops"):
            ci = (run["stats"].get(key) or {}).get("ci95")
            assert ci is None or min(ci) >= 0, (key, ci)
    for f in data["comparisons"][0]["figures"]:
        if f["kind"] in ("count", "exact"):
            for side in ("base", "other"):
                assert f[side]["ci95"] is None or min(f[side]["ci95"]) >= 0
