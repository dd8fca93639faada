"""What the host says when the guest's collect fails: from the recorded 64-vCPU crash
(tests/data/runs/tcg64-baseline-collapse-4G-traced-crash, where trace_marker's EBADF
killed the run and the host printed only "error: OSError: [Errno 9] ...")."""

from __future__ import annotations

import shutil
from pathlib import Path

from tlbprobe.vm.collect import guest_failure

CRASH = Path(__file__).parent / "data" / "runs" / "tcg64-baseline-collapse-4G-traced-crash"


def test_a_failed_guest_collect_says_what_where_and_which_files(tmp_path):
    run = tmp_path / "crash"
    shutil.copytree(CRASH, run)
    text = guest_failure(run, 1)
    first, second = text.splitlines()
    assert first.startswith("collect failed in the guest (failed, exit status 1): OSError: [Errno 9]")
    assert f"run directory {run} (kept, 0/1 repeats, marked incomplete)" in second
    assert str(run / "guest" / "console.log") in second


def test_without_an_error_in_the_summary_the_guests_own_line_is_used(tmp_path):
    run = tmp_path / "crash"
    shutil.copytree(CRASH, run)
    summary = (run / "summary.json").read_text().replace('"error": "OSError: [Errno 9] Bad file descriptor"',
                                                         '"error": null')
    (run / "summary.json").write_text(summary)
    with open(run / "guest" / "console.log", "a") as f:
        f.write("tlbprobe: collect failed in phase r0-workload: OSError: [Errno 9] Bad file descriptor\n")
    assert "failed in phase r0-workload" in guest_failure(run, 70)


def test_a_guests_run_directory_comes_back_without_its_symlinks(tmp_path):
    """The guest writes the share: root on the host copies regular files only."""
    import os

    from tlbprobe.vm.collect import copy_back

    src = tmp_path / "share" / "run-0"
    (src / "snapshots").mkdir(parents=True)
    (src / "summary.json").write_text("{}")
    (src / "snapshots" / "r0-idle-before.interrupts").write_text("CPU0\n")
    (src / "log.txt").symlink_to("/etc/shadow")
    (src / "latency").symlink_to("/root")
    os.mkfifo(src / "fifo")
    out = tmp_path / "runs" / "back"
    notes = copy_back(src, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "snapshots", "snapshots/r0-idle-before.interrupts", "summary.json"]
    assert len(notes) == 3 and all("skipped" in n for n in notes)
    big = tmp_path / "share" / "run-1"
    big.mkdir()
    (big / "huge.csv").write_bytes(b"x" * 2048)
    assert "over 0 MiB" in copy_back(big, tmp_path / "runs" / "big", limit=1024)[0]


def test_a_guest_collect_killed_by_the_oom_killer_says_so():
    """Recorded: the first hugetlb-db --race in a 4 GiB debug guest, whose pattern check
    built gigabyte index arrays; the console's last tlbprobe line was the previous job's."""
    run = Path(__file__).parent / "data" / "runs" / "tcg-debug-baseline-hugetlb-db-race-oom"
    text = guest_failure(run, 137)
    assert "OOM killer" in text and "--memory" in text and "complete" not in text.splitlines()[0]
