"""Each broadcast's stack through a hist trigger keyed by stack, where the kernel has hist
triggers (CONFIG_HIST_TRIGGERS): the kernel keeps a count per (thread, stack) itself, so
nothing is written per event and no ring buffer can overflow.

The trigger (kernel/trace/trace_events_hist.c; Documentation/trace/histogram.rst):
``hist:keys=common_pid.execname,common_stacktrace:vals=hitcount:size=8192 if <filter>``
on csd:csd_queue_cpu in our instance, with the broadcast counter's filter (one event per
broadcast: counters.broadcast_filter()). The key ``common_stacktrace`` is 6.4's name; the
kernels from 4.7 to 6.3 call it ``stacktrace`` (6.4+ still accept it:
parse_hist_trigger_attrs / create_key_field, trace_events_hist.c:4546), so that one is
tried when the first is refused. Stacks are cut at HIST_STACKTRACE_DEPTH = 16 frames
after skipping 5 (kernel/trace/trace.h:131-133): enough for every origin in origins.py,
whose telling frame is within 10 frames of the tracepoint on 6.18.

The ``hist`` file holds counts since the trigger was attached; the watch keeps the last
reading and records the difference. The table holds ``size`` entries; a key that finds
it full is dropped and counted (``Dropped:`` in the totals): those broadcasts show as
unattributed. Since the table is keyed by thread too, a host that forks many collapsing
processes fills it over days: past three quarters full the watcher clears it (``:clear``)
after a read, and the few events between the read and the clear are unattributed too.

The counts and the exact counter are read a few microseconds apart, so an interval may
show one or two broadcasts more, or fewer, than its count, at its edges; the next
interval makes up for it (the record says so). This route was written from the kernel's
source and its documentation's output; the development host has no hist triggers, so
only the parser is tested here (tests/test_watch.py), on the documentation's own text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ..errors import PreflightError
from ..measure.sysstate import SystemState, append_line
from .origins import frame_name
from .stacks import EVENT_DIR, instance_name

HIST_SIZE = 8192
#: (pid, comm, frames)
Key = Tuple[int, str, Tuple[str, ...]]

_ENTRY = re.compile(r"\{(?P<key>.*?)\}\s*hitcount:\s*(?P<hits>\d+)", re.S)
_PID = re.compile(r"common_pid:\s*(?P<comm>.*?)\s*\[\s*(?P<pid>\d+)\]")
_DROPPED = re.compile(r"^\s*Dropped:\s*(\d+)", re.M)
_ENTRIES = re.compile(r"^\s*Entries:\s*(\d+)", re.M)


@dataclass(frozen=True)
class HistTable:
    """A parsed ``hist`` file: count per key, and the table's totals."""

    counts: Dict[Key, int]
    entries: int
    dropped: int


def parse_hist(text: str) -> HistTable:
    counts: Dict[Key, int] = {}
    for m in _ENTRY.finditer(text):
        key = m.group("key")
        pid_m = _PID.search(key)
        pid, comm = (int(pid_m.group("pid")), pid_m.group("comm").strip()) if pid_m else (-1, "")
        _, _, stack = key.partition("stacktrace:")
        frames = tuple(frame_name(f) for f in stack.splitlines() if f.strip() and not f.strip().startswith(","))
        k = (pid, comm, frames)
        counts[k] = counts.get(k, 0) + int(m.group("hits"))
    dropped = _DROPPED.search(text)
    entries = _ENTRIES.search(text)
    return HistTable(counts, int(entries.group(1)) if entries else len(counts), int(dropped.group(1)) if dropped else 0)


def hist_delta(before: HistTable, after: HistTable) -> Dict[Key, int]:
    """Counts added between two readings of the same table (keys with no change left out)."""
    out = {}
    for k, n in after.counts.items():
        d = n - before.counts.get(k, 0)
        if d > 0:
            out[k] = d
    return out


@dataclass
class HistSource:
    """The hist trigger in our instance; :meth:`take` returns the counts since the last."""

    instance: Path
    filter_text: str
    key_name: str
    log: Callable[[str], None] = lambda s: None
    route: str = "hist-trigger"
    last: HistTable = field(default_factory=lambda: HistTable({}, 0, 0))
    gone: Optional[str] = None

    def spec(self, filter_text: Optional[str] = None) -> str:
        return (f"hist:keys=common_pid.execname,{self.key_name}:vals=hitcount:size={HIST_SIZE}"
                f" if {filter_text or self.filter_text}")

    @classmethod
    def open(cls, state: SystemState, tracefs: Path, filter_text: str, log=lambda s: None) -> "HistSource":
        instance = tracefs / "instances" / instance_name()
        state.mkdir(str(instance))
        refused = ""
        for key in ("common_stacktrace", "stacktrace"):
            source = cls(instance, filter_text, key, log)
            try:
                source._write(source.spec())
                return source
            except OSError as e:
                refused = e.strerror or str(e)
        raise PreflightError(f"the kernel refused a hist trigger keyed by stack on {instance / EVENT_DIR} "
                             f"({refused})")

    def _write(self, text: str) -> None:
        append_line(self.instance / EVENT_DIR / "trigger", text)  # O_APPEND: adds, never clears

    def read(self) -> HistTable:
        return parse_hist((self.instance / EVENT_DIR / "hist").read_text())

    def drain(self) -> None:
        """Nothing to do between intervals: the kernel counts."""

    def take(self) -> Tuple[Dict[Key, int], int]:
        """(counts per key since the last take, keys the table dropped since then)."""
        if self.gone:
            return {}, 0
        try:
            now = self.read()
        except OSError as e:
            self.gone = f"{self.instance / EVENT_DIR / 'hist'} cannot be read ({e.strerror})"
            return {}, 0
        delta, dropped = hist_delta(self.last, now), max(0, now.dropped - self.last.dropped)
        self.last = now
        if now.entries > HIST_SIZE * 3 // 4:
            try:
                self._write(self.spec().replace(" if ", ":clear if ", 1))
                self.last = HistTable({}, 0, 0)
            except OSError as e:
                self.log(f"note: the hist table is {now.entries} of {HIST_SIZE} entries full and could not "
                         f"be cleared ({e.strerror}): new keys will be dropped and counted unattributed")
        return delta, dropped

    def set_filter(self, filter_text: str) -> None:
        if filter_text == self.filter_text or self.gone:
            return
        self._write("!" + self.spec())
        self._write(self.spec(filter_text))
        self.filter_text = filter_text
        self.last = HistTable({}, 0, 0)

    def close(self) -> None:
        if self.gone or not self.instance.is_dir():
            return
        try:
            self._write("!" + self.spec())
        except OSError:
            pass
