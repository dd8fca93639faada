"""The run-time check ("check flavour"): what a kernel with tlbprobe's instrumentation
(kernels/instrumentation/0001-tlbprobe-check-record-every-table-sync-and-its-flush.patch)
says about every table sync it made, read beside each phase (collect --check).

The patch turns every call of tlb_remove_table_sync_one() into one of its recorder, with
the call-site address (its include/asm-generic/tlb.h macro), and counts per call site in
mm/mmu_gather.c: the calls, the skips the architecture's hook allows, and of those the
ones whose preceding flush reached every CPU that could be walking (covered), missed one
(a violation, with the CPUs missed) or could not be judged (unverified: no flush by the
same task on the same CPU). /sys/kernel/debug/tlbprobe_table_sync prints, since boot::

    # tlbprobe table-sync check, format 1, hook present, overflow 0
    caller=hpage_collapse_scan_pmd+0xa7f/0x17b0 calls=32 skipped=32 covered=32 ...

The caller is the kernel's %pS of the call-site address, so it names the function the
call was compiled into: collapse_huge_page() is inlined into hpage_collapse_scan_pmd()
in the 6.12 minimal build (mm/khugepaged.c:1424 calls it from there), and the line says
the parent. Callers are keyed here by that function name (offsets differ between builds);
the raw symbols are kept beside. The static audit's table (kernels/audit/callers.yaml)
maps a name back to its callers (workflows/audit_check.py).

Reading the file sends no IPI and takes no lock the workload holds for long (the
recorder's raw spinlock, for one line's copy), so it is read right around each phase;
the phase's figures are the after-minus-before differences. A line the parser does not
understand is counted, never fatal: a future format must not cost a run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from ..errors import InputError, PreflightError
from ..files import KiB, read_text
from ..rundir.sections import CheckCounts, CheckSection
from .observer import Phase

if TYPE_CHECKING:
    from .host import HostFacts
    from ..rundir import RunDir
    from .sysstate import SystemState
    from ..ui import Console

DEBUGFS = Path("/sys/kernel/debug")
FILE_NAME = "tlbprobe_table_sync"
#: 64 callers (the recorder's TLBPROBE_CALLERS) of ~150 bytes each: far below this
LIMIT = 256 * KiB
#: the recorder's function: in /proc/kallsyms when the kernel has the instrumentation
RECORDER = "tlbprobe_table_sync_one"
FORMATS = (1,)

NO_INSTRUMENTATION = ("this kernel has no tlbprobe check instrumentation: build it with repro --audit or "
                      "tlbprobe kernel build --patch "
                      "kernels/instrumentation/0001-tlbprobe-check-record-every-table-sync-and-its-flush.patch")

_HEADER = re.compile(r"# tlbprobe table-sync check, format (\d+), hook (present|absent), overflow (\d+)")
_FIELD = re.compile(r"(\w+)=(\S*)")
_COUNTS = ("calls", "skipped", "covered", "violations", "unverified")


@dataclass(frozen=True)
class SyncLine:
    """One call site's counts since boot, as the file prints them."""

    symbol: str                 # 'hpage_collapse_scan_pmd+0xa7f/0x17b0'
    calls: int
    skipped: int
    covered: int
    violations: int
    unverified: int
    last_missed: Tuple[int, ...] = ()

    @property
    def function(self) -> str:
        return function_of(self.symbol)


@dataclass(frozen=True)
class Snapshot:
    """The whole file at one moment."""

    format: Optional[int] = None
    hook: Optional[str] = None          # 'present' (the series' hook) | 'absent'
    overflow: int = 0                   # calls of callers beyond the recorder's table
    lines: Tuple[SyncLine, ...] = ()
    malformed: int = 0                  # lines not understood (counted, left out)


def function_of(symbol: str) -> str:
    """'hpage_collapse_scan_pmd+0xa7f/0x17b0' -> 'hpage_collapse_scan_pmd'; a module's
    '[mod]' suffix and a bare address are kept as they are."""
    return re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "", symbol).strip()


def _cpulist(text: str) -> Optional[Tuple[int, ...]]:
    cpus: List[int] = []
    for part in filter(None, text.split(",")):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            return None
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a or b - a > 8192:
            return None
        cpus.extend(range(a, b + 1))
    return tuple(cpus)


def parse(text: str) -> Snapshot:
    """The file's text -> a Snapshot; every line not understood is counted in
    ``malformed`` (a header of an unknown format too: its lines are then not read)."""
    fmt: Optional[int] = None
    hook: Optional[str] = None
    overflow = 0
    lines: List[SyncLine] = []
    malformed = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _HEADER.fullmatch(line)
        if m:
            fmt, hook, overflow = int(m.group(1)), m.group(2), int(m.group(3))
            continue
        if fmt not in FORMATS or line.startswith("#"):
            malformed += 1
            continue
        fields_ = dict(_FIELD.findall(line))
        try:
            counts = {k: int(fields_[k]) for k in _COUNTS}
        except (KeyError, ValueError):
            malformed += 1
            continue
        missed = _cpulist(fields_.get("last_missed", ""))
        if not fields_.get("caller") or missed is None or counts["skipped"] > counts["calls"]:
            malformed += 1
            continue
        lines.append(SyncLine(fields_["caller"], last_missed=missed, **counts))
    return Snapshot(fmt, hook, overflow, tuple(lines), malformed)


def read(path: Path) -> Snapshot:
    """The file, read bounded (tlbprobe/files.py): one InputError line for a file that is
    missing, special or huge."""
    return parse(read_text(path, "the tlbprobe table-sync check file", LIMIT))


def by_function(snap: Snapshot) -> Dict[str, Tuple[SyncLine, ...]]:
    out: Dict[str, List[SyncLine]] = {}
    for line in snap.lines:
        out.setdefault(line.function, []).append(line)
    return {f: tuple(v) for f, v in out.items()}


def delta(before: Snapshot, after: Snapshot) -> Dict[str, CheckCounts]:
    """Per function, what happened between the two snapshots (call sites of one function
    summed; the CPUs missed are the after-snapshot's last_missed of every site whose
    violations grew). Sites that did nothing are left out."""
    old = {line.symbol: line for line in before.lines}
    out: Dict[str, CheckCounts] = {}
    for line in after.lines:
        b = old.get(line.symbol)
        d = {k: getattr(line, k) - (getattr(b, k) if b else 0) for k in _COUNTS}
        if not d["calls"] and not d["violations"]:
            continue
        missed = line.last_missed if d["violations"] > 0 else ()
        prev = out.get(line.function)
        if prev is None:
            out[line.function] = CheckCounts(**d, missed_cpus=tuple(sorted(set(missed))), symbols=(line.symbol,))
        else:
            out[line.function] = CheckCounts(
                **{k: getattr(prev, k) + d[k] for k in _COUNTS},
                missed_cpus=tuple(sorted(set(prev.missed_cpus) | set(missed))),
                symbols=prev.symbols + (line.symbol,))
    return out


def add(a: Mapping[str, CheckCounts], b: Mapping[str, CheckCounts]) -> Dict[str, CheckCounts]:
    out = dict(a)
    for f, c in b.items():
        out[f] = out[f].plus(c) if f in out else c
    return out


def has_instrumentation(kallsyms: Path = Path("/proc/kallsyms")) -> Optional[bool]:
    """Whether the running kernel has the recorder (its symbol in kallsyms; names are
    listed even where kptr_restrict hides addresses); None when kallsyms cannot say."""
    try:
        with open(kallsyms, "r", errors="replace") as f:
            for line in f:
                if line.rstrip().endswith(" " + RECORDER):
                    return True
    except OSError:
        return None
    return False


class CheckObserver:
    """collect --check: the check file read around each phase (module doc). Writes
    summary.json ``check`` (rundir/sections.py CheckSection)."""

    def __init__(self, debugfs: Path = DEBUGFS, kallsyms: Path = Path("/proc/kallsyms")):
        self.debugfs = debugfs
        self.kallsyms = kallsyms
        self.path = debugfs / FILE_NAME
        self.phases: Dict[str, Dict[str, CheckCounts]] = {}
        self.unread: Dict[str, str] = {}
        self._before: Dict[str, Snapshot] = {}
        self.first: Optional[Snapshot] = None
        self.last: Optional[Snapshot] = None
        self.malformed = 0

    def preflight(self, facts: "HostFacts") -> None:
        if self.path.exists():
            return
        if os.path.ismount(self.debugfs) or has_instrumentation(self.kallsyms) is False:
            raise PreflightError(NO_INSTRUMENTATION)
        # debugfs not mounted and kallsyms says it is there (or cannot say): start() mounts it

    def start(self, rundir: "RunDir", facts: "HostFacts", console: "Console", state: "SystemState") -> None:
        if not self.path.exists() and self.debugfs.is_dir() and not os.path.ismount(self.debugfs):
            state.mount("debugfs", str(self.debugfs))  # undone on every exit path
        if not self.path.exists():
            raise PreflightError(NO_INSTRUMENTATION)
        self.first = self._read()
        console.log(f"check: {self.path} (hook {self.first.hook or 'unknown'}), read around every phase")

    def _read(self) -> Snapshot:
        snap = read(self.path)
        self.malformed += snap.malformed
        self.last = snap
        return snap

    def phase_begin(self, phase: Phase) -> None:
        try:
            self._before[phase.tag] = self._read()
        except InputError as e:
            self.unread[phase.tag] = str(e)

    def phase_end(self, phase: Phase) -> None:
        before = self._before.pop(phase.tag, None)
        if before is None:
            return
        try:
            after = self._read()
        except InputError as e:
            self.unread[phase.tag] = str(e)
            return
        self.phases[phase.tag] = delta(before, after)

    def section(self, summary: Mapping[str, Any]) -> CheckSection:
        callers: Dict[str, CheckCounts] = {}
        for per in self.phases.values():
            callers = add(callers, per)
        first, last = self.first, self.last
        return CheckSection(
            file=str(self.path), format=first.format if first else None, hook=first.hook if first else None,
            phases=dict(self.phases), callers=callers,
            overflow=(last.overflow - first.overflow) if first and last else 0,
            malformed=self.malformed, unread=dict(self.unread))

    def stop(self) -> None:
        pass
