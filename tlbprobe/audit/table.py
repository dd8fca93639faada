"""The reviewed table of callers (kernels/audit/callers.yaml): loaded and checked once.

Each entry is one caller of the sync or of the hook, named by function, file and the
aliases the call goes through (never by line, so it survives line shifts), with what a
reviewer established for it: the flush that precedes the call on that path, which CPUs
that flush reaches and what guarantees it, the kernel lines that show it (Debian 6.12's,
unless the entry says otherwise), the job that drives it (a workloads/*.yaml name, or
null: none does yet), where it can run, and the verdict for the skip. The *facts* are the
part a tree can check by itself: each names a function (or macro) of a file and the
patterns its body must show in order (the flush before the sync, ``freed_tables`` passed
as true, ...); an entry rests on some of them, and the audit checks every one in the
tree under audit (static.py).

A table that cannot be trusted is refused whole, with the entry and the field named:
an unknown key (a typo would silently drop a field), a verdict or a reachability word
outside the vocabulary, a job that no job file has, a fact that is not defined, a
pattern that is not a regular expression, two entries for the same caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .. import files
from ..datafiles import data_dir, locate
from ..errors import InputError

FORMAT = "tlbprobe-audit/1"
DEFAULT_TABLE = locate("kernels", "audit", "callers.yaml")

#: the verdicts a reviewer may give a caller's skip
VERDICTS = {
    "justified": "the flush before it reached every CPU that could be walking: the skip is safe",
    "not-skipped": "wherever it can run the hook answers false: the broadcast is kept",
    "decision": "the hook's own call, where the skip is decided",
    "unjustified": "the flush before it does not cover every CPU that could be walking",
}
#: where a caller may run, and how
ARCHES = ("x86_64_native", "x86_64_pv", "arm64")
REACHABLE = ("yes", "no", "empty")   # empty: the call compiles to nothing there
ROLES = ("sync", "hook")
_CITE = re.compile(r"^[\w.+/-]+\.[chS]:\d+(-\d+)?$|^[\w.+/-]+(Kconfig[\w.]*|Makefile):\d+(-\d+)?$")

_ENTRY_KEYS = {"function", "file", "via", "target", "sites", "release", "flush", "reaches", "walkers", "guarantee",
               "cite", "job", "job_note", "reachable", "verdict", "rests_on", "paths", "questions", "note"}
_ENTRY_REQUIRED = ("function", "file", "target", "flush", "reaches", "walkers", "guarantee", "cite", "job",
                   "reachable", "verdict")


@dataclass(frozen=True)
class Target:
    name: str
    role: str              # "sync" or "hook"
    cite: Tuple[str, ...]


@dataclass(frozen=True)
class Fact:
    """A function's (or macro's, or with ``within`` None the whole file's) code must show
    ``expect`` in order: regular expressions over its text with comments blanked and
    whitespace collapsed."""

    id: str
    file: str
    within: Optional[str]
    expect: Tuple[str, ...]
    says: str


@dataclass(frozen=True)
class PathEntry:
    """A function that calls the caller (one level up) and the job that drives it."""

    function: str
    file: str
    job: Optional[str]
    note: str = ""


@dataclass(frozen=True)
class Entry:
    function: str
    file: str
    via: Tuple[str, ...]
    target: str
    sites: int
    release: str
    flush: str
    reaches: str
    walkers: str
    guarantee: str
    cite: Tuple[str, ...]
    job: Optional[str]
    job_note: str
    reachable: Dict[str, str]
    verdict: str
    rests_on: Tuple[str, ...]
    paths: Tuple[PathEntry, ...]
    questions: Tuple[str, ...]
    note: str

    @property
    def key(self) -> Tuple[str, str, Tuple[str, ...], str]:
        return (self.file, self.function, self.via, self.target)

    @property
    def id(self) -> str:
        """The caller's stable name, for the run-time check and repro --audit to join on."""
        return f"{self.file}:{' -> '.join((self.function, *self.via, self.target))}"

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "function": self.function, "file": self.file, "via": list(self.via),
                "target": self.target, "sites": self.sites, "release": self.release, "flush": self.flush,
                "reaches": self.reaches, "walkers": self.walkers, "guarantee": self.guarantee,
                "cite": list(self.cite), "job": self.job, "job_note": self.job_note,
                "reachable": dict(self.reachable), "verdict": self.verdict, "rests_on": list(self.rests_on),
                "paths": [{"function": p.function, "file": p.file, "job": p.job, "note": p.note} for p in self.paths],
                "questions": list(self.questions), "note": self.note}


@dataclass(frozen=True)
class Table:
    path: Path
    release: str
    targets: Tuple[Target, ...]
    facts: Dict[str, Fact]
    questions: Dict[str, str]
    callers: Tuple[Entry, ...]

    def target_names(self) -> List[str]:
        return [t.name for t in self.targets]

    def role(self, name: str) -> str:
        return next(t.role for t in self.targets if t.name == name)

    def lookup(self, file: str, function: str, via: Tuple[str, ...], target: str) -> Optional[Entry]:
        return next((e for e in self.callers if e.key == (file, function, via, target)), None)

    def for_function(self, file: str, function: str) -> List[Entry]:
        return [e for e in self.callers if e.file == file and e.function == function]

    def hints(self) -> List[str]:
        """Names the first search may as well include (aliases and callers the table
        knows): they save a round of grep in the usual case and change no answer."""
        out = set()
        for e in self.callers:
            out.update(e.via)
            out.add(e.function)
        return sorted(out - set(self.target_names()))


def job_names() -> List[str]:
    """The jobs tlbprobe ships (workloads/*.yaml), by name."""
    return sorted(p.stem for p in data_dir("workloads").glob("*.yaml"))


def load_table(path: Optional[Path] = None) -> Table:
    """The table at ``path`` (default: the shipped one), checked; InputError naming the
    file, the entry and the field on any problem."""
    import yaml

    p = Path(path) if path is not None else DEFAULT_TABLE
    try:
        data = yaml.safe_load(files.read_text(p, "the audit's table of callers", files.cap("model parameters")))
    except files.MissingFile:
        raise InputError(f"{p}: the audit's table of callers is missing (--table FILE, or reinstall)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise InputError(f"{p}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{p}: not a table of callers (expected 'format: {FORMAT}')")
    unknown = set(data) - {"format", "release", "targets", "facts", "questions", "callers"}
    if unknown:
        raise InputError(f"{p}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    release = _text(data.get("release"), p, "release")
    targets = tuple(_target(t, i, p) for i, t in enumerate(_list(data.get("targets"), p, "targets")))
    if not targets or sum(t.role == "sync" for t in targets) != 1:
        raise InputError(f"{p}: targets: name exactly one target with role: sync")
    raw_facts = data.get("facts") or {}
    if not isinstance(raw_facts, dict):
        raise InputError(f"{p}: facts: must be a mapping of fact id to fact")
    facts = {str(k): _fact(str(k), v, p) for k, v in raw_facts.items()}
    raw_q = data.get("questions") or {}
    if not isinstance(raw_q, dict) or not all(isinstance(v, str) for v in raw_q.values()):
        raise InputError(f"{p}: questions: must be a mapping of question id to its text")
    questions = {str(k): v for k, v in raw_q.items()}
    jobs = set(job_names())
    names = {t.name for t in targets}
    callers: List[Entry] = []
    seen: Dict[tuple, int] = {}
    for i, raw in enumerate(_list(data.get("callers"), p, "callers")):
        e = _entry(raw, i, p, release, names, facts, questions, jobs)
        if e.key in seen:
            raise InputError(f"{p}: callers[{i}] ({e.function} in {e.file}): the same caller as callers[{seen[e.key]}]")
        seen[e.key] = i
        callers.append(e)
    return Table(p, release, targets, facts, questions, tuple(callers))


def _list(v: Any, p: Path, what: str) -> list:
    if not isinstance(v, list) or not v:
        raise InputError(f"{p}: {what}: must be a non-empty list")
    return v


def _text(v: Any, p: Path, what: str, allow_empty: bool = False) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or (not v.strip() and not allow_empty):
        raise InputError(f"{p}: {what}: must be a text")
    return v.strip()


def _target(raw: Any, i: int, p: Path) -> Target:
    if not isinstance(raw, dict) or set(raw) - {"name", "role", "cite"}:
        raise InputError(f"{p}: targets[{i}]: must be a mapping of name, role, cite")
    name = _text(raw.get("name"), p, f"targets[{i}].name")
    role = raw.get("role")
    if role not in ROLES:
        raise InputError(f"{p}: targets[{i}] ({name}): role must be one of {', '.join(ROLES)}, not {role!r}")
    return Target(name, role, _cites(raw.get("cite", []), p, f"targets[{i}] ({name}).cite"))


def _cites(v: Any, p: Path, what: str) -> Tuple[str, ...]:
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise InputError(f"{p}: {what}: must be a list of file:line citations")
    for c in v:
        if not _CITE.match(c):
            raise InputError(f"{p}: {what}: {c!r} is not a citation (path/file.c:LINE or :FIRST-LAST)")
    return tuple(v)


def _fact(fid: str, raw: Any, p: Path) -> Fact:
    where = f"facts.{fid}"
    if not isinstance(raw, dict) or set(raw) - {"file", "in", "expect", "says"}:
        raise InputError(f"{p}: {where}: must be a mapping of file, in, expect, says")
    file = _text(raw.get("file"), p, f"{where}.file")
    within = raw.get("in")
    if within is not None and not isinstance(within, str):
        raise InputError(f"{p}: {where}.in: a function or macro name, or null for the whole file")
    expect = raw.get("expect")
    expect = [expect] if isinstance(expect, str) else expect
    if not isinstance(expect, list) or not expect or not all(isinstance(x, str) for x in expect):
        raise InputError(f"{p}: {where}.expect: must be a non-empty list of regular expressions")
    for x in expect:
        try:
            re.compile(x)
        except re.error as e:
            raise InputError(f"{p}: {where}.expect: {x!r} is not a regular expression: {e}") from None
    return Fact(fid, file, within, tuple(expect), _text(raw.get("says"), p, f"{where}.says"))


def _entry(raw: Any, i: int, p: Path, release: str, targets: set, facts: Dict[str, Fact],
           questions: Dict[str, str], jobs: set) -> Entry:
    if not isinstance(raw, dict):
        raise InputError(f"{p}: callers[{i}]: must be a mapping")
    name = f"callers[{i}] ({raw.get('function', '?')} in {raw.get('file', '?')})"
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise InputError(f"{p}: {name}: unknown key(s): {', '.join(sorted(unknown))}")
    missing = [k for k in _ENTRY_REQUIRED if k not in raw]
    if missing:
        raise InputError(f"{p}: {name}: lacks {', '.join(missing)}")
    via = raw.get("via") or []
    if not isinstance(via, list) or not all(isinstance(v, str) and v for v in via):
        raise InputError(f"{p}: {name}: via must be a list of alias names (empty for a direct call)")
    target = raw["target"]
    if target not in targets:
        raise InputError(f"{p}: {name}: target {target!r} is not one of the targets ({', '.join(sorted(targets))})")
    sites = raw.get("sites", 1)
    if not isinstance(sites, int) or isinstance(sites, bool) or sites < 1:
        raise InputError(f"{p}: {name}: sites must be a whole number of calls, at least 1")
    job = raw["job"]
    if job is not None and job not in jobs:
        raise InputError(f"{p}: {name}: job {job!r} is not a job of workloads/ (null when no job drives it)")
    reachable = raw["reachable"]
    if isinstance(reachable, dict):  # YAML 1.1 reads a bare yes/no as a boolean
        reachable = {k: {True: "yes", False: "no"}.get(v, v) if isinstance(v, bool) else v
                     for k, v in reachable.items()}
    if not isinstance(reachable, dict) or set(reachable) != set(ARCHES) or \
            not all(v in REACHABLE for v in reachable.values()):
        raise InputError(f"{p}: {name}: reachable must give each of {', '.join(ARCHES)} one of "
                         f"{', '.join(REACHABLE)}")
    verdict = raw["verdict"]
    if verdict not in VERDICTS:
        raise InputError(f"{p}: {name}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    rests_on = raw.get("rests_on") or []
    if not isinstance(rests_on, list) or any(f not in facts for f in rests_on):
        bad = [f for f in rests_on if f not in facts] if isinstance(rests_on, list) else rests_on
        raise InputError(f"{p}: {name}: rests_on names fact(s) the table does not define: {bad}")
    qs = raw.get("questions") or []
    if not isinstance(qs, list) or any(q not in questions for q in qs):
        raise InputError(f"{p}: {name}: questions must name questions the table defines")
    paths = []
    for j, pe in enumerate(raw.get("paths") or []):
        if not isinstance(pe, dict) or set(pe) - {"function", "file", "job", "note"} or "function" not in pe:
            raise InputError(f"{p}: {name}: paths[{j}]: a mapping of function, file, job, note")
        pjob = pe.get("job")
        if pjob is not None and pjob not in jobs:
            raise InputError(f"{p}: {name}: paths[{j}]: job {pjob!r} is not a job of workloads/")
        paths.append(PathEntry(str(pe["function"]), str(pe.get("file") or raw["file"]), pjob,
                               _text(pe.get("note", ""), p, f"{name}.paths[{j}].note", allow_empty=True)))
    fields = {k: _text(raw[k], p, f"{name}.{k}") for k in ("function", "file", "flush", "reaches", "walkers",
                                                            "guarantee")}
    return Entry(fields["function"], fields["file"], tuple(via), target, sites,
                 _text(raw.get("release", release), p, f"{name}.release"), fields["flush"], fields["reaches"],
                 fields["walkers"], fields["guarantee"], _cites(raw["cite"], p, f"{name}.cite"), job,
                 _text(raw.get("job_note", ""), p, f"{name}.job_note", allow_empty=True),
                 {a: reachable[a] for a in ARCHES}, verdict, tuple(rests_on), tuple(paths), tuple(qs),
                 _text(raw.get("note", ""), p, f"{name}.note", allow_empty=True))
