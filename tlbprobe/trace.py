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
"""

from __future__ import annotations

import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .errors import PreflightError
from .sysstate import SystemState, pid_alive

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("csd/csd_function_entry", "csd/csd_queue_cpu", "ipi/ipi_send_cpu", "ipi/ipi_send_cpumask",
          "sched/sched_wake_idle_without_ipi")
MARK = "tlbprobe-phase"
#: Functions probed where the csd events are missing: the sync under study, the TLB flush,
#: and the two other cross-CPU calls seen most (remote wake-ups, nohz kicks).
SYNC_FUNCTION = "tlb_remove_table_smp_sync"
KPROBE_FUNCTIONS = (SYNC_FUNCTION, "flush_tlb_func", "sched_ttwu_pending", "nohz_csd_func")
NO_CSD = "this kernel has no csd trace events (6.12 has them, 6.1 not)"

_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$"
)
_LOST = re.compile(r"CPU:(\d+) \[LOST (\d+) EVENTS\]")
_FIELD = re.compile(r"(\w+)=(\S+)")

#: Key of one attribution count: (event, function, callsite, cpu).
Key = Tuple[str, str, str, int]


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
    """Attribution counts of one phase, plus events the kernel reported lost."""

    counts: Counter = field(default_factory=Counter)
    lost: int = 0
    #: csd_queue_cpu was enabled: without it (a kernel that lacks it) queued() means nothing
    queue_traced: bool = False

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
        return self._per_function("csd_queue_cpu", cpus)

    def woken_without_ipi(self, cpus: List[int]) -> int:
        """Calls (and wake-ups) delivered to the given CPUs by setting NEED_RESCHED on a
        polling idle loop instead of sending an interrupt."""
        return sum(self._per_function("wake_idle_without_ipi", cpus).values())


class TraceSession:
    """A private tracefs instance whose IPI events are aggregated per phase.

    Use :func:`open_session`; call :meth:`begin` and :meth:`end` around each phase and
    :meth:`counts` after it. The trace is read only between phases, never during one:
    a reader blocked on trace_pipe is woken through irq_work and would add interrupts
    of its own to the phase it measures. The per-CPU buffer must therefore hold one
    phase's events; losses are counted (per_cpu/cpu*/stats) and reported.
    """

    def __init__(self, instance: Path, log=lambda s: None):
        self.instance = instance
        self.log = log
        self.enabled: List[str] = []
        self._current: Optional[str] = None
        self._phases: Dict[str, PhaseCounts] = {}
        self._overrun_seen = 0
        self._pending = b""
        self.unparsed = 0
        self.kprobes: Set[str] = set()  # event names of our kprobes (= the function names)

    def drain(self) -> None:
        """Consume everything in the buffer now (non-blocking reads of trace_pipe)."""
        fd = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                self._pending += chunk
                *lines, self._pending = self._pending.split(b"\n")
                for raw in lines:
                    self._handle(raw.decode("utf-8", "replace"))
        finally:
            os.close(fd)

    def _handle(self, line: str) -> None:
        lost = _LOST.search(line)
        if lost:
            if self._current:
                self._phases[self._current].lost += int(lost.group(2))
            return
        m = _LINE.match(line)
        if not m:
            if line.strip():
                self.unparsed += 1
            return
        event, body = m.group("event"), m.group("body")
        if event in ("tracing_mark_write", "print"):
            parts = body.split()
            if len(parts) == 3 and parts[0] == MARK:
                self._current = parts[2] if parts[1] == "begin" else None
                if self._current:
                    self._phases.setdefault(self._current, PhaseCounts())
            return
        if self._current:
            cpu = int(m.group("cpu"))
            keys = [("kprobe", event, "", cpu)] if event in self.kprobes else parse_event(event, body, cpu)
            self._phases[self._current].counts.update(keys)

    # -- phases ---------------------------------------------------------------------------
    def _mark(self, what: str, tag: str) -> None:
        with open(self.instance / "trace_marker", "w") as f:
            f.write(f"{MARK} {what} {tag}\n")

    def begin(self, tag: str) -> None:
        """Open a phase (call right after the "before" snapshot)."""
        self.drain()  # whatever came before belongs to no phase
        self._mark("begin", tag)

    def end(self, tag: str) -> None:
        """Close a phase (call right before the "after" snapshot)."""
        self._mark("end", tag)

    def counts(self, tag: str) -> PhaseCounts:
        """A closed phase's counts (reads the buffer)."""
        self.drain()
        counts = self._phases.pop(tag, PhaseCounts())
        counts.queue_traced = "csd/csd_queue_cpu" in self.enabled
        counts.lost += self.overruns_since_last()
        if counts.lost:
            self.log(f"warning: {tag}: the trace buffer lost {counts.lost} event(s); attribution is short")
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
        for ev in self.enabled:
            try:
                (self.instance / "events" / ev / "enable").write_text("0")
            except OSError:
                pass


def kprobe_group() -> str:
    """Our kprobe events' group: per process, so a leftover names the run that left it."""
    return f"tlbprobe_{os.getpid()}"


def kernel_symbols(names: Sequence[str], kallsyms: str = "/proc/kallsyms") -> Set[str]:
    """Which of ``names`` the running kernel has (one pass over kallsyms, ~10^5 lines)."""
    wanted, found = set(names), set()
    try:
        with open(kallsyms) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] in wanted:
                    found.add(fields[2])
    except OSError:
        pass
    return found


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
    present = kernel_symbols(KPROBE_FUNCTIONS)
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


def buffer_kb_for(ncpus: int) -> int:
    """Per-CPU buffer: 8 MiB on small machines, less per CPU on big ones (256 MiB in all at most).

    An event takes about 40 bytes, so even 1 MiB holds 25,000 IPIs per CPU per phase: a
    20 GiB collapse sends 10,240 broadcasts.
    """
    return max(1024, min(8192, (256 * 1024) // max(ncpus, 1)))


def tracefs_root(state: SystemState) -> Path:
    """The tracefs mount, mounting it (journaled, undone at the end) when it is absent."""
    if (TRACEFS / "instances").is_dir():
        return TRACEFS
    if not TRACEFS.is_dir():
        raise PreflightError(f"{TRACEFS} does not exist: kernel without CONFIG_TRACING? (use --no-trace)")
    state.mount("tracefs", str(TRACEFS))
    return TRACEFS


@contextmanager
def open_session(state: SystemState, log=lambda s: None, ncpus: int = 1) -> Iterator[Optional[TraceSession]]:
    """Create the private instance, enable the IPI events; tear down on exit.

    Yields None, after a warning, on a kernel without any of the events (before Linux
    6.4/6.5, e.g. Debian 12's own 6.1): the run then counts IPIs from /proc/interrupts
    only, and the report judges it on CAL minus TLB.
    """
    root = tracefs_root(state)
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
        (instance / "buffer_size_kb").write_text(str(buffer_kb_for(ncpus)))
        # When the buffer fills, drop new events rather than overwrite old ones: an
        # overwritten begin marker would throw a whole phase's events away. Drops are
        # counted (per_cpu/*/stats "dropped events") and the report then falls back to CAL-TLB.
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
