"""A workload is one folder, and a package of its own can add one (tlbprobe/workloads/).

- every workload's name (and its old spellings) is written only inside its own folder;
- the report never imports a driver (a report runs on any machine, without root);
- `tlbprobe model` answers, or refuses in one line, for every workload collect lists;
- a workload from another distribution (tests/data/plugin_example, installed into a
  temporary directory) shows in `collect --help`, `model` and `report`, and a real
  `collect` of it (root); one that raises on import is one line naming it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from tlbprobe.cli import main as cli_main
from tlbprobe.workloads import all_specs

from runfactory import make_run

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tlbprobe"
PLUGIN = Path(__file__).parent / "data" / "plugin_example"
PLUGIN_NAME = "mprotect-flip"

#: Constants of tlbprobe/vocab.py that equal a workload's name by nature, not by reference
#: to the workload: the idle control window is a phase of every run (the idle workload is
#: the one without any other), and khugepaged is the kernel thread and its sysfs directory
#: (which the khugepaged workload drives, and host.py reads for every run).
VOCAB_WORDS = {"IDLE_PHASE", "KHUGEPAGED"}


def folder_of(spec) -> Path:
    """A built-in workload's folder: where its driver module lives."""
    module = spec.driver.partition(":")[0]
    return REPO.joinpath(*module.split(".")[:-1])


# -- a workload is one folder -----------------------------------------------------------------

def test_a_workload_name_is_written_only_in_its_own_folder():
    where: Dict[str, Path] = {n: folder_of(s) for s in all_specs() for n in (s.name,) + s.aliases}
    found: List[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        allowed = set()
        if path.name == "vocab.py" and path.parent == PACKAGE:
            allowed = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                       and any(isinstance(t, ast.Name) and t.id in VOCAB_WORDS for t in n.targets)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in where \
                    and id(node) not in allowed and where[node.value] not in path.parents:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "workload names outside their folders:\n" + "\n".join(found)
    assert len(where) >= 9  # six workloads, three old spellings of hugetlb-unshare


def test_every_built_in_workload_is_a_folder_with_a_pure_spec_and_a_driver():
    for s in all_specs():
        d = folder_of(s)
        assert (d / "spec.py").is_file() and (d / "driver.py").is_file(), d
        assert s.driver.startswith(f"tlbprobe.workloads.{d.name}.driver:"), s.driver
    assert (PACKAGE / "workloads" / "gup_fast" / "gupbench.c").is_file()


def test_the_registry_api():
    from tlbprobe.errors import InputError
    from tlbprobe.workloads import all_options, default_name, names, spec

    assert names()[:6] == ["collapse", "hugetlb-unshare", "idle", "khugepaged", "hugetlb-db", "gup-fast"]
    assert default_name() == "collapse"
    assert spec("hugetlb") is spec("unshare") is spec("hugetlb-unshare")  # old spellings
    with pytest.raises(InputError, match=r"unknown workload 'swap': choose one of collapse, hugetlb-unshare, idle"):
        spec("swap")
    assert all_options()["sharers"] == ["hugetlb-unshare", "hugetlb-db"]
    code = ("import sys\nfrom tlbprobe.workloads import driver, names\nnames()\n"
            "assert 'tlbprobe.workloads.collapse.driver' not in sys.modules\n"
            "assert driver('collapse').__module__ == 'tlbprobe.workloads.collapse.driver'")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_the_report_imports_no_driver_and_no_kernel_reader():
    """In a fresh interpreter: the report of a recorded collapse and a hugetlb run in every
    format, and `tlbprobe model`'s parser, and nothing that runs as root is imported."""
    code = textwrap.dedent("""
        import sys
        from tlbprobe.report import build_report, render_json, render_lkml, render_markdown, render_text
        for runs in (["analysis/runs/host-collapse-256M"], ["analysis/runs/tcg-baseline-hugetlb-unshare-1G",
                                                             "analysis/runs/tcg-patched-hugetlb-unshare-1G"]):
            r = build_report(runs)
            for m in (render_json, render_lkml, render_markdown, render_text):
                m.render(r)
        import argparse
        from tlbprobe.commands import model
        model.register(argparse.ArgumentParser().add_subparsers())
        print("\\n".join(sorted(sys.modules)))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    loaded = res.stdout.split()
    bad = [m for m in loaded if re.match(r"tlbprobe\.(workloads\..*\.driver|measure\b|cbuild|run\b)", m)
           or m in ("tlbprobe.workloads.libc", "tlbprobe.workloads.race", "tlbprobe.workloads.sharers",
                    "tlbprobe.workloads.segment")]
    assert not bad, bad
    assert "tlbprobe.workloads.collapse.spec" in loaded  # it did ask the specs


def test_the_model_command_builds_its_parser_without_the_engine():
    code = ("import argparse, sys\nfrom tlbprobe.commands import model\n"
            "model.register(argparse.ArgumentParser().add_subparsers())\n"
            "print([m for m in sys.modules if m.startswith('tlbprobe.model') or m == 'pandas'])")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


# -- `tlbprobe model` for every workload ----------------------------------------------------------

def collect_help_workloads(env=None) -> List[str]:
    """The --workload choices `tlbprobe collect --help` lists."""
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--help"], cwd=REPO, capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr
    m = re.search(r"--workload \{([^}]*)\}", res.stdout)
    assert m, res.stdout[:500]
    return m.group(1).split(",")


LISTED = collect_help_workloads()


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("how", [["--size", "1G"], ["--ops", "3"], []], ids=["size", "ops", "neither"])
@pytest.mark.parametrize("workload", LISTED)
def test_model_answers_or_refuses_in_one_line_for_every_workload(capsys, workload, how, fmt):
    """`tlbprobe model --workload gup-fast --cpus 4 --size 1G` ended in a KeyError (exit 70)."""
    rc = cli_main(["model", "--workload", workload, "--cpus", "4", "--format", fmt] + how)
    out, err = capsys.readouterr()
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err and "internal error" not in err
    if rc == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("tlbprobe: "), err
    elif fmt == "json":
        assert json.loads(out)["scenario"]["workload"] == workload
    else:
        assert out.startswith("Workload:  ") and "Rules:" in out


def test_model_crashes_that_were_are_answers_now(capsys):
    assert cli_main(["model", "--workload", "gup-fast", "--cpus", "4", "--size", "1G"]) == 0
    assert "GUP-fast" in capsys.readouterr().out
    assert cli_main(["model", "--workload", "collapse", "--cpus", "4"]) == 2
    assert capsys.readouterr().err == "tlbprobe: collapse needs --size or --ops\n"


# -- a workload from another package ----------------------------------------------------------------

def install(src: Path, target: Path) -> None:
    """What `pip install --no-deps --target TARGET SRC` leaves of a pure-Python
    distribution (its wheel, unpacked): the package, and a dist-info with the metadata and
    entry points its pyproject.toml declares. Done by hand, so the test needs neither a
    network nor the `wheel` package."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    for package in (p for p in src.iterdir() if (p / "__init__.py").is_file()):
        shutil.copytree(package, target / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    info = target / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in project.get("entry-points", {}).items()))
    (info / "top_level.txt").write_text("")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Dict[str, str]:
    """The example plug-in installed into a directory of its own: the environment to run
    tlbprobe with it."""
    target = tmp_path_factory.mktemp("site")
    install(PLUGIN, target)
    return {**os.environ, "PYTHONPATH": str(target)}


def tlbprobe(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlbprobe", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)


def test_the_plugins_name_is_nowhere_in_tlbprobe():
    for path in PACKAGE.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".c", ".md", ".yaml", ".toml"):
            text = path.read_text()
            assert PLUGIN_NAME not in text and "mprotect_flip" not in text, path


def test_a_plugin_workload_shows_in_collect_help_and_its_options_too(plugin):
    assert collect_help_workloads(plugin)[-1] == PLUGIN_NAME  # after the built-ins
    res = tlbprobe(plugin, "collect", "--help")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert f"{PLUGIN_NAME} workload:" in res.stdout and "--passes N" in res.stdout


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("size", [["--size", "1G"], []], ids=["size", "no-size"])
def test_a_plugin_workload_is_modelled_with_the_rule_it_brings(plugin, fmt, size):
    res = tlbprobe(plugin, "model", "--workload", PLUGIN_NAME, "--cpus", "4", "--format", fmt, *size)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    ops = 512 if size else 32  # 2 MiB ranges of 1G, or of the driver's default 64M
    if fmt == "json":
        data = json.loads(res.stdout)
        assert data["scenario"]["ops"] == ops and data["sync_broadcasts_expected"] == 0
        assert data["rules"]["mprotect-flip-none"]["file"] == "mm/mprotect.c"
    else:
        assert res.stdout.startswith(f"Workload:  {PLUGIN_NAME}: {ops} flips")
        assert "[mprotect-flip-none] change_protection() (mm/mprotect.c)" in res.stdout


def test_a_run_of_a_plugin_workload_is_reported(plugin, tmp_path):
    run = make_run(tmp_path, "flip", workload=PLUGIN_NAME, ops=32, sync_per_op=0.0, size=64 << 20,
                   queue_traced=True, extra_job={"passes": 1})
    res = tlbprobe(plugin, "report", str(run))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "mprotect read-only and back of 64M, 1 pass(es) on CPU 0" in res.stdout
    assert "verdict    MATCHES" in res.stdout and "rules: mprotect-flip-none, sync-fanout" in res.stdout
    data = json.loads(tlbprobe(plugin, "report", str(run), "--format", "json").stdout)
    assert data["runs"][0]["verdict"]["status"] == "matches"
    # without the plug-in, the same run is one clear line
    res = tlbprobe({k: v for k, v in plugin.items() if k != "PYTHONPATH"}, "report", str(run))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"tlbprobe: {run / 'summary.json'}: workload {PLUGIN_NAME!r} is not one the model knows"]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root and the real kernel")
def test_a_plugin_workload_is_collected_for_real_and_matches_its_model(plugin, tmp_path):
    """mprotect frees no page table: the traced count of sync calls stays at the model's 0."""
    out = tmp_path / "flip"
    res = tlbprobe(plugin, "collect", "--workload", PLUGIN_NAME, "--size", "64M", "--repeat", "1",
                   "--idle-seconds", "0.2", "--out", str(out), "-q")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workload"] == PLUGIN_NAME and summary["ops"] == 32 and summary["ops_unit"] == "flips"
    data = json.loads(tlbprobe(plugin, "report", str(out), "--format", "json").stdout)
    assert data["runs"][0]["verdict"]["status"] == "matches", data["runs"][0]["verdict"]


def test_a_plugin_that_raises_on_import_is_one_line_naming_it(plugin, tmp_path):
    pkg = tmp_path / "src" / "tlbprobe_broken_example"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "spec.py").write_text("raise RuntimeError('broken on purpose')\n")
    (pkg.parent / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "tlbprobe-broken-example"
        version = "0.1"
        [project.entry-points."tlbprobe.workloads"]
        broken-example = "tlbprobe_broken_example.spec:SPEC"
    """))
    site = tmp_path / "site"
    install(pkg.parent, site)
    env = {**plugin, "PYTHONPATH": f"{site}{os.pathsep}{plugin['PYTHONPATH']}"}
    res = tlbprobe(env, "collect", "--help")
    assert res.returncode == 0 and PLUGIN_NAME in res.stdout  # the others still work
    assert res.stderr.splitlines() == [
        "tlbprobe: warning: workload plug-in 'broken-example' (entry point broken-example = "
        "tlbprobe_broken_example.spec:SPEC of tlbprobe-broken-example 0.1) cannot be loaded: "
        "RuntimeError: broken on purpose; skipped"]
    run = make_run(tmp_path, "broken", workload="broken-example")
    res = tlbprobe(env, "report", str(run))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1] == (f"tlbprobe: {run / 'summary.json'}: workload 'broken-example' is not one "
                                           f"the model knows: workload plug-in 'broken-example' (entry point "
                                           f"broken-example = tlbprobe_broken_example.spec:SPEC of "
                                           f"tlbprobe-broken-example 0.1) cannot be loaded: RuntimeError: broken "
                                           f"on purpose")
