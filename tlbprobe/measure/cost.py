"""What the broadcast costs in time: the receivers' handler time and the initiator's wait.

What a receiving CPU loses to one sync IPI cannot be seen whole: the sync function,
tlb_remove_table_smp_sync() (mm/mmu_gather.c), is empty, and the time goes to the
interrupt's entry and exit, in a guest a VM exit, and to waking from idle. What the
kernel shows, and what this observer records per phase and per CPU in a tracefs instance
of its own (clock ``mono``, so events of different CPUs compare):

* ``vector_all``: every function-call interrupt's handler, from
  ``irq_vectors:call_function_entry`` to ``call_function_exit`` (and the ``_single``
  pair; arch/x86/kernel/smp.c sysvec_call_function*): what the interrupt took inside
  the kernel once its handler ran;
* ``vector_sync``: those of them that ran the sync function;
* ``sync``: ``csd:csd_function_entry`` to ``csd_function_exit`` of the sync function
  (kernel/smp.c csd_do_func()). The function is empty, so this is what one tracepoint
  costs (plus an indirect call): reported as ``tracepoint_ns`` and subtracted, twice
  (the csd pair nested inside), from the vector-level figures (``*_corrected``). These
  events also fire for calls run from the idle loop without an interrupt; the vector
  events do not.
* ``initiator``: how long each broadcast took from the sender queueing the sync call
  for its first target (``csd:csd_queue_cpu``, filtered to the sync function) to the
  last target finishing it (its ``csd_function_exit``): the time the sending CPU waits
  in smp_call_function(), which with wait=1 waits for the slowest target, so it grows
  with the CPU count. A patched kernel that skips the sync has none: the A/B shows the
  wait go. (A kprobe pair on tlb_remove_table_sync_one() would time the call itself,
  but kprobe events are not in every kernel: this host's has none.)

What this cannot see: the time from the IPI's send to its handler's first event
(interrupt delivery, the guest's VM exit and entry, leaving a C-state), and the cache
and TLB pollution after it. The victim observer (victim.py) measures what an
application on the receiving CPUs loses, interrupt entry included.

The events cost time themselves (the observer effect): benchmarks/cost_observer.py
measures a collapse with and without them. Opt-in: ``collect --cost``.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, DefaultDict, Dict, List, Mapping, Optional, Tuple

from .. import arch as arches
from ..arch import Arch
from ..errors import PreflightError
from ..rundir.schema import COST_COLUMNS
from ..rundir.sections import COST_KINDS, CostFigures, CostSection
from ..vocab import SYNC_FUNCTION
from .observer import Phase
from .paths import REAL

if TYPE_CHECKING:
    from .host import HostFacts
    from ..rundir import RunDir
    from .sysstate import SystemState
    from ..ui import Console

CSD_EVENTS = ("csd/csd_function_entry", "csd/csd_function_exit", "csd/csd_queue_cpu")
MARK = "tlbprobe-cost"
KINDS = COST_KINDS
#: Bytes per event in the ring buffer, rounded up; events per CPU per phase beyond the ops.
EVENT_BYTES = 48
BASE_EVENTS = 65536

_LINE = re.compile(r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
                   r"(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>\w+):\s+(?P<body>.*)$")
_FUNC = re.compile(r"func=([\w.]+)")
_CPU = re.compile(r"\bcpu=(\d+)")


def histogram(durations_ns: List[float]) -> Dict[str, int]:
    """Durations in buckets whose upper edges double from 250 ns ("250", "500", ... ns)."""
    out: Dict[str, int] = {}
    for d in durations_ns:
        edge = 250
        while d > edge and edge < 1 << 40:
            edge *= 2
        out[str(edge)] = out.get(str(edge), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def figures(durations_ns: List[float]) -> Dict[str, float]:
    """count, total, p50, p99, max of a list of durations (ns)."""
    if not durations_ns:
        return {"count": 0, "total_ns": 0.0, "p50_ns": 0.0, "p99_ns": 0.0, "max_ns": 0.0}
    d = sorted(durations_ns)
    n = len(d)

    def pct(p: float) -> float:
        return d[min(n - 1, max(0, int(round(p / 100.0 * (n - 1)))))]

    return {"count": n, "total_ns": round(sum(d), 1), "p50_ns": round(pct(50), 1), "p99_ns": round(pct(99), 1),
            "max_ns": round(d[-1], 1)}


@dataclass
class PhaseCost:
    """Durations (ns) seen in one phase: kind -> cpu -> list."""

    durations: DefaultDict[str, DefaultDict[int, List[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    lost: int = 0

    def add(self, kind: str, cpu: int, ns: float) -> None:
        self.durations[kind][cpu].append(ns)


@dataclass
class Broadcast:
    """One sync broadcast in flight: when its sender queued the first call, and the
    targets that have not finished it yet."""

    sender: int
    start_ns: float
    pending: set


class CostParser:
    """Turns the instance's lines (merged across CPUs in time order: clock mono) into
    per-phase durations. Per CPU it keeps the open vector window and the open csd calls
    (a stack: a call may nest in another's interrupt); per broadcast, the targets still
    to finish. A window whose start fell before the phase is dropped."""

    def __init__(self) -> None:
        #: ns per tick of a counter clock (x86-tsc), from the calibration markers; None: the
        #: timestamps are seconds with microseconds (clock mono)
        self.scale: Optional[float] = None
        self.calibration: Dict[int, int] = {}
        self.phases: Dict[str, PhaseCost] = {}
        self.current: Optional[str] = None
        self._vector: Dict[int, Tuple[float, bool]] = {}
        self._csd: DefaultDict[int, List[Tuple[float, str]]] = defaultdict(list)
        self._flight: List[Broadcast] = []

    def line(self, text: str) -> None:
        if "LOST" in text and self.current:
            m = re.search(r"\[LOST (\d+) EVENTS\]", text)
            if m:
                self.phases[self.current].lost += int(m.group(1))
            return
        m = _LINE.match(text)
        if not m:
            return
        event, body, cpu, raw = m.group("event"), m.group("body"), int(m.group("cpu")), m.group("ts")
        if event in ("tracing_mark_write", "print"):
            parts = body.split()
            if len(parts) == 3 and parts[0] == MARK and parts[1] == "cal" and "." not in raw:
                self.calibration[int(parts[2])] = int(raw)
                return
            if len(parts) == 3 and parts[0] == MARK:
                self.current = parts[2] if parts[1] == "begin" else None
                self._vector.clear()
                self._csd.clear()
                self._flight.clear()
                if self.current:
                    self.phases.setdefault(self.current, PhaseCost())
            return
        if self.current is None:
            return
        ph = self.phases[self.current]
        if "." in raw:
            ns = float(raw) * 1e9
        elif self.scale is not None:
            ns = int(raw) * self.scale
        else:
            return
        if event in ("call_function_entry", "call_function_single_entry"):
            self._vector[cpu] = (ns, False)
        elif event in ("call_function_exit", "call_function_single_exit"):
            opened = self._vector.pop(cpu, None)
            if opened:
                ph.add("vector_all", cpu, ns - opened[0])
                if opened[1]:
                    ph.add("vector_sync", cpu, ns - opened[0])
        elif event == "csd_function_entry":
            f = _FUNC.search(body)
            func = f.group(1) if f else "?"
            self._csd[cpu].append((ns, func))
            if func == SYNC_FUNCTION and cpu in self._vector:
                self._vector[cpu] = (self._vector[cpu][0], True)
        elif event == "csd_function_exit":
            if self._csd[cpu]:
                start, func = self._csd[cpu].pop()
                if func == SYNC_FUNCTION:
                    ph.add("sync", cpu, ns - start)
                    self._finished(cpu, ns, ph)
        elif event == "csd_queue_cpu":
            f, t = _FUNC.search(body), _CPU.search(body)
            if f and t and f.group(1) == SYNC_FUNCTION:
                target = int(t.group(1))
                # smp_call_function_many_cond() queues every target in one loop: a queue
                # event for a target the sender's newest broadcast already has starts a new one
                last = next((b for b in reversed(self._flight) if b.sender == cpu), None)
                if last is None or target in last.pending or last.start_ns < ns - 1e6:
                    last = Broadcast(cpu, ns, set())
                    self._flight.append(last)
                last.pending.add(target)

    def _finished(self, cpu: int, ns: float, ph: PhaseCost) -> None:
        """A target finished the sync call: the oldest broadcast waiting for it gets it;
        when none waits any more, the sender's wait is over."""
        for b in self._flight:
            if cpu in b.pending:
                b.pending.discard(cpu)
                if not b.pending:
                    ph.add("initiator", b.sender, ns - b.start_ns)
                    self._flight.remove(b)
                return


class CostObserver:
    """The receivers' handler time and the initiator's wait, per phase (see the module doc).
    Writes cost.csv and summary.json ``cost`` (rundir/sections.py CostSection).
    ``ops_per_phase`` (the workload's planned operations) sizes the ring buffers."""

    def __init__(self, ops_per_phase: int = 0, driver_cpu: Optional[int] = None, tracefs: Path = REAL.tracefs,
                 machine: Optional[Arch] = None):
        self.tracefs = tracefs
        #: the running machine's architecture (os.uname() unless given): its record names
        #: the events that time a function-call IPI's handler (x86's irq_vectors pairs)
        self.machine = machine or arches.running()
        self.vector_events: Tuple[str, ...] = self.machine.cost_events if self.machine else ()
        self.ops_per_phase = ops_per_phase
        self.instance: Optional[Path] = None
        self.parser: Optional[CostParser] = None
        self.rundir: Optional["RunDir"] = None
        self.cpus: List[int] = []
        self.driver_cpu = driver_cpu
        self.rows: Dict[str, Dict[str, Dict[int, Dict[str, float]]]] = {}  # tag -> kind -> cpu -> figures
        self.lost: Dict[str, int] = {}
        #: phase name -> kind -> bucket edge (ns) -> count, over the other CPUs
        self.hist: Dict[str, Dict[str, Dict[str, int]]] = {}
        self._pending = b""
        self.enabled: List[str] = []

    # -- Observer protocol ----------------------------------------------------------------
    def preflight(self, facts: "HostFacts") -> None:
        """Refuse early where tracefs is mounted already; start() checks again after
        mounting it (a fresh guest has no tracefs mount). A machine whose architecture
        record names no handler events is refused with the record's reason."""
        if not self.vector_events:
            why = (self.machine.cost_missing if self.machine else
                   f"machine {os.uname().machine} has no record in tlbprobe/arch/")
            raise PreflightError(f"--cost cannot time the handlers here: {why}; leave out --cost")
        if (self.tracefs / "events").is_dir():
            self._check_events()
        elif not self.tracefs.is_dir():
            raise PreflightError(f"--cost needs tracefs ({self.tracefs} is missing: kernel without CONFIG_TRACING)")
        self.cpus = list(facts.online_cpus)

    def _check_events(self) -> None:
        missing = [e for e in self.vector_events + CSD_EVENTS if not (self.tracefs / "events" / e).is_dir()]
        if missing:
            raise PreflightError(f"--cost needs the trace events {', '.join(missing)} (x86 irq_vectors, csd "
                                 f"since Linux 6.4); this kernel lacks them: leave out --cost")

    def start(self, rundir: "RunDir", facts: "HostFacts", console: "Console", state: "SystemState") -> None:
        from .perfcount import kernel_addresses
        from .trace import tracefs_root

        self.tracefs = tracefs_root(state, self.tracefs)  # mounted (journaled) where it is not
        self._check_events()
        self.rundir = rundir
        self.instance = self.tracefs / "instances" / f"tlbprobe-cost-{os.getpid()}"
        state.mkdir(str(self.instance))
        self.parser = CostParser()
        # receivers: 4 events per sync; the sender: one queue event per target and sync
        per_cpu_kb = -(-(BASE_EVENTS + (4 + len(self.cpus)) * self.ops_per_phase) * EVENT_BYTES // 1024)
        per_cpu_kb = max(1024, min(per_cpu_kb, 256 * 1024))
        (self.instance / "buffer_size_kb").write_text(str(per_cpu_kb))
        (self.instance / "options" / "overwrite").write_text("0")
        # x86-tsc: nanosecond resolution (mono prints microseconds); synchronised across
        # CPUs on every x86 that has constant_tsc; converted with a calibration below
        clocks = (self.instance / "trace_clock").read_text().replace("[", " ").replace("]", " ").split()
        self.tsc = "x86-tsc" in clocks
        (self.instance / "trace_clock").write_text("x86-tsc" if self.tsc else "mono")
        address = kernel_addresses([SYNC_FUNCTION]).get(SYNC_FUNCTION)
        queue_filter = self.instance / "events" / "csd" / "csd_queue_cpu" / "filter"
        if address:  # only the sync's queue events: the others would only fill the buffer
            queue_filter.write_text(f"func == 0x{address:x}")
        for ev in self.vector_events + CSD_EVENTS:
            (self.instance / "events" / ev / "enable").write_text("1")
            self.enabled.append(ev)
        if self.tsc:
            self._calibrate(console)
        console.log(f"cost: handler times and the initiator's wait from {len(self.vector_events) + len(CSD_EVENTS)} "
                    f"trace events ({per_cpu_kb * len(self.cpus) / 1024:.0f} MiB of buffers); these events cost "
                    f"time themselves (benchmarks/cost_observer.py)")

    def phase_begin(self, phase: Phase) -> None:
        self._drain()
        self._mark("begin", phase.tag)

    def phase_end(self, phase: Phase) -> None:
        self._mark("end", phase.tag)
        self._drain()
        assert self.parser is not None
        pc = self.parser.phases.pop(phase.tag, PhaseCost())
        self.lost[phase.tag] = pc.lost
        rows: Dict[str, Dict[int, Dict[str, float]]] = {}
        for kind in KINDS:
            per_cpu = pc.durations.get(kind, {})
            rows[kind] = {cpu: figures(per_cpu[cpu]) for cpu in sorted(per_cpu)}
            rows[kind][-1] = figures([d for cpu in per_cpu for d in per_cpu[cpu]])  # -1: all CPUs
        self.rows[phase.tag] = rows
        for kind in ("vector_sync", "vector_all"):  # the other CPUs' handler times, for the report's plot
            per_cpu = pc.durations.get(kind, {})
            hist = self.hist.setdefault(phase.name, {}).setdefault(kind, {})
            for cpu, values in per_cpu.items():
                if cpu != self.driver_cpu:
                    for edge, n in histogram(values).items():
                        hist[edge] = hist.get(edge, 0) + n
        if self.rundir is not None:
            self.rundir.append_csv("cost.csv", COST_COLUMNS, [
                [phase.repeat, phase.name, "all" if cpu < 0 else cpu, kind, f["count"], f["total_ns"], f["p50_ns"],
                 f["p99_ns"], f["max_ns"]]
                for kind in KINDS for cpu, f in rows[kind].items()])

    def section(self, summary: Mapping[str, Any]) -> CostSection:
        return self.summary(summary)

    def stop(self) -> None:
        if self.instance is None:
            return
        for ev in self.enabled:
            try:
                (self.instance / "events" / ev / "enable").write_text("0")
            except OSError:
                pass
        self.enabled = []

    def _calibrate(self, console: "Console") -> None:
        """ns per TSC tick: two markers 0.2 s apart, timed with CLOCK_MONOTONIC."""
        import time

        assert self.instance is not None and self.parser is not None
        stamps = []
        for i in (0, 1):
            t0 = time.monotonic_ns()
            self._mark("cal", str(i))
            stamps.append((t0 + time.monotonic_ns()) / 2)
            if i == 0:
                time.sleep(0.2)
        self._drain()
        cal = self.parser.calibration
        if len(cal) == 2 and cal[1] > cal[0]:
            self.parser.scale = (stamps[1] - stamps[0]) / (cal[1] - cal[0])
            console.log(f"cost: trace clock x86-tsc at {1e3 / self.parser.scale:.0f} MHz (calibrated)")
        else:
            (self.instance / "trace_clock").write_text("mono")
            self.tsc = False
            console.log("cost: the x86-tsc trace clock could not be calibrated: clock mono (microseconds)")

    # -- reading --------------------------------------------------------------------------
    def _mark(self, what: str, tag: str) -> None:
        assert self.instance is not None
        try:
            with open(self.instance / "trace_marker", "w") as f:
                f.write(f"{MARK} {what} {tag}\n")
        except OSError:
            self.lost[tag] = self.lost.get(tag, 0) + 1

    def _drain(self) -> None:
        from .trace import read_pipe

        assert self.instance is not None and self.parser is not None
        self._pending = read_pipe(self.instance, self._pending, self.parser.line)

    def summary(self, run: Mapping[str, Any]) -> CostSection:
        """summary.json ``cost``: per phase kind and CPU, the tracepoint's own cost, and the
        headline figures (doc/run-format.md)."""
        others = [c for c in run.get("other_cpus", []) if isinstance(c, int)]
        agg: Dict[str, Dict[str, Dict[str, Any]]] = {}
        tp: List[float] = []
        for tag, rows in self.rows.items():
            ph = Phase.from_tag(tag)
            if ph is None:
                continue
            a = agg.setdefault(ph.name, {})
            for kind, per_cpu in rows.items():
                k = a.setdefault(kind, {"count": 0, "total_ns": 0.0, "max_ns": 0.0, "p50_ns": [], "p99_ns": []})
                for cpu, f in per_cpu.items():
                    if cpu < 0 or (kind != "initiator" and cpu not in others) or not f["count"]:
                        continue
                    k["count"] += f["count"]
                    k["total_ns"] += f["total_ns"]
                    k["max_ns"] = max(k["max_ns"], f["max_ns"])
                    k["p50_ns"].append(f["p50_ns"])
                    k["p99_ns"].append(f["p99_ns"])
                if kind == "sync" and ph.name == "workload":
                    tp += [f["p50_ns"] for cpu, f in per_cpu.items() if cpu >= 0 and f["count"]]
        phases = {
            name: {kind: CostFigures(  # medians of the per-CPU p50s, the worst per-CPU p99
                count=k["count"], total_ns=round(k["total_ns"], 1), max_ns=k["max_ns"],
                p50_ns=round(sorted(k["p50_ns"])[len(k["p50_ns"]) // 2], 1) if k["p50_ns"] else 0.0,
                p99_ns=round(max(k["p99_ns"]), 1) if k["p99_ns"] else 0.0) for kind, k in a.items()}
            for name, a in agg.items()}
        tracepoint_ns = round(sorted(tp)[len(tp) // 2], 1) if tp else None
        hist = {name: {kind: {int(e): n for e, n in sorted(h.items(), key=lambda kv: int(kv[0]))}
                       for kind, h in kinds.items()} for name, kinds in self.hist.items()}
        head: Dict[str, Any] = {}
        w = phases.get("workload", {}).get("vector_sync")
        if w and w.count:
            corr = 2 * (tracepoint_ns or 0.0)
            per_ipi = max(w.total_ns / w.count - corr, 0.0)
            taken_ms = per_ipi * w.count / 1e6
            head["per_ipi_ns_corrected"] = round(per_ipi, 1)
            head["cpu_time_taken_ms"] = round(taken_ms, 3)
            gib = run.get("ops", 0) * 2 / 1024.0 if run.get("ops_unit") == "collapses" else None
            if gib:
                head["ms_per_gib"] = round(taken_ms / gib, 3)
            broadcasts = w.count / max(len(others), 1)
            head["us_per_broadcast_per_cpu"] = round(per_ipi / 1e3, 3)
            head["broadcasts_seen"] = round(broadcasts, 1)
        return CostSection(tracepoint_ns=tracepoint_ns, phases=phases, histograms=hist,
                           lost_events=sum(self.lost.values()), **head)
