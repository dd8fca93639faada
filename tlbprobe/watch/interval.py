"""One interval's record, built from the exact counts and the stacks matched to them, and
the running totals the summary and the metrics are made of.

The rule every record keeps: the broadcasts by origin, ``unattributed`` included, add up
to the exact count (``broadcasts``). On the stacktrace route that holds by construction
(stacks.py takes at most the count per sending CPU); on the hist route an interval's
edge can leave ``unattributed`` a little below zero, which the record keeps as it is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .origins import (HUGETLB_UNSHARE, KHUGEPAGED, MADV_COLLAPSE, ORIGINS, OTHER, UNATTRIBUTED, caller_frames,
                      classify)

#: Bounds of one record, whatever the host does: processes named per origin, distinct
#: "other" stacks kept (the rest are counted, not listed).
MAX_PROCESSES = 32
MAX_OTHER_STACKS = 8


@dataclass(frozen=True)
class StackCount:
    """Broadcasts with one stack from one thread, in one interval."""

    pid: int
    comm: str
    frames: Tuple[str, ...]
    count: int


def count_stacks(events: Iterable[Any]) -> List[StackCount]:
    """StackEvents (stacks.py) grouped by (pid, comm, frames)."""
    c: Counter = Counter((e.pid, e.comm, e.frames) for e in events)
    return [StackCount(pid, comm, frames, n) for (pid, comm, frames), n in c.items()]


@dataclass
class IntervalRecord:
    """One line of records.jsonl (doc/watch.md "Records")."""

    seq: int
    start: float              # Unix time
    end: float
    #: measured on the monotonic clock (a wall-clock step does not change it)
    seconds: float
    online: List[int]
    route: str
    #: exact counts (None on the CAL-only route)
    broadcasts: Optional[int]
    ipis: Optional[int]
    by_origin: Dict[str, int]
    hugetlb_by_how: Dict[str, int]
    processes: List[Dict[str, Any]]
    other_stacks: List[Dict[str, Any]]
    cal: Dict[int, int]
    tlb: Dict[int, int]
    #: cross-CPU calls the watcher queued itself, per target CPU
    own: Dict[int, int]
    cal_less_own: Dict[int, int]
    notes: List[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.seconds

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["duration_s"] = round(d.pop("seconds"), 3)
        for key in ("cal", "tlb", "own", "cal_less_own"):
            d[key] = {str(k): v for k, v in d[key].items()}
        return d


def build_record(seq: int, start: float, end: float, seconds: float, online: List[int], route: str,
                 broadcasts: Optional[int], ipis: Optional[int], stacks: List[StackCount],
                 cal: Dict[int, int], tlb: Dict[int, int], own: Dict[int, int],
                 notes: Optional[List[str]] = None, traced: bool = True) -> IntervalRecord:
    """``traced``: stacks were looked for (a route with a stack source); without one every
    counted broadcast is unattributed."""
    by_origin: Counter = Counter({o: 0 for o in ORIGINS})
    how: Counter = Counter()
    procs: Counter = Counter()
    others: Counter = Counter()
    other_comm: Dict[Tuple[str, ...], str] = {}
    for s in stacks:
        origin = classify(s.frames, s.comm)
        by_origin[origin.origin] += s.count
        if origin.origin == HUGETLB_UNSHARE:
            how[origin.how] += s.count
        if origin.origin != KHUGEPAGED:
            procs[(origin.origin, s.comm, s.pid)] += s.count
        if origin.origin == OTHER:
            key = caller_frames(s.frames)
            others[key] += s.count
            other_comm.setdefault(key, s.comm)
    if broadcasts is not None:
        by_origin[UNATTRIBUTED] = broadcasts - sum(n for o, n in by_origin.items() if o != UNATTRIBUTED)
    processes = [{"origin": o, "comm": c, "pid": p, "count": n} for (o, c, p), n in procs.most_common(MAX_PROCESSES)]
    if len(procs) > MAX_PROCESSES:
        rest = sum(n for _, n in procs.most_common()[MAX_PROCESSES:])
        processes.append({"origin": "(more)", "comm": "", "pid": -1, "count": rest})
    other_stacks = [{"frames": list(f), "comm": other_comm[f], "count": n}
                    for f, n in others.most_common(MAX_OTHER_STACKS)]
    cal_less_own = {cpu: cal[cpu] - own.get(cpu, 0) for cpu in cal}
    return IntervalRecord(seq, start, end, seconds, list(online), route, broadcasts, ipis,
                          dict(by_origin) if broadcasts is not None or traced else {}, dict(how), processes,
                          other_stacks, dict(cal), dict(tlb), dict(own), cal_less_own, list(notes or []))


@dataclass
class Totals:
    """Running totals over the whole watch (summary.json, the metrics, the last line)."""

    intervals: int = 0
    seconds: float = 0.0
    broadcasts: int = 0
    ipis: int = 0
    by_origin: Counter = field(default_factory=Counter)
    hugetlb_by_how: Counter = field(default_factory=Counter)
    #: MADV_COLLAPSE (and other per-process) broadcasts by process name
    by_comm: Counter = field(default_factory=Counter)
    own: int = 0
    cal: int = 0
    cal_less_own: int = 0
    tlb: int = 0
    peak_broadcasts: int = 0
    peak_seq: Optional[int] = None
    peak_start: Optional[float] = None

    def add(self, r: IntervalRecord) -> None:
        self.intervals += 1
        self.seconds += r.duration_s
        self.broadcasts += r.broadcasts or 0
        self.ipis += r.ipis or 0
        self.by_origin.update(r.by_origin)
        self.hugetlb_by_how.update(r.hugetlb_by_how)
        for p in r.processes:
            if p["origin"] == MADV_COLLAPSE:
                self.by_comm[p["comm"]] += p["count"]
        self.own += sum(r.own.values())
        self.cal += sum(r.cal.values())
        self.cal_less_own += sum(r.cal_less_own.values())
        self.tlb += sum(r.tlb.values())
        if (r.broadcasts or 0) > self.peak_broadcasts:
            self.peak_broadcasts, self.peak_seq, self.peak_start = r.broadcasts or 0, r.seq, r.start

    def per_hour(self, n: float) -> float:
        return n * 3600.0 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "intervals": self.intervals, "seconds": round(self.seconds, 3),
            "broadcasts": self.broadcasts, "ipis": self.ipis,
            "broadcasts_per_hour": round(self.per_hour(self.broadcasts), 3),
            "by_origin": {o: self.by_origin.get(o, 0) for o in ORIGINS},
            "hugetlb_by_how": dict(self.hugetlb_by_how),
            "madv_collapse_by_process": dict(self.by_comm.most_common(MAX_PROCESSES)),
            "own_ipis": self.own, "own_ipis_per_hour": round(self.per_hour(self.own), 3),
            "cal": self.cal, "cal_less_own": self.cal_less_own, "tlb": self.tlb,
            "peak_interval": {"seq": self.peak_seq, "start": self.peak_start, "broadcasts": self.peak_broadcasts},
        }
