"""hugetlb-db: client churn on a shared hugetlb segment, on this host's kernel, and its model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import JOURNAL, needs_csd_events, system_state
from tlbprobe.model import Scenario, load_params, predict

REPO = Path(__file__).resolve().parents[1]


def broadcasts(**kw) -> float:
    base = dict(workload="hugetlb-db", ops=100, online_cpus=4, variant="baseline", flush_mode="pv")
    return predict(Scenario(**{**base, **kw}), load_params()).sync_broadcasts.value


def test_model_batched_unshare_sends_only_for_exits_that_leave_the_table_exclusive():
    assert broadcasts(sharers=1) == 100                      # one server: every exit
    assert broadcasts(sharers=4) == 0                        # servers keep it shared
    assert broadcasts(sharers=1, exclusive_ops=37) == 37     # overlapping sessions: as the driver counted
    # between 1013af4f585f and 8ce720d5bd91: every exit, every table
    assert broadcasts(sharers=4, tables_per_op=3, hugetlb_unshare="per-table") == 300
    assert broadcasts(sharers=4, hugetlb_unshare="none") == 0


def collect(tmp_path: Path, name: str, *args: str) -> dict:
    before = system_state()
    out = tmp_path / name
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--workload", "hugetlb-db", "--size", "1G",
                          "--repeat", "1", "--idle-seconds", "1", "--out", str(out), "-q", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert system_state() == before and not JOURNAL.exists()
    return json.loads((out / "summary.json").read_text())


@pytest.mark.root
@needs_csd_events
def test_one_server_sends_one_broadcast_per_session_four_send_none_with_sharing_shown(tmp_path):
    one = collect(tmp_path, "one", "--sharers", "1", "--rate", "20", "--duration", "2")
    figs = one["repeats"][0]["phases"]["workload"]["workload_figures"]
    assert one["ops"] == 40 == figs["sessions_shared"] == figs["exclusive_exits"]
    others = one["online_cpus"] - 1
    assert one["queued"]["tlb_remove_table_smp_sync"] == 40 * others      # the positive control

    four = collect(tmp_path, "four", "--sharers", "4", "--rate", "20", "--duration", "2")
    figs = four["repeats"][0]["phases"]["workload"]["workload_figures"]
    assert four["ops"] == 40 == figs["sessions_shared"]                     # sharing happened ...
    assert figs["exclusive_exits"] == 0
    assert four["queued"]["tlb_remove_table_smp_sync"] == 0                 # ... and no broadcast


@pytest.mark.root
@needs_csd_events
def test_overlapping_sessions_send_only_for_the_last_client_to_leave(tmp_path):
    # 20 sessions a second, each attached 120 ms: two or three attached at once
    s = collect(tmp_path, "overlap", "--sharers", "1", "--rate", "20", "--duration", "2", "--client-work-ms", "120",
                "--client-touch", "part")
    figs = s["repeats"][0]["phases"]["workload"]["workload_figures"]
    assert figs["max_attached"] >= 2 and figs["sessions_shared"] == 40
    assert 0 < figs["exclusive_exits"] < 40
    others = s["online_cpus"] - 1
    assert s["queued"]["tlb_remove_table_smp_sync"] == figs["exclusive_exits"] * others


def test_a_part_touch_tells_shared_from_private_tables_despite_the_interpreters_own_faults():
    from tlbprobe.workloads.sharers import PART_PAGES, Layout

    lay = Layout(addr=0, size=2 << 30, fd=-1, shared=True)   # two 1 GiB ranges
    assert lay.looks_shared_part(2 + 12)                       # one fault per range, plus Python's own
    assert not lay.looks_shared_part(2 * PART_PAGES)           # every page faulted: own tables


def test_the_model_knows_when_even_sessions_overlap():
    from tlbprobe.workloads.hugetlb_db.spec import db_exclusive_exits

    assert db_exclusive_exits(100, rate=20, work_ms=10) == 100     # 10 ms of every 50: never overlap
    assert db_exclusive_exits(100, rate=20, work_ms=120) == 1      # always overlap: only the last exit
    assert db_exclusive_exits(0, rate=20, work_ms=10) == 0


@pytest.mark.root
@needs_csd_events
def test_race_walkers_in_the_server_while_clients_come_and_go(tmp_path):
    s = collect(tmp_path, "race", "--sharers", "1", "--rate", "20", "--duration", "1", "--race")
    figs = s["repeats"][0]["phases"]["workload"]["workload_figures"]
    assert figs["races_attempted"] > 0, "the server's walkers ran while clients attached and exited"
    assert figs["corrupted_bytes"] == 0 and figs["kernel_reports"] == 0
    # the driver's view of the segment (for the pattern) shares no table: every exit still
    # leaves the table to the one server, as without --race
    assert s["ops"] == 20 == figs["exclusive_exits"]
    assert s["queued"]["tlb_remove_table_smp_sync"] == 20 * (s["online_cpus"] - 1)
