"""Count a tracepoint's hits in the kernel, without a ring buffer: perf counters.

Why this exists: the sync broadcast is counted where the kernel queues it
(``csd:csd_queue_cpu``, one event per target CPU, recorded on the *sending* CPU). A
collapse of S bytes on N CPUs puts S/2 MiB x (N-1) such events into one CPU's trace
buffer in one phase: 645,120 for the published 20 GiB on 64 CPUs, 2.6 million on 256.
A ring buffer sized for that costs hundreds of MiB, and one that is too small drops
events and then refuses the phase's closing ``trace_marker`` write (EBADF from
tracing_mark_write() when the reserve fails, overwrite off), which is how the 4 GiB /
64-vCPU run died.

A perf event of type PERF_TYPE_TRACEPOINT in counting mode (no sampling, no mmap
buffer) keeps a 64-bit count per CPU inside the kernel, and its filter
(PERF_EVENT_IOC_SET_FILTER, the ftrace predicate syntax, applied before the count in
perf_tp_event_match()) keeps only the sync function's calls to the CPUs we watch:
``func == 0x<address of tlb_remove_table_smp_sync> && cpu != <driver CPU>``. The
address comes from /proc/kallsyms (root sees it; the ``.function`` filter suffix is
newer than the kernels we support). One counter per online CPU, since the sender can be
any CPU (khugepaged, a hugetlb client): N file descriptors, no memory to size, and the
count is exact whatever N x ops is.

What it costs and where it must not be read: reading a counter that is active on
another CPU makes the kernel run __perf_event_read() there through an IPI
(perf_event_read()). So the collector reads the counters *outside* the measured window:
before the "before" snapshot and after the "after" one. Opening them enables the
tracepoint, which patches kernel text (IPIs too): they are opened once, with the trace
session, before the first snapshot.

Measured on the 6.18 development host: 32 collapses of a 64 MiB MADV_COLLAPSE gave 32 on
the driver CPU's counter and 0 elsewhere (benchmarks/trace_scale.py has the figures at
scale).
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .. import arch as arches
from ..arch import Arch

PERF_TYPE_TRACEPOINT = 2
#: _IOW('$', 6, char *) (include/uapi/linux/perf_event.h)
PERF_EVENT_IOC_SET_FILTER = 0x40082406
#: struct perf_event_attr as of PERF_ATTR_SIZE_VER0 (64 bytes): every kernel accepts it.
_ATTR_VER0 = struct.Struct("IIQQQQQIIQ")
#: read_format bits (include/uapi/linux/perf_event.h enum perf_event_read_format)
PERF_FORMAT_TOTAL_TIME_ENABLED = 1 << 0
PERF_FORMAT_TOTAL_TIME_RUNNING = 1 << 1
PERF_FORMAT_GROUP = 1 << 3
#: attr flag bits (the bitfield after read_format): disabled is bit 0, inherit bit 1
ATTR_INHERIT = 1 << 1


class CounterUnavailable(Exception):
    """perf_event_open or the filter was refused; the reason says which and why."""


def perf_event_open_number(machine: Optional[Arch]) -> int:
    """perf_event_open's system call number on this machine, from its architecture's
    record; CounterUnavailable on a machine tlbprobe has no record of, or whose record
    lacks it (then the run counts with the ring buffer, as without the counter)."""
    if machine is None:
        raise CounterUnavailable(f"no perf_event_open system call number: machine {os.uname().machine} has no "
                                 f"record in tlbprobe/arch/")
    try:
        return machine.syscall("perf_event_open")
    except KeyError:
        raise CounterUnavailable(f"no perf_event_open system call number in the {machine.name} record "
                                 f"(tlbprobe/arch/)") from None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def kernel_addresses(names: Sequence[str], kallsyms: str = "/proc/kallsyms") -> Dict[str, int]:
    """{symbol: address} for those of ``names`` the running kernel has (one pass over
    kallsyms, ~10^5 lines). An address reads 0 when kptr_restrict hides it."""
    wanted, found = set(names), {}
    try:
        with open(kallsyms) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] in wanted and fields[2] not in found:
                    try:
                        found[fields[2]] = int(fields[0], 16)
                    except ValueError:
                        found[fields[2]] = 0
    except OSError:
        pass
    return found


def tracepoint_id(tracefs: Path, event: str) -> int:
    """The perf config of a trace event ("csd/csd_queue_cpu"): its tracefs id."""
    try:
        return int((tracefs / "events" / event / "id").read_text())
    except (OSError, ValueError) as e:
        raise CounterUnavailable(f"no tracepoint id for {event}: {e}") from None


def open_event(tp_id: int, filter_text: str, *, pid: int = -1, cpu: int = -1, group_fd: int = -1,
               read_format: int = 0, inherit: bool = False, what: str = "tracepoint",
               machine: Optional[Arch] = None) -> int:
    """One counting-mode perf event on a tracepoint, with its ftrace filter; returns the
    file descriptor (raises CounterUnavailable, leaving nothing open). ``pid=-1, cpu=N``
    counts every task on CPU N; ``pid=0, cpu=-1`` counts the calling task wherever it
    runs (with ``inherit``, the threads it starts later too: kernel/events/core.c
    inherit_event()). ``machine``: the running machine's architecture record, whose
    system call number of perf_event_open is used (x86_64 298, arm64 241: tlbprobe/arch/);
    found from os.uname() unless given."""
    nr = perf_event_open_number(machine or arches.running())
    libc = _libc()
    attr = ctypes.create_string_buffer(_ATTR_VER0.pack(PERF_TYPE_TRACEPOINT, _ATTR_VER0.size, tp_id, 0, 0,
                                                       read_format, ATTR_INHERIT if inherit else 0, 0, 0, 0),
                                       _ATTR_VER0.size)
    fd = libc.syscall(nr, attr, pid, cpu, group_fd, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise CounterUnavailable(f"perf_event_open({what}, cpu {cpu}): {os.strerror(err)}")
    if filter_text and libc.ioctl(fd, PERF_EVENT_IOC_SET_FILTER, ctypes.create_string_buffer(filter_text.encode())) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise CounterUnavailable(f"perf filter {filter_text!r} refused: {os.strerror(err)}")
    return fd


class TracepointCounter:
    """One filtered counter per CPU for one tracepoint; :meth:`read` sums them."""

    def __init__(self, fds: List[int], event: str, filter_text: str):
        self.fds = fds
        self.event = event
        self.filter_text = filter_text

    @classmethod
    def open(cls, tracefs: Path, event: str, filter_text: str, cpus: Sequence[int],
             machine: Optional[Arch] = None) -> "TracepointCounter":
        """Open the counters (raises CounterUnavailable, leaving nothing open); ``machine``
        as for :func:`open_event`."""
        tp_id = tracepoint_id(tracefs, event)
        fds: List[int] = []
        try:
            for cpu in cpus:
                fds.append(open_event(tp_id, filter_text, cpu=cpu, what=event, machine=machine))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(fds, event, filter_text)

    def read(self) -> int:
        """The sum over CPUs. Sends an IPI to each CPU whose counter is active: call it
        only outside a measured window."""
        total = 0
        for fd in self.fds:
            data = os.read(fd, 8)
            if len(data) == 8:
                total += struct.unpack("Q", data)[0]
        return total

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
