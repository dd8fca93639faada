"""Sharer processes: forked helpers that map one hugetlb file at one address and act on
the driver's commands, so that page tables are shared (and unshared) between processes
while nothing of ours runs on the CPUs whose interrupts are counted.

Used by the hugetlb-unshare and hugetlb-db drivers (workloads/hugetlb_unshare/,
workloads/hugetlb_db/); written for any workload that needs several processes mapping the
same hugetlbfs file or memfd.

The API, in the driver (the collector's process)::

    layout = Layout(addr, size, fd, shared=True)    # the file, where and how to map it
    layout.map()                                    # the driver's own mapping (optional)
    group = Sharers(layout, cpu=job.cpu, log=log, operation="munmap")
    try:
        group.start(3)                              # fork 3 sharers, pinned to ``cpu``
        faults = group.share(group.members[0])      # map (if needed) and fault the range
        group.members[0].shared                     # ... and whether the table was found
        reply = group.unshare(group.members[0])     # the ``operation``; Reply(ok, value)
        s = group.members[1]
        group.unmap(s); group.map(s); group.fault(s)  # faults taken, from fault()
        group.exit(s)                               # the sharer exits, reaped; True if cleanly
    finally:
        group.close()                               # every sharer gone, on every path

Every call but ``unshare`` raises WorkloadError when the sharer fails, dies (it is
reaped and its status named) or does not answer in REPLY_TIMEOUT_S; ``unshare`` returns
the failure so that a workload can count it. ``close()`` is idempotent and runs with
Ctrl-C held off: it closes every command pipe (a sharer exits at EOF), reaps, and
SIGKILLs (by pid, our own children only) those that have not exited within 5 s. A
sharer dies with the driver too (PR_SET_PDEATHSIG), so a SIGKILLed collector leaves none.

The protocol. Each sharer reads one-byte commands from its own pipe and answers each
with one line on a reply pipe all sharers share (writes under PIPE_BUF are atomic):
``<idx> ok <value>`` or ``<idx> err <errno>``. Commands: ``s`` share (back to one whole
mapping, then fault it in; value: the faults taken), ``u`` unshare (the operation),
``m`` map the whole range, ``f`` fault it in (value: the faults taken), ``d`` unmap it,
``x`` exit (no reply: the driver reaps the process), ``r``/``q`` start/stop the --race
walkers (value: their GUP-fast calls; workloads/race.py). A sharer is forked with signals
blocked, ignores SIGINT (the driver cleans up) and runs pinned to the driver's CPU.

Sharing is told by fault counts (:meth:`Layout.populate`, :meth:`Layout.looks_shared`).
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Callable, List, Optional

from ..errors import WorkloadError
from ..measure.sysstate import signals_blocked
from ..vocab import HUGETLB_OPERATIONS, PMD_SIZE, PUD_SIZE
from . import libc

if TYPE_CHECKING:
    from .race import WalkerLib

HUGEPAGE = PMD_SIZE
#: PMD entries per table: a process that faults a 1 GiB range with its own table takes 512
#: faults, one that finds a shared table takes 1.
ENTRIES_PER_TABLE = PUD_SIZE // PMD_SIZE
#: Seconds to wait for a sharer's reply before checking whether it died.
REPLY_POLL_S = 1.0
REPLY_TIMEOUT_S = 120.0
#: Seconds close() gives the sharers to exit at EOF before it kills them.
CLOSE_TIMEOUT_S = 5.0

#: The one-byte commands of the protocol.
SHARE, UNSHARE, MAP, FAULT, UNMAP, EXIT = b"s", b"u", b"m", b"f", b"d", b"x"
#: Fault only the first PART_PAGES huge pages (128 MiB) of each 1 GiB range (a client touching a
#: part of the segment): one fault per range when its table is shared, PART_PAGES when not.
TOUCH_PART = b"t"
#: --race: start GUP-fast walker threads in the sharer (on the group's walker CPUs) over
#: the range, or stop them (value: the walker calls they made). workloads/race.py.
RACE_ON, RACE_OFF = b"r", b"q"
PART_PAGES = 64


@dataclass
class Layout:
    """What every process maps: the file ``fd`` at ``addr``, shared (sharing possible) or private."""

    addr: int
    size: int
    fd: int
    shared: bool

    @property
    def flags(self) -> int:
        kind = libc.MAP_SHARED if self.shared else libc.MAP_PRIVATE | libc.MAP_NORESERVE
        return kind | libc.MAP_FIXED_NOREPLACE

    def map(self, offset: int = 0, length: Optional[int] = None) -> None:
        """Map [offset, offset+length) of the file at addr+offset (fixed, never replacing)."""
        length = self.size - offset if length is None else length
        libc.mmap(length, libc.PROT_READ | libc.PROT_WRITE, self.flags, self.fd, self.addr + offset, offset)

    def populate(self) -> int:
        """Fault the whole range in; returns this thread's page faults meanwhile.

        This is how sharing is verified. The faults MADV_POPULATE_* takes (GUP, counted in
        the task's min_flt by mm_account_fault()) are one per 2 MiB entry that is not yet
        present: 512 per 1 GiB for a process that builds its own PMD table, 1 per 1 GiB
        for one whose first fault found a table to share in huge_pmd_share() (all its
        entries are already there). Other signals do not tell: VmPTE in /proc/PID/status
        grows by the same 4 KiB per table either way (huge_pmd_share() calls
        mm_inc_nr_pmds() too), and PageTables in /proc/meminfo is system-wide and moves by
        only 4 KiB per GiB. The private control maps read-only (MADV_POPULATE_READ) so no
        copy-on-write page is ever allocated.
        """
        advice = libc.MADV_POPULATE_WRITE if self.shared else libc.MADV_POPULATE_READ
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        libc.madvise(self.addr, self.size, advice)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    @property
    def tables(self) -> int:
        return self.size // PUD_SIZE

    def populate_part(self) -> int:
        """Fault the first PART_PAGES huge pages of every 1 GiB range; returns the faults."""
        advice = libc.MADV_POPULATE_WRITE if self.shared else libc.MADV_POPULATE_READ
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for t in range(self.tables):
            libc.madvise(self.addr + t * PUD_SIZE, PART_PAGES * HUGEPAGE, advice)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    def looks_shared_part(self, faults: int) -> bool:
        """After populate_part(): about one fault per range, not PART_PAGES, means shared."""
        return faults < self.tables * (1 + PART_PAGES) / 2

    def looks_shared(self, faults: int, tables: Optional[int] = None) -> bool:
        """Fewer faults than half a table's entries beyond one per table: the table was found."""
        n = self.tables if tables is None else tables
        return faults < n + ENTRIES_PER_TABLE // 2


# --- the sharer's side (runs in the forked process only) ---------------------------------


class SharerOps:
    """What a sharer does on each command. ``state`` remembers what the last command left,
    so ``reshare`` knows how to get back to one whole mapping."""

    def __init__(self, layout: Layout, operation: Optional[str], mapped: bool = True):
        self.layout = layout
        self.operation = operation
        self.state = "mapped" if mapped else "unmapped"

    def unshare(self) -> None:
        """The unshare operation (HUGETLB_OPERATIONS but exit, which is the EXIT command)."""
        lay = self.layout
        if self.operation == "munmap":
            libc.munmap(lay.addr, lay.size)
            self.state = "unmapped"
        elif self.operation == "mprotect":
            libc.mprotect(lay.addr, lay.size, libc.PROT_READ)
            self.state = "readonly"
        elif self.operation == "madvise-dontneed":
            libc.madvise(lay.addr, lay.size, libc.MADV_DONTNEED)
        elif self.operation == "partial-munmap":
            # The last 2 MiB: the VMA split inside a shared 1 GiB range makes
            # hugetlb_split() unshare that range's table before the unmap.
            libc.munmap(lay.addr + lay.size - HUGEPAGE, HUGEPAGE)
            self.state = "split"
        else:
            raise OSError(errno.EINVAL, f"no unshare operation {self.operation!r}")

    def reshare(self) -> int:
        """Back to one whole mapping, then fault it in; returns the faults taken."""
        lay = self.layout
        if self.state == "unmapped":
            lay.map()
        elif self.state == "readonly":
            libc.mprotect(lay.addr, lay.size, libc.PROT_READ | libc.PROT_WRITE)
        elif self.state == "split":
            # The last 1 GiB is now two VMAs that do not merge again (hugetlb VMAs have a
            # close op), and a table is shared only when one VMA covers the whole range:
            # replace them by one. The unmap starts on a 1 GiB boundary, so no split
            # unshares anything here, and its table was unshared by the split already.
            last = lay.size - PUD_SIZE
            libc.munmap(lay.addr + last, PUD_SIZE - HUGEPAGE)
            lay.map(last, PUD_SIZE)
        self.state = "mapped"
        return lay.populate()

    def map(self) -> None:
        self.layout.map()
        self.state = "mapped"

    def unmap(self) -> None:
        libc.munmap(self.layout.addr, self.layout.size)
        self.state = "unmapped"


def sharer_main(idx: int, layout: Layout, operation: Optional[str], cmd_fd: int, reply_fd: int,
                cpu: int, parent: int, mapped: bool = True, walker_cpus: Sequence[int] = (),
                walker_lib: Optional["WalkerLib"] = None) -> int:
    """A sharer process's life: obey one-byte commands from the driver until EOF or EXIT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C: the driver cleans up
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    libc.set_parent_death_signal(signal.SIGKILL)       # driver SIGKILLed: we go too
    if os.getppid() != parent:                         # it died before prctl took effect
        return 1
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.sched_setaffinity(0, {cpu})
    ops = SharerOps(layout, operation, mapped)
    walkers = None

    def reply(status: str, value: int) -> None:
        os.write(reply_fd, f"{idx} {status} {value}\n".encode())

    while True:
        cmd = os.read(cmd_fd, 1)
        if not cmd:
            return 0
        try:
            if cmd == SHARE:
                reply("ok", ops.reshare())
            elif cmd == UNSHARE:
                ops.unshare()
                reply("ok", 0)
            elif cmd == MAP:
                ops.map()
                reply("ok", 0)
            elif cmd == FAULT:
                reply("ok", layout.populate())
            elif cmd == TOUCH_PART:
                reply("ok", layout.populate_part())
            elif cmd == UNMAP:
                ops.unmap()
                reply("ok", 0)
            elif cmd == RACE_ON:
                from .race import Walkers

                if walker_lib is None:
                    reply("err", errno.ENOEXEC)
                    continue
                # pinning only: the operation (munmap, ...) takes the mapping away under
                # them, where a store would be a SIGSEGV
                walkers = Walkers(walker_lib, layout.addr, layout.size, list(walker_cpus), write=False)
                walkers.start()
                walkers.window(True)
                reply("ok", 0)
            elif cmd == RACE_OFF:
                calls = 0
                if walkers is not None:
                    walkers.stop()
                    calls, walkers = walkers.figures.during, None
                reply("ok", calls)
            elif cmd == EXIT:
                return 0
            else:
                reply("err", errno.EINVAL)
        except OSError as e:
            reply("err", e.errno or 0)


# --- the driver's side ---------------------------------------------------------------------


@dataclass
class Sharer:
    """The driver's handle on one sharer process."""

    idx: int
    pid: int
    cmd_fd: Optional[int]
    reaped: bool = False
    shared: bool = False       # its last share() found the tables (Layout.looks_shared)


@dataclass(frozen=True)
class Reply:
    """A sharer's answer: ``ok`` with a value (faults taken, or 0), or not with an errno."""

    ok: bool
    value: int

    @property
    def error(self) -> str:
        """The errno's name (EINVAL), for counting failures."""
        return errno.errorcode.get(self.value, str(self.value))


class Sharers:
    """A group of sharer processes forked by the driver (see the module doc for the API).

    ``operation`` is what UNSHARE does (one of HUGETLB_OPERATIONS but exit; None when the
    workload only maps, faults and unmaps). The sharers run pinned to ``cpu``.
    """

    def __init__(self, layout: Layout, cpu: int, log: Callable[[str], None], operation: Optional[str] = None,
                 walker_cpus: Sequence[int] = (), walker_lib: Optional["WalkerLib"] = None):
        if operation is not None and operation not in HUGETLB_OPERATIONS:
            raise ValueError(f"no hugetlb operation {operation!r}")
        self.layout = layout
        self.cpu = cpu
        self.log = log
        self.operation = operation
        self.walker_cpus = list(walker_cpus)
        self.walker_lib = walker_lib  # loaded here, so the forked sharers have it too
        self.members: List[Sharer] = []
        self._reply_fd: Optional[int] = None
        self._reply_buf = b""
        self._started = False

    def __enter__(self) -> "Sharers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- start ----------------------------------------------------------------------------
    def start(self, count: int, mapped: bool = True) -> List[Sharer]:
        """Fork ``count`` sharers. A sharer starts with the driver's mappings as fork()
        leaves them: ``mapped`` says whether the driver has the layout mapped now (then
        each sharer has the mapping but not its page tables, which its first share() or
        fault() fills, finding the shared tables); with ``mapped=False`` send map() first.

        Once per group: the reply pipe's write end is closed after the forks, so that EOF
        on it means every sharer is gone."""
        if self._started:
            raise RuntimeError("Sharers.start() is called once per group")
        self._started = True
        r, w = os.pipe()
        self._reply_fd = r
        try:
            for i in range(count):
                self._fork(i, w, mapped)
        finally:
            os.close(w)  # only the sharers hold the write end: EOF when they are all gone
        return list(self.members)

    def _fork(self, idx: int, reply_w: int, mapped: bool) -> None:
        r, w = os.pipe()
        parent = os.getpid()
        assert self._reply_fd is not None
        with signals_blocked():  # no Ctrl-C between fork and the sharer's own handlers
            pid = os.fork()
            if pid == 0:  # the sharer: never returns into the collector
                code = 1
                try:
                    os.close(w)
                    os.close(self._reply_fd)
                    for s in self.members:
                        if s.cmd_fd is not None:
                            os.close(s.cmd_fd)
                    code = sharer_main(idx, self.layout, self.operation, r, reply_w, self.cpu, parent, mapped,
                                       self.walker_cpus, self.walker_lib)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            os.close(r)
            self.members.append(Sharer(idx, pid, w))  # tracked before a held-off Ctrl-C lands

    # -- commands -------------------------------------------------------------------------
    def share(self, s: Sharer) -> int:
        """Back to one whole mapping and fault it in; returns the faults taken and records
        in ``s.shared`` whether the tables were found."""
        reply = self.command(s, SHARE)
        if not reply.ok:
            raise WorkloadError(f"helper {s.idx} could not map and fault the range: {os.strerror(reply.value)}")
        s.shared = self.layout.looks_shared(reply.value)
        return reply.value

    def unshare(self, s: Sharer) -> Reply:
        """The group's operation; a failure is returned, not raised (workloads count them)."""
        return self.command(s, UNSHARE)

    def map(self, s: Sharer) -> None:
        self._must(s, MAP, "map the range")

    def fault(self, s: Sharer) -> int:
        """Fault the whole range in; returns the faults taken."""
        return self._must(s, FAULT, "fault the range")

    def touch_part(self, s: Sharer) -> int:
        """Fault the first PART_PAGES huge pages of each 1 GiB range; returns the faults taken."""
        return self._must(s, TOUCH_PART, "fault part of the range")

    def unmap(self, s: Sharer) -> None:
        self._must(s, UNMAP, "unmap the range")

    def race(self, s: Sharer, on: bool) -> int:
        """Start (``on``) or stop the sharer's walkers; stopping returns their GUP-fast calls."""
        return self._must(s, RACE_ON if on else RACE_OFF, "start or stop its walkers")

    def exit(self, s: Sharer) -> bool:
        """The sharer exits; reaping it means exit_mmap() is done. True for a clean exit."""
        if s.cmd_fd is None:
            raise WorkloadError(f"helper {s.idx} is gone")
        try:
            os.write(s.cmd_fd, EXIT)
        except BrokenPipeError:
            raise WorkloadError(f"helper {s.idx} (pid {s.pid}) died before its exit operation") from None
        os.close(s.cmd_fd)
        s.cmd_fd = None
        _, status = os.waitpid(s.pid, 0)
        s.reaped = True
        return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    def _must(self, s: Sharer, cmd: bytes, what: str) -> int:
        reply = self.command(s, cmd)
        if not reply.ok:
            raise WorkloadError(f"helper {s.idx} could not {what}: {os.strerror(reply.value)}")
        return reply.value

    def command(self, s: Sharer, cmd: bytes) -> Reply:
        """Send one command and wait for the sharer's reply line."""
        if s.cmd_fd is None or self._reply_fd is None:
            raise WorkloadError(f"helper {s.idx} is gone")
        try:
            os.write(s.cmd_fd, cmd)
        except BrokenPipeError:
            raise WorkloadError(f"helper {s.idx} (pid {s.pid}) died") from None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while b"\n" not in self._reply_buf:
            ready, _, _ = select.select([self._reply_fd], [], [], REPLY_POLL_S)
            if ready:
                chunk = os.read(self._reply_fd, 4096)
                if not chunk:
                    raise WorkloadError("all helper processes are gone")
                self._reply_buf += chunk
                continue
            pid, status = os.waitpid(s.pid, os.WNOHANG)
            if pid:
                s.reaped = True
                raise WorkloadError(f"helper {s.idx} (pid {s.pid}) died: {describe_status(status)}")
            if time.monotonic() > deadline:
                raise WorkloadError(f"helper {s.idx} (pid {s.pid}) did not answer in {REPLY_TIMEOUT_S:g} s")
        line, self._reply_buf = self._reply_buf.split(b"\n", 1)
        parts = line.decode().split()
        if len(parts) != 3 or parts[0] != str(s.idx):
            raise WorkloadError(f"unexpected reply {line!r} from the helpers (waiting for helper {s.idx})")
        return Reply(parts[1] == "ok", int(parts[2]))

    # -- the end --------------------------------------------------------------------------
    def close(self) -> None:
        """Every sharer gone: EOF on each command pipe, reap, SIGKILL those that do not exit
        within CLOSE_TIMEOUT_S. Idempotent; runs with Ctrl-C held off."""
        with signals_blocked():
            for s in self.members:
                if s.cmd_fd is not None:
                    try:
                        os.close(s.cmd_fd)  # EOF: the sharer exits by itself
                    except OSError:
                        pass
                    s.cmd_fd = None
            self._reap(self.members, timeout=CLOSE_TIMEOUT_S)
            self.members = []
            if self._reply_fd is not None:
                os.close(self._reply_fd)
                self._reply_fd = None
            self._reply_buf = b""

    def _reap(self, sharers: List[Sharer], timeout: float) -> None:
        """Wait for sharers to exit; SIGKILL (by pid, our own children only) those that don't."""
        deadline = time.monotonic() + timeout
        pending = [s for s in sharers if not s.reaped]
        while pending:
            for s in list(pending):
                try:
                    pid, _ = os.waitpid(s.pid, os.WNOHANG)
                except ChildProcessError:
                    pid = s.pid
                if pid:
                    s.reaped = True
                    pending.remove(s)
            if not pending:
                break
            if time.monotonic() > deadline:
                for s in pending:
                    try:
                        os.kill(s.pid, signal.SIGKILL)
                        os.waitpid(s.pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
                    s.reaped = True
                self.log(f"warning: killed {len(pending)} helper process(es) that did not exit")
                break
            time.sleep(0.01)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
