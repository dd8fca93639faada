"""The audit as a person reads it (text) and as a program does (JSON).

The JSON is the contract for what comes later (the run-time check, repro --audit): its
``format`` names the version, each call site carries the caller's stable ``id`` (file and
chain, no line: tlbprobe/audit/table.py Entry.id) and the ``job`` that drives it, and
keys are only ever added. doc/audit.md "Output" lists them.
"""

from __future__ import annotations

import json
from typing import Dict, List

from .static import RESULT_FORMAT, Answer, Audit
from .table import ARCHES, VERDICTS

_ARCH_WORDS = {"x86_64_native": "x86_64 native", "x86_64_pv": "x86_64 PV", "arm64": "arm64"}


def to_dict(a: Audit) -> Dict:
    sites = []
    for ans in a.answers:
        d = ans.site.to_dict()
        e = ans.entry
        d.update({"id": e.id if e else f"{ans.site.file}:{' -> '.join((ans.site.function, *ans.site.chain))}",
                  "status": ans.status, "reason": ans.reason, "verdict": e.verdict if e else None,
                  "job": e.job if e else None, "reachable": dict(e.reachable) if e else None,
                  "facts": [f.to_dict() for f in ans.facts], "entry": e.to_dict() if e else None})
        sites.append(d)
    return {
        "format": RESULT_FORMAT,
        "ok": a.ok,
        "source": a.label,
        "tree": a.root,
        "release": a.release,
        "variant": a.variant,
        "patches": list(a.patches),
        "reversed_build_patches": list(a.reversed_in_copy),
        "table": a.table,
        "skip_in_tree": a.skip_in_tree,
        "scan": {"seconds": round(a.scan.seconds, 3), "files_read": a.scan.files_read, "rounds": a.scan.rounds,
                 "aliases": list(a.scan.aliases)},
        "targets": [t.to_dict() for t in a.scan.targets],
        "sites": sites,
        "counts": {"sites": len(a.answers), "audited": len(a.answers) - len(a.unaudited),
                   "unaudited": len(a.unaudited), "unjustified": len(a.unjustified),
                   "unsupported": len(a.unsupported)},
        "not_in_tree": [e.id for e in a.not_in_tree],
        "facts": {fid: f.to_dict() for fid, f in sorted(a.facts.items())},
    }


def render_json(a: Audit) -> str:
    return json.dumps(to_dict(a), indent=1, sort_keys=False)


def _when(conds, arch=None) -> str:
    text = " && ".join(conds)
    if arch:
        return f"{arch} only" + (f", {text}" if text else "")
    return text or "always"


def _site_lines(a: Audit, ans: Answer) -> List[str]:
    s, e = ans.site, ans.entry
    head = f"{s.where}  {s.chain_text()}" + ("" if s.kind == "call" else f"  ({s.kind})")
    out = [head]
    for h in s.hops:
        real = "; ".join(f"{d.kind} at {d.where}, when {_when(d.when, d.arch)}" for d in h.real)
        out.append(f"    {h.name}: real as the {real}")
        for d in h.otherwise:
            what = "empty" if d.empty else "does not reach it"
            out.append(f"    {h.name}: {what} as the {d.kind} at {d.where}, when {_when(d.when, d.arch)}")
    if s.when:
        out.append(f"    the call is compiled when {_when(s.when)}")
    if e is None:
        out.append(f"  UNAUDITED: {ans.reason}")
        return out
    reach = ", ".join(f"{_ARCH_WORDS[k]} {e.reachable[k]}" for k in ARCHES)
    job = e.job or "none (null)"
    out.append(f"  audited: {e.verdict}; job {job}; reachable: {reach}")
    out.append(f"    flush before: {e.flush}")
    out.append(f"    reaches:      {e.reaches}")
    failed = ans.failed_facts
    if ans.facts:
        state = "all hold" if not failed else f"{len(failed)} of {len(ans.facts)} do not hold"
        if failed and not a.skip_in_tree:
            state += f" ({', '.join(f.id for f in failed)}; nothing is skipped in this tree)"
        out.append(f"    evidence:     {len(ans.facts)} facts, {state}")
        for f in failed if a.skip_in_tree else ():
            out.append(f"      not here: {f.id}: {f.detail}")
    for p in s.paths:
        pe = next((x for x in e.paths if (x.function, x.file) == (p.function, p.file)), None)
        if pe is None:
            out.append(f"    path {p.function} ({p.file}:{p.line}): not in the table")
        else:
            out.append(f"    path {p.function} ({p.file}:{p.line}): job {pe.job or 'none'}"
                       + (f"; {pe.note}" if pe.note else ""))
    for q in e.questions:
        out.append(f"    open question: {q} (doc/audit.md)")
    return out


def render_text(a: Audit) -> str:
    patches = ", ".join(p.rsplit("/", 1)[-1] for p in a.patches) or "none"
    lines = [f"tlbprobe audit of {a.label} ({a.release}), {a.variant}: patches {patches}",
             f"table {a.table}"]
    if a.reversed_in_copy:
        lines.append(f"(a kernel build has {', '.join(a.reversed_in_copy)} applied to the tree; the audit reversed "
                     f"it in its copy)")
    sc = a.scan
    lines.append(f"scan: {sc.files_read} files read, {sc.rounds} grep round(s), {sc.seconds:.1f} s; aliases: "
                 f"{', '.join(sc.aliases) or 'none'}")
    for t in sc.targets:
        defs = "; ".join(f"{'empty ' if d.empty else ''}{d.kind} at {d.where} when {_when(d.when, d.arch)}"
                         for d in t.definitions)
        lines.append(f"  {t.name}: {defs or 'not defined in this tree'}")
    lines.append("")
    for ans in a.answers:
        lines.extend(_site_lines(a, ans))
        lines.append("")
    failing = [f for f in a.facts.values() if not f.holds]
    if failing and not a.skip_in_tree:
        lines.append("facts that do not hold in this tree (a skip would rest on them; nothing is skipped here):")
        lines.extend(f"  {f.id}: {f.detail}" for f in failing)
        lines.append("")
    if a.not_in_tree:
        lines.append("table entries with no call site in this tree: " + "; ".join(e.id for e in a.not_in_tree))
        lines.append("")
    verdicts: Dict[str, int] = {}
    for ans in a.answers:
        if ans.entry is not None:
            verdicts[ans.entry.verdict] = verdicts.get(ans.entry.verdict, 0) + 1
    counted = ", ".join(f"{n} {v}" for v, n in verdicts.items() if v in VERDICTS)
    lines.append(f"{len(a.answers)} call sites: {len(a.answers) - len(a.unaudited)} audited"
                 + (f" ({counted})" if counted else "") + f", {len(a.unaudited)} unaudited; "
                 + ("the tree can skip (the sync calls the hook)" if a.skip_in_tree else "no skip in this tree"))
    if a.ok:
        lines.append("audit passed")
    else:
        why = []
        if a.unaudited:
            why.append(f"{len(a.unaudited)} unaudited: " + ", ".join(x.site.chain_text() + f" ({x.site.where})"
                                                                    for x in a.unaudited))
        if a.unjustified:
            why.append(f"{len(a.unjustified)} unjustified")
        if a.unsupported:
            why.append(f"{len(a.unsupported)} justified skip(s) whose facts do not hold here: "
                       + ", ".join(x.site.chain_text() for x in a.unsupported))
        lines.append("audit FAILED: " + "; ".join(why))
    return "\n".join(lines)
