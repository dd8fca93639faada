"""How numbers are written for a person: one place, so the collect summary, `tlbprobe
diff` and every report format round and mark them the same way.

Two styles, each with its own users:

- ``format_number``: a count as it is (``1234``, ``2.5``), ``""`` for no value. The
  per-CPU cells of diff and of the collect summary.
- ``fmt_num``: with thousands separators and a fixed number of digits (``1,234``,
  ``2.50``), ``"-"`` for no value or NaN. The report's figures; ``fmt_pct`` and
  ``fmt_p`` beside it.

And a per-CPU distribution in a few numbers (``summarize_per_cpu``), for hosts with more
CPUs than a table has columns, with the kernel's cpulist form for which CPUs hold the max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union

Number = Union[int, float]

#: Longest "max on CPU" cell before it is cut short with "+N".
_MAX_CPULIST_CHARS = 16


def format_number(value: Optional[Number]) -> str:
    """Integers as they are, floats with one decimal unless whole; None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.1f}"
    return str(value)


def fmt_num(v: Optional[float], digits: int = 0) -> str:
    """Thousands separators and ``digits`` decimals; "-" for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_pct(v: Optional[float]) -> str:
    """A signed change in percent, "+3.2%"; "-" for None."""
    return "-" if v is None else f"{v:+.1f}%"


def fmt_p(p: Optional[float]) -> str:
    """A p-value with three decimals, "<0.001" below that; "-" for None."""
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def median(values: Sequence[Number]) -> float:
    """The median of numbers (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


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


def format_cpulist(cpus: Iterable[int]) -> str:
    """The kernel's cpulist form, "0-3,8,10-11": the inverse of measure.procfs.parse_cpulist."""
    ordered = sorted(set(cpus))
    parts: List[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


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
