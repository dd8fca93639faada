"""`tlbprobe repro --audit`: the static audit and the run-time check, joined per caller.

The static audit (tlbprobe/audit/, kernels/audit/callers.yaml) says, for every call site
of the table sync in the patched tree, whether its skip is justified and where it can be
reached; the run-time check (collect --check in both guests, measure/tablesync.py) says
which callers the jobs drove, how many broadcasts the baseline sent there, how many the
patched kernel skipped, and whether any skip followed a flush that missed a CPU that
could be walking (a violation). This module joins the two by caller.

The join is by function name, and it has to allow for inlining: the kernel names a call
site by the function it was compiled into (%pS), so collapse_huge_page()'s sync reads
``hpage_collapse_scan_pmd+0x...`` in a build where it is inlined into its only caller
(mm/khugepaged.c:1424 in the 6.12 tree). A run-time caller that is no audited function
but is one of an entry's ``paths`` (the functions that call it) is counted for that entry,
and the row says it was seen through that inlining parent. One that matches neither is a
caller the audit does not know: it fails, as an unaudited call site does.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..rundir.sections import CheckCounts, CheckSection

#: the LKML report's width (report/render_lkml.py WIDTH)
WIDTH = 72


@dataclass
class CallerRow:
    """One audited caller (or a run-time caller the audit does not know)."""

    caller: str                       # the audit entry's function, or the run-time name
    entry_id: Optional[str]           # kernels/audit/callers.yaml id; None: not in the audit
    verdict: str                      # the audit's (justified, not-skipped, ...), or "unknown"
    reachable: str                    # yes | no | empty, for the guests' flush mode
    seen_as: Tuple[str, ...] = ()     # the run-time names counted here (an inlining parent)
    baseline: CheckCounts = field(default_factory=CheckCounts)
    patched: CheckCounts = field(default_factory=CheckCounts)
    jobs: Tuple[str, ...] = ()        # the jobs that drove it

    @property
    def violations(self) -> int:
        return self.baseline.violations + self.patched.violations

    def to_dict(self) -> Dict[str, Any]:
        return {"caller": self.caller, "entry": self.entry_id, "verdict": self.verdict, "reachable": self.reachable,
                "seen_as": list(self.seen_as), "jobs": list(self.jobs), "baseline": self.baseline.to_dict(),
                "patched": self.patched.to_dict(), "sent_baseline": self.baseline.sent,
                "skipped_patched": self.patched.skipped, "violations": self.violations}


@dataclass
class AuditCheck:
    rows: List[CallerRow]
    unaudited: List[str]              # call sites of the tree the table does not know ("file:chain")
    unsupported: List[str]            # justified skips whose facts do not hold
    flush_mode: str
    audit_label: str
    missing: List[str] = field(default_factory=list)   # variant/job runs without a check section

    @property
    def violations(self) -> int:
        return sum(r.violations for r in self.rows)

    @property
    def text(self) -> str:
        return render(self)

    @property
    def unknown_callers(self) -> List[str]:
        return [r.caller for r in self.rows if r.entry_id is None]

    def failures(self) -> List[str]:
        out = []
        for r in self.rows:
            for variant, c in (("baseline", r.baseline), ("patched", r.patched)):
                if c.violations:
                    out.append(f"{c.violations} violation(s) at {r.caller}"
                               + (f" (seen as {', '.join(r.seen_as)})" if r.seen_as else "")
                               + f" on the {variant} kernel: the flush missed CPU "
                               + (",".join(map(str, c.missed_cpus)) or "unknown"))
        out += [f"unaudited call site: {u}" for u in self.unaudited]
        out += [f"audit fact does not hold for {u}" for u in self.unsupported]
        out += [f"run-time caller {c} is in no entry of the audit table" for c in self.unknown_callers]
        out += [f"no check section in the run of {m}" for m in self.missing]
        return out

    @property
    def ok(self) -> bool:
        return not self.failures()

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "flush_mode": self.flush_mode, "audit": self.audit_label,
                "callers": [r.to_dict() for r in self.rows], "unaudited": list(self.unaudited),
                "unsupported": list(self.unsupported), "violations": self.violations, "missing": list(self.missing),
                "failures": self.failures()}


def _reach_key(flush_mode: str) -> str:
    return "x86_64_pv" if flush_mode == "pv" else "x86_64_native"


def join(audit: Any, sync_targets: Sequence[str], checks: Mapping[str, Mapping[str, Optional[CheckSection]]],
         flush_mode: str) -> AuditCheck:
    """``audit``: tlbprobe.audit.static.Audit of the patched tree; ``sync_targets``: the
    table's sync target (role "sync": the callers the check counts; the hook's callers
    decide, they do not sync); ``checks``: job -> variant -> the run's check section
    (None: the run has none)."""
    sync = set(sync_targets)
    entries = []
    for ans in audit.answers:
        e = ans.entry
        if e is not None and e.target in sync and e not in entries:
            entries.append(e)
    key = _reach_key(flush_mode)
    rows: Dict[str, CallerRow] = {e.function: CallerRow(e.function, e.id, e.verdict, e.reachable.get(key, "?"))
                                  for e in entries}
    by_path = {p.function: e.function for e in entries for p in e.paths}
    for job, variants in checks.items():
        for variant, sec in variants.items():
            if sec is None:
                continue
            for fn, c in sec.callers.items():
                if fn in rows:
                    row = rows[fn]
                elif fn in by_path:
                    row = rows[by_path[fn]]
                    if fn not in row.seen_as:
                        row.seen_as += (fn,)
                else:
                    row = rows.setdefault(fn, CallerRow(fn, None, "unknown", "?"))
                if variant == "baseline":
                    row.baseline = row.baseline.plus(c)
                else:
                    row.patched = row.patched.plus(c)
                if c.calls and job not in row.jobs:
                    row.jobs += (job,)
    unaudited = [a.id for a in audit.unaudited]
    unsupported = [f"{a.id} (fact {', '.join(f.id for f in a.failed_facts)})" for a in audit.unsupported]
    return AuditCheck(list(rows.values()), unaudited, unsupported, flush_mode, audit.label)


def render(ac: AuditCheck) -> str:
    """The per-caller table within WIDTH columns, then the outcome."""
    head = ("caller", "reach", "calls", "sentA", "skipB", "covB", "unver", "viol")
    body = []
    for r in ac.rows:
        name = r.caller + ("*" if r.seen_as else "")
        body.append((name, r.reachable, f"{r.baseline.calls + r.patched.calls:,}", f"{r.baseline.sent:,}",
                     f"{r.patched.skipped:,}", f"{r.patched.covered:,}", f"{r.patched.unverified:,}",
                     f"{r.violations:,}"))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    # the caller column gives way to keep the table within WIDTH
    rest = sum(widths[1:]) + 2 * (len(head) - 1)
    widths[0] = min(widths[0], max(WIDTH - rest, 12))

    def line(cells: Sequence[str]) -> str:
        first = cells[0] if len(cells[0]) <= widths[0] else cells[0][:widths[0] - 1] + "~"
        return "  ".join([first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    out = ["Table syncs per audited caller (A baseline, B patched; calls on both):",
           line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    notes = [f"* {r.caller}: seen as {', '.join(r.seen_as)} (inlined into it)" for r in ac.rows if r.seen_as]
    notes.append(f"reach: the audit's reachability under {ac.flush_mode} flush; unaudited call sites: "
                 f"{len(ac.unaudited)}; violations: {ac.violations}")
    for n in notes:
        out += textwrap.wrap(n, WIDTH, subsequent_indent="  ")
    fails = ac.failures()
    out.append("audit: " + ("OK: every skip covered, every call site audited" if not fails else "FAILED"))
    for f in fails:
        out += textwrap.wrap(f"  {f}", WIDTH, subsequent_indent="    ")
    return "\n".join(out)


def run_static_audit(source: Optional[Path], patches: Sequence[Path], log=print):
    """The static audit of the patched tree (the series as the patched kernel has it,
    without tlbprobe's own instrumentation) and the table's sync target names."""
    import tempfile

    from ..audit.source import open_view, resolve_source
    from ..audit.static import run_audit
    from ..audit.table import load_table
    from ..kernel import series
    from ..kernel.build import variant_patches

    table = load_table()
    tree, label = resolve_source(source, log)
    with tempfile.TemporaryDirectory(prefix="tlbprobe-audit-series-") as work:
        expanded = series.expand(list(patches), Path(work)) if patches else None
        with open_view(tree, label, variant_patches("patched", expanded)) as view:
            audit = run_audit(view, table, "patched")
    return audit, [t.name for t in table.targets if t.role == "sync"]


def audit_runs(res: Any, source: Optional[Path], patches: Sequence[Path], log=print) -> AuditCheck:
    """repro --audit's last step: the static audit of the patched tree joined with the
    check sections of ``res`` (workflows/repro.py ReproResult), added to repro.json."""
    import json

    from ..errors import TlbprobeError
    from ..rundir.reader import load_run

    checks: Dict[str, Dict[str, Optional[CheckSection]]] = {}
    modes = set()
    for job, variants in res.runs.items():
        checks[job] = {}
        for variant, path in variants.items():
            try:
                run = load_run(Path(path))
            except TlbprobeError as e:
                log(f"audit: {variant}/{job}: no run to read ({e})")
                checks[job][variant] = None
                continue
            checks[job][variant] = run.section(CheckSection)
            if run.host.get("flush_mode"):
                modes.add(str(run.host.get("flush_mode")))
    audit, sync = run_static_audit(source, patches, log=lambda line: log(f"audit: {line}"))
    ac = join(audit, sync, checks, "pv" if "pv" in modes else "native")
    missing = [f"{v}/{j}" for j, d in checks.items() for v, sec in d.items() if sec is None]
    ac.missing = missing
    record = res.out / "repro.json"
    try:
        data = json.loads(record.read_text())
        data["audit"] = ac.to_dict()
        data["ok"] = bool(data.get("ok")) and ac.ok
        record.write_text(json.dumps(data, indent=1))
    except (OSError, ValueError):
        pass
    return ac
