"""How rows are laid out in columns for the terminal and for plain-text mail.

- ``table_lines`` / ``render_table``: columns two spaces apart, each left- or
  right-aligned, trailing spaces stripped (the report's text and LKML tables, diff,
  benchmarks).
- Per-CPU figures that stay readable on big hosts: one column per CPU up to
  MAX_CPU_COLUMNS, and beyond that a fixed set of summary columns (min / median / max,
  which CPUs hold the max, how many CPUs are non-zero), because 256 columns of numbers
  are not something a person reads or pastes into a mail.
- ``wrap_command``: a shell command wrapped at a width with " \\" continuations.

How each number in a cell is written is numbers.py's business.
"""

from __future__ import annotations

import shlex
from typing import List, Mapping, Optional, Sequence

from .numbers import format_number, short_cpulist, summarize_per_cpu

#: Up to this many CPUs get one column each; more are summarised.
MAX_CPU_COLUMNS = 16

#: The summary columns used instead of per-CPU columns on hosts with many CPUs.
SUMMARY_HEADERS = ("min", "median", "max", "max on CPU", "non-zero")


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


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> List[str]:
    """A table's lines, two spaces between columns; ``align`` has one 'l' or 'r' per column.

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
    return out


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> str:
    """table_lines() as one string."""
    return "\n".join(table_lines(headers, rows, align))


def wrap_command(cmd: str, width: int, first_prefix: str, cont_prefix: str) -> List[str]:
    """Wrap a shell command at word boundaries with ' \\' continuations (quoting kept)."""
    tokens = [shlex.quote(w) for w in shlex.split(cmd)]
    words: List[str] = []
    for tok in tokens:  # keep "--option value" on one line
        if words and words[-1].startswith("-") and " " not in words[-1] and not tok.startswith("-"):
            words[-1] += " " + tok
        else:
            words.append(tok)
    lines: List[str] = []
    cur = first_prefix
    started = False
    for w in words:
        candidate = cur + (" " if started else "") + w
        if started and len(candidate) + 2 > width:
            lines.append(cur + " \\")
            cur = cont_prefix + w
        else:
            cur = candidate
        started = True
    lines.append(cur)
    return lines
