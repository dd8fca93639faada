"""Verdicts without tracing (CAL minus TLB), on the two recorded 64-vCPU runs of the seed's
shape and on runs derived from them: the background moves, the verdict must not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tlbprobe.report import build_report
from tlbprobe.report import render_json, render_lkml, render_text

RUNS = Path(__file__).resolve().parents[1] / "analysis" / "runs"
BASE, PATCHED = RUNS / "tcg64-baseline-collapse-12G-notrace", RUNS / "tcg64-patched-collapse-12G-notrace"


def test_patched_64_cpu_run_matches_although_its_idle_window_was_busier():
    """The 2 s idle window caught 28 CAL/s (a burst on CPU 1); the 39 s workload phase
    received 453 CAL in all. Subtracting the idle rate gave -634 and "DIFFERS"."""
    report = build_report([str(BASE), str(PATCHED)])
    a, b = report.runs
    assert b.verdict.status == "matches" and b.verdict.basis == "CAL-TLB" and b.verdict.expected == 0
    assert b.verdict.estimate == pytest.approx(-634.34) and b.verdict.measured == 0
    assert b.verdict.bounds.low == 0 and b.verdict.bounds.high == 448
    # the baseline still fits the baseline kernel (its variant was not given at collect time)
    assert a.verdict.status == "undetermined" and a.verdict.reason.endswith("the measurement fits baseline")
    text = render_text.render(report)
    assert "0 (below background, at most 448)" in text and "-634" not in text and "-100.2%" not in text
    lkml = render_lkml.render(report)
    assert "-634" not in lkml and "-100.0%" in lkml and max(len(line) for line in lkml.splitlines()) <= 72
    data = json.loads(render_json.render(report))
    run_b = data["runs"][1]
    # no negative count in the JSON either: the raw estimate keeps its own, documented name
    assert run_b["sync_ipis_measured"] == 0 and run_b["sync_ipis_shown"] == 0
    assert run_b["sync_ipis_estimate_raw"] == pytest.approx(-634.34)
    assert run_b["sync_ipis_bounds"]["high"] == 448 and "background of 0 to" in run_b["verdict"]["method"]


def _add_sync_ipis(src: Path, dst: Path, n: int) -> Path:
    """A copy of a run whose workload phase received n more sync-like IPIs on the other CPUs."""
    shutil.copytree(src, dst)
    s = json.loads((dst / "summary.json").read_text())
    r = s["repeats"][0]
    w = r["phases"]["workload"]
    for key in ("cal_other_cpus", "sync_raw", "sync_ipis"):
        w[key] += n
    for key in ("cal_other_cpus", "sync_ipis_measured"):
        r[key] += n
        s[key] += n
    (dst / "summary.json").write_text(json.dumps(s))
    return dst


@pytest.mark.parametrize("fraction, status", [(0.01, "differs"), (0.002, "matches")])
def test_one_percent_of_the_broadcasts_left_is_judged_differs(tmp_path, fraction, status):
    """A patched kernel that still sends 1% of what the 64-CPU baseline sends (3,871 of
    387,072) must fail; 0.2% (774) is inside what a 2 s idle window can vouch for."""
    left = round(fraction * 6144 * 63)
    run = _add_sync_ipis(PATCHED, tmp_path / "leaky", left)
    (b,) = build_report([str(run)]).runs
    assert b.verdict.status == status, b.verdict
    if status == "differs":
        assert "outside" in render_text.verdict_text(b)


def test_a_positive_expectation_widens_by_the_background_not_beyond(tmp_path):
    """The baseline, labelled as such, matches; the same run with a tenth of its syncs
    missing does not."""
    run = tmp_path / "base"
    shutil.copytree(BASE, run)
    y = (run / "run.yaml").read_text().replace("kernel_variant: null", "kernel_variant: baseline")
    (run / "run.yaml").write_text(y)
    (a,) = build_report([str(run)]).runs
    assert a.verdict.status == "matches" and a.verdict.expected == 6144 * 63
    short = _add_sync_ipis(run, tmp_path / "short", -38707)
    (b,) = build_report([str(short)]).runs
    assert b.verdict.status == "differs"
