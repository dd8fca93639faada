"""Read run directories (format `tlbprobe-run/1`, doc/run-format.md) into typed records (schema.py).

The report trusts ``summary.json`` for the figures (it is the documented verdict for
machines) and reads ``run.yaml`` for the job and host facts, ``phases.csv`` for the time
line; the observers' sections of summary.json come back as their typed records
(``Run.section``, rundir/sections.py), their CSV files through ``Run.csv``. Every check
fails with one InputError line that names the file at fault, so a damaged or foreign
directory never ends in a traceback; every file is read through tlbprobe/files.py (a
regular file within its size cap, or one line), and what a run says it wrote but does
not hold (integrity.py) becomes a warning on the Run.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, TypeVar

import pandas as pd

from .. import files
from ..errors import InputError
from .cyclictest import read_cyclictest_json
from .integrity import check_run
from .schema import FORMAT, TIMESERIES_COLUMNS, RepeatFigures
from .sections import SECTIONS, Section

S = TypeVar("S", bound=Section)

PHASE_COLUMNS = ("repeat", "phase", "start", "end", "duration_s", "ops", "ops_expected", "result")


@dataclass(frozen=True)
class Histogram:
    """One cyclictest thread's histogram: microseconds -> count."""

    label: str
    cpu: int
    buckets: Dict[int, int]


@dataclass
class Run:
    path: Path
    run_yaml: Dict[str, Any]
    summary: Dict[str, Any]
    repeats: List[RepeatFigures]
    phases: pd.DataFrame
    #: timeseries.csv (CAL and TLB per CPU during the phases); empty for older runs
    timeseries: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: cyclictest's histograms (latency/*.json, collect --latency), for the plots
    histograms: List[Histogram] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    #: the observers' sections read so far, by summary.json key (see section())
    _sections: Dict[str, Any] = field(default_factory=dict, repr=False)
    #: the observers' CSV files read so far, by name (see csv())
    _csvs: Dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def section(self, kind: Type[S]) -> Optional[S]:
        """An observer's section of summary.json as its typed record
        (rundir/sections.py: ``run.section(CostSection)``), or None for a run without it."""
        if kind.KEY not in self._sections:
            self._sections[kind.KEY] = kind.of(self.summary, str(self.path / "summary.json"))
        return self._sections[kind.KEY]

    def csv(self, name: str, columns: Sequence[str], numeric: Sequence[str] = ()) -> pd.DataFrame:
        """An observer's CSV file of the run directory (cost.csv), checked for its columns;
        an empty frame when the run has none."""
        if name not in self._csvs:
            self._csvs[name] = _load_csv(self.path / name, columns, numeric)
        return self._csvs[name]

    # --- facts the report uses everywhere ---------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def complete(self) -> bool:
        return self.summary.get("complete") is True

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "unknown")

    @property
    def job(self) -> Dict[str, Any]:
        return self.run_yaml.get("job") or {}

    @property
    def host(self) -> Dict[str, Any]:
        return self.run_yaml.get("host") or {}

    @property
    def workload(self) -> str:
        return str(self.summary.get("workload") or self.job.get("workload") or "unknown")

    @property
    def online_cpus(self) -> int:
        return int(self.summary["online_cpus"])

    @property
    def driver_cpu(self) -> int:
        return int(self.summary["driver_cpu"])

    @property
    def other_cpus(self) -> List[int]:
        oc = self.summary.get("other_cpus")
        if isinstance(oc, list):
            return [int(c) for c in oc]
        return [c for c in self.cpus if c != self.driver_cpu]

    @property
    def cpus(self) -> List[int]:
        cpus = self.host.get("online_cpus")
        if isinstance(cpus, list) and cpus:
            return [int(c) for c in cpus]
        seen: List[int] = []
        for r in self.repeats:
            for p in r.phases.values():
                for c in p.cal_per_cpu:
                    if c not in seen:
                        seen.append(c)
        return sorted(seen)

    @property
    def ops(self) -> int:
        return sum(r.ops for r in self.repeats)

    @property
    def ops_expected(self) -> int:
        return sum(r.ops_expected for r in self.repeats)

    def function_totals(self, which: str = "attributed") -> Dict[str, float]:
        """{function: n} summed over the finished repeats' workload phases, of the
        ``attributed`` (received) or ``queued`` counts; repeats without them add nothing."""
        out: Dict[str, float] = {}
        for r in self.repeats:
            for func, n in (getattr(r, which) or {}).items():
                out[func] = out.get(func, 0.0) + n
        return out

    @property
    def hostname(self) -> str:
        """The machine the run was made on ('' for runs recorded before it was kept)."""
        return str(self.host.get("hostname") or "")

    @property
    def kernel_release(self) -> str:
        return str(self.summary.get("kernel_release") or self.host.get("kernel_release") or "unknown")


def load_run(path: Path) -> Run:
    """Load and validate one run directory."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    run_yaml = _load_run_yaml(path / "run.yaml")
    summary = _load_summary(path / "summary.json")
    repeats = _repeats(path / "summary.json", summary)
    phases = _load_phases(path / "phases.csv")
    run = Run(path=path, run_yaml=run_yaml, summary=summary, repeats=repeats, phases=phases,
              timeseries=_load_timeseries(path / "timeseries.csv"))
    for kind in SECTIONS:  # a damaged section is named now, not halfway through a report
        run.section(kind)
    _load_histograms(run)
    run.warnings.extend(check_run(run))  # damaged or missing records: said, not passed over (integrity.py)
    return run


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` looks like a run directory at all (a directory holding run.yaml or
    summary.json): `tlbprobe report analysis/runs/*` skips a README.md beside the runs,
    and still names every damage of a directory that is one."""
    path = Path(path)
    return path.is_dir() and any((path / n).exists() or (path / n).is_symlink() for n in ("run.yaml", "summary.json"))


def _read(p: Path, missing: str, kind: str) -> str:
    """A run file's text, or one InputError: ``missing`` says what its absence means;
    a file that is not regular, or larger than its kind's cap, is refused unread
    (tlbprobe/files.py)."""
    try:
        return files.read_text(p, kind, files.cap(kind))
    except files.MissingFile:
        raise InputError(f"{p}: missing ({missing})") from None


def _load_run_yaml(p: Path) -> Dict[str, Any]:
    import yaml

    text = _read(p, f"{p.parent} is not a tlbprobe run directory", "run.yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise InputError(f"{p}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: not a run.yaml (expected a mapping)")
    if data.get("format") != FORMAT:
        raise InputError(f"{p}: format is {data.get('format')!r}, this tlbprobe reads {FORMAT!r}")
    for key in ("job", "host"):
        if key in data and not isinstance(data[key], dict):
            raise InputError(f"{p}: '{key}' must be a mapping")
    return data


_SUMMARY_REQUIRED = {
    "complete": bool,
    "workload": str,
    "online_cpus": int,
    "driver_cpu": int,
    "repeats": list,
}


def _load_summary(p: Path) -> Dict[str, Any]:
    text = _read(p, "the run never started writing, or this is not a run directory", "summary.json")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p}:{e.lineno}: damaged, not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: damaged: expected a JSON object")
    if data.get("format", FORMAT) != FORMAT:
        raise InputError(f"{p}: format is {data.get('format')!r}, this tlbprobe reads {FORMAT!r}")
    for key, typ in _SUMMARY_REQUIRED.items():
        if key not in data:
            raise InputError(f"{p}: damaged: key '{key}' is missing")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise InputError(f"{p}: damaged: '{key}' should be {typ.__name__}, is {type(data[key]).__name__}")
    if data["online_cpus"] < 1:
        raise InputError(f"{p}: damaged: online_cpus is {data['online_cpus']}")
    return data


def _repeats(p: Path, summary: Mapping[str, Any]) -> List[RepeatFigures]:
    return [RepeatFigures.from_dict(f"{p}: repeats[{i}]", i, r) for i, r in enumerate(summary["repeats"])]


def _load_phases(p: Path) -> pd.DataFrame:
    """phases.csv as a frame; an empty frame when absent (a run killed before its first phase)."""
    return _load_csv(p, PHASE_COLUMNS, ("start", "end", "duration_s", "ops", "ops_expected"))


def _load_timeseries(p: Path) -> pd.DataFrame:
    """timeseries.csv as a frame; empty for runs recorded before it existed."""
    return _load_csv(p, TIMESERIES_COLUMNS, TIMESERIES_COLUMNS[2:])


def _load_csv(p: Path, columns: Sequence[str], numeric: Sequence[str]) -> pd.DataFrame:
    try:
        text = files.read_text(p, p.name, files.cap("csv"))
    except files.MissingFile:
        return pd.DataFrame(columns=list(columns))
    return _parse_csv(p, text, columns, numeric)


def _parse_csv(p: Path, text: str, columns: Sequence[str], numeric: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(columns))
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: damaged, not CSV: {str(e).splitlines()[0]}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{p}: damaged: column(s) {', '.join(missing)} missing")
    for c in numeric:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise InputError(f"{p}: damaged: column '{c}' holds non-numbers")
    return df


def _load_histograms(run: Run) -> None:
    """cyclictest's JSON histograms (latency/<tag>.json, read with cyclictest.py's parser,
    the one the collector uses); none for a run without --latency. Its figures are
    summary.json's ``latency`` section (Run.section(LatencySection))."""
    d = run.path / "latency"
    if not d.is_dir():
        return
    for f in sorted(d.glob("*.json")):
        try:
            output = read_cyclictest_json(f)
        except InputError as e:
            run.warnings.append(f"{e}; skipped")
            continue
        if output.problems:
            run.warnings.append(f"{f}: {'; '.join(output.problems)}")
        for t in output.threads:
            run.histograms.append(Histogram(label=f.stem, cpu=t.cpu, buckets=t.histogram))
