"""One name per concept (doc/cli.md), no prefix matching, choices in --help, and every
example of every --help as printed: parsed for every command, run for the read-only
ones (model, report, diff)."""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from tlbprobe.cli import build_parser, main as cli_main

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "analysis" / "runs"


def parsers() -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    """Every parser and subparser, by its prog."""
    todo = [build_parser()]
    while todo:
        p = todo.pop()
        yield p.prog, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())


def examples() -> List[Tuple[str, str]]:
    """(prog, line) of each line of a description or epilog that starts with 'tlbprobe '."""
    out = []
    for prog, p in parsers():
        for text in (p.description or "", p.epilog or ""):
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("tlbprobe ") and not line.startswith("tlbprobe's"):
                    out.append((prog, line))
    return out


def words(line: str) -> List[str]:
    """The command's words as a shell gives them: comments dropped, $(...) stands for the
    bzImage path its inner command prints (that inner command is an example too)."""
    line = re.sub(r'"\$\((tlbprobe [^)]*)\)"', "bzImage", line)
    return shlex.split(line, comments=True)[1:]


def test_no_parser_matches_prefixes():
    for prog, p in parsers():
        assert p.allow_abbrev is False, prog


def test_every_shown_option_has_help_and_shows_its_choices():
    for prog, p in parsers():
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS:
                continue
            assert a.help, f"{prog} {a.option_strings[0]} has no help"
        text = p.format_help()
        assert "CLIENT_TOUCH" not in text and "BACKING" not in text, prog


def test_choices_of_option_records_appear_in_collect_help(capsys):
    from tlbprobe.run.job import COMMON_OPTIONS
    from tlbprobe.workloads import all_specs

    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "--help"])
    text = capsys.readouterr().out
    for o in list(COMMON_OPTIONS) + [o for s in all_specs() for o in s.options]:
        if o.choices is not None and o.metavar is None:
            assert "{" + ",".join(o.choice_list()) + "}" in text, o.key


EXAMPLES = examples()


def test_examples_are_found():
    progs = {prog for prog, _ in EXAMPLES}
    for prog in ("tlbprobe", "tlbprobe collect", "tlbprobe model", "tlbprobe report", "tlbprobe repro",
                 "tlbprobe kernel build", "tlbprobe qemu collect", "tlbprobe diff"):
        assert prog in progs, prog


@pytest.mark.parametrize("prog, line", EXAMPLES, ids=[line[:60] for _, line in EXAMPLES])
def test_every_help_example_parses_as_printed(prog, line):
    argv = words(line)
    args = build_parser().parse_args(argv)
    assert getattr(args, "func", None), line
    if argv[:2] == ["qemu", "collect"]:  # what follows -- is checked as the guest would
        from tlbprobe.commands.collect import add_collect_options

        probe = argparse.ArgumentParser(allow_abbrev=False)
        add_collect_options(probe)
        rest = args.collect_args[1:] if args.collect_args[:1] == ["--"] else args.collect_args
        probe.parse_args(rest)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory where the report's and diff's examples find what they name."""
    d = tmp_path_factory.mktemp("examples")
    for name, run in (("base", "host-collapse-256M"), ("patched", "host-collapse-256M-threads"),
                      ("run1", "host-collapse-256M"), ("crashed-run", "host-collapse-256M")):
        (d / name).symlink_to(RUNS / run)
    (d / "analysis").mkdir()
    (d / "analysis" / "runs").symlink_to(RUNS)
    snaps = RUNS / "host-collapse-256M" / "snapshots"
    shutil.copy(snaps / "r0-idle-before.interrupts", d / "before")
    shutil.copy(snaps / "r0-idle-after.interrupts", d / "after")
    return d


READ_ONLY = [(prog, line) for prog, line in EXAMPLES if words(line)[:1] in (["model"], ["report"], ["diff"])]


@pytest.mark.parametrize("prog, line", READ_ONLY, ids=[line[:60] for _, line in READ_ONLY])
def test_read_only_examples_run_as_printed(workdir, prog, line):
    argv: List[str] = []
    for w in words(line):  # a shell would expand analysis/runs/*
        argv += [os.path.relpath(p, workdir) for p in sorted(glob.glob(str(workdir / w)))] if "*" in w else [w]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "tlbprobe", *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (line, proc.stderr)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, key, value", [
    (["collect", "--kernel-variant", "patched"], "kernel_variant", "patched"),
    (["collect", "--variant", "patched"], "kernel_variant", "patched"),
    (["collect", "--cpu", "3"], "cpu", 3),
    (["collect", "--driver-cpu", "3"], "cpu", 3),
    (["model", "--cpus", "4", "--kernel", "patched"], "variant", "patched"),
    (["model", "--cpus", "4", "--flush", "pv"], "flush_mode", "pv"),
    (["model", "--cpus", "4", "--flush-mode", "pv"], "flush_mode", "pv"),
    (["model", "--cpus", "4", "--op", "mprotect"], "operation", "mprotect"),
    (["model", "--cpus", "4", "--operation", "mprotect"], "operation", "mprotect"),
])
def test_old_spellings_are_hidden_aliases(argv, key, value, capsys):
    assert getattr(build_parser().parse_args(argv), key) == value
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv[:1] + ["--help"])
    text = capsys.readouterr().out
    for old in ("--kernel-variant", "--cpu ", "--kernel ", "--flush ", "--op "):
        assert old not in text, old


@pytest.mark.parametrize("argv", [["model", "--workload", "collapse", "--size", "1G", "--cpus", "4", "--cpu", "4"],
                                  ["model", "--workload", "collapse", "--size", "1G", "--cpu", "4"],
                                  ["collect", "--vari", "patched"],
                                  ["report", "x", "--form", "lkml"]])
def test_no_prefix_matching_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err


@pytest.mark.parametrize("argv, hint", [(["qemu"], "tlbprobe qemu collect --kernel BZIMAGE"),
                                        (["kernel"], "tlbprobe kernel build")])
def test_a_command_without_its_action_says_what_to_do(argv, hint, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and hint in err, err
