"""--race: lock-less walkers racing the operation, and what they would have broken.

Skipping a sync is correct only if the flush before it already waited for every
lock-less walker that could still use the old page table. A patch that gets that wrong
corrupts memory rarely and silently. This module gives a workload three things:

* walkers (race_walkers.c, compiled at run time and loaded into the process whose page
  tables change, so they walk that mm): a thread on every other CPU, pinned there, that
  - pins four pages at a time of the range with GUP-fast (vmsplice() into a pipe,
    splice() to /dev/null: pinned and dropped at once; not O_DIRECT reads, which would
    overwrite the range, and guests have no block device), counting the calls made while
    the operation runs: the races attempted. This is the software walker the sync is for;
  - stores to its own word (a writer slot) in 16 pages of one 2 MiB chunk, checking
    that each word still holds its last store, and moves to the next chunk every 50 ms:
    the lost writes. This is the hardware walker, the CPU's TLB: a flush that missed
    the CPU leaves the thread storing into small pages the collapse has already copied
    and freed (race_walkers.c says why it dwells). Walkers in hugetlb sharers
    only pin: their process's operation (munmap...) takes the mapping away under them;
* a pattern: every other 8-byte word of the range holds its index xor a seed, written
  before the operation and checked after it: the corrupted bytes;
* the kernel log: /dev/kmsg read from the run's start, every BUG, WARNING, KASAN,
  "Bad page" and general protection line counted and kept.

A walker of the same process runs on a CPU in the mm's cpumask, so under native flush
the collapse's TLB flush already interrupts it: in a TCG guest a correct skip and a
redundant one look alike, and the unsafe cases (PV flush skipping a preempted vCPU,
INVLPGB) cannot occur there. The check is proven by fault injection instead
(kernels/fault-injection/, benchmarks/race_fault_injection.py): a deliberately broken
patch, whose flush misses the other CPUs, must make it fail.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from ..cbuild import Program
from ..errors import PreflightError, WorkloadError

#: What a kernel splat looks like in the log (printk's message text).
SPLAT = re.compile(r"\bBUG\b|WARNING:|KASAN|Bad page|general protection|Oops")
WALK_BYTES = 4 * 4096
SEED = 0x9E3779B97F4A7C15


class KernelLog:
    """The kernel log's records from now on (/dev/kmsg, opened at the end of the buffer)."""

    def __init__(self, path: str = "/dev/kmsg"):
        self.fd: Optional[int] = None
        self.reports: List[str] = []
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    @property
    def readable(self) -> bool:
        return self.fd is not None

    def scan(self) -> List[str]:
        """The new splat lines since the last scan (also kept in ``reports``)."""
        found: List[str] = []
        while self.fd is not None:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == 32:  # EPIPE: records were overwritten before we read them
                    continue
                break
            if not rec:
                break
            text = rec.decode("utf-8", "replace").split(";", 1)[-1].strip()
            if SPLAT.search(text):
                found.append(text.splitlines()[0][:300])
        self.reports += found
        return found

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


#: Words per block of the pattern's write and check: 8 MiB at a time, so that a 1 GiB
#: range needs tens of MiB of index arrays, not gigabytes (a 4 GiB guest ran out).
BLOCK_WORDS = 1 << 20


def _blocks(addr: int, size: int):
    """(first word index, the words as a numpy array over the memory) per block."""
    import numpy as np

    n = size // 8
    for first in range(0, n, BLOCK_WORDS):
        count = min(BLOCK_WORDS, n - first)
        buf = (ctypes.c_char * (count * 8)).from_address(addr + first * 8)
        yield first, np.frombuffer(buf, dtype=np.uint64)


def write_pattern(addr: int, size: int, seed: int = SEED) -> None:
    """Every 8-byte word: its index xor ``seed``."""
    import numpy as np

    for first, w in _blocks(addr, size):
        w[:] = np.arange(first, first + len(w), dtype=np.uint64) ^ np.uint64(seed)


def corrupted_bytes(addr: int, size: int, seed: int = SEED) -> int:
    """Bytes of the range that no longer hold the pattern, the walkers' writer slots
    (which they check themselves: ``Walkers.lost_writes``) left out."""
    import numpy as np

    total = 0
    for first, w in _blocks(addr, size):
        idx = np.arange(first, first + len(w), dtype=np.uint64)
        off = idx % np.uint64(CHUNK_WORDS)
        slot = (off < np.uint64(WINDOW_WORDS)) & (off % np.uint64(SLOT_WORDS) == 0)
        bad = np.nonzero((w != (idx ^ np.uint64(seed))) & ~slot)[0]
        if len(bad):
            expect = (idx[bad] ^ np.uint64(seed)).view(np.uint8).reshape(-1, 8)
            got = w[bad].view(np.uint8).reshape(-1, 8)
            total += int(np.count_nonzero(expect != got))
    return total


SOURCE = Path(__file__).with_name("race_walkers.c")
#: race_walkers.c's writer slots: word s * 8 (s < 64) of the first 16 pages of every
#: 2 MiB chunk, that is every 8th word of those pages.
CHUNK_WORDS = (2 << 20) // 8
WINDOW_WORDS = 16 * 4096 // 8
SLOT_WORDS = 8


class _Totals(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("calls", "during", "errors", "lost", "writes", "writers")]


class WalkerLib:
    """race_walkers.c, compiled and loaded into this process (``close()`` removes the
    file; the loaded code stays mapped, so processes forked later can use it too)."""

    def __init__(self) -> None:
        self.program = Program(SOURCE, flags=("-shared", "-fPIC", "-pthread"), what="--race's walkers")
        try:
            self.dll = ctypes.CDLL(str(self.program.path))
        except OSError as e:
            self.program.close()
            raise PreflightError(f"--race: cannot load the compiled walkers: {e}") from None
        self.dll.walkers_start.restype = ctypes.c_void_p
        self.dll.walkers_start.argtypes = [ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int),
                                           ctypes.c_int, ctypes.c_int]
        self.dll.walkers_window.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.dll.walkers_calls.argtypes = [ctypes.c_void_p]
        self.dll.walkers_calls.restype = ctypes.c_uint64
        self.dll.walkers_stop.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Totals)]

    def close(self) -> None:
        self.program.close()


@dataclass
class WalkerFigures:
    """What a set of walkers did (see ``Walkers``)."""
    calls: int = 0
    during: int = 0
    errors: int = 0
    lost_writes: int = 0
    writes: int = 0
    writers: int = 0


class Walkers:
    """Walker threads (race_walkers.c) over [addr, addr+size) on ``cpus``, see the module
    doc. ``window(True)`` before the operation, ``window(False)`` after; ``stop()`` fills
    ``figures``: GUP-fast calls in all, those in the window, failed ones, stores a TLB
    flush missed, stores, threads that stored. With ``write`` walker i stores in slot i
    (walkers beyond slot 63 only pin); without, they only pin."""

    def __init__(self, lib: WalkerLib, addr: int, size: int, cpus: List[int], write: bool = True):
        self.lib, self.addr, self.size, self.cpus, self.write = lib, addr, size, cpus, write
        self.figures = WalkerFigures()
        self._set: Optional[int] = None

    def start(self) -> None:
        cpus = (ctypes.c_int * len(self.cpus))(*self.cpus)
        self._set = self.lib.dll.walkers_start(self.addr, self.size, cpus, len(self.cpus), int(self.write))
        if not self._set:
            raise WorkloadError("--race: the walker threads could not be started (out of memory?)")

    def window(self, on: bool) -> None:
        if self._set:
            self.lib.dll.walkers_window(self._set, int(on))

    def calls_so_far(self) -> int:
        """The walkers' GUP-fast calls up to now (while they run)."""
        return int(self.lib.dll.walkers_calls(self._set)) if self._set else 0

    def stop(self) -> None:
        if not self._set:
            return
        t = _Totals()
        self.lib.dll.walkers_stop(self._set, ctypes.byref(t))
        self._set = None
        self.figures = WalkerFigures(t.calls, t.during, t.errors, t.lost, t.writes, t.writers)


class RaceTools:
    """What a --race workload holds from configure() to close(): the kernel log from the
    run's start and the compiled walkers (one load serves every repeat and every process
    forked after it)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.kmsg = KernelLog()
        if not self.kmsg.readable:
            log("warning: --race: /dev/kmsg cannot be read: kernel reports are not checked")
        self.lib = WalkerLib()

    def reports(self) -> List[str]:
        """The kernel's splat lines since the last call."""
        return self.kmsg.scan()

    def close(self) -> None:
        self.kmsg.close()
        self.lib.close()


def record(outcome, notes: List[str], walkers: "WalkerFigures", bad: int, reports: List[str]) -> None:
    """A race check's figures into the phase outcome (summary.json workload_figures), and
    a failed check's reasons into its note."""
    outcome.figures.update({
        "race_walker_calls": float(walkers.calls),
        "races_attempted": float(walkers.during),
        "race_walker_errors": float(walkers.errors),
        "race_writers": float(walkers.writers),
        "race_writes": float(walkers.writes),
        "corrupted_bytes": float(bad),
        "lost_writes": float(walkers.lost_writes),
        "kernel_reports": float(len(reports)),
    })
    # operations the walkers made fail: a workload that saw them says so itself
    outcome.figures.setdefault("collapses_refused", float(max(outcome.ops_expected - outcome.ops, 0)))
    if bad:
        notes.append(f"RACE CHECK FAILED: {bad} byte(s) of the range lost their pattern")
    if walkers.lost_writes:
        notes.append(f"RACE CHECK FAILED: {walkers.lost_writes} write(s) by walker threads were lost "
                     "(a TLB flush missed their CPU)")
    for line in reports:
        notes.append(f"RACE CHECK FAILED: kernel log: {line}")
