"""What the watch says to a person: one line per interval that had something, and the
final summary (the same figures as summary.json's totals)."""

from __future__ import annotations

from typing import List

from .interval import IntervalRecord
from .origins import MADV_COLLAPSE, ORIGINS


def describe(rec: IntervalRecord) -> str:
    """One line for an interval (the log and the console)."""
    parts = [f"interval {rec.seq} ({rec.duration_s:.1f} s):"]
    if rec.broadcasts is None:
        parts.append("no exact count;")
    else:
        origins = ", ".join(f"{o} {rec.by_origin[o]}" for o in ORIGINS if rec.by_origin.get(o))
        parts.append(f"{rec.broadcasts} broadcasts" + (f" ({origins})" if origins else "") + f", {rec.ipis} IPIs;")
        procs = [f"{p['comm']}[{p['pid']}] {p['count']}" for p in rec.processes if p["origin"] == MADV_COLLAPSE][:3]
        if procs:
            parts.append("MADV_COLLAPSE by " + ", ".join(procs) + ";")
    parts.append(f"CAL {sum(rec.cal_less_own.values())} (own {sum(rec.own.values())} left out), "
                 f"TLB {sum(rec.tlb.values())}")
    line = " ".join(parts)
    for n in rec.notes:
        line += f"\n  note: {n}"
    return line


def final_lines(result) -> List[str]:
    """The summary printed when a watch ends (``result``: watcher.WatchResult)."""
    t = result.totals
    hours = t.seconds / 3600
    out = [f"watch {'complete' if result.complete else 'INCOMPLETE'} ({result.reason}): {t.intervals} intervals, "
           f"{t.seconds:.0f} s; {result.route.why}"]
    if result.route.exact:
        origins = ", ".join(f"{o} {t.by_origin.get(o, 0)}" for o in ORIGINS if t.by_origin.get(o, 0))
        out.append(f"  sync broadcasts: {t.broadcasts} ({t.per_hour(t.broadcasts):.1f} per hour)"
                   + (f": {origins}" if origins else ""))
        out.append(f"  sync IPIs queued: {t.ipis}")
        if t.by_comm:
            out.append("  MADV_COLLAPSE by process: " + ", ".join(f"{c} {n}" for c, n in t.by_comm.most_common(5)))
        if t.hugetlb_by_how:
            out.append("  hugetlb unshare by: " + ", ".join(f"{h} {n}" for h, n in t.hugetlb_by_how.most_common()))
        if t.peak_seq is not None:
            out.append(f"  peak interval: {t.peak_seq} with {t.peak_broadcasts} broadcasts")
    out.append(f"  all CPUs: CAL {t.cal_less_own} after leaving out the watcher's own {t.own} calls "
               f"({t.per_hour(t.own):.0f} per hour), TLB {t.tlb}")
    if hours and result.notes:
        out.append(f"  {len(result.notes)} note(s): see {result.out}/log.txt")
    out.append(f"  records: {result.out}")
    return out
