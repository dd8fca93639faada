"""Streamed collapse (collapse --window): the same collapses and the same sync calls as the
whole range at once, in the memory of one window. Real madvise, /proc, tracefs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_csd_events, system_state
from tlbprobe.errors import InputError
from tlbprobe.run.job import build_job

REPO = Path(__file__).resolve().parents[1]


def collect(out: Path, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--size", "512M", "--repeat", "1",
                          "--idle-seconds", "0.5", "--out", str(out), "-q", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads((out / "summary.json").read_text())


@pytest.mark.root
@needs_csd_events
def test_a_streamed_collapse_sends_what_the_whole_range_sends(tmp_path):
    before = system_state()
    whole = collect(tmp_path / "whole")
    streamed = collect(tmp_path / "streamed", "--window", "64M")  # 1/8 of the size
    assert system_state() == before
    for s in (whole, streamed):  # thp_collapse_alloc's delta: every 2 MiB range once
        assert 256 <= s["ops"] <= 257, s["ops"]
    sync = [s["queued"]["tlb_remove_table_smp_sync"] for s in (whole, streamed)]
    others = whole["online_cpus"] - 1
    assert abs(sync[0] - 256 * others) <= 2 and abs(sync[1] - sync[0]) <= 2, sync
    figs = streamed["repeats"][0]["phases"]["workload"]["workload_figures"]
    assert figs["stream_windows"] == 8 and figs["stream_step_seconds"] > 0
    assert figs["stream_step_cal"] >= 0 and figs["stream_step_tlb"] >= 0
    assert "stream_windows" not in whole["repeats"][0]["phases"]["workload"].get("workload_figures", {})
    job = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / "streamed" / "run.yaml").read_text())["job"]))
    assert job["window"] == 64 << 20 and job["size"] == 512 << 20
    report = subprocess.run([sys.executable, "-m", "tlbprobe", "report", str(tmp_path / "streamed")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "streamed in 8 windows" in report.stdout and "MATCHES" in report.stdout


def test_a_window_is_whole_2m_ranges_and_is_refused_with_race():
    with pytest.raises(InputError, match="not a whole number of 2 MiB ranges"):
        build_job({"size": 1 << 30, "window": (3 << 20) + 4096})
    assert build_job({"size": 1 << 30, "window": "128M"}).options["window"] == 128 << 20
    from tlbprobe.errors import PreflightError
    from tlbprobe.measure.host import gather
    from tlbprobe.workloads import driver

    facts = gather(None)
    job = build_job({"size": 1 << 30, "window": "128M", "race": True})
    with pytest.raises(PreflightError, match="cannot be streamed"):
        driver("collapse")(job, facts, print).preflight()
    whole = driver("collapse")(build_job({"size": 256 << 20, "window": "1G"}), facts, print)
    assert not whole.streamed and whole.window == 256 << 20  # a window beyond the size: the whole range
