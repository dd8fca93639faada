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
from ..vocab import SYNC_FUNCTION
from . import Report, views
from .analyze import RunAnalysis
from .compare import Comparison, figures_for
from .rows import (
    expected_per_repeat,
    fmt_mean_ci,
    host_line,
    reproduce_commands,
    short_source,
    shown_sync,
    workload_line,
)

WIDTH = 72
KEY = 11  # width of "Reproduce: "


def render(report: Report) -> str:
    runs = report.runs
    lines: List[str] = ["Performance numbers (tlbprobe %s)" % report.tool_version, ""]
    lines += _field("Host:", _hosts(runs))
    lines += _field("Kernels:", [f"{a.label} {a.run.kernel_release} ({a.variant.value or 'variant unknown'}"
                                 f"{', ' + short_source(a.variant.source) if a.variant.value else ''})"
                                 for a in runs])
    lines += _field("Flush:", _flush(runs))
    incomplete = [a for a in runs if not a.run.complete]
    if incomplete:
        lines += _field("Status:", [f"{a.label} INCOMPLETE ({a.run.status}, {len(a.run.repeats)} of "
                                    f"{a.run.summary.get('repeats_planned', '?')} repeats)" for a in incomplete])
    lines += _field("Workload:", _unique([workload_line(a) for a in runs]))
    for label, field_lines in views.fields(runs):  # the observers' (collect --cost, --victim): report/views/
        lines += _field(f"{label.capitalize()}:", field_lines)
    lines += _reproduce(report)
    for c in report.comparisons:
        lines.append("")
        lines += _comparison(c)
    if not report.comparisons:
        lines.append("")
        lines += _single(runs[0])
    lines.append("")
    lines += _model(runs)
    lines.append("")
    latency_note = ("Latency: cyclictest percentiles pooled over all repeats, driver CPU and "
                    "the worst other CPU; no test. " if any(c.latency for c in report.comparisons) else "")
    lines += textwrap.wrap(
        latency_note +
        "Mean ±95% CI over the repeats (mean alone with fewer than 3). "
        "* marks a change with Welch's t-test p<0.05 whose [min,max] ranges "
        "do not overlap; ? too few repeats to test. Sync IPIs are CAL minus "
        "TLB on the CPUs other than the driver, less the idle background; "
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
    hosts = [host_line(a) for a in runs]
    if len(set(hosts)) == 1:
        return [hosts[0]]
    return [f"{a.label} {h}" for a, h in zip(runs, hosts)]


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


def _reproduce(report: Report) -> List[str]:
    """The recorded collect command(s), then the report command, each wrapped to 72 columns."""
    cmds = reproduce_commands(report.runs)
    pad = " " * KEY
    if not cmds:
        out = ["Reproduce:".ljust(KEY) + "(run.yaml records no command)"]
    elif len(cmds) == 1:
        who = "on each kernel, as root:" if len(report.runs) > 1 else "as root:"
        out = ["Reproduce:".ljust(KEY) + who]
        out += wrap_command(cmds[0] + " --out DIR", WIDTH, pad + "  ", pad + "    ")
    else:
        out = ["Reproduce:".ljust(KEY) + "as root, one per kernel:"]
        for name, cmd in zip(out_names(report.runs), cmds):
            out += wrap_command(cmd + f" --out {name}", WIDTH, pad + "  ", pad + "    ")
    names = " ".join(out_names(report.runs))
    out += wrap_command(f"tlbprobe report {names} --format lkml", WIDTH, pad + "then ", pad + "    ")
    return out


def _comparison(c: Comparison) -> List[str]:
    a, b = c.base, c.other
    head = ("", f"{a.label} {a.variant.value or a.run.name}"[:18], f"{b.label} {b.variant.value or b.run.name}"[:18],
            "change", "")
    body = []
    for f in c.figures:
        if f.key in ("background_rate",):
            continue
        body.append((_short(f.label), fmt_mean_ci(f.base, f.digits), fmt_mean_ci(f.other, f.digits),
                     fmt_pct(f.change_pct), f.mark))
    body.append(("model, per repeat", fmt_num(expected_per_repeat(a), 1), fmt_num(expected_per_repeat(b), 1),
                  "", ""))
    lines = table_lines(head, body, "lrrrl")
    for w in c.warnings:
        lines = textwrap.wrap(f"WARNING: {w}", WIDTH) + [""] + lines
    if c.latency:
        lhead = ("latency, us", a.label, b.label, "change", "")
        lbody = []
        for r in c.latency:
            if r.metric not in ("p99_us", "max_us"):
                continue
            change = fmt_pct((r.other - r.base) / r.base * 100) if r.base and r.other is not None else "-"
            lbody.append((f"{r.phase} {r.role} {r.metric.replace('_us', '')}", fmt_num(r.base, 1),
                          fmt_num(r.other, 1), change, ""))
        if lbody:
            lines += [""] + table_lines(lhead, lbody, "lrrrl")
    return lines


def _single(a: RunAnalysis) -> List[str]:
    head = ("", f"{a.label} {a.variant.value or a.run.name}"[:18])
    body = [(_short(label), fmt_mean_ci(a.stats.get(key), digits))
            for key, label, _unit, digits in figures_for(a) if key in a.stats and key != "background_rate"]
    body.append(("model, per repeat", fmt_num(expected_per_repeat(a), 1)))
    return table_lines(head, body, "lr")


def _model(runs: Sequence[RunAnalysis]) -> List[str]:
    out: List[str] = []
    for a in runs:
        v = a.verdict
        exp = fmt_num(v.expected) if v.expected is not None else "?"
        if v.status == "matches":
            tail = f"matches ({v.ratio:.3f}x)" if v.ratio is not None else "matches"
        elif v.status == "differs":
            tail = f"DIFFERS: {v.reason}"
        else:
            tail = v.reason or v.status
        reps = len(a.run.repeats)
        text = (f"{a.label}: {exp} sync IPIs expected over {reps} repeat{'s' if reps != 1 else ''}, "
                f"{shown_sync(v)} {'traced' if v.basis == 'traced' else 'measured (CAL-TLB)'}: {tail}")
        out += textwrap.wrap(text, WIDTH - 2, subsequent_indent="   ")
        for w in [*v.warnings, *a.run.warnings]:  # the run's damage too (rundir/integrity.py)
            out += textwrap.wrap(f"warning: {w}", WIDTH - 2, initial_indent="   ", subsequent_indent="     ")
    return ["Model:"] + ["  " + line for line in out]


_SHORT = {SYNC_FUNCTION: "traced sync calls"}


def _short(label: str) -> str:
    return _SHORT.get(label, label)[:24]


def _fit(lines: Sequence[str]) -> List[str]:
    """Last line of defence: nothing leaves this renderer wider than 72 columns."""
    out: List[str] = []
    for line in lines:
        line = line.rstrip().replace("\t", "    ")
        if len(line) <= WIDTH:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip())
        out += textwrap.wrap(line, WIDTH, subsequent_indent=" " * (indent + 2), break_long_words=True,
                             break_on_hyphens=False) or [line[:WIDTH]]
    return out
