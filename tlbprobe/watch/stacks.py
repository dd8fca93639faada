"""Each broadcast's kernel stack, from the ``stacktrace`` event trigger in a private tracefs
instance (kernels with CONFIG_STACKTRACE; no hist triggers or kprobes needed).

The trigger: ``stacktrace if <filter>`` on csd:csd_queue_cpu in the instance
instances/tlbprobe-watch-<pid>. The filter is the broadcast counter's
(counters.broadcast_filter(): the sync function, one chosen target per broadcast), so the
trigger saves exactly one stack per broadcast, on the sending CPU's ring buffer
(kernel/trace/trace_events_trigger.c stacktrace_trigger() -> __trace_stack()). The event
itself stays disabled: attaching a trigger soft-enables it (the probe runs, nothing but
the stack is written). The stacks are read between intervals from the instance's
trace_pipe with non-blocking reads (measure/trace.py read_pipe(): a reader blocked on it
is woken through irq_work, which would add interrupts of its own), and a consuming read
never stops recording (reading the ``trace`` file does: ring_buffer_read_prepare()).

Matching stacks to the exact count. Both the counter and the trigger see the same events
on the same CPU, in order, so per sending CPU the interval takes the oldest stacks, as
many as that CPU's counter says it sent (counters.SyncDelta.broadcasts_by_sender).
Stacks beyond the count (written after the counter was read) wait for the next interval;
a count without a stack (the ring buffer dropped it) is "unattributed". Nothing is ever
moved between origins to make the sums agree.

The ring buffer is sized per CPU (BUFFER_KB) and set to drop new events when full
(options/overwrite 0), so a drop is counted by the kernel (per_cpu/cpuN/stats "dropped
events") and shows as unattributed; the watcher drains the buffer more often than once
an interval when the last one came close to filling it.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Tuple

from ..errors import PreflightError
from ..measure.sysstate import SystemState
from ..measure.trace import read_pipe
from .origins import frame_name

EVENT_DIR = Path("events") / "csd" / "csd_queue_cpu"
#: Per-CPU ring buffer of the instance. A stack entry of a broadcast is ~200 bytes (16-20
#: frames of 8 bytes, a header), so 2 MiB holds ~10,000 stacks per CPU between drains:
#: the fastest collapse seen here (~2,000 a second, doc/watch.md) for 5 s.
BUFFER_KB = 2048
#: Stacks kept waiting for their count before the oldest are dropped (and counted)
MAX_PENDING_PER_CPU = 200_000

_HEADER = re.compile(r"^\s*(?P<task>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
                     r"(?P<ts>\d+\.\d+):\s+<stack trace>\s*$")
_LOST = re.compile(r"CPU:(\d+) \[LOST (\d+) EVENTS\]")


@dataclass(frozen=True)
class StackEvent:
    """One broadcast's stack as the trigger saved it."""

    cpu: int           # the sending CPU (whose ring buffer holds it)
    ts: float          # the instance's trace clock (mono: CLOCK_MONOTONIC seconds)
    pid: int           # the sending thread
    comm: str          # its name as the trace knew it ('<...>' when it did not)
    frames: Tuple[str, ...]  # function names, innermost first


class StackParser:
    """Turns trace_pipe text into StackEvents; feed lines, then :meth:`flush` at the end
    of a drain (the last stack of a drain is complete: trace_pipe prints an entry whole
    before it reports the buffer empty)."""

    def __init__(self) -> None:
        self.events: List[StackEvent] = []
        self.lost: Dict[int, int] = {}
        self.unparsed = 0
        self._head: Optional[re.Match] = None
        self._frames: List[str] = []

    def feed(self, line: str) -> None:
        if line.startswith(" => "):
            if self._head is not None:
                self._frames.append(frame_name(line))
            return
        self.flush()
        if not line.strip() or line.startswith("#"):
            return
        m = _HEADER.match(line)
        if m:
            self._head = m
            return
        lost = _LOST.search(line)
        if lost:
            cpu = int(lost.group(1))
            self.lost[cpu] = self.lost.get(cpu, 0) + int(lost.group(2))
            return
        self.unparsed += 1

    def flush(self) -> None:
        if self._head is not None:
            m = self._head
            self.events.append(StackEvent(int(m.group("cpu")), float(m.group("ts")), int(m.group("pid")),
                                          m.group("task").strip(), tuple(self._frames)))
        self._head, self._frames = None, []

    def take(self) -> List[StackEvent]:
        self.flush()
        out, self.events = self.events, []
        return out


def parse_stacks(text: str) -> List[StackEvent]:
    """Every stack entry of a trace or trace_pipe text."""
    parser = StackParser()
    for line in text.splitlines():
        parser.feed(line)
    return parser.take()


def task_name(pid: int, comm: str, proc: Path = Path("/proc")) -> str:
    """The trace's name for a task, or /proc's when the trace lost it ('<...>': its pid
    fell out of the saved-cmdlines cache), or '(exited)'."""
    if comm and comm != "<...>":
        return comm
    try:
        return (proc / str(pid) / "comm").read_text().strip() or "(exited)"
    except OSError:
        return "(exited)"


def instance_name(pid: Optional[int] = None) -> str:
    """Our instance: per process, so a leftover names the watch that left it
    (measure/trace.py remove_stale_instances() removes those whose process is gone)."""
    return f"tlbprobe-watch-{os.getpid() if pid is None else pid}"


@dataclass
class StackTraceSource:
    """The stacktrace trigger in our instance, its stacks waiting per sending CPU."""

    instance: Path
    filter_text: str
    log: Callable[[str], None] = lambda s: None
    pending: Dict[int, Deque[StackEvent]] = field(default_factory=dict)
    route: str = "stacktrace-trigger"
    _parser: StackParser = field(default_factory=StackParser)
    _tail: bytes = b""
    _dropped_seen: int = 0
    #: stacks dropped by the ring buffer since the last take (kernel stats, [LOST] lines)
    dropped: int = 0
    #: set when the instance vanished (another tool removed it): stacks stop
    gone: Optional[str] = None

    @classmethod
    def open(cls, state: SystemState, tracefs: Path, filter_text: str, log=lambda s: None) -> "StackTraceSource":
        instance = tracefs / "instances" / instance_name()
        state.mkdir(str(instance))  # journaled: `tlbprobe restore` removes it after a SIGKILL
        source = cls(instance, filter_text, log)
        try:
            (instance / "buffer_size_kb").write_text(str(BUFFER_KB))
        except OSError as e:
            raise PreflightError(f"cannot allocate the trace buffers ({BUFFER_KB} KiB per CPU): {e.strerror}") from None
        overwrite = instance / "options" / "overwrite"
        if overwrite.exists():
            overwrite.write_text("0")
        clocks = (instance / "trace_clock").read_text().replace("[", " ").replace("]", " ").split()
        if "mono" in clocks:
            (instance / "trace_clock").write_text("mono")
        source._write_trigger(f"stacktrace if {filter_text}")
        source._dropped_seen = source._dropped_total()
        return source

    def _write_trigger(self, text: str) -> None:
        """Write the trigger file (opened with O_TRUNC: it then holds ``text`` alone)."""
        path = self.instance / EVENT_DIR / "trigger"
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            raise PreflightError(f"the kernel refused the trigger {text!r} on {path} ({e.strerror})") from None

    def set_filter(self, filter_text: str) -> None:
        """A new online set. An event has one stacktrace trigger at most, and opening the
        trigger file with O_TRUNC removes every trigger first (event_trigger_regex_open(),
        kernel/trace/trace_events_trigger.c:238): a broadcast in between has no stack and
        shows as unattributed."""
        if filter_text == self.filter_text or self.gone:
            return
        self._write_trigger(f"stacktrace if {filter_text}")
        self.filter_text = filter_text

    def drain(self) -> None:
        """Read what the ring buffer holds now, without blocking."""
        if self.gone:
            return
        if not self.instance.is_dir():
            self.gone = f"the trace instance {self.instance} was removed by someone else"
            return
        try:
            self._tail = read_pipe(self.instance, self._tail, self._parser.feed)
        except OSError as e:
            self.gone = f"{self.instance}/trace_pipe cannot be read ({e.strerror})"
            return
        for ev in self._parser.take():
            queue = self.pending.setdefault(ev.cpu, deque())
            if len(queue) >= MAX_PENDING_PER_CPU:
                queue.popleft()
                self.dropped += 1
            queue.append(ev)
        self.dropped += sum(self._parser.lost.values())
        self._parser.lost.clear()

    def take(self, by_sender: Dict[int, int]) -> Tuple[List[StackEvent], int]:
        """The stacks of an interval: per sending CPU the oldest, as many as it sent.
        Returns (stacks, broadcasts without a stack)."""
        self.drain()
        self.dropped += self._new_dropped()
        taken: List[StackEvent] = []
        missing = 0
        for cpu, count in by_sender.items():
            queue = self.pending.get(cpu, deque())
            n = min(count, len(queue))
            taken.extend(queue.popleft() for _ in range(n))
            missing += count - n
        self.dropped = 0
        return taken, missing

    def waiting(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def _dropped_total(self) -> int:
        total = 0
        for stats in (self.instance / "per_cpu").glob("cpu*/stats"):
            try:
                for line in stats.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key.strip() == "dropped events":
                        total += int(value.strip() or 0)
            except (OSError, ValueError):
                continue
        return total

    def _new_dropped(self) -> int:
        total = self._dropped_total()
        new, self._dropped_seen = total - self._dropped_seen, total
        return max(new, 0)

    def fill_fraction(self, stacks: int, seconds: float, interval_s: float, cpus: int) -> float:
        """How full the busiest CPU's buffer would get in one interval at this rate (a
        rough ~200 bytes a stack): above 0.5 the watcher drains more often."""
        if seconds <= 0:
            return 0.0
        per_interval = stacks / seconds * interval_s
        return per_interval * 200 / (BUFFER_KB * 1024)

    def close(self) -> None:
        """Remove the trigger (the instance itself goes with the journal's restore)."""
        if self.gone or not self.instance.is_dir():
            return
        try:
            self._write_trigger("!stacktrace")
        except PreflightError:
            pass
