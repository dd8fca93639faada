"""Parse and diff the procfs files tlbprobe samples: /proc/interrupts, /proc/vmstat, /proc/meminfo.

/proc/interrupts is written by show_interrupts() (kernel/irq/proc.c) plus the
architecture's arch_show_interrupts() (arch/x86/kernel/irq.c, arch/arm64/kernel/smp.c).
Its shape, and the traps this module handles:

* The header names only the CPUs that were online when the file was read
  ("CPU0 CPU3 ..."), so a column index is not a CPU number. We key every count by
  the CPU number from the header.
* Most lines carry one count per listed CPU, then a free-text description. Some lines
  carry a single system-wide count with no description (x86 ``ERR:`` and ``MIS:``,
  arm64 ``Err:``) and a line may carry fewer counts than the header has CPUs (a CPU
  went offline while the file was being read). We take at most one integer per CPU
  and treat the rest of the line as the description; the counts of a short line
  belong to the first CPUs of the header, which is the order the kernel prints them.
* A line can also carry *more* integers than the header has CPUs (a CPU came online
  while the file was read). The extra counts are dropped with a warning so that they
  do not end up in the description and break the match by description below.
* The interesting IPI lines have different labels per architecture (x86 ``CAL``/``TLB``,
  arm64 ``IPI1``) but a stable description, so canonical names are matched by
  description, never by label.
* The per-CPU counters are ``unsigned int`` in the kernel (kstat_irqs, x86 irq_stat,
  arm64 irq_desc_kstat_cpu()), printed with ``%u``: on a busy, long-running host they
  wrap at 2^32. A decrease from a value at or above 2^31 is taken as one wrap; any other
  decrease is kept as a negative delta. Both are reported as warnings.
* A copy cut short (``head -c``, a full disk) ends without a newline; its last line
  is kept only when it is visibly complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .. import arch
from ..errors import InputError
from ..ui.numbers import format_cpulist

#: Labels of lines that carry one system-wide count and no description: x86 ``ERR``
#: (irq_err_count) and ``MIS`` (irq_mis_count) in arch/x86/kernel/irq.c, arm64/arm ``Err``.
SINGLE_VALUE_LABELS = frozenset({"ERR", "MIS", "Err"})

#: The kernel's per-CPU interrupt counters are 32-bit unsigned.
COUNTER_MODULUS = 1 << 32

_HEADER_CPU = re.compile(r"CPU(\d+)")

#: At most this many labels or CPUs are named in one aggregated warning.
_MAX_NAMED = 8


def canonical_name(description: str) -> Optional[str]:
    """The canonical name ("function_call", "tlb_shootdown") of an IPI line tlbprobe
    reasons about, from its description, case and spacing ignored; None for other lines.
    Each architecture's record names its lines (tlbprobe/arch/: x86 "CAL: Function call
    interrupts" and "TLB: TLB shootdowns"; arm64 "IPI1: ... Function call interrupts" and
    no TLB-shootdown line, since it broadcasts TLBI in hardware). Every record's lines are
    recognised, whatever machine reads the file: `tlbprobe diff` compares copies made on
    others."""
    return arch.ipi_descriptions().get(" ".join(description.lower().split()))


@dataclass(frozen=True)
class IrqLine:
    """One line of /proc/interrupts.

    ``per_cpu`` maps CPU number to count; it is empty for single-value lines, whose
    count is in ``single``.
    """

    label: str
    per_cpu: Dict[int, int]
    description: str
    single: Optional[int] = None

    @property
    def total(self) -> int:
        return self.single if self.single is not None else sum(self.per_cpu.values())

    @property
    def canonical(self) -> Optional[str]:
        return canonical_name(self.description)


@dataclass(frozen=True)
class Interrupts:
    """A parsed /proc/interrupts snapshot.

    ``warnings`` lists what the parser had to guess or drop (a truncated last line,
    extra counts, a duplicate label), so a caller can show it next to its results.
    """

    cpus: Tuple[int, ...]
    lines: Dict[str, IrqLine]
    warnings: Tuple[str, ...] = ()
    #: the copy ends in the middle of a line (no final newline, the last line left out)
    cut_short: bool = False

    def by_canonical(self, name: str) -> Optional[IrqLine]:
        for line in self.lines.values():
            if line.canonical == name:
                return line
        return None


def parse_interrupts(text: str, source: str = "/proc/interrupts") -> Interrupts:
    """Parse the text of /proc/interrupts. Raises InputError on anything else."""
    rows = text.splitlines()
    unterminated = bool(text) and not text.endswith(("\n", "\r"))
    first = next((i for i, r in enumerate(rows) if r.strip()), None)
    if first is None:
        raise InputError(f"{source}: empty, not a copy of /proc/interrupts")
    cpus = _parse_header(rows[first], source)
    lines: Dict[str, IrqLine] = {}
    warnings: List[str] = []
    extra: List[str] = []
    cut = False
    last = len(rows) - 1
    for index in range(first + 1, len(rows)):
        row = rows[index]
        if not row.strip():
            continue
        if unterminated and index == last:
            line = _parse_cut_line(row, cpus, source, index + 1, warnings)
            cut = line is None
        else:
            line = _parse_line(row, cpus, source, index + 1, extra)
        if line is None:
            continue
        if line.label in lines:
            warnings.append(f"{source}:{index + 1}: duplicate label {line.label!r}; kept the first")
            continue
        lines[line.label] = line
    if extra:
        warnings.append(
            f"{source}: {_names(extra)}: more counts than CPUs in the header "
            "(a CPU came online while the file was read?); extra counts left out"
        )
    if not lines:
        raise InputError(f"{source}: no interrupt lines after the header, not a copy of /proc/interrupts")
    return Interrupts(cpus, lines, tuple(warnings), cut_short=cut)


def incomplete_copy(first: Interrupts, second: Interrupts, names: Tuple[str, str]) -> Optional[str]:
    """Why one of two copies of /proc/interrupts is incomplete, or None: cut in the middle
    of a line; ending where the other goes on (the lines after the last line both have,
    all missing: a copy cut at a line boundary, e.g. by a full disk); or without the
    function-call or TLB-shootdown line the other has (x86 prints CAL and TLB near the end,
    arch/x86/kernel/irq.c arch_show_interrupts(), so a cut copy loses them first). A line
    missing in the middle (an IRQ freed between the copies) is not a cut: it stays a
    warning of diff_interrupts."""
    copies = ((first, names[0], second), (second, names[1], first))
    for copy, name, other in copies:
        if copy.cut_short:
            return (f"{name}: cut short (its last line has no newline): an incomplete copy of /proc/interrupts; "
                    f"copy the file again")
    for copy, name, other in copies:
        labels = list(other.lines)
        common = [i for i, label in enumerate(labels) if label in copy.lines]
        tail = labels[common[-1] + 1:] if common else []
        if tail and list(copy.lines)[-1] == labels[common[-1]]:
            shown = ", ".join(tail[:_MAX_NAMED]) + (", ..." if len(tail) > _MAX_NAMED else "")
            return (f"{name}: ends after line {labels[common[-1]]!r} where the other copy goes on with "
                    f"{len(tail)} line(s) ({shown}): an incomplete copy of /proc/interrupts; copy the file again")
        for canonical in ("function_call", "tlb_shootdown"):
            there = other.by_canonical(canonical)
            if there is not None and copy.by_canonical(canonical) is None:
                return (f"{name}: no {there.label} line ({there.description}), which the other copy has: an "
                        f"incomplete copy of /proc/interrupts, or one of another machine")
    return None


def _parse_header(row: str, source: str) -> Tuple[int, ...]:
    """CPU numbers from the header ("CPU0 CPU2 ..."): the columns are online CPUs, not 0..n-1."""
    tokens = row.split()
    matches = [_HEADER_CPU.fullmatch(tok) for tok in tokens]
    if not tokens or not all(matches):
        raise InputError(
            f"{source}: first line is not a /proc/interrupts header (expected 'CPU0 CPU1 ...', "
            f"got {row.strip()[:60]!r})"
        )
    cpus = tuple(int(m.group(1)) for m in matches if m)
    if len(set(cpus)) != len(cpus):
        raise InputError(f"{source}: header names a CPU twice: {row.strip()[:60]!r}")
    return cpus


def _parse_line(row: str, cpus: Sequence[int], source: str, lineno: int, extra: List[str]) -> IrqLine:
    """One interrupt line. ``extra`` collects labels that had more counts than CPUs."""
    label, sep, rest = row.partition(":")
    label = label.strip()
    if not sep or not label or len(label.split()) != 1:
        raise InputError(f"{source}:{lineno}: not an interrupt line: {row.strip()[:60]!r}")
    tokens = rest.split()
    ncounts = _leading_counts(tokens, len(cpus))
    if ncounts == 0:
        raise InputError(f"{source}:{lineno}: no counts on line {label!r}: {row.strip()[:60]!r}")
    counts = list(map(int, tokens[:ncounts]))
    skip = ncounts
    while skip < len(tokens) and _is_count(tokens[skip]):
        skip += 1
    if skip > ncounts:
        extra.append(label)
    description = " ".join(tokens[skip:])
    if ncounts == 1 and not description and (label in SINGLE_VALUE_LABELS or len(cpus) > 1):
        return IrqLine(label, {}, description, single=counts[0])
    return IrqLine(label, dict(zip(cpus, counts)), description)


def _parse_cut_line(
    row: str, cpus: Sequence[int], source: str, lineno: int, warnings: List[str]
) -> Optional[IrqLine]:
    """The last line of a file with no final newline: keep it only if nothing can be missing.

    A line is visibly complete when every CPU has a count and a description follows
    (a description cannot cut a number short). Anything else may be a number or a label
    cut in half, so it is left out rather than trusted.
    """
    try:
        line = _parse_line(row, cpus, source, lineno, [])
    except InputError:
        line = None
    if line is not None and line.single is None and len(line.per_cpu) == len(cpus) and line.description:
        return line
    warnings.append(
        f"{source}:{lineno}: last line has no newline and looks cut short (truncated copy?); "
        f"left out: {row.strip()[:40]!r}"
    )
    return None


def _is_count(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _leading_counts(tokens: Sequence[str], limit: int) -> int:
    """How many of the first ``limit`` tokens are counts, stopping at the first that is not.

    The common case (every CPU has a count) is checked with one C-level call on the
    joined tokens: this function is most of the cost of parsing with hundreds of CPUs.
    """
    head = tokens[:limit]
    joined = "".join(head)
    if joined.isascii() and joined.isdigit():
        return len(head)
    for i, tok in enumerate(head):
        if not _is_count(tok):
            return i
    return len(head)


def format_interrupts(snapshot: Interrupts) -> str:
    """Write a snapshot back in the kernel's layout (``%10u`` columns), e.g. for fakes in tests."""
    out = ["     " + "".join(f"{'CPU%d' % c:<11}" for c in snapshot.cpus)]
    width = max([3] + [len(label) for label in snapshot.lines])
    for line in snapshot.lines.values():
        if line.single is not None:
            out.append(f"{line.label:>{width}}: {line.single:10d}")
            continue
        counts = "".join(f"{line.per_cpu[c]:10d} " for c in snapshot.cpus if c in line.per_cpu)
        out.append(f"{line.label:>{width}}: {counts}  {line.description}")
    return "\n".join(out) + "\n"


def parse_keyvalue(text: str, source: str) -> Dict[str, int]:
    """Parse /proc/vmstat ("name value") or /proc/meminfo ("Name: value kB", returned in bytes)."""
    out: Dict[str, int] = {}
    for lineno, row in enumerate(text.splitlines(), start=1):
        parts = row.replace(":", " ").split()
        if not parts:
            continue
        try:
            value = int(parts[1])
        except (IndexError, ValueError):
            raise InputError(f"{source}:{lineno}: expected 'name value', got {row.strip()[:60]!r}") from None
        if len(parts) > 2 and parts[2] == "kB":
            value *= 1024
        out[parts[0]] = value
    if not out:
        raise InputError(f"{source}: empty, expected 'name value' lines")
    return out


def read_text(path: str) -> str:
    """The whole file as text. Raises OSError, which callers probing optional files catch."""
    with open(path) as f:
        return f.read()


def read_input_text(path: str, what: str = "a /proc/interrupts copy") -> str:
    """A file the user named: unreadable, binary, not a regular file or larger than a
    snapshot can be (tlbprobe/files.py) is an InputError (one line), not a traceback."""
    from .. import files

    if str(path).startswith("/proc/"):  # the kernel's own file: stat says size 0, a read is bounded
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    return files.read_text(path, what, files.cap("snapshot"))


def read_interrupts(path: str = "/proc/interrupts") -> Interrupts:
    """Read and parse a /proc/interrupts copy; any problem with the file is an InputError."""
    return parse_interrupts(read_input_text(path), path)


def read_vmstat(path: str = "/proc/vmstat") -> Dict[str, int]:
    return parse_keyvalue(read_text(path), path)


def read_meminfo(path: str = "/proc/meminfo") -> Dict[str, int]:
    return parse_keyvalue(read_text(path), path)


@dataclass
class LineDelta:
    """The change of one interrupt line between two snapshots."""

    label: str
    description: str
    canonical: Optional[str]
    per_cpu: Dict[int, int]
    single: Optional[int] = None

    @property
    def total(self) -> int:
        return self.single if self.single is not None else sum(self.per_cpu.values())

    @property
    def changed(self) -> bool:
        """True when any count moved (a total of zero can hide +n on one CPU, -n on another)."""
        if self.single is not None:
            return self.single != 0
        return any(self.per_cpu.values())


@dataclass
class InterruptsDiff:
    """Per-CPU deltas between two snapshots, with the warnings a careful reader needs."""

    cpus: Tuple[int, ...]
    lines: Dict[str, LineDelta]
    warnings: List[str] = field(default_factory=list)

    def canonical(self, name: str) -> Optional[LineDelta]:
        for line in self.lines.values():
            if line.canonical == name:
                return line
        return None

    def canonical_per_cpu(self, name: str) -> Dict[int, int]:
        """Per-CPU deltas of a canonical line; zeros when the architecture has no such line."""
        line = self.canonical(name)
        return {cpu: (line.per_cpu.get(cpu, 0) if line else 0) for cpu in self.cpus}


@dataclass
class _Anomalies:
    """What went wrong on one line, gathered so that each kind is one warning, not one per CPU."""

    backwards: List[Tuple[int, int, int]] = field(default_factory=list)
    wrapped: List[int] = field(default_factory=list)
    missing: List[int] = field(default_factory=list)


def diff_interrupts(before: Interrupts, after: Interrupts) -> InterruptsDiff:
    """Deltas per line and CPU. CPUs seen in only one snapshot are left out, with a warning."""
    warnings: List[str] = []
    after_cpus = set(after.cpus)
    before_cpus = set(before.cpus)
    gone = sorted(before_cpus - after_cpus)
    came = sorted(after_cpus - before_cpus)
    if gone:
        warnings.append(f"CPU {format_cpulist(gone)} went offline between the snapshots; left out")
    if came:
        warnings.append(f"CPU {format_cpulist(came)} came online between the snapshots; left out")
    cpus = tuple(c for c in before.cpus if c in after_cpus)
    lines: Dict[str, LineDelta] = {}
    only_after = []
    for label, a in after.lines.items():
        b = before.lines.get(label)
        if b is None:
            only_after.append(label)
            continue
        if a.description != b.description:
            warnings.append(
                f"{label}: description changed ({b.description!r} -> {a.description!r}); "
                "another device may own this IRQ now"
            )
        lines[label] = _diff_line(b, a, cpus, not (gone or came), warnings)
    only_before = [label for label in before.lines if label not in after.lines]
    if only_before:
        warnings.append(f"{_names(only_before)}: only in the first snapshot; left out")
    if only_after:
        warnings.append(f"{_names(only_after)}: only in the second snapshot; left out")
    return InterruptsDiff(cpus, lines, warnings)


def _diff_line(
    b: IrqLine, a: IrqLine, cpus: Sequence[int], all_cpus_in_both: bool, warnings: List[str]
) -> LineDelta:
    """The delta of one line present in both snapshots; anomalies are appended to ``warnings``.

    ``all_cpus_in_both`` says both headers list exactly ``cpus``: then a line with one
    count per CPU in both snapshots has every CPU of ``cpus`` as a key.
    """
    if a.single is not None or b.single is not None:
        return _diff_single(b, a, warnings)
    if len(a.per_cpu) == len(b.per_cpu) == len(cpus) and all_cpus_in_both:
        # Fast path (most lines, most of the time): every CPU in both, nothing went down.
        per_cpu = {cpu: a.per_cpu[cpu] - b.per_cpu[cpu] for cpu in cpus}
        if min(per_cpu.values(), default=0) >= 0:
            return LineDelta(a.label, a.description, a.canonical, per_cpu)
    seen = _Anomalies()
    per_cpu = {}
    for cpu in cpus:
        old, new = b.per_cpu.get(cpu), a.per_cpu.get(cpu)
        if old is None or new is None:
            if old is not None or new is not None:
                seen.missing.append(cpu)
            continue
        delta = _counter_delta(old, new)
        if delta < 0:
            seen.backwards.append((cpu, old, new))
        elif new < old:
            seen.wrapped.append(cpu)
        per_cpu[cpu] = delta
    warnings.extend(_anomaly_warnings(a.label, seen))
    return LineDelta(a.label, a.description, a.canonical, per_cpu)


def _diff_single(b: IrqLine, a: IrqLine, warnings: List[str]) -> LineDelta:
    """A single-value line (ERR, MIS): the delta of the totals."""
    label = a.label
    if (a.single is None) != (b.single is None):
        warnings.append(f"{label}: one count in one snapshot, per-CPU counts in the other; compared totals")
    delta = _counter_delta(b.total, a.total)
    if delta < 0:
        warnings.append(f"{label}: counter went backwards ({b.total} -> {a.total})")
    elif a.total < b.total:
        warnings.append(f"{label}: counter wrapped past 2^32 ({b.total} -> {a.total}); assumed one wrap")
    return LineDelta(label, a.description, a.canonical, {}, single=delta)


def _counter_delta(old: int, new: int) -> int:
    """new - old for a 32-bit counter: a drop from the upper half of the range is one wrap."""
    if new >= old or old >= COUNTER_MODULUS or old < COUNTER_MODULUS // 2:
        return new - old
    return new + COUNTER_MODULUS - old


def _anomaly_warnings(label: str, seen: _Anomalies) -> List[str]:
    out = []
    if seen.backwards:
        cpu, old, new = seen.backwards[0]
        cpus = format_cpulist(c for c, _, _ in seen.backwards)
        out.append(
            f"{label}: counter went backwards on CPU {cpus} (CPU{cpu}: {old} -> {new}); "
            "files swapped, or taken across a reboot?"
        )
    if seen.wrapped:
        out.append(f"{label}: counter wrapped past 2^32 on CPU {format_cpulist(seen.wrapped)}; assumed one wrap")
    if seen.missing:
        out.append(
            f"{label}: no count for CPU {format_cpulist(seen.missing)} in one snapshot "
            "(line with fewer columns); left out"
        )
    return out


def diff_keyvalue(before: Mapping[str, int], after: Mapping[str, int]) -> Dict[str, int]:
    """Deltas of counters present in both snapshots."""
    return {k: after[k] - before[k] for k in after if k in before}


def _names(labels: Sequence[str]) -> str:
    """A short list of labels for a warning: the first few, then how many more."""
    shown = ", ".join(labels[:_MAX_NAMED])
    more = len(labels) - _MAX_NAMED
    return f"{shown} (+{more} more)" if more > 0 else shown


def parse_cpulist(text: str) -> List[int]:
    """Parse a kernel cpulist such as "0-3,8,10-11" (/sys/devices/system/cpu/online)."""
    cpus: List[int] = []
    text = text.strip()
    if not text:
        return cpus
    for part in text.split(","):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise InputError(f"not a CPU list: {text!r}") from None
        if first < 0 or last < first:
            raise InputError(f"not a CPU list: {text!r} (range {part.strip()!r})")
        cpus.extend(range(first, last + 1))
    return cpus
