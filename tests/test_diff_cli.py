"""Tests of `tlbprobe diff`, run as a user would (subprocess) and in-process (cli.main)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from irqgen import arm64_interrupts, x86_interrupts
from tlbprobe import cli
from tlbprobe.ui.numbers import short_cpulist, summarize_per_cpu
from tlbprobe.ui.tables import per_cpu_cells, per_cpu_headers, render_table

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
X86_BEFORE = str(DATA / "x86-kvm-2cpu.before.interrupts")
X86_AFTER = str(DATA / "x86-kvm-2cpu.after.interrupts")
ARM_BEFORE = str(DATA / "arm64-rpi4-4cpu.before.interrupts")
ARM_AFTER = str(DATA / "arm64-rpi4-4cpu.after.interrupts")


def run_cli(args: Sequence[str], stdin: str = "") -> subprocess.CompletedProcess:
    """`python -m tlbprobe ARGS` from the source tree, as a separate process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tlbprobe", *args],
        input=stdin, capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=60,
    )


def table_rows(text: str) -> Dict[str, List[str]]:
    """Rows of the text table by label, split on whitespace (up to the description)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("label"))
    return {line.split()[0]: line.split() for line in lines[start + 1:] if line.strip()}


def write_pair(tmp_path: Path, before: str, after: str):
    b, a = tmp_path / "before", tmp_path / "after"
    b.write_text(before)
    a.write_text(after)
    return str(b), str(a)


# --- as a separate process ----------------------------------------------------------------


def test_subprocess_text_on_recorded_x86_pair():
    proc = run_cli(["diff", X86_BEFORE, X86_AFTER])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[0] == "CPUs in both copies: 0-1 (2); 6 of 35 lines changed (--all shows the rest)"
    rows = table_rows(proc.stdout)
    assert set(rows) == {"36", "42", "LOC", "RES", "CAL", "TLB"}
    assert rows["CAL"][:4] == ["CAL", "7", "6", "1"]
    assert rows["CAL"][-1] == "[function_call]"
    assert rows["TLB"][:4] == ["TLB", "3", "3", "0"]
    assert rows["LOC"][:4] == ["LOC", "127", "81", "46"]
    assert proc.stdout.splitlines()[2].split() == ["label", "total", "CPU0", "CPU1", "description"]


def test_subprocess_json_on_recorded_x86_pair():
    proc = run_cli(["diff", "--format", "json", X86_BEFORE, X86_AFTER])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["CAL"] == {"total": 7, "per_cpu": {"0": 6, "1": 1}, "description": "Function call interrupts"}
    assert data["function_call"] == data["CAL"]
    assert data["tlb_shootdown"] == {"total": 3, "per_cpu": {"0": 3, "1": 0}, "description": "TLB shootdowns"}
    assert data["ERR"] == {"total": 0, "per_cpu": {}, "description": ""}
    assert data["24"]["total"] == 0  # json keeps unchanged lines
    assert len(data) == 35 + 2


def test_subprocess_missing_file_is_one_line_exit_2(tmp_path):
    proc = run_cli(["diff", str(tmp_path / "nope"), X86_AFTER])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"tlbprobe: {tmp_path / 'nope'}: no such file (a /proc/interrupts copy)"]


def test_subprocess_garbage_is_one_line_exit_2(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(64).hex().encode() + b"\n")
    proc = run_cli(["diff", str(garbage), X86_AFTER])
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"tlbprobe: {garbage}: first line is not a /proc/interrupts header")
    assert "Traceback" not in proc.stderr


def test_subprocess_reads_stdin():
    proc = run_cli(["diff", X86_BEFORE, "-", "--format", "json"], stdin=Path(X86_AFTER).read_text())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["CAL"]["per_cpu"] == {"0": 6, "1": 1}


def test_subprocess_arm64_pair_has_function_call_and_no_tlb():
    proc = run_cli(["diff", "--format", "json", ARM_BEFORE, ARM_AFTER])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["function_call"] == data["IPI1"]
    assert data["IPI1"]["per_cpu"] == {"0": 12, "1": 130, "2": 128, "3": 127}
    assert data["IPI1"]["total"] == 397
    assert "tlb_shootdown" not in data
    assert data["Err"] == {"total": 0, "per_cpu": {}, "description": ""}


def test_subprocess_help_names_the_canonical_lines():
    proc = run_cli(["diff", "--help"])
    assert proc.returncode == 0
    assert "function_call" in proc.stdout and "tlb_shootdown" in proc.stdout and "--all" in proc.stdout


# --- in-process through cli.main --------------------------------------------------------


def test_main_64_cpus_json(tmp_path, capsys):
    cpus = list(range(64))
    before, after = write_pair(
        tmp_path,
        x86_interrupts(cpus, {"CAL": lambda c: 10 * c, "TLB": lambda c: 5, "ERR": 1}),
        x86_interrupts(cpus, {"CAL": lambda c: 10 * c + 2 * c, "TLB": lambda c: 5 + (c == 63), "ERR": 4}),
    )
    assert cli.main(["diff", "--format", "json", before, after]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    data = json.loads(out)
    assert list(data["CAL"]["per_cpu"]) == [str(c) for c in cpus]
    assert data["CAL"]["per_cpu"]["63"] == 126
    assert data["CAL"]["total"] == 2 * sum(cpus)
    assert data["tlb_shootdown"]["total"] == 1
    assert data["ERR"]["total"] == 3


def test_main_256_cpus_text_is_compressed(tmp_path, capsys):
    cpus = list(range(256))
    before, after = write_pair(
        tmp_path,
        x86_interrupts(cpus, {"CAL": lambda c: 0}),
        x86_interrupts(cpus, {"CAL": lambda c: 1 if c < 200 else (9 if c in (201, 202, 203, 240) else 0)}),
    )
    assert cli.main(["diff", before, after]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("CPUs in both copies: 0-255 (256); 1 of ")
    assert "CPU17" not in out
    assert lines[2].split() == ["label", "total", "min", "median", "max", "max", "on", "CPU", "non-zero", "description"]
    # 200 CPUs saw 1, 4 saw 9, 52 saw 0: median of 256 values is 1
    assert table_rows(out)["CAL"][:7] == ["CAL", "236", "0", "1", "9", "201-203,240", "204/256"]
    assert max(len(line) for line in lines) < 120


def test_main_16_cpus_keep_columns_17_do_not(tmp_path, capsys):
    for ncpus, expect_columns in ((16, True), (17, False)):
        cpus = list(range(ncpus))
        before, after = write_pair(tmp_path, x86_interrupts(cpus), x86_interrupts(cpus, {"RES": lambda c: c}))
        assert cli.main(["diff", before, after]) == 0
        out, _ = capsys.readouterr()
        assert ("CPU15" in out) is expect_columns
        assert ("median" in out) is not expect_columns
        if expect_columns:
            assert table_rows(out)["RES"][:18] == ["RES", "120", *[str(c) for c in cpus]]


def test_main_all_shows_unchanged_lines(tmp_path, capsys):
    cpus = [0, 1]
    before, after = write_pair(tmp_path, x86_interrupts(cpus), x86_interrupts(cpus, {"CAL": {1: 4}}))
    assert cli.main(["diff", before, after]) == 0
    assert set(table_rows(capsys.readouterr().out)) == {"CAL"}
    assert cli.main(["diff", "--all", before, after]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["NMI"][:4] == ["NMI", "0", "0", "0"]
    assert rows["ERR"][:2] == ["ERR", "0"]
    assert len(rows) == 5 + 14 + 2 + 2


def test_main_nothing_changed(tmp_path, capsys):
    before, after = write_pair(tmp_path, x86_interrupts([0, 1]), x86_interrupts([0, 1]))
    assert cli.main(["diff", before, after]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "CPUs in both copies: 0-1 (2); 0 of 23 lines changed (--all shows the rest)"


def test_main_offline_cpu_warns_and_succeeds(tmp_path, capsys):
    before, after = write_pair(
        tmp_path,
        x86_interrupts([0, 1, 2, 3], {"CAL": lambda c: 100}),
        x86_interrupts([0, 2, 3], {"CAL": lambda c: 100 + c}),
    )
    assert cli.main(["diff", before, after]) == 0
    out, err = capsys.readouterr()
    assert err == "tlbprobe: warning: CPU 1 went offline between the snapshots; left out\n"
    assert out.splitlines()[2].split()[:5] == ["label", "total", "CPU0", "CPU2", "CPU3"]
    assert table_rows(out)["CAL"][:5] == ["CAL", "5", "0", "2", "3"]


def test_main_backwards_counter_warns(tmp_path, capsys):
    before, after = write_pair(
        tmp_path, x86_interrupts([0, 1], {"CAL": {0: 50, 1: 50}}), x86_interrupts([0, 1], {"CAL": {0: 20, 1: 51}})
    )
    assert cli.main(["diff", "--format", "json", before, after]) == 0
    out, err = capsys.readouterr()
    assert "tlbprobe: warning: CAL: counter went backwards on CPU 0 (CPU0: 50 -> 20)" in err
    assert json.loads(out)["CAL"]["per_cpu"] == {"0": -30, "1": 1}


def test_main_truncated_copy_is_refused(tmp_path, capsys):
    """A copy cut in the middle of a line (the CAL count cut in half) is refused: its
    deltas would drop CAL and TLB without a sign (issue 22)."""
    full = x86_interrupts([0, 1], {"CAL": {0: 123456, 1: 1}})
    before, after = write_pair(tmp_path, full, full[: full.index("123456") + 3])
    assert cli.main(["diff", before, after]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "AFTER" in err and "cut short" in err


def test_main_garbage_returns_2(tmp_path, capsys):
    before, after = write_pair(tmp_path, "CPU0 CPU1\nthis is not /proc/interrupts\n", x86_interrupts([0, 1]))
    assert cli.main(["diff", before, after]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"tlbprobe: {before}:2: not an interrupt line: 'this is not /proc/interrupts'\n"


def test_main_both_stdin_is_an_error(capsys):
    assert cli.main(["diff", "-", "-"]) == 2
    assert "only one of BEFORE and AFTER" in capsys.readouterr().err


def test_main_arm64_text(tmp_path, capsys):
    cpus = list(range(4))
    before, after = write_pair(
        tmp_path, arm64_interrupts(cpus, {"IPI1": lambda c: 5}), arm64_interrupts(cpus, {"IPI1": lambda c: 5 + c})
    )
    assert cli.main(["diff", before, after]) == 0
    out = capsys.readouterr().out
    row = table_rows(out)["IPI1"]
    assert row[:6] == ["IPI1", "6", "0", "1", "2", "3"]
    assert out.rstrip().endswith("Function call interrupts [function_call]")


def test_main_real_proc_interrupts_against_itself(capsys):
    assert cli.main(["diff", "--format", "json", "/proc/interrupts", "/proc/interrupts"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "function_call" in data
    assert all(v >= 0 for v in data["function_call"]["per_cpu"].values())


# --- ui.numbers / ui.tables helpers shared with other commands --------------------------------------------


def test_summarize_per_cpu():
    s = summarize_per_cpu({0: 5, 1: 0, 2: 9, 3: 9, 4: 1})
    assert (s.cpus, s.nonzero, s.min, s.median, s.max, s.max_cpus) == (5, 4, 0, 5.0, 9, (2, 3))
    assert summarize_per_cpu({0: 1, 1: 2}).median == 1.5
    assert summarize_per_cpu({}) is None


def test_per_cpu_cells_and_headers():
    assert per_cpu_headers([0, 2]) == ["CPU0", "CPU2"]
    assert per_cpu_cells({0: 3}, [0, 2]) == ["3", "-"]
    assert per_cpu_cells({}, [0, 2]) == ["", ""]
    many = list(range(32))
    assert per_cpu_cells({c: c % 4 for c in many}, many) == ["0", "1.5", "3", "3,7,11,15,19,+3", "24/32"]


def test_short_cpulist_and_table():
    assert short_cpulist(list(range(64))) == "0-63"
    assert short_cpulist(list(range(0, 64, 2)), limit=10) == "0,2,4,+29"
    assert render_table(["a", "n", "d"], [["x", "10", "desc"], ["yy", "2", ""]]) == "a    n  d\nx   10  desc\nyy   2"
    with pytest.raises(ValueError):
        render_table(["a"], [["x", "y"]])


def test_report_over_a_fleet_prints_one_report_per_host(tmp_path, capsys):
    """Runs from several machines (each collected by its own scheduler) in one report:
    grouped by the host name in run.yaml, one table per host."""
    import shutil

    import yaml

    from tlbprobe.cli import main

    runs = Path(__file__).resolve().parents[1] / "analysis" / "runs"
    paths = []
    for host, name in (("lab-a", "tcg-baseline-collapse-1G"), ("lab-b", "tcg-baseline-collapse-1G"),
                       ("lab-a", "tcg-patched-collapse-1G")):
        dst = tmp_path / f"{host}-{name}"
        shutil.copytree(runs / name, dst)
        data = yaml.safe_load((dst / "run.yaml").read_text())
        data["host"]["hostname"] = host
        (dst / "run.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(str(dst))
    assert main(["report", *paths, "--format", "lkml"]) == 0
    out = capsys.readouterr().out
    assert out.count("host lab-a: 2 runs") == 1 and out.count("host lab-b: 1 run\n") == 1
    assert out.index("lab-a") < out.index("lab-b")
    assert main(["report", *paths, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [h["host"] for h in data["hosts"]] == ["lab-a", "lab-b"]
    assert len(data["hosts"][0]["report"]["runs"]) == 2
