"""The khugepaged workload: real khugepaged on this host's kernel, knobs journaled and
restored, one traced sync broadcast per collapse whatever CPU khugepaged ran on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import JOURNAL, needs_csd_events, system_state
from tlbprobe.run.job import build_job
from tlbprobe.workloads.khugepaged.driver import KNOBS, max_rate, region_huge_bytes, seconds_to_collapse

REPO = Path(__file__).resolve().parents[1]
KHUGEPAGED = Path("/sys/kernel/mm/transparent_hugepage/khugepaged")
def knobs() -> dict:
    """Every knob a run may change (conftest leaves khugepaged's counters out)."""
    return system_state()


SMAPS = """\
55d0a0000000-55d0a0200000 r--p 00000000 fe:01 123   /usr/bin/python3
AnonHugePages:      2048 kB
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
7f0000400000-7f0010000000 rw-p 00000000 00:00 0
AnonHugePages:    251904 kB
7f0010000000-7f0010200000 rw-p 00000000 00:00 0
AnonHugePages:      2048 kB
"""


def test_region_huge_bytes_sums_the_vmas_inside_the_region_only():
    start, length = 0x7F0000000000, 0x10000000  # 256 MiB
    assert region_huge_bytes(start, length, SMAPS) == (2048 + 251904) * 1024
    assert region_huge_bytes(start, length, "garbage\nAnonHugePages: x kB\n") == 0


def test_the_knobs_bound_the_rate_as_khugepaged_do_scan_does():
    # kernel defaults: 4096 pages = 8 ranges per wake-up, every 10 s
    assert max_rate(4096, 10000) == pytest.approx(0.8)
    assert seconds_to_collapse(128, 4096, 10000) == 150.0  # 256 MiB at the defaults: 16 wake-ups
    assert seconds_to_collapse(128, 32768, 100) == pytest.approx(0.1)
    assert seconds_to_collapse(8, 4096, 10000) == 0.0       # one wake-up does it
    assert max_rate(4096, 0) is None


def test_the_job_file_holds_the_kernels_defaults():
    job = build_job({}, str(REPO / "workloads" / "khugepaged.yaml"))
    for key, (_, default) in KNOBS.items():
        assert job.options[key] == default, key


@pytest.mark.root
@needs_csd_events
def test_khugepaged_collapses_send_one_traced_sync_each_and_the_knobs_come_back(tmp_path):
    if JOURNAL.exists():
        pytest.fail(f"{JOURNAL} exists before the test: a previous run was not restored")
    before = knobs()
    out = tmp_path / "kh"
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--workload", "khugepaged", "--size", "256M",
                          "--pages-to-scan", "32768", "--scan-sleep-millisecs", "100", "--steady-seconds", "2",
                          "--repeat", "2", "--idle-seconds", "1", "--out", str(out), "-q"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert knobs() == before
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["workload"] == "khugepaged"
    # khugepaged sends from any CPU: every CPU is counted, the driver's too
    assert s["other_cpus"] == list(range(s["online_cpus"]))
    for rep in s["repeats"]:
        w = rep["phases"]["workload"]
        figs = w["workload_figures"]
        assert w["ops"] == 128 == figs["khugepaged_pages_collapsed"], w    # khugepaged's own count
        assert figs["seconds_to_collapse"] >= figs["least_seconds_to_collapse"] > 0
        assert figs["steady_collapses"] == 0
        # one broadcast per collapse, each to the N-1 CPUs other than khugepaged's
        assert w["queued"]["tlb_remove_table_smp_sync"] == 128 * (s["online_cpus"] - 1), w["queued"]


@pytest.mark.root
def test_sigkill_during_khugepaged_then_restore_puts_its_knobs_back(tmp_path):
    if JOURNAL.exists():
        pytest.fail(f"{JOURNAL} exists before the test: a previous run was not restored")
    before = knobs()
    proc = subprocess.Popen([sys.executable, "-m", "tlbprobe", "collect", "--workload", "khugepaged", "--size", "64M",
                             "--pages-to-scan", "512", "--scan-sleep-millisecs", "60000", "--idle-seconds", "1",
                             "--no-trace", "--out", str(tmp_path / "killed"), "-q"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while (KHUGEPAGED / "scan_sleep_millisecs").read_text().strip() != "60000":
        assert time.time() < deadline and proc.poll() is None, "collect never set the knobs"
        time.sleep(0.05)
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert JOURNAL.exists() and knobs() != before
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "restore"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert knobs() == before and not JOURNAL.exists()
