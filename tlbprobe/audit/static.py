"""The static audit's answer for each call site: the reviewed entry that covers it, or
"unaudited"; and whether the facts the entry's verdict rests on hold in this tree.

A call site is *audited* when the table (table.py) has an entry for its function, file
and chain, and the tree has no more such calls than the entry reviewed (``sites``). Any
other call site is *unaudited*: a caller added by a later kernel, or by the series under
test, or a new alias in front of an old one. The audit fails when

- a call site is unaudited;
- an entry's verdict is "unjustified";
- the tree can skip (the sync calls the hook) and a fact a "justified" entry rests on
  does not hold here: the flush that justified the skip is not the one this tree has.

Facts are checked in every tree and reported; in a tree without the hook (a baseline)
nothing is skipped, so a fact there that fails (the series' x86 tlb_flush() change,
absent from the baseline) is shown but fails nothing. Entries the tree does not have a
call site for are listed as not in this tree (6.1 has no pmdp_get_lockless_sync()).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .callsites import CallSite, Scan, find_call_sites
from .cscan import CFile
from .source import SourceView
from .table import Entry, Fact, Table

RESULT_FORMAT = "tlbprobe-audit-result/1"


@dataclass(frozen=True)
class FactResult:
    id: str
    holds: bool
    detail: str            # where it was found, or what is missing

    def to_dict(self) -> dict:
        return {"id": self.id, "holds": self.holds, "detail": self.detail}


@dataclass(frozen=True)
class Answer:
    """The audit's answer for one call site."""

    site: CallSite
    status: str                        # "audited" or "unaudited"
    entry: Optional[Entry]
    reason: str = ""                   # why unaudited
    facts: Tuple[FactResult, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.site.file}:{self.site.chain_text()}"

    @property
    def failed_facts(self) -> List[FactResult]:
        return [f for f in self.facts if not f.holds]


@dataclass
class Audit:
    label: str                         # the source as given
    root: str
    release: str
    variant: str
    patches: Tuple[str, ...]
    reversed_in_copy: Tuple[str, ...]
    table: str
    scan: Scan
    answers: Tuple[Answer, ...]
    not_in_tree: Tuple[Entry, ...]
    skip_in_tree: bool                 # the sync calls the hook: the tree can skip
    facts: Dict[str, FactResult] = field(default_factory=dict)

    @property
    def unaudited(self) -> List[Answer]:
        return [a for a in self.answers if a.status == "unaudited"]

    @property
    def unjustified(self) -> List[Answer]:
        return [a for a in self.answers if a.entry is not None and a.entry.verdict == "unjustified"]

    @property
    def unsupported(self) -> List[Answer]:
        """Justified skips whose facts do not hold, in a tree that skips."""
        if not self.skip_in_tree:
            return []
        return [a for a in self.answers if a.status == "audited" and a.entry is not None
                and a.entry.verdict == "justified" and a.failed_facts]

    @property
    def ok(self) -> bool:
        return not (self.unaudited or self.unjustified or self.unsupported)


def check_fact(view: SourceView, fact: Fact, read: Dict[str, CFile]) -> FactResult:
    """Whether ``fact`` holds in ``view``: its function's (or the file's) code shows the
    patterns in order."""
    if fact.file not in read:
        if not view.exists(fact.file):
            return FactResult(fact.id, False, f"{fact.file} is not in this tree")
        read[fact.file] = CFile(view.read(fact.file), fact.file)
    cf = read[fact.file]
    if fact.within is None:
        spans = [(0, len(cf.code), 1)]
    else:
        spans = [(d.body[0], d.body[1], d.line) for d in cf.definitions_of(fact.within)]
        if not spans:
            return FactResult(fact.id, False, f"{fact.file}: no definition of {fact.within}")
    missing = ""
    for start, end, line in spans:
        text = " ".join(cf.code[start:end].replace("\\\n", " ").split())
        pos, miss = 0, None
        for rx in fact.expect:
            m = re.compile(rx).search(text, pos)
            if m is None:
                miss = rx
                break
            pos = m.end()
        if miss is None:
            where = f"{fact.file}:{line}" + (f" ({fact.within})" if fact.within else "")
            return FactResult(fact.id, True, where)
        missing = miss
    scope = f"{fact.within} in {fact.file}" if fact.within else fact.file
    return FactResult(fact.id, False, f"{scope}: no match for /{missing}/ (after the patterns before it)")


def run_audit(view: SourceView, table: Table, variant: str, scan: Optional[Scan] = None) -> Audit:
    """Scan ``view`` (unless ``scan`` is given) and answer for every call site."""
    if scan is None:
        scan = find_call_sites(view, table.target_names(), hints=table.hints())
    hooks = {t.name for t in table.targets if t.role == "hook"}
    sync = next(t.name for t in table.targets if t.role == "sync")
    skip = any(s.target in hooks and s.function == sync for s in scan.sites)
    read = dict(scan.read)
    fact_results = {fid: check_fact(view, f, read) for fid, f in table.facts.items()}
    counts: Dict[tuple, int] = {}
    answers: List[Answer] = []
    for s in scan.sites:
        entry = table.lookup(s.file, s.function, s.via, s.target)
        if entry is None:
            answers.append(Answer(s, "unaudited", None, _why_unaudited(table, s)))
            continue
        n = counts[entry.key] = counts.get(entry.key, 0) + 1
        if n > entry.sites:
            answers.append(Answer(s, "unaudited", None,
                                  f"the table reviewed {entry.sites} such call(s) in {s.function}; this is call {n}"))
            continue
        answers.append(Answer(s, "audited", entry, facts=tuple(fact_results[f] for f in entry.rests_on)))
    found = set(counts)
    missing = tuple(e for e in table.callers if e.key not in found)
    return Audit(view.label, str(view.root), str(view.release), variant, tuple(str(p) for p in view.patches),
                 view.reversed_in_copy, _shown(table.path), scan, tuple(answers), missing, skip, fact_results)


def _shown(path) -> str:
    """A data file of tlbprobe by its name in the source tree (kernels/audit/callers.yaml),
    any other by its path."""
    from pathlib import Path

    from ..datafiles import candidates

    p = Path(path).resolve()
    for base in candidates("kernels"):
        try:
            return str(Path("kernels") / p.relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _why_unaudited(table: Table, s: CallSite) -> str:
    known = table.for_function(s.file, s.function)
    if known:
        chains = "; ".join(" -> ".join((e.function, *e.via, e.target)) for e in known)
        return f"the table reviewed {s.function} in {s.file} only as {chains}"
    return f"no entry for {s.function} in {s.file} in the table"
