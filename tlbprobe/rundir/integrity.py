"""What a run directory says it holds, against what is there: damage becomes a warning.

The report's figures come from summary.json, so a run whose run.yaml lost its host
section, or whose raw records (interrupts.csv, vmstat.csv, attribution.csv, snapshots/)
are gone or garbage, used to report as if nothing were wrong. Those records are what a
reviewer checks the figures against (doc/run-format.md), so their loss is said, each as
one warning on the Run (``Run.warnings``), which every format prints:

- run.yaml without ``job:`` or ``host:`` (the job and where the run was measured are then
  unknown), or without ``finished:`` although summary.json says the run completed (the
  writer puts ``finished:`` last: the file was cut short);
- interrupts.csv and vmstat.csv (written after every phase) missing when summary.json has
  a phase; attribution.csv missing when a phase has attributed or queued counts;
- any of those that is not the CSV it should be: its header and first rows are read
  (tlbprobe/files.py read_head: the file need not be loaded whole) and checked;
- snapshots/r<R>-<phase>-{before,after}.{interrupts,vmstat} missing for a phase
  summary.json has, or not parseable as the procfs copy it should be.

A file that is not regular or is over its cap is a warning here too, never opened.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List, Mapping, Protocol, Sequence, Tuple

from .. import files
from ..errors import InputError
from .schema import ATTRIBUTION_COLUMNS, INTERRUPTS_COLUMNS, VMSTAT_COLUMNS



class RecordedRun(Protocol):
    """What the checks read of a loaded run (reader.py Run, which calls them while it
    loads: a protocol, so this module need not import the reader back)."""

    path: Path
    run_yaml: Mapping[str, Any]
    repeats: Sequence[Any]

    @property
    def complete(self) -> bool: ...

#: name -> (its columns, the columns that must hold numbers)
RECORDS: Dict[str, Tuple[Sequence[str], Sequence[str]]] = {
    "interrupts.csv": (INTERRUPTS_COLUMNS, ("repeat", "delta")),
    "vmstat.csv": (VMSTAT_COLUMNS, ("repeat", "before", "after", "delta")),
    "attribution.csv": (ATTRIBUTION_COLUMNS, ("repeat", "count")),
}

#: at most this many file names in one warning
_MAX_NAMED = 6


def check_run(run: RecordedRun) -> List[str]:
    """Every damage of ``run`` found, one warning each (see the module docstring)."""
    out = _run_yaml(run)
    phases = [(r.repeat, name, p) for r in run.repeats for name, p in r.phases.items()]
    if not phases:
        return out
    traced = any(p.attributed or p.queued for _, _, p in phases)
    for name, (columns, numeric) in RECORDS.items():
        if name == "attribution.csv" and not traced:
            continue
        problem = check_csv(run.path / name, columns, numeric)
        if problem == "missing":
            out.append(f"{name} is missing, though summary.json has {len(phases)} phase(s) it records: "
                       f"the figures cannot be checked against it")
        elif problem:
            out.append(problem)
    out += _snapshots(run.path / "snapshots", [(r, n) for r, n, _ in phases])
    return out


def _run_yaml(run: RecordedRun) -> List[str]:
    out = []
    y = run.run_yaml
    if not isinstance(y.get("job"), dict) or not y.get("job"):
        out.append("run.yaml has no job: section (cut short or edited?): the job that made this run is unknown")
    if not isinstance(y.get("host"), dict) or not y.get("host"):
        out.append("run.yaml has no host: section (cut short or edited?): where this run was measured is unknown")
    if run.complete and "finished" not in y:
        out.append("run.yaml has no finished: though summary.json says the run completed: run.yaml was cut "
                   "short, and what follows in it (host facts, qemu) may be missing")
    return out


def check_csv(p: Path, columns: Sequence[str], numeric: Sequence[str]) -> str:
    """'' when ``p`` starts as the CSV it should, 'missing', or one line saying what is wrong."""
    import pandas as pd

    try:
        head = files.read_head(p, p.name, files.cap("raw record"))
    except files.MissingFile:
        return "missing"
    except InputError as e:
        return f"{e}; its figures cannot be checked"
    if not head.strip():
        return f"{p.name} is empty: no header, no rows"
    try:
        df = pd.read_csv(io.StringIO(head))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return f"{p.name} is not CSV: {str(e).splitlines()[0]}"
    missing = [c for c in columns if c not in df.columns]
    if missing:
        return f"{p.name} is damaged: column(s) {', '.join(missing)} missing (header {head.splitlines()[0][:60]!r})"
    if df.empty:
        return f"{p.name} has a header and no rows"
    bad = [c for c in numeric if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        return f"{p.name} is damaged: column(s) {', '.join(bad)} hold non-numbers"
    return ""


def _snapshots(d: Path, phases: Sequence[Tuple[int, str]]) -> List[str]:
    expected = [f"r{r}-{name}-{when}.{kind}" for r, name in phases for when in ("before", "after")
                for kind in ("interrupts", "vmstat")]
    if not d.is_dir():
        return [f"snapshots/ is missing, though summary.json has {len(phases)} phase(s): the raw /proc copies "
                f"behind the figures are gone"]
    missing: List[str] = []
    out: List[str] = []
    for name in expected:
        kind = name.rsplit(".", 1)[1]
        try:
            text = files.read_text(d / name, f"a {kind} snapshot", files.cap("snapshot"))
        except files.MissingFile:
            missing.append(name)
            continue
        except InputError as e:
            out.append(str(e).replace(str(d) + "/", "snapshots/"))
            continue
        problem = snapshot_problem(text, kind)
        if problem:
            out.append(f"snapshots/{name}: {problem}")
    if missing:
        named = ", ".join(missing[:_MAX_NAMED]) + (", ..." if len(missing) > _MAX_NAMED else "")
        out.insert(0, f"snapshots/: {len(missing)} of {len(expected)} copies missing ({named})")
    return out


def snapshot_problem(text: str, kind: str) -> str:
    """'' when ``text`` has the shape of the procfs copy it should be, else what is wrong.
    The shape only (the report does not import the kernel readers of measure/procfs.py,
    which parse them for collect and diff): /proc/interrupts is a "CPU0 CPU1 ..." header
    and "LABEL: counts" lines (kernel/irq/proc.c show_interrupts()); /proc/vmstat is
    "name value" lines (mm/vmstat.c vmstat_show()); both end in a newline."""
    rows = [r for r in text.splitlines() if r.strip()]
    if not rows:
        return "empty"
    if not text.endswith("\n"):
        return "cut short (its last line has no newline)"
    if kind == "interrupts":
        if not all(t.startswith("CPU") and t[3:].isdigit() for t in rows[0].split()):
            return f"not a copy of /proc/interrupts (first line {rows[0].strip()[:40]!r})"
        if len(rows) < 2:
            return "a header without interrupt lines"
        bad = next((r for r in rows[1:] if ":" not in r), None)
        return f"not an interrupt line: {bad.strip()[:40]!r}" if bad is not None else ""
    bad = next((r for r in rows if len(r.split()) != 2 or not r.split()[1].lstrip("-").isdigit()), None)
    return f"not a copy of /proc/vmstat (line {bad.strip()[:40]!r})" if bad is not None else ""
