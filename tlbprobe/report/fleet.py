"""The fleet table: runs from several hosts side by side, before the per-host reports.

A maintainer weighing a series wants one look at every machine it ran on: which host,
how many CPUs, which flush mode, which kernels, what one operation cost each other CPU
in sync IPIs, how that changed against the host's first run, and what the model says.
Each row is one run; the per-host reports that follow give the detail.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from ..ui.numbers import fmt_num, fmt_pct
from ..ui.tables import table_lines
from . import Report
from .analyze import RunAnalysis
from .figures import traced_sync


@dataclass(frozen=True)
class FleetRow:
    host: str
    run: str
    cpus: int
    flush_mode: str
    kernel: str
    sync_per_op_per_cpu: Optional[float]  # traced when the run traced, else CAL-TLB (median)
    basis: str                            # traced | CAL-TLB
    change_pct: Optional[float]           # against the host's first run
    model_per_op_per_cpu: Optional[float]
    verdict: str


def per_op_per_cpu(a: RunAnalysis) -> Optional[float]:
    """Sync IPIs per operation per other CPU: the traced count when there is one (exact),
    else the CAL-TLB estimate's median over the repeats."""
    ops, others = a.run.ops, max(1, len(a.run.other_cpus))
    traced = traced_sync(a.run)
    if traced is not None:
        return traced / (ops * others) if ops else None
    s = a.stats.get("sync_per_op_per_cpu")
    return s.median if s is not None else None


def fleet_rows(reports: Dict[str, Report]) -> List[FleetRow]:
    rows: List[FleetRow] = []
    for host, report in reports.items():
        first: Optional[float] = None
        for i, a in enumerate(report.runs):
            v = per_op_per_cpu(a)
            if i == 0:
                first = v
            change = (v - first) / first * 100 if i and first and v is not None else None
            exp = a.prediction.sync_ipis.value
            n = a.run.ops * max(1, len(a.run.other_cpus))
            rows.append(FleetRow(host, a.run.name, a.run.online_cpus, a.flush.value or "unknown",
                                 f"{a.run.kernel_release} {a.variant.value or 'unknown'}", v,
                                 "traced" if traced_sync(a.run) is not None else "CAL-TLB", change,
                                 exp / n if exp is not None and n else None, a.verdict.status))
    return rows


HEADERS = ("host", "CPUs", "flush", "kernel", "sync/op/CPU", "change", "model")


def _cells(r: FleetRow, host: str) -> tuple:
    return (host, str(r.cpus), r.flush_mode, r.kernel[:26], fmt_num(r.sync_per_op_per_cpu, 3),
            fmt_pct(r.change_pct) if r.change_pct is not None else "", fmt_num(r.model_per_op_per_cpu, 3))


def host_keys(rows: Sequence[FleetRow], width: int = 12) -> Dict[str, str]:
    """The host column's text: the host names when they fit, else H1, H2, ... (named in
    the lines above the table), so that no name is cut."""
    hosts = list(dict.fromkeys(r.host for r in rows))
    if all(len(h) <= width for h in hosts):
        return {h: h for h in hosts}
    return {h: f"H{i}" for i, h in enumerate(hosts, 1)}


NOTE = ("Fleet: one row per run, grouped by host. sync/op/CPU: sync IPIs per operation per other CPU "
        "(traced where the run traced, else CAL minus TLB less the idle background); change: against "
        "the host's first run; model: the reference model's figure. Per-host reports follow.")


def render(rows: Sequence[FleetRow], fmt: str) -> str:
    import textwrap

    if fmt == "markdown":
        lines = ["# Fleet", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r, r.host)) + " |" for r in rows]
        return "\n".join(lines + ["", NOTE, ""]) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, r.host)) + "</tr>"
                       for r in rows)
        return f"<h1>Fleet</h1><table><tr>{head}</tr>{body}</table><p>{html.escape(NOTE)}</p>\n"
    keys = host_keys(rows)
    counts = {h: sum(r.host == h for r in rows) for h in keys}
    named = [f"{k}  {h} ({counts[h]} run{'s' if counts[h] != 1 else ''})" for h, k in keys.items() if k != h]
    lines = [line for n in named for line in textwrap.wrap(n, 72, subsequent_indent="    ")]
    lines += ([""] if named else []) + table_lines(HEADERS, [_cells(r, keys[r.host]) for r in rows], "lrllrrr")
    return "\n".join(lines + [""] + textwrap.wrap(NOTE, 72)) + "\n"


def to_json(rows: Sequence[FleetRow]) -> List[dict]:
    return [asdict(r) for r in rows]
