"""The terminal report: every run in detail, then the comparison against the first run."""

from __future__ import annotations

import textwrap
from typing import List

from ..ui.numbers import fmt_num, fmt_pct
from ..ui.tables import table_lines
from . import Report, views
from ..vocab import FLUSH_FUNCTION, SYNC_FUNCTION
from .analyze import RunAnalysis
from .compare import Comparison
from .rows import (
    MARKS,
    comparison_rows,
    host_line,
    kernel_line,
    measured_lines,
    ops_line,
    per_cpu_rows,
    prov,
    shown_sync,
    workload_figures_line,
    workload_line,
)

#: Above this many CPUs the per-CPU table shows the driver and a summary of the others.
MAX_CPU_ROWS = 16


def render(report: Report) -> str:
    lines: List[str] = []
    n = len(report.runs)
    lines.append(f"tlbprobe {report.tool_version} report: {n} run{'s' if n != 1 else ''}"
                 + (" (A is the baseline of the comparison)" if n > 1 else ""))
    lines += [f"WARNING: {w}" for w in report.warnings]
    for a in report.runs:
        lines.append("")
        lines.extend(run_lines(a))
    for c in report.comparisons:
        lines.append("")
        lines.extend(comparison_lines(c))
    if report.plots:
        lines.append("")
        lines.append("Plots:")
        lines.extend(f"  {p.path}" for p in report.plots)
    return "\n".join(lines) + "\n"


def run_lines(a: RunAnalysis) -> List[str]:
    run, v, pred = a.run, a.verdict, a.prediction
    reps = f"{len(run.repeats)}/{run.summary.get('repeats_planned', len(run.repeats))} repeats"
    out = [f"{a.label}  {run.path}  ({run.status}, {reps})"]

    def field(name: str, text: str) -> None:
        out.append(f"   {name:<10} {text}")

    field("host", host_line(a))
    field("kernel", f"{kernel_line(a)}; variant from {a.variant.source}")
    p = prov(a)
    if p.reproduce:
        field("made by", f"{p.reproduce} ({p.reproduce_note})")
    for w in p.warnings:
        field("", f"warning: {w}")
    field("flush", f"{a.flush.value} from {a.flush.source}")
    field("workload", workload_line(a))
    extra = workload_figures_line(a)
    if extra:
        field("", extra)
    field("ops", ops_line(a))
    for name, text in measured_lines(a):
        field(name, text)
    bg = a.background_rate
    bg_total = sum(r.background_sync_ipis for r in run.repeats)
    field("background", f"{fmt_num(bg_total)} subtracted"
          + (f"; idle rate {fmt_num(bg.median, 2)}/s on the other CPUs" if bg else ""))
    exp = pred.sync_ipis
    field("model", f"{fmt_num(exp.value, 0) if exp.value is not None else 'no single answer'}: {exp.why}")
    field("", f"rules: {', '.join(exp.rules)}")
    tlb = pred.tlb_ipis
    tlb_txt = fmt_num(tlb.value) if tlb.value is not None else (
        f"at most {fmt_num(pred.tlb_ipis_max)}" if pred.tlb_ipis_max is not None else "not modelled")
    tlb_meas = sum(r.tlb_other_cpus for r in run.repeats)
    field("", f"TLB shootdowns {tlb_txt}: {tlb.why}; measured {fmt_num(tlb_meas)} (background included)")
    field("verdict", verdict_text(a))
    for w in v.warnings:
        field("", f"warning: {w}")
    attributed = _attributed(a)
    if attributed:
        field("attributed", attributed)
    for name, line in views.fact_lines(a):  # the observers' (report/views/)
        field(name, line)
    out.extend("   " + line for line in per_cpu_lines(a))
    for t in views.tables(a):
        out.extend("   " + line for line in [t.title] + ["  " + row for row in table_lines(t.headers, t.rows, t.align)])
    for w in run.warnings:
        field("", f"warning: {w}")
    return out


def verdict_text(a: RunAnalysis) -> str:
    v = a.verdict
    if v.status not in ("matches", "differs"):
        return f"{v.status.upper()}: {v.reason}"
    if v.failed_check:  # a safety check failed it: say that first, then what the counts say
        return (f"DIFFERS: {v.reason}; measured {shown_sync(v)} "
                f"{'traced' if v.basis == 'traced' else 'CAL-TLB'}, {fmt_num(v.expected)} expected")
    ratio = (f"measured/expected {v.ratio:.3f}" if v.ratio is not None
             else f"{shown_sync(v)} vs 0 expected")
    if v.basis == "traced" or v.bounds is None:
        where = f"within ±{fmt_num(v.tolerance, 1)}" if v.status == "matches" else f"outside ±{fmt_num(v.tolerance, 1)}"
        where += f" ({_basis(v)})"
    else:  # CAL only: an interval, not a subtraction (report/verdict.py)
        where = (f"{'in' if v.status == 'matches' else 'outside'} {fmt_num(v.bounds.low)}..{fmt_num(v.bounds.high)} "
                 f"±{fmt_num(v.tolerance - v.bounds.background_max, 1)} (CAL minus TLB, background 0.."
                 f"{fmt_num(v.bounds.background_max)})")
    if v.status == "matches":
        return f"MATCHES: {ratio}, {where}"
    return f"DIFFERS: {ratio}, {where}; likely reason: {v.reason}"


def _basis(v) -> str:
    return "traced tlb_remove_table_smp_sync count" if v.basis == "traced" else "CAL minus TLB minus background"


def _attributed(a: RunAnalysis) -> str:
    total = a.run.function_totals()
    if not total:
        return ""
    order = [k for k in (SYNC_FUNCTION, FLUSH_FUNCTION) if k in total]
    order += sorted((k for k in total if k not in order), key=lambda k: -total[k])
    return ", ".join(f"{k} {fmt_num(total[k])}" for k in order) + " (other CPUs, workload phases)"


def per_cpu_lines(a: RunAnalysis) -> List[str]:
    rows = per_cpu_rows(a)
    if not rows:
        return []
    head = ("CPU", "role", "CAL", "TLB", "CAL-TLB", "expected sync")
    if len(rows) > MAX_CPU_ROWS:
        keep = [r for r in rows if r.role != "other"]
        others = sorted((r for r in rows if r.role == "other"), key=lambda r: r.sync_raw)
        body = [_cpu_cells(r) for r in keep]
        if others:
            lo, mid, hi = others[0], others[len(others) // 2], others[-1]
            for tag, r in (("min", lo), ("median", mid), ("max", hi)):
                cells = _cpu_cells(r)
                body.append((f"{r.cpu}", f"other {tag}") + cells[2:])
        title = f"per CPU, workload phases summed ({len(others)} other CPUs summarised by CAL-TLB):"
    else:
        body = [_cpu_cells(r) for r in rows]
        title = "per CPU, workload phases summed:"
    return [title] + ["  " + line for line in table_lines(head, body, "rlrrrr")]


def _cpu_cells(r) -> tuple:
    return (str(r.cpu), r.role, fmt_num(r.cal), fmt_num(r.tlb), fmt_num(r.sync_raw), fmt_num(r.expected_sync))


def comparison_lines(c: Comparison) -> List[str]:
    a, b = c.base, c.other
    out = [f"{b.label} against {a.label}: {b.run.name} vs {a.run.name}"]
    out += [f"  WARNING: {w}" for w in c.warnings]
    head = ("figure, per repeat", f"{a.label} {a.run.name}", f"{b.label} {b.run.name}", "change", "p", "")
    body = comparison_rows(c)
    out.extend("  " + line for line in table_lines(head, body, "lrrrrl"))
    out.extend("  " + line for line in textwrap.wrap(MARKS, 96))
    for n in c.notes:
        out.extend(textwrap.wrap(f"note: {n}", 96, initial_indent="  ", subsequent_indent="    "))
    if c.latency:
        out.append("  latency, us (driver CPU; worst other CPU):")
        lhead = ("phase", "CPU", "percentile", a.label, b.label, "change")
        lbody = []
        for r in c.latency:
            change = ("emulated" if c.emulated else  # a TCG guest's latency is the emulator's
                      fmt_pct((r.other - r.base) / r.base * 100) if r.base and r.other is not None else "-")
            lbody.append((r.phase, r.role, r.metric.replace("_us", ""), fmt_num(r.base, 1), fmt_num(r.other, 1), change))
        out.extend("    " + line for line in table_lines(lhead, lbody, "lllrrr"))
    for t in views.ab_tables(a, b):
        out.append(f"  {t.title}:")
        out.extend("    " + line for line in table_lines(t.headers, t.rows, t.align))
    return out
