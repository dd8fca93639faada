"""Plain-text tables for the terminal, and per-CPU figures that stay readable on big hosts.

Every command that prints per-CPU counts (diff, the collect summary, report) shares
these helpers so that a 2-CPU guest and a 256-CPU server print the same kind of table:
one column per CPU up to MAX_CPU_COLUMNS, and beyond that a fixed set of summary
columns (min / median / max, which CPUs hold the max, how many CPUs are non-zero),
because 256 columns of numbers are not something a person reads or pastes into a mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from .measure.procfs import format_cpulist

#: Up to this many CPUs get one column each; more are summarised.
MAX_CPU_COLUMNS = 16

#: The summary columns used instead of per-CPU columns on hosts with many CPUs.
SUMMARY_HEADERS = ("min", "median", "max", "max on CPU", "non-zero")

#: Longest "max on CPU" cell before it is cut short with "+N".
_MAX_CPULIST_CHARS = 16

Number = Union[int, float]


@dataclass(frozen=True)
class PerCpuSummary:
    """The shape of a per-CPU distribution in a few numbers."""

    cpus: int
    nonzero: int
    min: int
    median: float
    max: int
    max_cpus: Tuple[int, ...]


def summarize_per_cpu(per_cpu: Mapping[int, int]) -> Optional[PerCpuSummary]:
    """min / median / max of a per-CPU dict and where the max is; None when there are no CPUs."""
    if not per_cpu:
        return None
    values = sorted(per_cpu.values())
    top = values[-1]
    return PerCpuSummary(
        cpus=len(values),
        nonzero=sum(1 for v in values if v),
        min=values[0],
        median=median(values),
        max=top,
        max_cpus=tuple(sorted(c for c, v in per_cpu.items() if v == top)),
    )


def median(values: Sequence[Number]) -> float:
    """The median of numbers (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def format_number(value: Optional[Number]) -> str:
    """Integers as they are, floats with one decimal unless whole; None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.1f}"
    return str(value)


def short_cpulist(cpus: Sequence[int], limit: int = _MAX_CPULIST_CHARS) -> str:
    """A cpulist cut to ``limit`` characters (at least one CPU shown), with "+N" for the rest."""
    full = format_cpulist(cpus)
    if len(full) <= limit:
        return full
    reserve = len(f",+{len(cpus)}")
    shown: List[int] = []
    for cpu in sorted(cpus):
        if shown and len(format_cpulist(shown + [cpu])) + reserve > limit:
            break
        shown.append(cpu)
    return f"{format_cpulist(shown)},+{len(cpus) - len(shown)}"


def per_cpu_headers(cpus: Sequence[int], max_columns: int = MAX_CPU_COLUMNS) -> List[str]:
    """Column titles for per-CPU figures: CPU0, CPU3, ... or the summary titles."""
    if len(cpus) > max_columns:
        return list(SUMMARY_HEADERS)
    return [f"CPU{c}" for c in cpus]


def per_cpu_cells(
    per_cpu: Mapping[int, int], cpus: Sequence[int], max_columns: int = MAX_CPU_COLUMNS
) -> List[str]:
    """Cells matching per_cpu_headers(cpus): one per CPU ("-" when it has no count), or a summary.

    An empty ``per_cpu`` (a line with one system-wide count) gives empty cells.
    """
    if len(cpus) <= max_columns:
        if not per_cpu:
            return [""] * len(cpus)
        return [format_number(per_cpu[c]) if c in per_cpu else "-" for c in cpus]
    summary = summarize_per_cpu({c: per_cpu[c] for c in cpus if c in per_cpu})
    if summary is None:
        return [""] * len(SUMMARY_HEADERS)
    return [
        format_number(summary.min),
        format_number(summary.median),
        format_number(summary.max),
        short_cpulist(summary.max_cpus),
        f"{summary.nonzero}/{summary.cpus}",
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> str:
    """A table with two spaces between columns; ``align`` has one 'l' or 'r' per column.

    By default the first and last columns are left-aligned (label, description) and the
    others right-aligned (numbers). Trailing spaces are stripped so the text pastes cleanly.
    """
    ncols = len(headers)
    if align is None:
        align = "l" + "r" * max(ncols - 2, 0) + ("l" if ncols > 1 else "")
    if len(align) != ncols or any(len(r) != ncols for r in rows):
        raise ValueError("every row and the alignment need one entry per header")
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    out = []
    for row in [list(headers), *rows]:
        cells = [
            str(cell).ljust(w) if a == "l" else str(cell).rjust(w) for cell, w, a in zip(row, widths, align)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
