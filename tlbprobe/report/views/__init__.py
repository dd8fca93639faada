"""The views: one per observer, each saying what its section of summary.json shows in a
report and in collect's end-of-run summary (views/base.py View). The renderers, the A/B's
per-repeat figures and its FIGURES rows, the JSON report and report/summary_text.py loop
over VIEWS through the functions here; none of them knows an observer by name.

Pure: a view reads the typed sections (tlbprobe/rundir/sections.py) and imports nothing
that measures, nor pandas, so collect may print its summary through them on a guest
with a small root, and the report runs anywhere.

Adding an observer's view: a module here with a View subclass; VIEWS finds it, in the
order of the observers' sections (rundir/sections.py SECTIONS).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence, Tuple

from ...rundir.sections import SECTIONS
from .base import Analysed, Figure, Table, View

if TYPE_CHECKING:
    from ...rundir.reader import Run


def _discover() -> Tuple[View, ...]:
    """One instance of every View subclass defined in this package's modules, in the order
    of their observers' sections (rundir/sections.py SECTIONS): found, not listed."""
    found: List[View] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, View) and obj is not View and obj.__module__ == module.__name__:
                found.append(obj())
    order = {section: i for i, section in enumerate(SECTIONS)}
    return tuple(sorted(found, key=lambda v: order.get(v.section, len(order))))


VIEWS: Tuple[View, ...] = _discover()

#: The views' rows of the A/B comparison table, in the views' order (report/compare.py FIGURES).
FIGURES: Tuple[Figure, ...] = tuple(f for v in VIEWS for f in v.figures)


def per_repeat(run: "Run") -> Dict[str, List[float]]:
    """Every view's per-repeat figures (the keys of FIGURES)."""
    out: Dict[str, List[float]] = {}
    for v in VIEWS:
        out.update(v.per_repeat(run))
    return out


def run_lines(a: "Analysed") -> List[Tuple[str, str]]:
    """(label, line) of every view's lines for a run, without the notes."""
    return [(v.label, line) for v in VIEWS for line in v.lines(a)]


def notes(runs: Sequence["Analysed"]) -> List[str]:
    """What the figures shown cannot see: each note once, of the views that showed lines."""
    out: List[str] = []
    for v in VIEWS:
        if v.note and v.note not in out and any(v.lines(a) for a in runs):
            out.append(v.note)
    return out


def fact_lines(a: "Analysed") -> List[Tuple[str, str]]:
    """(row name, text) among a run's facts (text, Markdown, HTML reports): a view's label
    on the first of its lines (and not again for the next view of the same label), then
    the notes."""
    out: List[Tuple[str, str]] = []
    last = None
    for label, line in run_lines(a):
        out.append((label if label != last else "", line))
        last = label
    return out + [("", n) for n in notes([a])] if out else out


def fields(runs: Sequence["Analysed"]) -> List[Tuple[str, List[str]]]:
    """(label, lines) over several runs, for the LKML report's fields: each run's lines
    (prefixed with its label when there are several runs), then the notes once."""
    by_label: Dict[str, List[str]] = {}
    for a in runs:
        for label, line in run_lines(a):
            by_label.setdefault(label, []).append(f"{a.label}: {line}" if len(runs) > 1 else line)
    out = list(by_label.items())
    if out:
        out[-1][1].extend(notes(runs))
    return out


def tables(a: "Analysed") -> List[Table]:
    return [t for v in VIEWS if (t := v.table(a)) is not None]


def ab_tables(a: "Analysed", b: "Analysed") -> List[Table]:
    """The views' tables of an A/B comparison (A the baseline)."""
    return [t for v in VIEWS if (t := v.ab_table(a, b)) is not None]


def json_parts(a: "Analysed", slot: str) -> Dict[str, Any]:
    """The views' keys of a run's JSON object that go in ``slot`` ("figures", "detail")."""
    out: Dict[str, Any] = {}
    for v in VIEWS:
        if v.json_slot == slot:
            out.update(v.json(a))
    return out


def summary_lines(summary: Mapping[str, Any]) -> List[str]:
    """The views' lines of collect's end-of-run summary: each view's block after a blank
    line (views of one label share it), then the notes."""
    out: List[str] = []
    said: List[str] = []
    last = None
    for v in VIEWS:
        block = v.summary_lines(summary)
        if not block:
            continue
        if not v.label or v.label != last:
            out.append("")
        out.extend(block)
        last = v.label
        if v.note and v.note not in said:
            said.append(v.note)
    return out + said


__all__ = ["FIGURES", "VIEWS", "Figure", "Table", "View", "ab_tables", "fact_lines", "fields", "json_parts", "notes",
           "per_repeat", "run_lines", "summary_lines", "tables"]
