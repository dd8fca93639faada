"""gup-fast and --race: the parsers and checks on synthetic input, and real runs on this host."""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import JOURNAL, system_state
from tlbprobe.errors import WorkloadError
from tlbprobe.workloads.gup_fast.driver import parse_output
from tlbprobe.workloads.race import SPLAT, KernelLog, corrupted_bytes, write_pattern

REPO = Path(__file__).resolve().parents[1]


def test_gupbench_output_is_parsed_or_refused():
    out = parse_output("thread 0 cpu 0 calls 100 pages 800 ns 4000\nthread 1 cpu 1 calls 100 pages 800 ns 8000\n"
                       "huge 4096\n")
    assert out == {"threads": [{"cpu": 0, "calls": 100, "pages": 800, "ns": 4000},
                               {"cpu": 1, "calls": 100, "pages": 800, "ns": 8000}], "huge_kb": 4096}
    with pytest.raises(WorkloadError, match="no thread figures"):
        parse_output("huge 0\n")
    with pytest.raises(WorkloadError, match="unexpected"):
        parse_output("thread 0 cpu x calls 1 pages 1 ns 1\n")


def test_the_pattern_finds_every_changed_byte():
    buf = ctypes.create_string_buffer(1 << 16)
    addr = ctypes.addressof(buf)
    write_pattern(addr, len(buf))
    assert corrupted_bytes(addr, len(buf)) == 0
    buf[100] = bytes([buf[100][0] ^ 0xFF])
    buf[4000:4003] = b"\0\0\0" if buf[4000:4003] != b"\0\0\0" else b"\1\1\1"
    assert corrupted_bytes(addr, len(buf)) == 4


def test_writer_slots_are_left_to_the_walkers_own_check():
    from tlbprobe.workloads.race import CHUNK_WORDS, SLOT_WORDS

    size = 4 << 20
    buf = ctypes.create_string_buffer(size)
    addr = ctypes.addressof(buf)
    write_pattern(addr, size)
    words = (ctypes.c_uint64 * (size // 8)).from_address(addr)
    words[CHUNK_WORDS + 5 * SLOT_WORDS] += 1    # slot 5 of chunk 1, page 0: a walker's word
    words[CHUNK_WORDS + 15 * 512 + 63 * SLOT_WORDS] += 1    # slot 63 of page 15: one too
    assert corrupted_bytes(addr, size) == 0
    words[CHUNK_WORDS + 5 * SLOT_WORDS + 1] += 1  # the word after it is pattern
    assert corrupted_bytes(addr, size) == 1
    words[CHUNK_WORDS + 16 * 512] += 1            # so is page 16
    assert corrupted_bytes(addr, size) == 2


def test_walkers_pin_write_and_catch_a_write_that_went_elsewhere():
    """The real walkers (race_walkers.c, compiled here) on this process's memory: they pin
    with vmsplice, store in their slots, and count a slot that does not hold what its
    walker stored last: here because the test puts an older value there, in a broken
    kernel because a stale TLB entry sent the walker's store to a freed page."""
    import mmap
    import time

    from tlbprobe.workloads.race import CHUNK_WORDS, WalkerLib, Walkers

    size = 8 << 20
    m = mmap.mmap(-1, size)
    buf = (ctypes.c_char * size).from_buffer(m)
    addr = ctypes.addressof(buf)
    write_pattern(addr, size)
    words = (ctypes.c_uint64 * (size // 8)).from_address(addr)
    lib = WalkerLib()
    try:
        w = Walkers(lib, addr, size, [0, 0])
        w.start()
        w.window(True)
        time.sleep(0.2)
        w.window(False)
        time.sleep(0.05)
        w.stop()
        f = w.figures
        assert f.calls > f.during > 0 and f.errors == 0 and f.writers == 2 and f.writes > 0
        assert f.lost_writes == 0 and corrupted_bytes(addr, size) == 0
        w = Walkers(lib, addr, size, [0, 0])
        w.start()
        time.sleep(0.05)
        words[2 * CHUNK_WORDS + 512 + 1 * 8] = 1   # walker 1's word in page 1 of chunk 2: older than its stores
        time.sleep(0.05)
        w.stop()
        assert w.figures.lost_writes >= 1 and w.figures.writers == 2
        before = bytes(buf)
        w = Walkers(lib, addr, size, [0], write=False)   # pinning only: the memory is left alone
        w.start()
        time.sleep(0.05)
        w.stop()
        assert w.figures.calls > 0 and w.figures.writers == 0 and w.figures.writes == 0 and bytes(buf) == before
    finally:
        del words, buf
        m.close()
        lib.close()


def test_kernel_splats_are_recognised(tmp_path):
    for line in ("BUG: KASAN: use-after-free in gup_fast_pte_range+0x1", "BUG: Bad page state in process x",
                 "WARNING: CPU: 1 PID: 2 at mm/gup.c:100 try_grab_folio+0x1", "general protection fault, probably"):
        assert SPLAT.search(line), line
    assert not SPLAT.search("virtio_net virtio0 eth0: renamed")
    log = KernelLog(str(tmp_path / "absent"))
    assert not log.readable and log.scan() == []


@pytest.mark.root
def test_gup_fast_through_vmsplice_and_odirect_on_this_host(tmp_path):
    for path, extra in (("vmsplice", ["--calls", "20000"]), ("odirect", ["--calls", "500", "--odirect-dir", "/var/tmp"])):
        out = tmp_path / path
        res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--workload", "gup-fast", "--gup-path", path,
                              "--threads", "2", "--repeat", "2", "--idle-seconds", "0.5", "--out", str(out), *extra],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        s = json.loads((out / "summary.json").read_text())
        for rep in s["repeats"]:
            f = rep["phases"]["workload"]["workload_figures"]
            assert f["threads"] == 2 and f["calls_per_s"] > 0 and f["ns_per_page"] > 0
        if path == "odirect":  # the log names the file and its (real) filesystem
            m = re.search(r"O_DIRECT reads of /var/tmp/\S+ \((\w+)\)", res.stdout + res.stderr)
            assert m and m.group(1) not in ("tmpfs", "ramfs", "unknown"), res.stdout
        assert not list(Path("/var/tmp").glob("tlbprobe-gup-*")), "the O_DIRECT file is removed at the end"
        report = subprocess.run([sys.executable, "-m", "tlbprobe", "report", str(out)], cwd=REPO, capture_output=True,
                                text=True).stdout
        assert "ns per pinned page" in report and "MATCHES" in report   # no broadcast expected, none sent


@pytest.mark.root
def test_race_run_reports_zero_corruption_and_zero_kernel_reports(tmp_path):
    if JOURNAL.exists():
        pytest.fail(f"{JOURNAL} exists before the test")
    before = system_state()
    out = tmp_path / "race"
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--size", "256M", "--race", "--repeat", "2",
                          "--idle-seconds", "1", "--out", str(out), "-q"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert system_state() == before
    s = json.loads((out / "summary.json").read_text())
    for rep in s["repeats"]:
        f = rep["phases"]["workload"]["workload_figures"]
        assert f["races_attempted"] > 0, "walkers ran while the range collapsed"
        assert f["race_writers"] >= 1 and f["race_writes"] > 0, "walkers stored through the TLB too"
        assert f["corrupted_bytes"] == 0 and f["lost_writes"] == 0 and f["kernel_reports"] == 0
        # every collapse vmstat counted beyond ours is a refused call's allocation (THP is
        # "never" during the run: khugepaged adds none)
        assert rep["ops"] <= rep["ops_expected"] + f["collapses_refused"]
    report = subprocess.run([sys.executable, "-m", "tlbprobe", "report", str(out)], cwd=REPO, capture_output=True,
                            text=True).stdout
    assert "0 corrupted bytes, 0 kernel reports" in report


def test_the_ab_sets_ipis_saved_beside_gup_fast_cost():
    from tlbprobe.workflows.repro import tradeoff

    collapse = {"runs": [{"workload": "collapse", "ops": 512, "sync_ipis_traced": 1536},
                         {"workload": "collapse", "ops": 512, "sync_ipis_traced": 0}], "comparisons": []}
    gup = {"runs": [], "comparisons": [{"figures": [{"key": "gup_ns_per_page", "change_pct": 3.1,
                                                     "significant": True}]}]}
    assert tradeoff({"collapse-1G": collapse, "gup-fast": gup}) == (
        "trade-off: the patch saves 3.00 sync IPIs per collapse (collapse-1G); GUP-fast ns per page changes "
        "+3.1% (gup-fast, significant)")
    assert tradeoff({"collapse-1G": collapse}) is None
    # a TCG guest's GUP-fast time is the emulator's: no change to weigh (report/compare.py)
    emulated = {"runs": [], "comparisons": [{"figures": [{"key": "gup_ns_per_page", "change_pct": None,
                                                          "significant": None, "emulated": True,
                                                          "untested": "emulated"}]}]}
    line = tradeoff({"collapse-1G": collapse, "gup-fast": emulated})
    assert "emulator's time" in line and "%" not in line


@pytest.mark.root
def test_hugetlb_unshare_raced_by_walkers_in_the_unsharing_processes(tmp_path):
    before = system_state()
    out = tmp_path / "hrace"
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--workload", "hugetlb-unshare", "--size", "1G",
                          "--cycles", "50", "--race", "--repeat", "1", "--idle-seconds", "1", "--out", str(out), "-q"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert system_state() == before
    f = json.loads((out / "summary.json").read_text())["repeats"][0]["phases"]["workload"]["workload_figures"]
    assert f["races_attempted"] > 0 and f["corrupted_bytes"] == 0 and f["kernel_reports"] == 0
    bad = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--workload", "hugetlb-unshare", "--operation",
                          "exit", "--race", "--out", str(tmp_path / "no")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "races nothing" in bad.stderr and "Traceback" not in bad.stderr


def test_the_recorded_fault_injection_run_fails_on_its_lost_writes():
    """analysis/fault-injection: the broken kernel (our patch plus a collapse flush made
    local-only) in a debug TCG guest, from `repro --race`. Its walkers lost writes in
    every repeat; the baseline debug run beside it (analysis/runs) lost none."""
    from tlbprobe.report import build_report
    from tlbprobe.report.render_text import render

    broken = REPO / "analysis" / "fault-injection" / "tcg-debug-broken-collapse-race"
    report = build_report([str(broken)])
    (a,) = report.runs
    assert a.verdict.status == "differs" and "lost writes 144 (64, 64, 16 per repeat)" in a.verdict.reason
    assert "0 lost writes" not in render(report)
    (b,) = build_report([str(REPO / "analysis" / "runs" / "tcg-debug-baseline-collapse-race")]).runs
    assert b.verdict.status == "matches"
    figs = [r.workload.workload_figures for r in b.run.repeats]
    assert all(f["lost_writes"] == 0 and f["race_writes"] > 1e6 for f in figs)
