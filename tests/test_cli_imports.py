"""What the command line imports: building the parser loads every command module, and each
imports only what its options need, so `tlbprobe collect --help` (and a guest's collect,
which starts the same way) runs on a small root without pandas, matplotlib or the report.
A command module that cannot be imported is an error, not a command left out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "matplotlib", "tlbprobe.report", "tlbprobe.rundir.reader")

PROBE = """\
import atexit, runpy, sys
atexit.register(lambda: print("MODULES", " ".join(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["tlbprobe"] + sys.argv[1:]
runpy.run_module("tlbprobe", run_name="__main__")
"""


@pytest.mark.parametrize("argv", [["collect", "--help"], ["qemu", "collect", "--help"], ["--help"]])
def test_help_imports_neither_pandas_nor_the_report(argv):
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "usage: tlbprobe" in res.stdout
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("MODULES "))
    modules = set(line.split()[1:])
    assert "tlbprobe.commands.collect" in modules
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == [], f"{' '.join(argv)} imported {loaded}"


def test_a_command_module_that_cannot_be_imported_is_an_error(monkeypatch, capsys):
    from tlbprobe import cli

    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ["no_such_command"])
    assert cli.main(["--help"]) == 70
    err = capsys.readouterr().err
    assert "the no_such_command command cannot be loaded: tlbprobe/commands/no_such_command.py" in err
