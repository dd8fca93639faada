"""Plain text for a cover letter's "Performance numbers": at most 72 columns, no tabs.

One line each for the host, the kernels, the workload and how to reproduce it, then one
table per comparison (the first run against each other run) so the table stays within
72 columns whatever the number of runs, then the model's verdict and a legend.
"""

from __future__ import annotations

import textwrap
from typing import List, Sequence

from ..ui.numbers import fmt_num, fmt_pct
from ..ui.tables import table_lines, wrap_command
from ..vocab import SYNC_FUNCTION, TIME
from . import Report, views
from .analyze import RunAnalysis
from .compare import Comparison, figures_for
from .figures import emulated
from .rows import (
    expected_per_repeat,
    fmt_mean_ci,
    prov,
    provenance_warnings,
    reproduce_commands,
    reproduce_notes,
    short_source,
    shown_sync,
    workload_line,
)

WIDTH = 72
KEY = 11  # width of "Reproduce: "
#: what mail readers and `git send-email` show as themselves: the format is ASCII only
ASCII = {"±": "+-", "−": "-", "–": "-", "—": "-", "µ": "u", "×": "x", "…": "...", "≥": ">=", "≤": "<=",
         "’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " "}


def ascii_text(text: str) -> str:
    """The text with each non-ASCII character spelled in ASCII (ASCII above, else '?')."""
    if text.isascii():
        return text
    out = "".join(ASCII.get(ch, ch) for ch in text)
    return out.encode("ascii", "replace").decode("ascii")


def render(report: Report) -> str:
    runs = report.runs
    lines: List[str] = ["Performance numbers (tlbprobe %s)" % report.tool_version, ""]
    lines += _field("Host:", _hosts(runs))
    lines += _field("Kernels:", _kernels(runs))
    lines += _field("Flush:", _flush(runs))
    incomplete = [a for a in runs if not a.run.complete]
    if incomplete:
        lines += _field("Status:", [f"{a.label} INCOMPLETE ({a.run.status}, {len(a.run.repeats)} of "
                                    f"{a.run.summary.get('repeats_planned', '?')} repeats)" for a in incomplete])
    lines += _field("Workload:", _unique([workload_line(a) for a in runs]))
    for label, field_lines in views.fields(runs):  # the observers' (collect --cost, --victim): report/views/
        lines += _field(f"{label.capitalize()}:", field_lines)
    lines += _reproduce(report)
    warned = list(report.warnings) + provenance_warnings(runs)
    if warned:
        lines.append("")
        for w in warned:
            lines += textwrap.wrap(f"WARNING: {w}", WIDTH, subsequent_indent="  ")
    for c in report.comparisons:
        lines.append("")
        lines += _comparison(c)
    if not report.comparisons:
        lines.append("")
        lines += _single(runs[0])
    lines.append("")
    lines += _model(runs)
    lines.append("")
    latency_note = ("Latency: cyclictest percentiles pooled over all repeats, the CPU running the operation (op CPU) and "
                    "the worst other CPU; no test. " if any(c.latency for c in report.comparisons) else "")
    lines += textwrap.wrap(
        latency_note +
        (LEGEND + " " if report.comparisons else "Per repeat: the mean over the repeats, +-95% CI with 3 "
         "or more. ") +
        "Sync IPIs are CAL minus "
        "TLB on the CPUs other than the one running the workload, less the idle background; "
        "traced sync calls count tlb_remove_table_smp_sync for those CPUs "
        "with tracefs, so they do not depend on the background.",
        WIDTH,
    )
    return "\n".join(_fit(lines)) + "\n"


def _field(key: str, values: Sequence[str]) -> List[str]:
    out: List[str] = []
    for i, v in enumerate(values):
        wrapped = textwrap.wrap(v, WIDTH - KEY, subsequent_indent="  ") or [""]
        for j, w in enumerate(wrapped):
            prefix = key.ljust(KEY) if i == 0 and j == 0 else " " * KEY
            out.append(prefix + w)
    return out


def _unique(values: Sequence[str]) -> List[str]:
    seen: List[str] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _hosts(runs: Sequence[RunAnalysis]) -> List[str]:
    """Where the runs were measured (report/provenance.py), once when they agree."""
    one = [prov(a).where() for a in runs]
    if len(set(one)) == 1:
        return [prov(runs[0]).where(plural=len(runs) > 1)]
    return [f"{a.label} {h}" for a, h in zip(runs, one)]


def _kernels(runs: Sequence[RunAnalysis]) -> List[str]:
    """Each run's kernel: release, variant (and where the report learned it), cache key,
    patch series with the patches' subjects below it."""
    out: List[str] = []
    for a in runs:
        p = prov(a)
        how = f" ({short_source(a.variant.source)})" if a.variant.value else ""
        out.append(f"{a.label} " + p.kernel(a.variant.value).replace(f" {a.variant.value}", f" {a.variant.value}{how}", 1)
                   if a.variant.value else f"{a.label} {p.kernel(None)}")
        out += [f"  {s}" for s in p.patch_lines()]
    return out


def _flush(runs: Sequence[RunAnalysis]) -> List[str]:
    modes = [f"{a.flush.value} ({short_source(a.flush.source)})" for a in runs]
    if len(set(modes)) == 1:
        return [modes[0]]
    return [f"{a.label} {m}" for a, m in zip(runs, modes)]


def out_names(runs) -> List[str]:
    """A distinct --out name per run for the reproduce lines: the run directory's name, or
    where two share it (repro writes baseline/NAME and patched/NAME) parent-name."""
    names = [a.run.name for a in runs]
    if len(set(names)) == len(names):
        return names
    longer = [f"{a.run.path.resolve().parent.name}-{a.run.name}" for a in runs]
    if len(set(longer)) == len(longer):
        return longer
    return [f"{a.run.name}-{a.label}" for a in runs]


def _repro_place(a) -> str:
    """Where `repro --out DIR` puts this run: DIR/<variant>/<job>. A run still in its
    repro directory names its job; one copied elsewhere (analysis/runs) says JOB."""
    parent = a.run.path.resolve().parent.name
    if parent == a.variant.value:
        return f"DIR/{parent}/{a.run.name}"
    return f"DIR/{a.variant.value}/JOB"


def _reproduce(report: Report) -> List[str]:
    """The command(s) that made the runs (the repro or qemu collect line for guest runs,
    report/provenance.py), how that was learned, then the report command; 72 columns."""
    runs = report.runs
    cmds = reproduce_commands(runs)
    pad = " " * KEY
    guest = any(prov(a).guest_of_qemu for a in runs)
    if not cmds:
        out = ["Reproduce:".ljust(KEY) + "(run.yaml records no command)"]
    elif len(cmds) == 1:
        who = ("as root:" if guest else "on each kernel, as root:" if len(runs) > 1 else "as root:")
        out = ["Reproduce:".ljust(KEY) + who]
        out += wrap_command(cmds[0] + " --out DIR", WIDTH, pad + "  ", pad + "    ")
    else:
        out = ["Reproduce:".ljust(KEY) + "as root, one per kernel:"]
        names = out_names(runs)
        seen = []
        for name, a in zip(names, runs):
            cmd = prov(a).reproduce
            if not cmd or cmd in seen:
                continue
            seen.append(cmd)
            out += wrap_command(cmd + f" --out {name}", WIDTH, pad + "  ", pad + "    ")
    for note in reproduce_notes(runs):
        if note.startswith("as root") or note.startswith("as recorded"):
            continue
        out += textwrap.wrap(f"({note})", WIDTH - KEY - 2, initial_indent=pad + "  ", subsequent_indent=pad + "  ")
    if len(cmds) == 1 and cmds[0].startswith("tlbprobe repro"):
        # repro writes DIR/<variant>/<job>: name the runs where the one command puts them
        names = " ".join(_repro_place(a) for a in runs)
    else:
        names = " ".join(out_names(runs))
    out += wrap_command(f"tlbprobe report {names} --format lkml", WIDTH, pad + "then ", pad + "    ")
    return out


def _comparison(c: Comparison) -> List[str]:
    """The per-repeat table of a comparison; a time measured under emulation is left out of
    it and set in a block of its own, labelled as the emulator's (report/compare.py)."""
    a, b = c.base, c.other
    head = ("per repeat", f"{a.label} {a.variant.value or a.run.name}"[:18],
            f"{b.label} {b.variant.value or b.run.name}"[:18], "change", "")
    body, emulated = [], []
    for f in c.figures:
        if f.key in ("background_rate",):
            continue
        cells = (_short(f.label), fmt_mean_ci(f.base, f.digits, f.kind), fmt_mean_ci(f.other, f.digits, f.kind))
        if f.emulated:
            emulated.append(cells)
            continue
        body.append(cells + (fmt_pct(f.change_pct), f.mark))
    body.append(("model, per repeat", fmt_num(expected_per_repeat(a)), fmt_num(expected_per_repeat(b)),
                  "", ""))
    lines = _table(head, body, "lrrrl")
    for w in c.warnings:
        lines = textwrap.wrap(f"WARNING: {w}", WIDTH) + [""] + lines
    for n in c.notes:
        lines += [""] + textwrap.wrap(f"Note: {n}", WIDTH)
    if emulated:
        lines += ["", EMULATED] + _table(("", a.label, b.label), emulated, "lrr")
    if c.latency:
        lhead = ("latency, us", a.label, b.label, "change", "")
        lbody = []
        for r in c.latency:
            if r.metric not in ("p99_us", "max_us"):
                continue
            change = ("emulated" if c.emulated else
                      fmt_pct((r.other - r.base) / r.base * 100) if r.base and r.other is not None else "-")
            role = {"driver": "op CPU"}.get(r.role, r.role)  # the CPU running the operation
            lbody.append((f"{r.phase} {role} {r.metric.replace('_us', '')}", fmt_num(r.base, 1),
                          fmt_num(r.other, 1), change, ""))
        if lbody:
            lines += [""] + _table(lhead, lbody, "lrrrl")
    for t in views.ab_tables(a, b):  # the observers' A/B tables (report/views/)
        lines += ["", f"{t.title[0].upper()}{t.title[1:]}:"] + _table(t.headers, t.rows, t.align)
    return lines


#: Why the emulated times stand apart: one line above their block.
EMULATED = "Emulator time, not the kernel's (TCG vCPUs take turns on host threads):"


#: The legend of the comparison table's marks (ASCII: report/rows.py MARKS is the others').
LEGEND = ("Per repeat: the mean over the repeats, +-95% CI with 3 or more. "
          "* marks a change with Welch's t-test p<0.05 whose [min,max] ranges "
          "do not overlap; no mark: tested, inside the noise. Untested: n=N, fewer "
          "than 3 repeats on a side (--repeat 3 or more gives a test); sd=0, neither side "
          "varies; exact, counted not sampled; few, counts under 10 on both sides, "
          "no change given; noise, a change within the counts' Poisson noise (2 sigma), "
          "no change given. A count's change from a baseline under 10 is not given in percent.")


def _single(a: RunAnalysis) -> List[str]:
    head = ("per repeat", f"{a.label} {a.variant.value or a.run.name}"[:18])
    body, times = [], []
    for f in figures_for(a):
        if f.key not in a.stats or f.key == "background_rate":
            continue
        cells = (_short(f.label), fmt_mean_ci(a.stats.get(f.key), f.digits, f.kind))
        (times if f.kind == TIME and emulated(a.run) else body).append(cells)
    body.append(("model, per repeat", fmt_num(expected_per_repeat(a))))
    lines = _table(head, body, "lr")
    if times:
        lines += ["", EMULATED] + _table(("", a.label), times, "lr")
    return lines


def _model(runs: Sequence[RunAnalysis]) -> List[str]:
    out: List[str] = []
    for a in runs:
        v = a.verdict
        exp = fmt_num(v.expected) if v.expected is not None else "?"
        if v.status == "matches":
            tail = f"matches ({v.ratio:.3f}x)" if v.ratio is not None else "matches"
        elif v.status == "differs":
            tail = f"DIFFERS: {v.reason}"
            if v.failed_check:
                tail = f"DIFFERS: {v.reason.replace('; the sync count', '. The sync count')}"
        else:
            tail = v.reason or v.status
        reps = len(a.run.repeats)
        text = (f"{a.label}: {exp} sync IPIs expected over {reps} repeat{'s' if reps != 1 else ''}, "
                f"{shown_sync(v)} {'traced' if v.basis == 'traced' else 'measured (CAL-TLB)'}: {tail}")
        out += textwrap.wrap(text, WIDTH - 2, subsequent_indent="   ")
        for w in [*v.warnings, *a.run.warnings]:  # the run's damage too (rundir/integrity.py)
            out += textwrap.wrap(f"warning: {w}", WIDTH - 2, initial_indent="   ", subsequent_indent="     ")
    return ["Model:"] + ["  " + line for line in out]


def _table(head, body, align: str) -> List[str]:
    """table_lines in ASCII and within WIDTH: cells are spelled in ASCII before the columns
    are laid out (so they stay aligned), and a table too wide loses label characters, not
    columns, so no marker is wrapped onto a line of its own."""
    head = tuple(ascii_text(str(c)) for c in head)
    body = [tuple(ascii_text(str(c)) for c in row) for row in body]
    lines = table_lines(head, body, align)
    over = max((len(line.rstrip()) for line in lines), default=0) - WIDTH
    if over > 0:
        keep = max(10, max(len(r[0]) for r in [head, *body]) - over)
        lines = table_lines((head[0][:keep], *head[1:]), [(r[0][:keep], *r[1:]) for r in body], align)
    return lines


_SHORT = {SYNC_FUNCTION: "traced sync calls"}


def _short(label: str) -> str:
    return _SHORT.get(label, label)[:24]


def _fit(lines: Sequence[str]) -> List[str]:
    """Last line of defence: nothing leaves this renderer wider than 72 columns."""
    out: List[str] = []
    for line in lines:
        line = ascii_text(line.rstrip().replace("\t", "    "))
        if len(line) <= WIDTH:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip())
        out += textwrap.wrap(line, WIDTH, subsequent_indent=" " * (indent + 2), break_long_words=True,
                             break_on_hyphens=False) or [line[:WIDTH]]
    return out
