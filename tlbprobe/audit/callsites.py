"""Every call site of the sync and of the series' hook in a kernel tree, through aliases.

The targets are the functions the audit is about (the table names them: the sync
tlb_remove_table_sync_one(), mm/mmu_gather.c:269, and the hook the series adds,
tlb_table_flush_implies_ipi_broadcast()). A call may not spell a target's name:

- a ``#define X(...)`` whose replacement text calls a target, or another alias, makes X
  an alias (pmdp_get_lockless_sync(), include/linux/pgtable.h:579, under
  CONFIG_GUP_GET_PXX_LOW_HIGH);
- so does an inline function whose body calls one (tlb_flush_unshared_tables(),
  include/asm-generic/tlb.h:789).

A call site is a call (or a reference: a function pointer, an EXPORT_SYMBOL) in a function
that is not itself an alias, or a macro alias invoked at file scope. Its *chain* is the
names from the one it calls to the target, and for each alias the definitions that make
the hop real with the ``#if`` conditions around them, and the other definitions of the
same name that do not (the empty pmdp_get_lockless_sync() at include/linux/pgtable.h:598):
that is which configuration makes the call real.

The search is a fixpoint: grep -rlw (source.py) lists the files that mention the names
known so far, the scanner (cscan.py) reads each file once, new aliases join the names,
and it stops when a round finds none. A last round finds, one level up, who calls each
call site's function (its *paths*), so the table can say which job drives which path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .cscan import CFile, Definition, Occurrence
from .source import SourceView

FILE_SCOPE = "<file scope>"


@dataclass(frozen=True)
class DefRef:
    """A definition as the report shows it: where, what kind, under which conditions."""

    file: str
    line: int
    kind: str          # "macro", "inline function", "function"
    when: Tuple[str, ...]
    empty: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def arch(self) -> Optional[str]:
        """The architecture whose tree the definition is in (arch/x86/...), None for generic code."""
        parts = self.file.split("/")
        return parts[1] if len(parts) > 2 and parts[0] == "arch" else None

    def to_dict(self) -> dict:
        return {"at": self.where, "kind": self.kind, "when": list(self.when), "empty": self.empty, "arch": self.arch}


@dataclass(frozen=True)
class Hop:
    """One alias of a chain: the definitions of it that call the next name (``real``),
    and the others (``otherwise``: empty stubs, or definitions that call something else)."""

    name: str
    real: Tuple[DefRef, ...]
    otherwise: Tuple[DefRef, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "real": [d.to_dict() for d in self.real],
                "otherwise": [d.to_dict() for d in self.otherwise]}


@dataclass(frozen=True)
class Path_:
    """A function that calls a call site's function: one level up the call graph."""

    function: str
    file: str
    line: int

    def to_dict(self) -> dict:
        return {"function": self.function, "at": f"{self.file}:{self.line}"}


@dataclass(frozen=True)
class CallSite:
    """One call of a target, directly or through aliases."""

    file: str
    line: int
    function: str                  # the enclosing function (FILE_SCOPE outside any)
    kind: str                      # "call", "reference", "export"
    chain: Tuple[str, ...]         # from the name called here to the target
    hops: Tuple[Hop, ...]          # one per alias in the chain (all but the last name)
    when: Tuple[str, ...]          # the conditions of the call's line
    paths: Tuple[Path_, ...] = ()

    @property
    def target(self) -> str:
        return self.chain[-1]

    @property
    def via(self) -> Tuple[str, ...]:
        return self.chain[:-1]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def chain_text(self) -> str:
        return " -> ".join((self.function, *self.chain))

    def to_dict(self) -> dict:
        return {"function": self.function, "file": self.file, "line": self.line, "at": self.where,
                "kind": self.kind, "chain": list(self.chain), "via": list(self.via), "target": self.target,
                "when": list(self.when), "hops": [h.to_dict() for h in self.hops],
                "paths": [p.to_dict() for p in self.paths]}


@dataclass(frozen=True)
class TargetDefs:
    """A target's own definitions (the sync's real one and its empty stub) and prototypes."""

    name: str
    definitions: Tuple[DefRef, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "definitions": [d.to_dict() for d in self.definitions]}


@dataclass
class Scan:
    """What the search found in one view of a tree."""

    targets: Tuple[TargetDefs, ...]
    aliases: Tuple[str, ...]
    sites: Tuple[CallSite, ...]
    files_read: int
    rounds: int
    seconds: float
    read: Dict[str, CFile] = field(default_factory=dict, repr=False)


def _kind(d: Definition) -> str:
    if d.kind == "macro":
        return "macro"
    return "inline function" if d.inline else "function"


def _ref(file: str, d: Definition) -> DefRef:
    return DefRef(file, d.line, _kind(d), d.when, d.empty)


def _is_alias_def(d: Definition, targets: Set[str]) -> bool:
    """Whether a definition can be an alias: a macro or an inline function, not a target's own."""
    return d.name not in targets and (d.kind == "macro" or d.inline)


class _Index:
    """The files read so far and the occurrences of the names in them."""

    def __init__(self, view: SourceView, targets: Sequence[str]):
        self.view = view
        self.targets = set(targets)
        self.files: Dict[str, CFile] = {}
        self.grepped: Set[str] = set()
        self.rounds = 0

    def load(self, names: Iterable[str]) -> None:
        todo = set(names) - self.grepped
        if not todo:
            return
        self.rounds += 1
        for rel in self.view.grep(todo):
            if rel not in self.files:
                self.files[rel] = CFile(self.view.read(rel), rel)
        self.grepped |= todo

    def occurrences(self, names: Set[str]) -> List[Tuple[str, Occurrence]]:
        return [(rel, o) for rel, f in sorted(self.files.items()) for o in f.occurrences(names)]


def find_call_sites(view: SourceView, targets: Sequence[str], paths: bool = True,
                    hints: Iterable[str] = ()) -> Scan:
    """Every call site of ``targets`` in ``view`` (see the module's docstring).

    ``hints`` are names worth searching for in the first round (the aliases and callers
    the table already knows): one grep of the tree then usually finds everything, where
    the fixpoint alone needs a round per alias level and one for the paths. They only
    widen what is read; which names are aliases is decided by the code alone."""
    started = time.monotonic()
    index = _Index(view, targets)
    names: Set[str] = set(targets)
    index.load(names | set(hints))
    while True:
        index.load(names)
        occ = index.occurrences(names)
        aliases = {o.owner.name for _, o in occ if o.owner is not None and o.owner.name != o.name
                   and _is_alias_def(o.owner, index.targets)}
        if aliases <= names:
            break
        names |= aliases
    occ = index.occurrences(names)
    alias_names = names - index.targets
    # per alias definition (and per target definition), the names its body mentions
    mentions: Dict[Tuple[str, int], Set[str]] = {}
    defs: Dict[str, List[Tuple[str, Definition]]] = {n: [] for n in names}
    for rel, f in index.files.items():
        for d in f.definitions:
            if d.name in defs:
                defs[d.name].append((rel, d))
    for rel, o in occ:
        if o.owner is not None and o.owner.name != o.name:
            mentions.setdefault((rel, o.owner.name_offset), set()).add(o.name)

    def hops_from(name: str, seen: Tuple[str, ...]) -> List[Tuple[Tuple[str, ...], Tuple[Hop, ...]]]:
        """The chains from ``name`` to a target: (names, hops)."""
        if name in index.targets:
            return [((name,), ())]
        found: Set[Tuple[str, ...]] = set()
        nexts: Dict[str, List[Tuple[str, Definition]]] = {}
        for rel, d in defs.get(name, []):
            if not _is_alias_def(d, index.targets):
                continue
            for nxt in sorted(mentions.get((rel, d.name_offset), ())):
                if nxt not in seen:
                    nexts.setdefault(nxt, []).append((rel, d))
        result = []
        for nxt, via_defs in sorted(nexts.items()):
            real = tuple(_ref(rel, d) for rel, d in via_defs)
            reals = {(rel, d.name_offset) for rel, d in via_defs}
            other = tuple(_ref(rel, d) for rel, d in defs.get(name, []) if (rel, d.name_offset) not in reals)
            for chain, hops in hops_from(nxt, seen + (name,)):
                key = (name, *chain)
                if key not in found:
                    found.add(key)
                    result.append((key, (Hop(name, real, other), *hops)))
        return result

    sites: List[CallSite] = []
    for rel, o in occ:
        if o.kind == "definition" or (o.kind == "declaration" and not _macro_alias(o.name, defs, index.targets)):
            continue  # a prototype; but a macro alias invoked at file scope expands to code there
        owner = o.owner
        if owner is not None and (owner.name == o.name or _is_alias_def(owner, index.targets)):
            continue  # inside an alias: a hop, not a site (or a macro defined as itself)
        function = FILE_SCOPE if owner is None else owner.label
        kind = "call" if o.kind == "declaration" else o.kind
        for chain, hops in hops_from(o.name, ()):
            sites.append(CallSite(rel, o.line, function, kind, chain, hops, o.when))
    if paths:
        sites = _with_paths(index, sites, index.targets)
    target_defs = tuple(TargetDefs(t, tuple(_ref(rel, d) for rel, d in defs.get(t, []))) for t in targets)
    return Scan(target_defs, tuple(sorted(alias_names)), tuple(sorted(sites, key=lambda s: (s.file, s.line, s.chain))),
                len(index.files), index.rounds, time.monotonic() - started, index.files)


def _macro_alias(name: str, defs: Dict[str, List[Tuple[str, Definition]]], targets: Set[str]) -> bool:
    return any(d.kind == "macro" and _is_alias_def(d, targets) for _, d in defs.get(name, []))


def _with_paths(index: _Index, sites: List[CallSite], targets: Set[str]) -> List[CallSite]:
    """Each site with the functions that call its function (one level up): a static
    function's callers are in its own file, any other's are searched for."""
    wanted: Dict[str, Set[str]] = {}
    for s in sites:
        if s.function != FILE_SCOPE and s.function not in targets and "(" not in s.function:  # not SYSCALL_DEFINE3(x)
            wanted.setdefault(s.function, set()).add(s.file)
    static = set()
    for name, in_files in wanted.items():
        f_defs = [d for rel in in_files for d in index.files[rel].definitions_of(name) if d.kind == "function"]
        if f_defs and all(d.static for d in f_defs) and all(rel.endswith(".c") for rel in in_files):
            static.add(name)
    index.load(set(wanted) - static)
    callers: Dict[Tuple[str, str], Set[Tuple[str, str, int]]] = {}
    for name, site_files in wanted.items():
        # (file searched, key): a static function's callers belong to the sites of its file
        scopes = [(rel, rel) for rel in site_files] if name in static else [(rel, "") for rel in index.files]
        for rel, key_file in scopes:
            for o in index.files[rel].occurrences({name}):
                if o.kind == "call" and o.owner is not None and o.owner.name != name:
                    label = o.owner.label if o.owner.kind == "function" else f"{o.owner.name} (macro)"
                    callers.setdefault((name, key_file), set()).add((label, rel, o.line))
    out = []
    for s in sites:
        key = (s.function, s.file if s.function in static else "")
        found = tuple(Path_(fn, rel, line) for fn, rel, line in sorted(set(callers.get(key, []))))
        out.append(CallSite(s.file, s.line, s.function, s.kind, s.chain, s.hops, s.when, found))
    return out
