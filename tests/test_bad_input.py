"""Bad input to report, diff and model, as a user meets it: real files in a temporary
directory, the CLI run as a separate process. Each ends with one line on stderr and exit
2 (no traceback), within seconds and in bounded memory (tlbprobe/files.py); damage that
leaves a run readable is a warning in the report (tlbprobe/rundir/integrity.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "analysis" / "runs" / "host-collapse-256M"
SNAP = RUN / "snapshots"

#: a child that runs the CLI and prints its own child's peak RSS (KiB on Linux): the
#: measure is of that one process, not of every child this test session had
_MEASURE = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)\n"
    "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stdout)\n"
    "sys.exit(p.returncode)\n"
)


def run_cli(args: List[str], timeout: float = 60) -> Tuple[subprocess.CompletedProcess, float, int]:
    """`python -m tlbprobe ARGS` in its own process: (result, seconds, peak RSS in KiB)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "tlbprobe", *args],
                          capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=timeout)
    seconds = time.monotonic() - t0
    *out, rss = proc.stdout.splitlines() or ["0"]
    proc.stdout = "\n".join(out)
    return proc, seconds, int(rss)


def one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlbprobe"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(RUN, d)
    return d


# -- bounded reading ----------------------------------------------------------------------

def _dev_zero(p: Path) -> None:
    p.unlink()
    p.symlink_to("/dev/zero")


def _fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)


def _sparse_300m(p: Path) -> None:
    with open(p, "wb") as f:
        f.truncate(300 << 20)


@pytest.mark.parametrize("make, said", [(_dev_zero, "character device"), (_fifo, "FIFO"),
                                        (_sparse_300m, "300 MiB, larger than any summary.json")])
def test_summary_json_that_is_no_file_or_too_large(run_dir, make, said):
    """/dev/zero once grew the report to 24 GB; a FIFO would block it for ever; a 300 MB
    file loaded silently. Each: one line, exit 2, within 5 s, under 200 MB."""
    make(run_dir / "summary.json")
    proc, seconds, rss_kib = run_cli(["report", str(run_dir)], timeout=30)
    line = one_line_exit_2(proc)
    assert said in line and "summary.json" in line
    assert seconds < 5, seconds
    assert rss_kib < 200 * 1024, rss_kib


@pytest.mark.parametrize("name", ["run.yaml", "phases.csv", "timeseries.csv"])
def test_other_run_files_refused_unread(run_dir, name):
    p = run_dir / name
    if p.exists():
        p.unlink()
    os.mkfifo(p)
    proc, seconds, _ = run_cli(["report", str(run_dir)], timeout=30)
    assert name in one_line_exit_2(proc) and seconds < 5


def test_model_params_and_cost_from_and_job_file_refused(tmp_path, run_dir):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in (["model", "--workload", "collapse", "--size", "1G", "--cpus", "4", "--params", str(fifo)],
                 ["model", "--cost-from", "/dev/zero", "--cpus", "4"]):
        proc, seconds, _ = run_cli(args, timeout=30)
        one_line_exit_2(proc)
        assert seconds < 5
    _dev_zero(run_dir / "summary.json")
    proc, _, _ = run_cli(["model", "--cost-from", str(run_dir), "--cpus", "4"])
    assert "character device" in one_line_exit_2(proc)
    proc, _, _ = run_cli(["report", str(RUN), "--params", "/dev/zero"])
    assert "character device" in one_line_exit_2(proc)


def test_latency_json_that_is_a_fifo_is_refused(tmp_path):
    src = ROOT / "analysis" / "runs" / "host-collapse-256M-latency"
    d = tmp_path / "run"
    shutil.copytree(src, d)
    json_files = sorted((d / "latency").glob("*.json"))
    if not json_files:
        pytest.skip("the recorded latency run has no cyclictest JSON")
    _fifo(json_files[0])
    proc, seconds, _ = run_cli(["report", str(d)], timeout=30)
    assert seconds < 5
    assert proc.returncode in (0, 2) and "FIFO" in proc.stdout + proc.stderr


# -- diff -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make, said", [(_dev_zero, "character device"), (_fifo, "FIFO"),
                                        (_sparse_300m, "larger than any")])
def test_diff_before_that_is_no_file(tmp_path, make, said):
    before = tmp_path / "before"
    before.write_text("x")
    make(before)
    proc, seconds, rss_kib = run_cli(["diff", str(before), str(SNAP / "r0-idle-after.interrupts")], timeout=30)
    assert said in one_line_exit_2(proc)
    assert seconds < 5 and rss_kib < 200 * 1024


def test_diff_stdin_is_read_no_further_than_its_cap():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open("/dev/zero") as zero:
        proc = subprocess.run([sys.executable, "-m", "tlbprobe", "diff", "-", str(SNAP / "r0-idle-after.interrupts")],
                              stdin=zero, capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=30)
    assert "more than 16 MiB" in one_line_exit_2(proc)


def _copy_lines(src: Path, dst: Path, keep) -> Path:
    lines = src.read_text().splitlines(keepends=True)
    dst.write_text("".join(line for i, line in enumerate(lines) if keep(i, line)))
    return dst


@pytest.mark.parametrize("case, said", [
    ("cut-mid-line", "cut short"),
    ("cut-at-line", "ends after line"),
    ("no-cal", "no CAL line"),
    ("header-only", "no interrupt lines after the header"),
])
def test_diff_refuses_an_incomplete_copy(tmp_path, case, said):
    """A truncated BEFORE used to exit 0 with CAL and TLB dropped."""
    src = SNAP / "r0-idle-before.interrupts"
    before = tmp_path / "before"
    if case == "cut-mid-line":
        text = src.read_text()
        before.write_text(text[: text.index("CAL:") + 12])
    elif case == "cut-at-line":
        _copy_lines(src, before, lambda i, line: i < 20)
    elif case == "no-cal":
        _copy_lines(src, before, lambda i, line: not line.lstrip().startswith("CAL:"))
    else:
        _copy_lines(src, before, lambda i, line: i == 0)
    proc, _, _ = run_cli(["diff", str(before), str(SNAP / "r0-idle-after.interrupts")])
    line = one_line_exit_2(proc)
    assert said in line


def test_diff_of_complete_copies_still_works():
    proc, _, _ = run_cli(["diff", str(SNAP / "r0-idle-before.interrupts"), str(SNAP / "r0-idle-after.interrupts")])
    assert proc.returncode == 0 and "CAL" in proc.stdout


# -- damage passes for fact no more ---------------------------------------------------------

def _report(run_dir: Path, fmt: str = "text") -> str:
    proc, _, _ = run_cli(["report", str(run_dir), "--format", fmt])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("damage, said", [
    ("no-host", "run.yaml has no host: section"),
    ("truncated-run-yaml", "run.yaml has no finished:"),
    ("no-interrupts", "interrupts.csv is missing"),
    ("garbage-vmstat", "vmstat.csv is damaged"),
    ("binary-attribution", "attribution.csv"),
    ("no-snapshots", "snapshots/ is missing"),
    ("snapshot-gone", "snapshots/: 1 of 24 copies missing (r0-idle-before.interrupts)"),
    ("snapshot-garbage", "snapshots/r1-workload-after.vmstat: not a copy of /proc/vmstat"),
    ("header-no-rows", "interrupts.csv has a header and no rows"),
])
@pytest.mark.parametrize("fmt", ["text", "lkml", "markdown", "html", "json"])
def test_damage_is_a_warning_in_every_format(run_dir, damage, said, fmt):
    if damage == "no-host":
        y = (run_dir / "run.yaml").read_text()
        start, end = y.index("\nhost:"), y.index("\nfinished:")
        (run_dir / "run.yaml").write_text(y[:start] + y[end:])
    elif damage == "truncated-run-yaml":
        y = (run_dir / "run.yaml").read_text()
        (run_dir / "run.yaml").write_text(y[: y.index("\nhost:") + 1])
    elif damage == "no-interrupts":
        (run_dir / "interrupts.csv").unlink()
    elif damage == "garbage-vmstat":
        (run_dir / "vmstat.csv").write_text("this is not,a vmstat\n1,2\n")
    elif damage == "binary-attribution":
        (run_dir / "attribution.csv").write_bytes(b"\xff\xfe\x00\x01" * 100)
    elif damage == "no-snapshots":
        shutil.rmtree(run_dir / "snapshots")
    elif damage == "snapshot-gone":
        (run_dir / "snapshots" / "r0-idle-before.interrupts").unlink()
    elif damage == "snapshot-garbage":
        (run_dir / "snapshots" / "r1-workload-after.vmstat").write_text("garbage here\n")
    elif damage == "header-no-rows":
        (run_dir / "interrupts.csv").write_text("repeat,phase,label,canonical,description,cpu,delta\n")
    out = _report(run_dir, fmt)
    flat = "".join(out.split())  # lkml wraps at 72 columns, also after a hyphen
    assert "".join(said.split()) in flat, out


def test_recorded_runs_have_no_damage_warnings():
    from tlbprobe.rundir.reader import load_run

    for d in sorted((ROOT / "analysis").glob("*/*/")):
        if (d / "summary.json").exists():
            assert load_run(d).warnings == [], d


def test_report_skips_paths_that_are_not_runs(tmp_path):
    """`tlbprobe report analysis/runs/*` meets analysis/runs/README.md."""
    (tmp_path / "notes").mkdir()
    proc, _, _ = run_cli(["report", str(RUN), str(ROOT / "analysis" / "runs" / "README.md"), str(tmp_path / "notes"),
                          "--format", "lkml"])
    assert proc.returncode == 0, proc.stderr
    notes = proc.stderr.splitlines()
    assert len(notes) == 2 and all("not a run: skipped" in n for n in notes), notes
    proc, _, _ = run_cli(["report", str(ROOT / "analysis" / "runs" / "README.md"), str(tmp_path / "notes")])
    assert "none of the 2 paths is a run directory" in one_line_exit_2(proc)


# -- model refuses what no kernel can be ------------------------------------------------------

@pytest.mark.parametrize("args, said", [
    (["--workload", "collapse", "--size", "1G", "--cpus", "100000"], "no x86_64 kernel runs more than 8192"),
    (["--workload", "collapse", "--size", "99999999999999999999999G", "--cpus", "4"], "larger than any process can map"),
    (["--workload", "collapse", "--size", "1", "--cpus", "4"], "less than one 2M collapse"),
    (["--workload", "collapse", "--size", "3M", "--cpus", "4"], "not a whole number of 2M collapses"),
    (["--workload", "khugepaged", "--size", "3M", "--cpus", "4"], "not a whole number of 2M ranges"),
    (["--workload", "hugetlb-unshare", "--size", "1536M", "--cpus", "4"], "not a whole number of 1G shared PMD"),
    (["--workload", "collapse", "--size", "0.5", "--cpus", "4"], "not a whole number of bytes"),
    (["--workload", "collapse", "--ops", "0", "--cpus", "4"], "--ops 0: no collapses to predict"),
    (["--workload", "collapse", "--size", "1G", "--threads", "10", "--cpus", "4"], "--threads 10 needs 11 CPUs"),
    (["--workload", "khugepaged", "--size", "1G", "--cpus", "4", "--pages-to-scan", "0"],
     "--pages-to-scan 0 is out of range"),
    (["--workload", "collapse", "--size", "1G", "--cpus", "4", "--cpu", "4"], "unrecognized arguments: --cpu 4"),
])
def test_model_refuses_in_one_line(args, said):
    proc, _, _ = run_cli(["model", *args])
    assert said in one_line_exit_2(proc).replace("tlbprobe model: error: ", "")
    assert proc.stdout == ""


def test_model_still_answers_what_a_kernel_can_be():
    proc, _, _ = run_cli(["model", "--workload", "collapse", "--size", "1G", "--cpus", "8192", "--threads", "3"])
    assert proc.returncode == 0 and "512 collapses" in proc.stdout


@pytest.mark.parametrize("name", ["interrupts.csv", "snapshots/r0-workload-after.interrupts"])
def test_a_raw_record_that_is_a_fifo_is_a_warning_never_opened(run_dir, name):
    _fifo(run_dir / name)
    proc, seconds, _ = run_cli(["report", str(run_dir)], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert seconds < 5
    assert "a FIFO, not a regular file" in proc.stdout
