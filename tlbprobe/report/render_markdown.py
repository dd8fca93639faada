"""Markdown (GitHub flavour): the text report's content as tables, plots linked by path."""

from __future__ import annotations

from typing import List, Sequence

from ..ui.numbers import fmt_num
from . import Report, views
from .analyze import RunAnalysis
from .compare import Comparison
from .render_text import verdict_text
from .rows import (
    PER_CPU_HEADERS,
    MARKS,
    comparison_rows,
    host_line,
    kernel_line,
    latency_comparison_rows,
    measured_lines,
    ops_line,
    per_cpu_cells,
    prov,
    provenance_warnings,
    reproduce_commands,
    reproduce_notes,
    workload_figures_line,
    workload_line,
)


def render(report: Report) -> str:
    out: List[str] = [f"# tlbprobe report ({len(report.runs)} run{'s' if len(report.runs) != 1 else ''})", ""]
    cmds = reproduce_commands(report.runs)
    if cmds:
        out += ["Reproduce (as root" + ("" if any(prov(a).guest_of_qemu for a in report.runs) else ", on each kernel")
                + "):", "", "```"]
        out += [c + " --out DIR" for c in cmds]
        out += ["tlbprobe report " + " ".join(a.run.name for a in report.runs), "```", ""]
        out += [f"({n})" for n in reproduce_notes(report.runs) if not n.startswith(("as root", "as recorded"))]
        out += [""]
    for w in list(report.warnings) + provenance_warnings(report.runs):
        out += [f"**Warning:** {w}", ""]
    for c in report.comparisons:
        out += comparison_md(c)
    for a in report.runs:
        out += run_md(a)
    if report.plots:
        out += ["## Plots", ""]
        out += [f"![{p.title}]({p.path})" for p in report.plots]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> List[str]:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def comparison_md(c: Comparison) -> List[str]:
    a, b = c.base, c.other
    out = [f"## {b.label} `{b.run.name}` against {a.label} `{a.run.name}`", ""]
    out += [f"**Warning:** {w}" for w in c.warnings] + ([""] if c.warnings else [])
    rows = comparison_rows(c)
    out += table(("figure, per repeat", f"{a.label} {a.variant.value or a.run.name}", f"{b.label} {b.variant.value or b.run.name}",
                  "change", "p", ""), rows, "lrrrrl")
    out += ["", MARKS, ""] + [f"Note: {n}" for n in c.notes] + ([""] if c.notes else [])
    if c.latency:
        out += ["Latency (µs; driver CPU, and the worst of the other CPUs):", ""]
        out += table(("phase", "CPU", "percentile", a.label, b.label), latency_comparison_rows(c), "lllrr") + [""]
    return out


def run_md(a: RunAnalysis) -> List[str]:
    run, v = a.run, a.verdict
    out = [f"## {a.label}: `{run.path}`", ""]
    facts = [
        ("status", f"{run.status}, {len(run.repeats)}/{run.summary.get('repeats_planned', len(run.repeats))} repeats"),
        ("host", host_line(a)),
        ("kernel", f"{kernel_line(a)} — variant from {a.variant.source}"),
        ("flush mode", f"{a.flush.value} — from {a.flush.source}"),
        ("workload", workload_line(a)),
        *([("", workload_figures_line(a))] if workload_figures_line(a) else []),
        ("operations", ops_line(a)),
        *measured_lines(a),
        *views.fact_lines(a),
        ("model", f"{fmt_num(a.prediction.sync_ipis.value)} — {a.prediction.sync_ipis.why}"),
        ("verdict", verdict_text(a)),
    ]
    facts += [("warning", w) for w in [*v.warnings, *run.warnings]]  # the run's damage too (rundir/integrity.py)
    out += table(("", ""), facts, "ll") + [""]
    out += table(PER_CPU_HEADERS, per_cpu_cells(a), "rlrrrr") + [""]
    return out
