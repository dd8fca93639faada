"""Attribute every function-call IPI to the kernel function it ran, from tracefs.

The CAL line of /proc/interrupts says how many function-call IPIs a CPU took, not why.
Two tracepoint families say why (6.12 and 6.18 have both, 6.1 neither):

* ``csd:csd_function_entry`` (kernel/smp.c, csd_do_func()) fires on the CPU that runs a
  cross-CPU function call, with ``func=`` the function, e.g. ``tlb_remove_table_smp_sync``
  (mm/mmu_gather.c) or ``flush_tlb_func`` (arch/x86/mm/tlb.c).
* ``ipi:ipi_send_cpu`` / ``ipi:ipi_send_cpumask`` (kernel/smp.c, kernel/sched/core.c)
  fire on the sender with the target(s), the callsite and the callback. With two CPUs a
  broadcast has one target and shows as ipi_send_cpu; with more, as ipi_send_cpumask.
  We count both, one per target CPU.
* ``csd:csd_queue_cpu`` (kernel/smp.c) fires on the sender for every CPU a call is queued
  for, with ``cpu=`` the target: what the kernel *asked* for, interrupt or not. A target
  that is polling in its idle loop takes the call without an interrupt: the sender only
  sets TIF_NEED_RESCHED (``sched:sched_wake_idle_without_ipi`` fires instead of
  ``ipi_send_cpu``), and neither CAL nor ``csd_function_entry`` shows that call
  (measured on 6.18: 128 queued, 127 entries, 1 wake without IPI; with cyclictest beside
  the collapse up to 7 of 128 went that way). So the queued count is the exact count of
  sync calls, and the entry count is the number that arrived as interrupts.

Kernels without the csd events get kprobes instead, when they have kprobe events
(CONFIG_KPROBE_EVENTS; Debian's kernels do): one on each of KPROBE_FUNCTIONS, counted on
the CPU that runs it, recorded as event ``kprobe``. A kprobe counts the function's runs,
interrupt or not, so on those kernels ``attributed`` counts calls run; the sync function
only ever runs as a cross-CPU call on the other CPUs.

We use a private instance (instances/tlbprobe-<pid>) so we never fight another tracer,
delimit phases with trace_marker writes (markers and events share the instance's clock
and buffer, so every event lands in the right phase), and read the buffer only between
phases, with non-blocking reads: a reader waiting on trace_pipe during a phase would be
woken through irq_work and add interrupts of its own.

Enabling a tracepoint patches kernel text, which itself sends IPIs (do_sync_core): the
session is opened before the first snapshot and closed after the last.

Counting at scale, and why a perf counter. csd_queue_cpu is recorded on the *sender*, one
event per target: ops x (N-1) events in one CPU's buffer per phase (129,024 for 4 GiB on
64 CPUs, 645,120 for the seed's 20 GiB, 2.6 million at 256 CPUs). When that buffer filled,
the kernel dropped events and then refused the phase's end marker (EBADF), which killed
the 4 GiB / 64-vCPU run. The choices, and what was measured (benchmarks/trace_scale.py):

* a bigger buffer on the sender only: memory grows with ops x N (125 MiB on one CPU at
  256 CPUs and 20 GiB), and the sender is not always the driver (khugepaged, hugetlb
  clients run anywhere);
* draining the buffer between the workload's chunks: the driver CPU parses ~10^5 lines
  inside the measured window, which lengthens the phase it measures;
* ``ipi:ipi_send_cpumask``: its mask holds only the CPUs whose call queue was empty,
  and its callback is smp.c's generic handler, not the function;
* a perf counter per CPU on csd_queue_cpu, in counting mode, with the filter
  ``func == <sync address> && cpu != <driver>``: the kernel keeps a 64-bit count, no
  buffer at all, exact at any N x ops; N file descriptors. Reading it sends IPIs, so it is
  read outside the window (TraceSession.open_phase() and counts()).

So the sync calls are counted by the perf counter (perfcount.py; ``--sync-counter trace``
keeps the old way), the ring buffer gets a filter that leaves the sync's queue events out,
and every buffer is sized from the job (TracePlan). Whatever still overflows (a
--trace-buffer-kb too small, a storm of other IPIs) marks that phase's ring-buffer
figures lost: the run goes on, the sync count stays exact, and the report says so.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from ..errors import PreflightError
from .sysstate import SystemState, pid_alive
from ..vocab import FLUSH_FUNCTION, NOHZ_FUNCTION, SYNC_FUNCTION, WAKEUP_FUNCTION
from .paths import REAL
from .perfcount import CounterUnavailable, TracepointCounter, kernel_addresses

TRACEFS = REAL.tracefs
EVENTS = ("csd/csd_function_entry", "csd/csd_queue_cpu", "ipi/ipi_send_cpu", "ipi/ipi_send_cpumask",
          "sched/sched_wake_idle_without_ipi")
MARK = "tlbprobe-phase"
#: Functions probed where the csd events are missing: the sync under study, the TLB flush,
#: and the two other cross-CPU calls seen most (remote wake-ups, nohz kicks).
KPROBE_FUNCTIONS = (SYNC_FUNCTION, FLUSH_FUNCTION, WAKEUP_FUNCTION, NOHZ_FUNCTION)
#: attribution.csv's event name for the in-kernel count of sync calls queued (perfcount.py)
COUNTER_EVENT = "counter:csd_queue_cpu"
NO_CSD = "this kernel has no csd trace events (6.12 has them, 6.1 not)"

_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$"
)
_LOST = re.compile(r"CPU:(\d+) \[LOST (\d+) EVENTS\]")
_FIELD = re.compile(r"(\w+)=(\S+)")

#: Key of one attribution count: (event, function, callsite, cpu).
Key = Tuple[str, str, str, int]
#: distinct (event, body, cpu) a session keeps parsed (a 64-CPU collapse has a few hundred)
PARSE_CACHE = 65536


def split_line(line: str) -> Optional[Tuple[int, str, str]]:
    """(cpu, event, body) of one trace_pipe line, or None. "TASK-PID [CPU] FLAGS TS: EVENT:
    BODY": the fast path splits at the first two ": " (a trace of a 64-vCPU guest has
    millions of lines, and under TCG the regex alone took minutes); a line it cannot
    split cleanly (a task name with ": " or brackets in it) goes to the full regex."""
    head, sep, rest = line.partition(": ")
    if sep:
        event, sep, body = rest.partition(": ")
        close = head.rfind("] ")
        open_ = head.rfind("[", 0, close)
        ts = head[head.rfind(" ") + 1:]
        if sep and event.isidentifier() and open_ >= 0 and head[open_ + 1:close].isdigit() and \
                "." in ts and ts.replace(".", "", 1).isdigit():
            return int(head[open_ + 1:close]), event, body
    m = _LINE.match(line)
    return (int(m.group("cpu")), m.group("event"), m.group("body")) if m else None


def symbol(text: str) -> str:
    """'flush_tlb_func+0x0/0x1c0' -> 'flush_tlb_func'; '0x0' (no callback) -> '(none)'."""
    name = text.rstrip(",").split("+", 1)[0]
    return "(none)" if name in ("0x0", "0", "(nil)") else name


def parse_hex_cpumask(text: str) -> List[int]:
    """CPUs of a cpumask as tracepoints print it (__get_cpumask -> "%*pb"): comma-separated
    32-bit hex words, most significant first, e.g. '00000000,0000000c' = CPUs 2 and 3."""
    try:
        bits = int(text.replace(",", ""), 16)
    except ValueError:
        return []
    return [cpu for cpu in range(bits.bit_length()) if bits >> cpu & 1]


def parse_event(body_event: str, body: str, cpu: int) -> List[Key]:
    """The attribution keys one trace line counts for (a cpumask counts once per target)."""
    fields = dict(_FIELD.findall(body))
    if body_event == "csd_function_entry":
        return [("csd_function_entry", symbol(fields.get("func", "?")), "", cpu)]
    if body_event == "csd_queue_cpu":
        return [("csd_queue_cpu", symbol(fields.get("func", "?")), symbol(fields.get("callsite", "?")),
                 int(fields.get("cpu", -1)))]
    if body_event == "sched_wake_idle_without_ipi":
        return [("wake_idle_without_ipi", "(none)", "", int(fields.get("cpu", -1)))]
    if body_event == "ipi_send_cpu":
        return [("ipi_send_cpu", symbol(fields.get("callback", "0x0")), symbol(fields.get("callsite", "?")),
                 int(fields.get("cpu", -1)))]
    if body_event == "ipi_send_cpumask":
        targets = parse_hex_cpumask(fields.get("cpumask", ""))
        cb, cs = symbol(fields.get("callback", "0x0")), symbol(fields.get("callsite", "?"))
        return [("ipi_send_cpumask", cb, cs, t) for t in targets]
    return []


@dataclass
class PhaseCounts:
    """Attribution counts of one phase, plus what the trace could not see."""

    counts: Counter = field(default_factory=Counter)
    #: events the ring buffer dropped in this phase (per_cpu/*/stats, [LOST] lines)
    lost: int = 0
    #: csd_queue_cpu was enabled: without it (a kernel that lacks it) queued() means nothing
    queue_traced: bool = False
    #: the sync calls queued for the watched CPUs, from the in-kernel perf counter; None
    #: when the run counted them in the ring buffer (or not at all)
    sync_queued: Optional[int] = None
    #: why the ring buffer's figures of this phase cannot be trusted (a refused marker)
    error: Optional[str] = None

    @property
    def ring_complete(self) -> bool:
        """Whether the ring buffer saw the whole phase: nothing dropped, both markers written."""
        return not self.lost and not self.error

    def _per_function(self, event_name: str, cpus: List[int]) -> Dict[str, int]:
        out: Counter = Counter()
        cpuset = set(cpus)
        for (event, func, _, cpu), n in self.counts.items():
            if event == event_name and cpu in cpuset:
                out[func] += n
        return dict(out.most_common())

    def received(self, cpus: List[int]) -> Dict[str, int]:
        """{function: csd_function_entry count} on the given (receiving) CPUs: the calls
        that arrived as interrupts; on kernels without that event, the kprobe counts."""
        return self._per_function("csd_function_entry", cpus) or self._per_function("kprobe", cpus)

    def queued(self, cpus: List[int]) -> Dict[str, int]:
        """{function: csd_queue_cpu count} targeting the given CPUs: every call the kernel
        asked them to run, with or without an interrupt."""
        out = self._per_function("csd_queue_cpu", cpus)
        if self.sync_queued is not None:  # the exact in-kernel count replaces the ring's
            out[SYNC_FUNCTION] = self.sync_queued
            out = dict(sorted(out.items(), key=lambda kv: -kv[1]))
        return out

    def woken_without_ipi(self, cpus: List[int]) -> int:
        """Calls (and wake-ups) delivered to the given CPUs by setting NEED_RESCHED on a
        polling idle loop instead of sending an interrupt."""
        return sum(self._per_function("wake_idle_without_ipi", cpus).values())


def read_pipe(instance: Path, pending: bytes, handle) -> bytes:
    """Everything in an instance's trace_pipe now, without blocking (a reader blocked on
    it is woken through irq_work, which would add interrupts of its own): each whole line
    to ``handle(str)``; returns the unfinished tail for the next call. OSError when the
    pipe cannot be opened or read."""
    fd = os.open(instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                handle(raw.decode("utf-8", "replace"))
    finally:
        os.close(fd)
    return pending


class TraceSession:
    """A private tracefs instance whose IPI events are aggregated per phase, and the
    in-kernel counter of the sync calls queued.

    Use :func:`open_session`. Per phase: :meth:`open_phase` before the "before" snapshot,
    :meth:`begin` after it, :meth:`end` before the "after" snapshot and :meth:`counts`
    after it. The trace is read only between phases, never during one: a reader blocked
    on trace_pipe is woken through irq_work and would add interrupts of its own to the
    phase it measures; and reading the perf counter sends IPIs. A full buffer never ends
    a run: the phase's ring-buffer figures are marked lost (``PhaseCounts.lost`` and
    ``error``) and the report falls back as doc/run-format.md says.
    """

    def __init__(self, instance: Path, log=lambda s: None):
        self.instance = instance
        self.log = log
        self.enabled: List[str] = []
        self._current: Optional[str] = None
        self._phases: Dict[str, PhaseCounts] = {}
        self._overrun_seen = 0
        self._pending = b""
        self._parsed: Dict[Tuple[str, str, int], List[Key]] = {}
        self.unparsed = 0
        self.kprobes: Set[str] = set()  # event names of our kprobes (= the function names)
        #: counts the sync calls queued for the other CPUs in the kernel (perfcount.py)
        self.counter: Optional[TracepointCounter] = None
        self._counter_start = 0
        self._errors: Dict[str, str] = {}

    def drain(self) -> None:
        """Consume everything in the buffer now (non-blocking reads of trace_pipe)."""
        try:
            self._pending = read_pipe(self.instance, self._pending, self._handle)
        except OSError as e:
            self._fail(f"trace_pipe cannot be read ({e.strerror})")

    def _fail(self, why: str, tag: Optional[str] = None) -> None:
        tag = tag or self._current
        if tag and tag not in self._errors:
            self._errors[tag] = why

    def _handle(self, line: str) -> None:
        lost = _LOST.search(line) if "LOST" in line else None
        if lost:
            if self._current:
                self._phases[self._current].lost += int(lost.group(2))
            return
        parsed = split_line(line)
        if parsed is None:
            if line.strip():
                self.unparsed += 1
            return
        cpu, event, body = parsed
        if event in ("tracing_mark_write", "print"):
            parts = body.split()
            if len(parts) == 3 and parts[0] == MARK:
                self._current = parts[2] if parts[1] == "begin" else None
                if self._current:
                    self._phases.setdefault(self._current, PhaseCounts())
            return
        if self._current:
            if event in self.kprobes:
                keys = [("kprobe", event, "", cpu)]
            else:
                # the same few bodies repeat on every CPU (func=, callsite=, the per-CPU
                # csd address): parse each once. Bounded: a trace with more distinct
                # bodies than that just parses the rest each time
                keys = self._parsed.get((event, body, cpu))
                if keys is None:
                    keys = parse_event(event, body, cpu)
                    if len(self._parsed) < PARSE_CACHE:
                        self._parsed[(event, body, cpu)] = keys
            self._phases[self._current].counts.update(keys)

    # -- phases ---------------------------------------------------------------------------
    def _mark(self, what: str, tag: str) -> None:
        """Write a phase marker. The kernel refuses it (EBADF from tracing_mark_write())
        when this CPU's buffer is full and overwrite is off: then the phase's ring-buffer
        figures are marked lost, and the run goes on."""
        try:
            fd = os.open(self.instance / "trace_marker", os.O_WRONLY)
            try:
                os.write(fd, f"{MARK} {what} {tag}\n".encode())
            finally:
                os.close(fd)
        except OSError as e:
            self._fail(f"the {what} marker was refused ({e.strerror or e}): a trace buffer was full", tag)

    def open_phase(self, tag: str) -> None:
        """Before the "before" snapshot: read out what came before (it belongs to no phase)
        and the counter's start (this read sends IPIs, so it stays outside the window)."""
        self.drain()
        self._current = None
        if self.counter:
            self._counter_start = self.counter.read()

    def begin(self, tag: str) -> None:
        """Open a phase (call right after the "before" snapshot)."""
        self._mark("begin", tag)

    def end(self, tag: str) -> None:
        """Close a phase (call right before the "after" snapshot)."""
        self._mark("end", tag)

    def counts(self, tag: str) -> PhaseCounts:
        """A closed phase's counts (call after the "after" snapshot: reads the counter and
        the buffer)."""
        sync_queued = self.counter.read() - self._counter_start if self.counter else None
        self.drain()
        self._current = None
        counts = self._phases.pop(tag, PhaseCounts())
        counts.queue_traced = "csd/csd_queue_cpu" in self.enabled or self.counter is not None
        counts.sync_queued = sync_queued
        counts.lost += self.overruns_since_last()
        counts.error = self._errors.pop(tag, None)
        if not counts.ring_complete:
            exact = (f"the {SYNC_FUNCTION} count stays exact (in-kernel counter)" if self.counter
                     else "the verdict uses CAL minus TLB")
            why = counts.error or f"the trace buffer dropped {counts.lost} event(s)"
            self.log(f"warning: {tag}: {why}: the received counts are short; {exact}")
        return counts

    def overruns_since_last(self) -> int:
        """Events dropped or overwritten since the previous call (per_cpu/*/stats)."""
        total = 0
        for stats in (self.instance / "per_cpu").glob("cpu*/stats"):
            try:
                for line in stats.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key.strip() in ("overrun", "dropped events"):
                        total += int(value.strip() or 0)
            except (OSError, ValueError):
                continue
        new, self._overrun_seen = total - self._overrun_seen, total
        return max(new, 0)

    def close(self) -> None:
        if self.counter:
            self.counter.close()
        for ev in self.enabled:
            try:
                (self.instance / "events" / ev / "enable").write_text("0")
            except OSError:
                pass


def kprobe_group() -> str:
    """Our kprobe events' group: per process, so a leftover names the run that left it."""
    return f"tlbprobe_{os.getpid()}"


def place_kprobes(state: SystemState, root: Path, log=lambda s: None) -> List[str]:
    """The fallback for kernels without csd events: kprobes on KPROBE_FUNCTIONS (journaled,
    removed on restore). Returns the functions probed; empty, after a warning, when the
    sync function itself cannot be probed (then the run counts from /proc/interrupts only)."""
    events_file = root / "kprobe_events"
    if not events_file.exists():
        log(f"warning: {NO_CSD} nor kprobe events (CONFIG_KPROBE_EVENTS): IPIs are counted from "
            f"/proc/interrupts only, without attribution to kernel functions")
        return []
    placed: List[str] = []
    present = kernel_addresses(KPROBE_FUNCTIONS)
    for func in KPROBE_FUNCTIONS:
        if func not in present:
            log(f"note: no kernel function {func} to probe (inlined or renamed in this kernel)")
            continue
        try:
            state.add_kprobe(events_file, kprobe_group(), func)
        except PreflightError as e:
            log(f"note: {e}")
            continue
        placed.append(func)
    if SYNC_FUNCTION not in placed:
        log(f"warning: {NO_CSD} and {SYNC_FUNCTION} cannot be probed: IPIs are counted from "
            f"/proc/interrupts only")
        return []
    log(f"{NO_CSD}: attributing with kprobes on {', '.join(placed)} (each counts the function's runs per CPU)")
    return placed


def remove_stale_instances(root: Path, log=lambda s: None) -> None:
    """Remove tlbprobe-<pid> instances whose process is gone (journaled runs never leave
    one, but a tracefs instance outlives unmounting, so an older tool's leftovers would
    hold trace buffers forever)."""
    for inst in (root / "instances").glob("tlbprobe-*"):
        pid = inst.name.rpartition("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                inst.rmdir()
                log(f"removed a stale trace instance {inst} (its process {pid} is gone)")
            except OSError as e:
                log(f"warning: stale trace instance {inst} could not be removed: {e.strerror}")


#: Bytes one event takes in the ring buffer, header included, rounded up: a
#: csd_function_entry record is 32 bytes, csd_queue_cpu 48, ipi_send_cpumask grows with
#: the cpumask (80 at 256 CPUs).
RECEIVER_EVENT_BYTES = 48
SENDER_EVENT_BYTES = 96
#: Events per CPU per phase that the buffer holds beyond the workload's own: the
#: background, the scheduler's kicks, a long idle window.
BASE_EVENTS = 16384
MAX_BUFFER_KB = 256 * 1024
BUFFER_STEP_KB = 256


@dataclass(frozen=True)
class TracePlan:
    """How big the buffers are and how the sync calls are counted, fixed before the run.

    Why per job: one sync broadcast queues one call per other CPU, all recorded on the
    sending CPU (csd_queue_cpu), and each receiver records what it runs. A fixed size
    either wastes memory on small runs or overflows on big ones (ops x (N-1) = 129,024
    events for 4 GiB on 64 CPUs). With the perf counter the sender's buffer no longer
    holds the sync's queue events, so every CPU needs room for about its own receipts:
    the sync's entry and, with --threads, a TLB flush per operation.
    """

    cpus: Tuple[int, ...]
    #: the CPU that sends the broadcasts, None when any CPU may (khugepaged, a kernel thread)
    driver_cpu: Optional[int]
    ops_per_phase: int
    sync_counter: str = "perf"         # perf | trace (the ring buffer counts the queued syncs)
    buffer_kb: Optional[int] = None    # per CPU, given by the user: overrides the sizing

    def per_cpu_kb(self) -> int:
        if self.buffer_kb:
            return self.buffer_kb
        return _kb((BASE_EVENTS + 2 * self.ops_per_phase) * RECEIVER_EVENT_BYTES)

    def driver_kb(self, counter: bool) -> int:
        """The sending CPU: its own receipts, one ipi_send and a few flush queue events
        per broadcast, and (without the counter) one csd_queue_cpu per broadcast and target."""
        if self.buffer_kb:
            return self.buffer_kb
        targets = 0 if counter else len(self.cpus) - 1
        return _kb((BASE_EVENTS + 4 * self.ops_per_phase) * SENDER_EVENT_BYTES
                   + targets * self.ops_per_phase * RECEIVER_EVENT_BYTES)

    def total_kb(self, counter: bool) -> int:
        if self.driver_cpu is None:  # any CPU may send: each gets the sender's room
            return self.driver_kb(counter) * len(self.cpus)
        return self.per_cpu_kb() * (len(self.cpus) - 1) + self.driver_kb(counter)


def _kb(nbytes: int) -> int:
    """Round up to BUFFER_STEP_KB, at least 1 MiB, at most MAX_BUFFER_KB."""
    steps = -(-nbytes // (BUFFER_STEP_KB * 1024))
    return max(1024, min(MAX_BUFFER_KB, steps * BUFFER_STEP_KB))


def sync_filter(driver_cpu: Optional[int], address: int, negate: bool = False) -> str:
    """The ftrace filter for csd_queue_cpu: the sync function's calls to the other CPUs
    (for the counter; to every CPU when the sender is not the driver), or everything but
    the sync function (for the ring buffer)."""
    if negate:
        return f"func != 0x{address:x}"
    if driver_cpu is None:
        return f"func == 0x{address:x}"
    return f"func == 0x{address:x} && cpu != {driver_cpu}"


def open_counter(root: Path, plan: TracePlan, address: Optional[int], log) -> Optional[TracepointCounter]:
    """The in-kernel counter of sync calls queued (``address``: the sync function's, from
    kallsyms), or None (said) when it cannot be had."""
    if plan.sync_counter != "perf":
        return None
    if not address:
        log(f"note: {SYNC_FUNCTION} has no visible address (kptr_restrict?): counting sync calls in the "
            f"trace buffer")
        return None
    try:
        return TracepointCounter.open(root, "csd/csd_queue_cpu", sync_filter(plan.driver_cpu, address),
                                      plan.cpus)
    except CounterUnavailable as e:
        log(f"note: no in-kernel counter ({e}): counting sync calls in the trace buffer")
        return None


def tracefs_root(state: SystemState, tracefs: Path = TRACEFS) -> Path:
    """The tracefs mount, mounting it (journaled, undone at the end) when it is absent."""
    if (tracefs / "instances").is_dir():
        return tracefs
    if not tracefs.is_dir():
        raise PreflightError(f"{tracefs} does not exist: kernel without CONFIG_TRACING? (use --no-trace)")
    state.mount("tracefs", str(tracefs))
    return tracefs


@contextmanager
def open_session(state: SystemState, plan: TracePlan, log=lambda s: None,
                 tracefs: Path = TRACEFS) -> Iterator[Optional[TraceSession]]:
    """Create the private instance, enable the IPI events, open the sync counter; tear
    down on exit.

    Yields None, after a warning, on a kernel without any of the events (before Linux
    6.4/6.5, e.g. Debian 12's own 6.1): the run then counts IPIs from /proc/interrupts
    only, and the report judges it on CAL minus TLB.
    """
    root = tracefs_root(state, tracefs)
    available = [ev for ev in EVENTS if (root / "events" / ev).is_dir()]
    kprobes: List[str] = []
    if not any(ev.startswith("csd/") for ev in available):  # sched/ alone is in every kernel
        kprobes = place_kprobes(state, root, log)
        if not kprobes:
            yield None
            return
        available += [f"{kprobe_group()}/{f}" for f in kprobes]
    else:
        missing = [ev for ev in EVENTS if ev not in available]
        if missing:
            log(f"warning: this kernel lacks trace events {', '.join(missing)}; attribution is partial")
    remove_stale_instances(root, log)
    instance = root / "instances" / f"tlbprobe-{os.getpid()}"
    state.mkdir(str(instance))
    session = TraceSession(instance, log)
    session.kprobes = set(kprobes)
    try:
        address = kernel_addresses([SYNC_FUNCTION]).get(SYNC_FUNCTION)
        if "csd/csd_queue_cpu" in available:
            session.counter = open_counter(root, plan, address, log)
        _size_buffers(instance, plan, session.counter is not None, log)
        if session.counter and address:
            # The counter has the sync's queue events: keep them out of the sender's buffer.
            flt = sync_filter(plan.driver_cpu, address, negate=True)
            try:
                (instance / "events" / "csd" / "csd_queue_cpu" / "filter").write_text(flt)
            except OSError as e:
                log(f"note: the ring buffer keeps the sync's queue events too (filter refused: {e.strerror})")
        # When the buffer fills, drop new events rather than overwrite old ones: an
        # overwritten begin marker would throw a whole phase's events away. Drops are
        # counted (per_cpu/*/stats "dropped events") and the phase marked lost.
        overwrite = instance / "options" / "overwrite"
        if overwrite.exists():
            overwrite.write_text("0")
        clocks = (instance / "trace_clock").read_text()
        if "mono" in clocks.replace("[", " ").replace("]", " ").split():
            (instance / "trace_clock").write_text("mono")
        for ev in available:
            (instance / "events" / ev / "enable").write_text("1")
            session.enabled.append(ev)
        session.overruns_since_last()
        yield session
    finally:
        session.close()


def _size_buffers(instance: Path, plan: TracePlan, counter: bool, log) -> None:
    """Per-CPU buffers sized for the job (TracePlan), the sending CPU's apart; the memory
    they take is said before the first phase."""
    per_cpu, driver = plan.per_cpu_kb(), plan.driver_kb(counter)
    if plan.driver_cpu is None:  # any CPU may send
        per_cpu = driver
    try:
        (instance / "buffer_size_kb").write_text(str(per_cpu))
        if driver != per_cpu:
            (instance / "per_cpu" / f"cpu{plan.driver_cpu}" / "buffer_size_kb").write_text(str(driver))
    except OSError as e:
        raise PreflightError(f"cannot allocate trace buffers of {plan.total_kb(counter) // 1024} MiB "
                             f"({e.strerror}): give less with --trace-buffer-kb, or --no-trace") from None
    how = ("sync calls counted in the kernel (perf counter on csd_queue_cpu)" if counter
           else "sync calls counted in the trace buffer")
    where = (f"{driver} KiB on CPU {plan.driver_cpu}" if plan.driver_cpu is not None
             else "on every CPU, since any may send")
    log(f"trace buffers: {plan.total_kb(counter) / 1024:.1f} MiB in all ({per_cpu} KiB per CPU, {where}, "
        f"for {plan.ops_per_phase} operations per phase); {how}")
