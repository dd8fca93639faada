"""One self-contained HTML file: inline CSS, no scripts, plots embedded as base64 PNG.

It must open from an e-mail attachment or a CI artefact store without fetching anything,
so nothing in it refers to another file or host.
"""

from __future__ import annotations

import base64
import html
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
    provenance_warnings,
    reproduce_commands,
    reproduce_notes,
    workload_figures_line,
    workload_line,
)

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.2em .6em}
td.r{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}
.matches{color:#165}.differs{color:#a11;font-weight:bold}.undetermined{color:#a60}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
"""


def render(report: Report) -> str:
    e = html.escape
    parts: List[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tlbprobe report: {e(' vs '.join(a.run.name for a in report.runs))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>tlbprobe report</h1><p>{len(report.runs)} run(s); tlbprobe {e(report.tool_version)}; "
        f"model parameters {e(report.params.source)}</p>",
    ]
    cmds = reproduce_commands(report.runs)
    if cmds:
        text = "\n".join(c + " --out DIR" for c in cmds)
        text += "\ntlbprobe report " + " ".join(a.run.name for a in report.runs)
        parts.append(f"<h2>Reproduce</h2><pre>{e(text)}</pre>")
        parts += [f"<p>({e(n)})</p>" for n in reproduce_notes(report.runs)
                  if not n.startswith(("as root", "as recorded"))]
    parts += [f"<p><b>Warning:</b> {e(w)}</p>" for w in list(report.warnings) + provenance_warnings(report.runs)]
    for c in report.comparisons:
        parts.append(comparison_html(c))
    for a in report.runs:
        parts.append(run_html(a, report))
    general = [p for p in report.plots if p.run is None]
    if general:
        parts.append("<h2>Plots</h2>")
        parts += [_img(p) for p in general]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"r" if align[i] == "r" else "l"}">{e(str(c))}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(p) -> str:
    data = base64.b64encode(p.path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(p.title)}" src="data:image/png;base64,{data}"></figure>'


def comparison_html(c: Comparison) -> str:
    a, b = c.base, c.other
    rows = comparison_rows(c)
    out = [f"<h2>{html.escape(b.label)} {html.escape(b.run.name)} against {html.escape(a.label)} "
           f"{html.escape(a.run.name)}</h2>",
           _table(("figure, per repeat", f"{a.label} {a.variant.value or a.run.name}", f"{b.label} {b.variant.value or b.run.name}",
                   "change", "p", ""), rows, "lrrrrl"),
           f"<p>{html.escape(MARKS)}</p>", *(f"<p>Note: {html.escape(n)}</p>" for n in c.notes)]
    out[1:1] = [f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in c.warnings]
    if c.latency:
        out.append("<h3>Latency, µs</h3>" + _table(("phase", "CPU", "percentile", a.label, b.label),
                                                   latency_comparison_rows(c), "lllrr"))
    return "\n".join(out)


def run_html(a: RunAnalysis, report: Report) -> str:
    e = html.escape
    run, v = a.run, a.verdict
    facts = [
        ("status", f"{run.status}, {len(run.repeats)}/{run.summary.get('repeats_planned', len(run.repeats))} repeats"),
        ("host", host_line(a)),
        ("kernel", f"{kernel_line(a)}; variant from {a.variant.source}"),
        ("flush mode", f"{a.flush.value}; from {a.flush.source}"),
        ("workload", workload_line(a)),
        *([("", workload_figures_line(a))] if workload_figures_line(a) else []),
        ("operations", ops_line(a)),
        *measured_lines(a),
        *views.fact_lines(a),
        ("model", f"{fmt_num(a.prediction.sync_ipis.value)}: {a.prediction.sync_ipis.why}"),
    ]
    facts += [("warning", w) for w in [*v.warnings, *run.warnings]]  # the run's damage too (rundir/integrity.py)
    out = [
        f"<h2>{e(a.label)}: {e(str(run.path))}</h2>",
        f'<p class="{e(v.status.replace(" ", "-"))}">{e(verdict_text(a))}</p>',
        _table(("", ""), facts, "ll"),
        _table(PER_CPU_HEADERS, per_cpu_cells(a), "rlrrrr"),
    ]
    for t in views.tables(a):  # the observers' (report/views/): cyclictest per CPU
        out.append(_table(tuple(h[:-3] + " µs" if h.endswith(" us") else h for h in t.headers), t.rows, t.align))
    out += [_img(p) for p in report.plots if p.run == run.name]
    return "\n".join(out)
