"""The hugetlb-unshare workload on the real kernel (root), and its input checks.

What this kind of kernel does (6.18 with the mmu_gather rework of hugetlb PMD unsharing:
huge_pmd_unshare_flush() calls tlb_remove_table_sync_one() once per gather, mm/hugetlb.c),
as the recorded runs show: every operation that unshares a PMD table sends ONE
tlb_remove_table_smp_sync broadcast to every other online CPU (analysis/runs/
host-hugetlb-unshare-1G: 600 traced for 600 operations); a layout that cannot share
(MAP_PRIVATE) sends none (host-hugetlb-unshare-1G-control: none traced).
The runs are short (1 GiB, one repeat, 1 s idle window): the machine is shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import pytest

from tlbprobe import cli
from tlbprobe.workloads import driver
from tlbprobe.workloads.hugetlb_unshare.driver import HugetlbUnshareWorkload, pages_for
from tlbprobe.workloads.sharers import ENTRIES_PER_TABLE, Layout

REPO = Path(__file__).resolve().parent.parent
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
INSTANCES = Path("/sys/kernel/tracing/instances")
JOURNAL = Path("/run/tlbprobe/journal.json")
GiB = 1 << 30

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="needs root and the real kernel")
needs_hugetlb = pytest.mark.skipif(not NR_HUGEPAGES.exists(), reason="kernel without hugetlbfs")


# -- without root ------------------------------------------------------------------------
def test_registered():
    assert driver("hugetlb-unshare") is HugetlbUnshareWorkload
    assert HugetlbUnshareWorkload.ops_unit == "unshares"


def test_sharing_is_told_by_fault_counts():
    lay = Layout(addr=0, size=2 * GiB, fd=-1, shared=True)
    assert lay.tables == 2
    assert lay.looks_shared(2) and lay.looks_shared(40)          # one fault per table + noise
    assert not lay.looks_shared(ENTRIES_PER_TABLE)                # one table built privately
    assert not lay.looks_shared(2 * ENTRIES_PER_TABLE)
    assert pages_for(GiB) == 512


class FakeState:
    """Records knob writes instead of making them (SystemState undoes them on every exit)."""

    def __init__(self):
        self.writes = []

    def set_knob(self, path, value):
        self.writes.append((path, value))


def make_workload(**job_args) -> HugetlbUnshareWorkload:
    from types import SimpleNamespace

    from tlbprobe.run.job import build_job
    job = build_job({"workload": "hugetlb-unshare", **job_args})
    facts = SimpleNamespace(kernel_release="6.18.0", mem_available=8 * GiB, online_cpus=[0, 1])
    return HugetlbUnshareWorkload(HugetlbUnshareWorkload.resolve(job, facts), facts, log=lambda line: None)


def test_defaults_are_made_explicit_for_run_yaml():
    w = make_workload()
    assert (w.job.size, w.opt("cycles")) == (GiB, 200)
    assert {"operation": "munmap", "sharers": 2, "cycles": 200, "control": False}.items() <= w.job.to_dict().items()
    w = make_workload(operation="exit", sharers=4)
    assert w.opt("cycles") * 3 <= 500  # one forked helper per op, capped


def test_configure_reserves_only_what_is_missing_and_refuses_a_shortfall(monkeypatch):
    from tlbprobe.errors import PreflightError
    from tlbprobe.workloads import segment as hugetlb

    knob = {"value": 100}
    monkeypatch.setattr(hugetlb, "read_knob", lambda path: str(knob["value"]))
    # 100 pages exist, 50 of them free and 10 of those reserved: 40 available of 512 needed.
    monkeypatch.setattr(hugetlb, "hugepage_status",
                        lambda meminfo=None: {"total": knob["value"], "free": 50, "available": 40,
                                              "pagesize": 2 << 20})
    state = FakeState()
    with pytest.raises(PreflightError, match="could reserve only 40 of the 512"):
        make_workload().configure(state)
    assert state.writes == [("/proc/sys/vm/nr_hugepages", str(100 + 512 - 40))]

    monkeypatch.setattr(hugetlb, "hugepage_status",
                        lambda meminfo=None: {"total": 600, "free": 600, "available": 600, "pagesize": 2 << 20})
    state = FakeState()
    make_workload().configure(state)
    assert state.writes == []  # enough free already: the knob is left alone


def test_bad_size_is_refused_in_one_line(capsys):
    rc = cli.main(["collect", "--workload", "hugetlb-unshare", "--size", "1536M", "--out", "/nonexistent/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("tlbprobe: ")
    if is_root:
        assert "not a multiple of 1G" in err[0]


def test_bad_operation_is_refused(capsys):
    rc = cli.main(["collect", "--workload", "hugetlb-unshare", "--operation", "munmapp", "--out", "/nonexistent/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    if is_root:
        assert "munmap, mprotect" in err[0]


# -- with root ---------------------------------------------------------------------------
def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


def system_state() -> Dict[str, object]:
    """What a run may change and must put back."""
    return {
        "nr_hugepages": NR_HUGEPAGES.read_text().strip(),
        "HugePages_Total": meminfo("HugePages_Total"),
        "thp_enabled": THP_ENABLED.read_text().strip() if THP_ENABLED.exists() else None,
        "instances": sorted(os.listdir(INSTANCES)) if INSTANCES.is_dir() else None,
        "journal": JOURNAL.exists(),
    }


@pytest.fixture
def quiet_machine():
    """Wait (up to 10 min) while another tlbprobe run holds the state journal; a journal left
    by a dead run is someone else's to restore, so skip then."""
    deadline = time.monotonic() + 600
    while JOURNAL.exists():
        try:
            pid = json.loads(JOURNAL.read_text()).get("pid", 0)
        except (OSError, ValueError):
            pid = 0
        if not pid or not Path(f"/proc/{pid}").exists():
            pytest.skip(f"{JOURNAL} is left from a killed run: run `tlbprobe restore` first")
        if time.monotonic() > deadline:
            pytest.skip("another tlbprobe run kept the system busy for 10 minutes")
        time.sleep(1)
    yield


def collect(tmp_path: Path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    rc = cli.main(["collect", "--workload", "hugetlb-unshare", "--size", "1G", "--repeat", "1",
                   "--idle-seconds", "1", "-q", "--out", str(out), *extra])
    assert rc == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.root
@pytest.mark.slow
@needs_root
@needs_hugetlb
@pytest.mark.parametrize("control", [False, True], ids=["shared", "control"])
def test_one_sync_broadcast_per_unshare(tmp_path, quiet_machine, control):
    before = system_state()
    s = collect(tmp_path, "control" if control else "shared", *(["--control"] if control else []))
    after = system_state()
    assert after == before, "a setting or huge pages were not given back"
    assert s["complete"] and s["ops_unit"] == "unshares"
    assert s["ops"] == s["ops_expected"] == 200
    others = s["online_cpus"] - 1
    sync = s["queued"].get("tlb_remove_table_smp_sync", 0)  # queued: counts calls that found a CPU polling too
    assert s["attributed"].get("tlb_remove_table_smp_sync", 0) <= sync
    if control:
        # MAP_PRIVATE never shares: the same operations send no sync broadcast (a few may
        # come from other processes on a shared machine).
        assert sync <= 3
    else:
        expected = s["ops"] * others
        assert abs(sync - expected) <= max(3, 0.02 * expected), s["attributed"]
        assert s["sync_ipis_per_op_per_cpu"] == pytest.approx(1.0, abs=0.1)


def wait_for(cond, timeout: float, proc: Optional[subprocess.Popen] = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"collect ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.root
@pytest.mark.slow
@needs_root
@needs_hugetlb
def test_sigkill_then_restore_puts_everything_back(tmp_path, quiet_machine):
    before = system_state()
    if meminfo("HugePages_Free") - meminfo("HugePages_Rsvd") >= 512:
        pytest.skip("enough huge pages are free already: the run would not touch nr_hugepages")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlbprobe", "collect", "--workload", "hugetlb-unshare", "--size", "1G",
         "--repeat", "3", "--idle-seconds", "0", "--cycles", "100000", "-q", "--out", str(tmp_path / "killed")],
        cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: NR_HUGEPAGES.read_text().strip() != before["nr_hugepages"], 120, proc,
                 "nr_hugepages changed")
        # Into the measured window: a helper process exists and the tables are shared.
        wait_for(lambda: (tmp_path / "killed" / "log.txt").exists()
                 and "PMD tables shared" in (tmp_path / "killed" / "log.txt").read_text(), 60, proc,
                 "the PMD tables were shared")
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert JOURNAL.exists(), "a SIGKILLed run must leave its journal for `tlbprobe restore`"
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "restore"], cwd=str(REPO), env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # The helpers die with the driver (PR_SET_PDEATHSIG), so the huge pages are free and
    # nr_hugepages going back frees them too: HugePages_Total is back as well.
    wait_for(lambda: system_state() == before, 10, what=f"the state before the run: {before}, now {system_state()}")
    assert not JOURNAL.exists()
