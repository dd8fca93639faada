"""Every recorded run in analysis/runs reports the same numbers as it did before the run
directory's schema moved into tlbprobe/rundir/ (tests/data/report-golden, made with
`tlbprobe report RUN --format json` at the commit before that move, which already had
the CAL-only verdict of the 'verdicts without tracing' issue). A change to a figure or
a verdict shows here, and must be said in the commit that makes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlbprobe.report import build_report, render_json

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "data" / "report-golden"
RUNS = sorted(p for p in (REPO / "analysis" / "runs").iterdir() if (p / "summary.json").exists())


def normalised(text: str) -> dict:
    d = json.loads(text)
    d.pop("model_params", None)
    for r in d.get("runs", []):
        r.pop("path", None)
    return d


def test_every_recorded_run_has_a_golden_report():
    assert {p.name for p in RUNS} == {p.stem for p in GOLDEN.glob("*.json")}


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_recorded_runs_report_the_same_numbers(run):
    now = normalised(render_json.render(build_report([str(run)])))
    golden = json.loads((GOLDEN / f"{run.name}.json").read_text())
    assert now == golden
