"""Every figure the READMEs quote, recomputed from the recorded run that backs it.

A number in README.md, benchmarks/README.md or kernels/README.md that a reader may quote
carries a marker naming where it comes from. The marker grammar:

    <!-- fig: EXPR -->
        right after the figure, on the same line (an HTML comment: invisible when the
        Markdown is rendered, so "207<!-- fig: ... --> s" reads "207 s"). The figure is
        the last number written before the marker on that line; when EXPR gives a list of
        n values, the figure is the last n numbers, in order ("64, 64, 16").

    <!-- fig-block: FILE -->
        on the line before a fenced block (where a comment would show): the block is a
        benchmark's printed output, and every line of it must appear, in order and
        unchanged but for trailing blanks, in FILE: a recorded copy of that output
        (benchmarks/output/*.txt, or a file of a recorded run).

    <!-- fig-printed: benchmarks/SCRIPT.py YYYY-MM-DD -->
        after a figure (or a table's caption) that the named benchmark printed on that
        date, of which no copy was kept: it cannot be recomputed, and says so. The test
        checks that the script exists and that the date is a date; rerunning the script
        is the only check. Use it only for timings a loaded machine cannot repeat.

EXPR is arithmetic (numbers, + - * /, parentheses, and sum() min() max() len()) over
references, each FILE:SELECTOR with FILE relative to the repository's top:

    RUN/summary.json:repeats[*].lost_writes   a JSON or YAML file (.json, .yaml): a dotted
                                              path; [N] indexes a list, [*] takes every
                                              element (the value is then a list); keys
                                              that are not identifiers go in brackets
                                              with quotes: ['6.12']
    RUN/attribution.csv:count[phase=workload&function=flush_tlb_func]
                                              a CSV file: that column's values (a list)
                                              in the rows whose columns equal the given
                                              values (all rows without [...])
    RUN/report:"verdict {} matches"           the text `tlbprobe report RUN` prints: the
                                              number standing for {} in the first line
                                              that matches the pattern (a .txt file
                                              likewise: a recorded benchmark output)

The doc's figure is compared at the precision it is written with: "1,182" with the value
rounded to an integer, "1.0032" rounded to 4 decimals; thousands separators are
ignored. A mismatch fails with file:line, the marker, the doc's figure and the
recomputed one.
"""

from __future__ import annotations

import ast
import csv
import json
import operator
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, List, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "benchmarks/README.md", "kernels/README.md", "doc/audit.md")

MARKER = re.compile(r"<!--\s*fig:\s*(?P<expr>.*?)\s*-->")
PRINTED = re.compile(r"<!--\s*fig-printed:\s*(?P<script>\S+)\s+(?P<date>\S+)\s*-->")
BLOCK = re.compile(r"<!--\s*fig-block:\s*(?P<file>\S+)\s*-->")
REF = re.compile(r'(?P<file>[A-Za-z0-9_][A-Za-z0-9_./+-]*):(?P<sel>"[^"]*"|[A-Za-z0-9_.*\[\]=&\'/-]+)')
# A figure as docs write it: 1,182 or 0.8 or -634; a '-' is a sign only after a blank,
# an opening bracket or the start, so "0.8-1.9" is two figures and "x-3" none.
NUMBER = re.compile(r"(?:(?<=[\s(\[])-|^-)?(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|"
                    r"(?:(?<=[\s(\[])-|^-)?(?<![\w.,])\d+(?:\.\d+)?(?![\w])")


@dataclass(frozen=True)
class Mismatch:
    where: str
    marker: str
    written: str
    computed: str

    def __str__(self) -> str:
        return f"{self.where}: {self.marker}: the doc says {self.written}, the run gives {self.computed}"


class MarkerError(Exception):
    """A marker that names nothing that exists or cannot be evaluated."""


# --- references ------------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"\[(\*|-?\d+|'[^']*')\]|\.?([A-Za-z0-9_-]+)")


def _select(data: Any, selector: str) -> Any:
    values = [data]
    spread = False
    pos = 0
    while pos < len(selector):
        m = _PATH_TOKEN.match(selector, pos)
        if not m or m.end() == pos:
            raise MarkerError(f"cannot read the path {selector!r} at {selector[pos:]!r}")
        pos = m.end()
        index, key = m.group(1), m.group(2)
        out = []
        for value in values:
            try:
                if index == "*":
                    out.extend(value.values() if isinstance(value, dict) else value)
                    spread = True
                elif index is not None and index.startswith("'"):
                    out.append(value[index[1:-1]])
                elif index is not None:
                    out.append(value[int(index)])
                elif isinstance(value, dict):
                    out.append(value[key] if key in value else value[int(key)] if key.isdigit() else value[key])
                else:
                    out.append(value[int(key)])
            except (KeyError, IndexError, TypeError, ValueError):
                raise MarkerError(f"{selector!r}: no {m.group(0)!r} here") from None
        values = out
    return values if spread else values[0]


@lru_cache(maxsize=None)
def _load(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


@lru_cache(maxsize=None)
def _csv_rows(path: Path) -> tuple:
    with path.open(newline="") as f:
        return tuple(csv.DictReader(f))


@lru_cache(maxsize=None)
def _report_text(run: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "tlbprobe", "report", str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise MarkerError(f"tlbprobe report {run} exited {done.returncode}: {done.stderr.strip()[-200:]}")
    return done.stdout


def _pattern_in(text: str, pattern: str, name: str) -> float:
    if "{}" not in pattern:
        raise MarkerError(f"the pattern {pattern!r} has no {{}}")
    before, after = (re.escape(p) for p in pattern.split("{}", 1))
    rx = re.compile(before + r"\s*(-?[\d,]+(?:\.\d+)?)" + after)
    for line in text.splitlines():
        m = rx.search(line)
        if m:
            return float(m.group(1).replace(",", ""))
    raise MarkerError(f"no line of {name} matches {pattern!r}")


def resolve(file: str, selector: str, root: Path = REPO) -> Any:
    """The value one reference names (a number or a list of numbers)."""
    path = root / file
    if selector.startswith('"'):
        pattern = selector[1:-1]
        if path.name == "report":
            if not (path.parent / "summary.json").is_file():
                raise MarkerError(f"{path.parent} is not a run directory")
            return _pattern_in(_report_text(path.parent), pattern, f"tlbprobe report {file[:-7]}")
        if not path.is_file():
            raise MarkerError(f"no file {file}")
        return _pattern_in(path.read_text(), pattern, file)
    if not path.is_file():
        raise MarkerError(f"no file {file}")
    if path.suffix == ".csv":
        m = re.fullmatch(r"([A-Za-z0-9_]+)(?:\[(.*)\])?", selector)
        if not m:
            raise MarkerError(f"{selector!r}: a CSV selector is COLUMN or COLUMN[COL=VAL&...]")
        column, where = m.group(1), m.group(2)
        conds = [c.split("=", 1) for c in where.split("&")] if where else []
        rows = _csv_rows(path)
        if rows and column not in rows[0]:
            raise MarkerError(f"{file} has no column {column!r}")
        return [float(r[column]) for r in rows if all(r.get(k) == v for k, v in conds)]
    if path.suffix in (".json", ".yaml", ".yml"):
        value = _select(_load(path), selector)
        return [_number(v) for v in value] if isinstance(value, list) else _number(value)
    raise MarkerError(f"{file}: only .json, .yaml, .csv, report and text patterns are read")


def _number(value: Any) -> Any:
    """YAML keeps sysfs values as the strings the kernel printed ('4096'): read them as numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# --- expressions -----------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCS = {"sum": sum, "min": min, "max": max, "len": len}


def _eval(node: ast.AST, refs: List[Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, refs)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name) and node.id.startswith("_ref"):
        return refs[int(node.id[4:])]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left, refs), _eval(node.right, refs))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, refs)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and len(node.args) == 1 and not node.keywords):
        return _FUNCS[node.func.id](_eval(node.args[0], refs))
    raise MarkerError(f"not allowed in a marker: {ast.dump(node)[:60]}")


def evaluate(expr: str, root: Path = REPO) -> Any:
    refs: List[Any] = []

    def sub(m: re.Match) -> str:
        refs.append(resolve(m.group("file"), m.group("sel"), root))
        return f"_ref{len(refs) - 1}"

    code = REF.sub(sub, expr)
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise MarkerError(f"cannot parse {expr!r}") from None
    return _eval(tree, refs)


# --- figures ---------------------------------------------------------------------------

def _decimals(written: str) -> int:
    return len(written.split(".", 1)[1]) if "." in written else 0


def _matches(written: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    shown = float(written.replace(",", ""))
    d = _decimals(written)
    return abs(shown - float(value)) <= 0.5 * 10 ** -d + 1e-9 * max(1.0, abs(float(value)))


def _show(value: Any, like: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.{_decimals(like)}f}" if "," in like or _decimals(like) else f"{value:.{_decimals(like)}f}"
    return repr(value)


def check_text(text: str, name: str, root: Path = REPO) -> tuple[List[Mismatch], int]:
    """The mismatches between a doc's marked figures and their runs, and how many were checked."""
    problems: List[Mismatch] = []
    checked = 0
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        where = f"{name}:{lineno}"
        for m in MARKER.finditer(line):
            marker = m.group(0)
            before = MARKER.sub("", line[: m.start()])
            before = BLOCK.sub("", before)
            try:
                value = evaluate(m.group("expr"), root)
            except MarkerError as e:
                problems.append(Mismatch(where, marker, "-", f"an error: {e}"))
                continue
            values = value if isinstance(value, list) else [value]
            numbers = NUMBER.findall(before)
            if len(numbers) < len(values):
                problems.append(Mismatch(where, marker, "no figure before the marker", _show(value, "0")))
                continue
            written = numbers[len(numbers) - len(values):]
            checked += 1
            if not all(_matches(w, v) for w, v in zip(written, values)):
                problems.append(Mismatch(where, marker, ", ".join(written),
                                         ", ".join(_show(v, w) for w, v in zip(written, values))))
        for m in PRINTED.finditer(line):
            if not (root / m.group("script")).is_file() or not re.fullmatch(r"\d{4}-\d\d-\d\d", m.group("date")):
                problems.append(Mismatch(where, m.group(0), m.group("script"), "no such benchmark, or no date"))
        for m in BLOCK.finditer(line):
            fence = lineno  # the block starts on a following line
            while fence < len(lines) and not lines[fence].startswith("```"):
                fence += 1
            end = fence + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            block = [l.rstrip() for l in lines[fence + 1:end]]
            source = root / m.group("file")
            if not block or not source.is_file():
                problems.append(Mismatch(where, m.group(0), f"{len(block)} block line(s)",
                                         f"no recorded output {m.group('file')}" if not source.is_file()
                                         else "no fenced block after the marker"))
                continue
            recorded = [l.rstrip() for l in source.read_text().splitlines()]
            pos = 0
            checked += 1
            for offset, want in enumerate(block):
                while pos < len(recorded) and recorded[pos] != want:
                    pos += 1
                if pos == len(recorded):
                    problems.append(Mismatch(f"{name}:{fence + 2 + offset}", m.group(0), want,
                                             f"no such line (in order) in {m.group('file')}"))
                    break
                pos += 1
    return problems, checked


# --- the tests -------------------------------------------------------------------------

@pytest.mark.parametrize("doc", DOCS)
def test_every_marked_figure_matches_its_run(doc):
    problems, checked = check_text((REPO / doc).read_text(), doc)
    assert not problems, "\n".join(map(str, problems))
    assert checked > 0, f"{doc} has no marked figure"


def test_a_changed_figure_fails_with_its_place_and_both_numbers(tmp_path):
    doc = (REPO / "README.md").read_text()
    m = re.search(r"(\d[\d,]*)(<!--\s*fig:[^>]*-->)", doc)
    assert m, "README.md has no marked figure to alter"
    written = m.group(1)
    altered = doc[: m.start(1)] + str(int(written.replace(",", "")) + 7) + doc[m.end(1):]
    copy = tmp_path / "README.md"
    copy.write_text(altered)
    problems, _ = check_text(copy.read_text(), "copy/README.md")
    assert len(problems) == 1, problems
    lineno = doc[: m.start()].count("\n") + 1
    text = str(problems[0])
    assert text.startswith(f"copy/README.md:{lineno}: {m.group(2)}")
    assert str(int(written.replace(",", "")) + 7) in text and written.replace(",", "") in text.replace(",", "")


def test_a_marker_naming_nothing_fails(tmp_path):
    problems, _ = check_text("lost 3<!-- fig: analysis/runs/nope/summary.json:ops -->\n", "x.md")
    assert problems and "no file analysis/runs/nope/summary.json" in str(problems[0])
    problems, _ = check_text("ops 6,144<!-- fig: analysis/runs/tcg64-baseline-collapse-12G-traced/"
                             "summary.json:no.such -->\n", "x.md")
    assert problems and "no 'no'" in str(problems[0])


def test_the_grammar_reads_lists_csv_rounding_and_blocks(tmp_path):
    run = "analysis/fault-injection/tcg-debug-broken-collapse-race"
    lost = f"{run}/summary.json:repeats[*].phases.workload.workload_figures.lost_writes"
    ok = (f"lost 64, 64 and 16<!-- fig: {lost} --> writes, 144<!-- fig: sum({lost}) --> in all\n"
          f"1.0032<!-- fig: analysis/runs/tcg64-baseline-collapse-12G-traced/summary.json:cal_other_cpus"
          f" / (analysis/runs/tcg64-baseline-collapse-12G-traced/summary.json:ops * 63) -->\n")
    assert check_text(ok, "ok.md") == ([], 3)
    bad, _ = check_text(f"lost 64, 64 and 61<!-- fig: {lost} -->\n", "bad.md")
    assert len(bad) == 1 and "64, 64, 61" in str(bad[0]) and "64, 64, 16" in str(bad[0])
    report = 'analysis/runs/tcg64-baseline-collapse-12G-traced/report:"ops{} of"'
    assert check_text(f"ops 6,144<!-- fig: {report} -->\n", "r.md") == ([], 1)
    out = tmp_path / "out.txt"
    out.write_text("header\n  a 1\n  b 2\nfooter\n")
    block = f"<!-- fig-block: {out.name} -->\n```\n  a 1\n  b 2\n```\n"
    assert check_text(block, "b.md", root=tmp_path) == ([], 1)
    broken, _ = check_text(block.replace("b 2", "b 3"), "b.md", root=tmp_path)
    assert len(broken) == 1 and broken[0].where == "b.md:4" and "b 3" in str(broken[0])


def test_the_readmes_cost_projection_runs_on_the_recorded_cost_run():
    # README.md: `tlbprobe model --cost-from RUN --cpus 64 --size 20G`; every older
    # recorded run answers "the run has no handler time"
    run = REPO / "analysis" / "recorded" / "host-collapse-256M-cost-victim"
    done = subprocess.run([sys.executable, "-m", "tlbprobe", "model", "--cost-from", str(run), "--cpus", "64",
                           "--size", "20G"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    per_cpu_us = summary["cost"]["us_per_broadcast_per_cpu"]
    assert f"10,240 x 63 CPUs x {per_cpu_us:.2f} us" in done.stdout
