"""The cover-letter format is mail-safe (issue 22, finding 13): every line of every
recorded run's and pair's lkml report is ASCII and at most 72 bytes, no marker sits on a
line of its own, and no internal word reaches the reader. The checks are on every line,
whatever rows the comparison table has."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from tlbprobe.report import build_report, render_lkml

REPO = Path(__file__).resolve().parents[1]
RUNS = sorted(p for d in ("analysis/runs", "analysis/fault-injection") for p in (REPO / d).iterdir()
              if (p / "summary.json").exists())
#: every pair of runs of one workload, in both orders, and one three-run report
PAIRS = [(a, b) for a, b in itertools.permutations(RUNS, 2)
         if a.name.split("-")[0] == b.name.split("-")[0] and ("hugetlb" in a.name) == ("hugetlb" in b.name)]
INTERNAL = re.compile(r"\bdriver\b|phases\.csv's note|\b1 repeats\b|\bsummary\.json\b")


def check(text: str) -> None:
    for line in text.splitlines():
        raw = line.encode("utf-8")
        assert raw.isascii(), f"not ASCII: {line!r}"
        assert len(raw) <= 72, f"{len(raw)} bytes: {line!r}"
        assert line.strip() not in ("*", "?", "* ?"), f"a marker on a line of its own: {line!r}"
        assert not INTERNAL.search(line), f"an internal word: {line!r}"
    assert "/" not in text.split("Reproduce:")[1].split("then")[0].replace("+-", ""), "a path in Reproduce"


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_every_recorded_run_is_mail_safe(run):
    check(render_lkml.render(build_report([str(run)], _options())))


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a.name}+{b.name}" for a, b in PAIRS])
def test_every_recorded_pair_is_mail_safe(pair):
    check(render_lkml.render(build_report([str(p) for p in pair], _options())))


def test_three_runs_are_mail_safe():
    three = [str(REPO / "analysis/runs" / n) for n in
             ("tcg-baseline-collapse-1G", "tcg-patched-collapse-1G", "tcg-patched-collapse-1G-threads")]
    check(render_lkml.render(build_report(three)))


def _options():
    from tlbprobe.report import ReportOptions

    return ReportOptions(allow_incomplete=True)
