"""The exact counts of one interval: sync calls queued, sync broadcasts, the watcher's own
cross-CPU calls (perf counters), and CAL and TLB per CPU (/proc/interrupts).

**Sync calls queued (IPIs).** tlb_remove_table_sync_one() (mm/mmu_gather.c:269) calls
smp_call_function(), which queues one call per other online CPU and fires
csd:csd_queue_cpu once per target, on the *sending* CPU (kernel/smp.c:851,
smp_call_function_many_cond()). A counting perf event per CPU on that tracepoint,
filtered to ``func == <address of tlb_remove_table_smp_sync>``, counts them in the kernel
with no buffer (measure/perfcount.py says why). These are the IPIs the broadcasts asked
for; a target polling in idle takes its call without an interrupt (measure/trace.py), so
CAL can show a few fewer.

**Broadcasts.** One broadcast queues a call for every online CPU but the sender, so a
second event in the same per-CPU group counts only the call queued for one chosen
target: the lowest-numbered online CPU other than the sender. With online CPUs a < b <
..., the filter is ``cpu == a && common_cpu != a || cpu == b && common_cpu == a``
(``cpu`` is the event's target field; ``common_cpu`` the CPU it fires on, the sender:
kernel/trace/trace_events.c trace_find_event_field() looks in the event's own fields
first, then the generic ones). That counts each broadcast exactly once, whatever the
number of CPUs, and it is the same filter the stack trigger uses (stacks.py), so the
two count the same events. With every CPU online the whole time, IPIs = broadcasts x
(CPUs - 1); the record keeps both, so a hotplug shows as a mismatch instead of a guess.

**The watcher's own calls.** Reading a per-CPU counter that is active on another CPU
makes perf_event_read() (kernel/events/core.c) run __perf_event_read() there through
smp_call_function_single(): one cross-CPU call, and usually one CAL interrupt, per
other CPU per read. The two events of a CPU are one group read with PERF_FORMAT_GROUP,
so an interval costs one call per other CPU, not two. These calls, and any other the
watcher's threads queue (a TLB flush of its own address space, text patching when it
enables the tracepoint), are counted by per-task events on csd_queue_cpu (pid 0, cpu
-1, inherited by threads started later), one per target CPU, opened first, so every
later call is in them. Their filter, ``cpu == T && !(common_flags & 0x58)``, leaves out
calls queued from an interrupt that happened to arrive while the watcher ran (a nohz
kick from the tick was seen here): common_flags carries TRACE_FLAG_HARDIRQ 0x08,
SOFTIRQ 0x10 and NMI 0x40 (include/linux/trace_events.h:189-192), and those calls are
not the watcher's doing. Reading a per-task event of the running task is
local: it costs no IPI. The CAL the watch reports is CAL minus these calls per CPU
(an upper bound of what they cost: a call to a CPU polling in idle raises no CAL).

**Hotplug.** A CPU going offline detaches its events (__perf_event_exit_context(),
kernel/events/core.c:14060): they stop counting and are not reattached when it comes
back. The group's enabled time shows it (it stops advancing), and the watcher reopens the
group of every CPU that is online again; a new online set changes the chosen target, so
then every group is reopened with the new broadcast filter.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..measure.perfcount import (PERF_FORMAT_GROUP, PERF_FORMAT_TOTAL_TIME_ENABLED, PERF_FORMAT_TOTAL_TIME_RUNNING,
                                 CounterUnavailable, open_event, tracepoint_id)
from ..measure.procfs import Interrupts, diff_interrupts

EVENT = "csd/csd_queue_cpu"
_GROUP_FORMAT = PERF_FORMAT_GROUP | PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING
#: nr, time_enabled, time_running, then one value per event of the group
_GROUP = struct.Struct("5Q")


def ipi_filter(address: int) -> str:
    """Every sync call queued, to any target."""
    return f"func == 0x{address:x}"


def broadcast_filter(address: int, online: Sequence[int]) -> str:
    """The sync calls queued for one target per broadcast: the lowest online CPU other
    than the sender (module docstring)."""
    cpus = sorted(online)
    if len(cpus) < 2:  # one CPU: nothing is queued (a CPU never queues a call for itself)
        a = cpus[0] if cpus else 0
        return f"func == 0x{address:x} && cpu == {a} && common_cpu == {a}"
    a, b = cpus[0], cpus[1]
    return f"func == 0x{address:x} && ((cpu == {a} && common_cpu != {a}) || (cpu == {b} && common_cpu == {a}))"


#: TRACE_FLAG_HARDIRQ | TRACE_FLAG_SOFTIRQ | TRACE_FLAG_NMI (include/linux/trace_events.h)
IN_INTERRUPT_FLAGS = 0x08 | 0x10 | 0x40


def own_filter(target: int) -> str:
    """The watcher's own calls to one target CPU, queued in its own context."""
    return f"cpu == {target} && !(common_flags & 0x{IN_INTERRUPT_FLAGS:x})"


@dataclass(frozen=True)
class GroupValue:
    """One CPU's group at one read: cumulative since the group was opened."""

    ipis: int
    broadcasts: int
    enabled_ns: int
    #: increments each time the group is reopened (a hotplug), so deltas start afresh
    generation: int


@dataclass
class SyncCounters:
    """Per online CPU, a group of two events on csd_queue_cpu: the sync calls queued by
    that CPU (leader) and the broadcasts it sent (sibling)."""

    tp_id: int
    address: int
    online: Tuple[int, ...]
    groups: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    generation: Dict[int, int] = field(default_factory=dict)

    @classmethod
    def open(cls, tracefs: Path, address: int, online: Sequence[int]) -> "SyncCounters":
        counters = cls(tracepoint_id(tracefs, EVENT), address, tuple(sorted(online)))
        try:
            for cpu in counters.online:
                counters._open_cpu(cpu)
        except BaseException:
            counters.close()
            raise
        return counters

    def _open_cpu(self, cpu: int) -> None:
        leader = open_event(self.tp_id, ipi_filter(self.address), cpu=cpu, read_format=_GROUP_FORMAT,
                            what=EVENT)
        try:
            sibling = open_event(self.tp_id, broadcast_filter(self.address, self.online), cpu=cpu,
                                 group_fd=leader, read_format=_GROUP_FORMAT, what=EVENT)
        except BaseException:
            os.close(leader)
            raise
        self.groups[cpu] = (leader, sibling)
        self.generation[cpu] = self.generation.get(cpu, -1) + 1

    def read(self) -> Dict[int, GroupValue]:
        """Every group's values: one cross-CPU call per group on another CPU."""
        out: Dict[int, GroupValue] = {}
        for cpu, (leader, _) in self.groups.items():
            try:
                data = os.read(leader, _GROUP.size)
            except OSError:
                continue
            if len(data) < _GROUP.size:  # the group lost its sibling (a hotplug detached it)
                continue
            nr, enabled, _running, ipis, broadcasts = _GROUP.unpack(data)
            if nr == 2:
                out[cpu] = GroupValue(ipis, broadcasts, enabled, self.generation[cpu])
        return out

    def set_online(self, online: Sequence[int], stale: Sequence[int] = ()) -> List[str]:
        """Follow a new online set: close the groups of CPUs gone, (re)open those of CPUs
        that came back or whose events stopped (``stale``). A new online set changes the
        broadcast filter of every CPU, and a perf event's filter cannot be replaced (the
        second PERF_EVENT_IOC_SET_FILTER is refused with EEXIST: ftrace_profile_set_filter(),
        kernel/trace/trace_events_filter.c), so then every group is reopened. Returns why
        a CPU's group could not be opened (a CPU going offline meanwhile); it is tried
        again at the next call."""
        online_t = tuple(sorted(online))
        refilter = online_t != self.online
        self.online = online_t
        reopen = set(self.groups) if refilter else set(stale)
        for cpu in list(self.groups):
            if cpu not in online_t or cpu in reopen:
                for fd in self.groups.pop(cpu):
                    os.close(fd)
        failed: List[str] = []
        for cpu in online_t:
            if cpu not in self.groups:
                try:
                    self._open_cpu(cpu)
                except CounterUnavailable as e:
                    failed.append(f"CPU {cpu}: {e}")
        return failed

    @property
    def complete(self) -> bool:
        """Every online CPU has its group."""
        return all(cpu in self.groups for cpu in self.online)

    def close(self) -> None:
        for pair in self.groups.values():
            for fd in pair:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.groups = {}


@dataclass
class OwnCounters:
    """The cross-CPU calls the watcher itself queues, per target CPU (per-task events)."""

    tp_id: int
    fds: Dict[int, int] = field(default_factory=dict)

    @classmethod
    def open(cls, tracefs: Path, cpus: Sequence[int]) -> "OwnCounters":
        own = cls(tracepoint_id(tracefs, EVENT))
        try:
            own.add(cpus)
        except BaseException:
            own.close()
            raise
        return own

    def add(self, cpus: Sequence[int]) -> None:
        for cpu in cpus:
            if cpu not in self.fds:
                self.fds[cpu] = open_event(self.tp_id, own_filter(cpu), pid=0, cpu=-1, inherit=True,
                                           what=f"{EVENT} (this process)")

    def read(self) -> Dict[int, int]:
        out = {}
        for cpu, fd in self.fds.items():
            data = os.read(fd, 8)
            if len(data) == 8:
                out[cpu] = struct.unpack("Q", data)[0]
        return out

    def close(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = {}


@dataclass(frozen=True)
class SyncDelta:
    """The exact counts of one interval."""

    ipis: int
    broadcasts: int
    #: broadcasts per sending CPU (what the stacks are matched against, stacks.py)
    broadcasts_by_sender: Dict[int, int]
    #: CPUs whose counts this interval are incomplete (a group reopened after a hotplug)
    incomplete: Tuple[int, ...] = ()


def sync_delta(before: Dict[int, GroupValue], after: Dict[int, GroupValue]) -> SyncDelta:
    """after - before per CPU; a group reopened in between (another generation) counts
    from zero, and a CPU missing from either read is marked incomplete."""
    ipis = broadcasts = 0
    by_sender: Dict[int, int] = {}
    incomplete: List[int] = []
    for cpu, a in after.items():
        b = before.get(cpu)
        if b is None or b.generation != a.generation:
            base_i = base_b = 0
            if b is not None:
                incomplete.append(cpu)
        else:
            base_i, base_b = b.ipis, b.broadcasts
        ipis += a.ipis - base_i
        broadcasts += a.broadcasts - base_b
        by_sender[cpu] = a.broadcasts - base_b
    incomplete += [cpu for cpu in before if cpu not in after]
    return SyncDelta(ipis, broadcasts, by_sender, tuple(sorted(set(incomplete))))


def own_delta(before: Dict[int, int], after: Dict[int, int]) -> Dict[int, int]:
    return {cpu: after[cpu] - before.get(cpu, 0) for cpu in after}


@dataclass(frozen=True)
class IrqDelta:
    """CAL and TLB per CPU in one interval (x86 'Function call interrupts' and 'TLB
    shootdowns', matched by description: measure/procfs.py), and what the parser noted."""

    cal: Dict[int, int]
    tlb: Dict[int, int]
    warnings: Tuple[str, ...] = ()


def irq_delta(before: Interrupts, after: Interrupts) -> IrqDelta:
    diff = diff_interrupts(before, after)
    return IrqDelta(diff.canonical_per_cpu("function_call"), diff.canonical_per_cpu("tlb_shootdown"),
                    tuple(diff.warnings))


def stalled(before: Dict[int, GroupValue], after: Dict[int, GroupValue], wall_ns: int) -> List[int]:
    """CPUs whose group stopped counting during the interval (its enabled time advanced
    by less than half the wall time: the CPU went offline and its events were detached)."""
    out = []
    for cpu, a in after.items():
        b = before.get(cpu)
        if b is not None and b.generation == a.generation and a.enabled_ns - b.enabled_ns < wall_ns // 2:
            out.append(cpu)
    return out

