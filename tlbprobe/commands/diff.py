"""`tlbprobe diff BEFORE AFTER`: per-CPU deltas between two saved copies of /proc/interrupts.

The quick, by-hand form of what `collect` does: save the file, run something, save it
again, and see which CPUs received which interrupts. Parsing and the delta rules
(offline CPUs, short lines, counters that wrap or go backwards) live in
tlbprobe.measure.procfs; this module only reads the two files, prints warnings and renders.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Sequence

from ..errors import InputError
from ..measure.procfs import (
    Interrupts,
    InterruptsDiff,
    LineDelta,
    diff_interrupts,
    format_cpulist,
    incomplete_copy,
    parse_interrupts,
    read_interrupts,
)
from ..ui.tables import MAX_CPU_COLUMNS, per_cpu_cells, per_cpu_headers, render_table

DESCRIPTION = """\
Show the per-CPU change of every /proc/interrupts line between two saved copies:

  cat /proc/interrupts > before; <run something>; cat /proc/interrupts > after
  tlbprobe diff before after

Each line keeps its raw label (CAL, TLB, IPI1, 24, ...). The two lines tlbprobe
reasons about also get a canonical name, matched by description so that it works on
every architecture: function_call ("Function call interrupts": x86 CAL, arm64 IPI1)
and tlb_shootdown ("TLB shootdowns": x86 TLB; arm64 has none).
"""

EPILOG = f"""\
text output: the lines whose count changed, with the total and one column per CPU.
With more than {MAX_CPU_COLUMNS} CPUs the per-CPU columns are replaced by min, median and
max, the CPUs holding the max, and how many CPUs saw any interrupt.

json output: every line, changed or not, one line per key:
  {{"CAL": {{"total": 7, "per_cpu": {{"0": 6, "1": 1}}, "description": "Function call interrupts"}},
   ...,
   "function_call": {{...same object as CAL...}}, "tlb_shootdown": {{...}}}}
  Lines with one system-wide count (ERR, MIS) have an empty per_cpu. A canonical key
  is present only when the file has its line.

CPUs online in only one copy are left out, lines in only one copy are left out, and a
counter that went backwards (or wrapped at 2^32) is reported: all as warnings on stderr.
A copy that is cut short (its last line unfinished, or ending where the other goes on)
or lacks the function-call or TLB-shootdown line the other has is refused: its deltas
would be wrong without a sign of it. Each file must be a regular file of at most 16 MiB.
Exit status: 0 on success, 2 when a file is missing, incomplete or is not a copy of
/proc/interrupts.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="per-CPU deltas between two saved copies of /proc/interrupts",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("before", metavar="BEFORE", help="the copy taken first ('-' reads standard input)")
    parser.add_argument("after", metavar="AFTER", help="the copy taken second ('-' reads standard input)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument(
        "--all", action="store_true", help="text: also show lines that did not change (json always has every line)"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.before == "-" and args.after == "-":
        raise InputError("only one of BEFORE and AFTER can be '-' (standard input)")
    before = _load(args.before)
    after = _load(args.after)
    why = incomplete_copy(before, after, ("BEFORE " + _name(args.before), "AFTER " + _name(args.after)))
    if why:
        raise InputError(why)
    diff = diff_interrupts(before, after)
    for warning in [*before.warnings, *after.warnings, *diff.warnings]:
        print(f"tlbprobe: warning: {warning}", file=sys.stderr)
    if args.format == "json":
        print(render_json(diff))
    else:
        print(render_text(diff, show_all=args.all))
    return 0


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def _load(path: str) -> Interrupts:
    """A copy of /proc/interrupts: a regular file within the snapshot cap, or standard
    input read no further than that cap (tlbprobe/files.py)."""
    if path == "-":
        from .. import files

        return parse_interrupts(files.read_stream(sys.stdin, "<stdin>", "a /proc/interrupts copy",
                                                  files.cap("snapshot")), "<stdin>")
    return read_interrupts(path)


def line_json(line: LineDelta) -> Dict[str, Any]:
    """One line as {"total", "per_cpu" (CPU numbers as strings, as JSON keys must be), "description"}."""
    return {
        "total": line.total,
        "per_cpu": {str(cpu): n for cpu, n in sorted(line.per_cpu.items())},
        "description": line.description,
    }


def to_json(diff: InterruptsDiff) -> Dict[str, Dict[str, Any]]:
    """Every line by raw label, then the canonical names as extra keys with the same object."""
    out = {label: line_json(line) for label, line in diff.lines.items()}
    for line in diff.lines.values():
        if line.canonical and line.canonical not in out:
            out[line.canonical] = line_json(line)
    return out


def render_json(diff: InterruptsDiff) -> str:
    """to_json() with one key per text line: greppable, and 256 CPUs do not make 256 lines."""
    items = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in to_json(diff).items()]
    return "{\n" + ",\n".join(items) + "\n}"


def render_text(diff: InterruptsDiff, show_all: bool = False) -> str:
    """The table a person reads: changed lines (or all), total and per-CPU columns."""
    shown = [line for line in diff.lines.values() if show_all or line.changed]
    changed = sum(1 for line in diff.lines.values() if line.changed)
    cpus = diff.cpus
    heading = (
        f"CPUs in both copies: {format_cpulist(cpus) or 'none'} ({len(cpus)}); "
        f"{changed} of {len(diff.lines)} lines changed"
    )
    if not show_all and changed < len(diff.lines):
        heading += " (--all shows the rest)"
    if not shown:
        return heading
    headers = ["label", "total", *per_cpu_headers(cpus), "description"]
    rows = [_row(line, cpus) for line in shown]
    return heading + "\n\n" + render_table(headers, rows)


def _row(line: LineDelta, cpus: Sequence[int]) -> List[str]:
    """label, total, per-CPU cells, description with the canonical name in brackets."""
    description = line.description
    if line.canonical:
        description = f"{description} [{line.canonical}]".strip()
    return [line.label, str(line.total), *per_cpu_cells(line.per_cpu, cpus), description]
