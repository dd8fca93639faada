"""--race: lock-less walkers racing the operation, and what they would have broken.

Skipping a sync is correct only if the flush before it already waited for every
GUP-fast walker that could still hold the old page table. A patch that gets that wrong
corrupts memory rarely and silently. This module gives a workload three things:

* walkers: threads of the driver's own process (so they walk its page tables), one per
  other CPU and pinned there, pinning four pages at a time of the range being operated on
  with GUP-fast (vmsplice() into a pipe, splice() to /dev/null: pinned and dropped at
  once; not O_DIRECT reads, which would overwrite the range, and guests have no block
  device) as fast as they can, counting the calls made while the operation runs: the
  races attempted;
* a pattern: every 8-byte word of the range holds its index xor a seed, written before
  the operation and checked after it: the corrupted bytes;
* the kernel log: /dev/kmsg read from the run's start, every BUG, WARNING, KASAN,
  "Bad page" and general protection line counted and kept.

A walker of the same process runs on a CPU in the mm's cpumask, so under native flush
the collapse's TLB flush already interrupts it: in a TCG guest a correct skip and a
redundant one look alike, and the unsafe cases (PV flush skipping a preempted vCPU,
INVLPGB) cannot occur there. The check is proven by fault injection instead
(kernels/README.md): a deliberately broken patch must make it fail.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from typing import Dict, List, Optional

from . import libc

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


def _words(addr: int, size: int):
    import numpy as np

    return np.frombuffer((ctypes.c_char * size).from_address(addr), dtype=np.uint64)


def write_pattern(addr: int, size: int, seed: int = SEED) -> None:
    """Every 8-byte word: its index xor ``seed``."""
    import numpy as np

    w = _words(addr, size)
    w[:] = np.arange(len(w), dtype=np.uint64) ^ np.uint64(seed)


def corrupted_bytes(addr: int, size: int, seed: int = SEED) -> int:
    """Bytes of the range that no longer hold the pattern."""
    import numpy as np

    w = _words(addr, size)
    bad = np.nonzero(w != (np.arange(len(w), dtype=np.uint64) ^ np.uint64(seed)))[0]
    if not len(bad):
        return 0
    expect = (bad.astype(np.uint64) ^ np.uint64(seed)).view(np.uint8).reshape(-1, 8)
    got = w[bad].view(np.uint8).reshape(-1, 8)
    return int(np.count_nonzero(expect != got))


class Walkers:
    """GUP-fast walker threads over [addr, addr+size) on ``cpus`` (see the module doc).
    ``window(True)`` before the operation, ``window(False)`` after: ``during`` counts the
    calls made in between; ``calls`` all of them; ``errors`` the failed ones by errno."""

    def __init__(self, addr: int, size: int, cpus: List[int]):
        self.addr, self.size, self.cpus = addr, size, cpus
        self.calls = 0
        self.during = 0
        self.errors: Dict[str, int] = {}
        self._in_window = False
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._stop.clear()
        for i, cpu in enumerate(self.cpus):
            t = threading.Thread(target=self._walk, args=(i, cpu), name=f"walker-{cpu}", daemon=True)
            t.start()
            self._threads.append(t)

    def window(self, on: bool) -> None:
        self._in_window = on

    def _walk(self, index: int, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})
        r, w = os.pipe()
        devnull = os.open("/dev/null", os.O_WRONLY)
        pages = self.size // WALK_BYTES
        k = (index * 7919) % max(pages, 1)
        calls = during = 0
        errors: Dict[str, int] = {}
        try:
            while not self._stop.is_set():
                try:
                    libc.vmsplice_pin(w, r, devnull, self.addr + k * WALK_BYTES, WALK_BYTES)
                except OSError as e:
                    name = os.strerror(e.errno or 0)
                    errors[name] = errors.get(name, 0) + 1
                calls += 1
                if self._in_window:
                    during += 1
                k = (k + 1) % pages
        finally:
            for fd in (r, w, devnull):
                os.close(fd)
            with self._lock:
                self.calls += calls
                self.during += during
                for k2, v in errors.items():
                    self.errors[k2] = self.errors.get(k2, 0) + v

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []


def record(outcome, notes: List[str], walker_calls: int, during: int, errors: int, bad: int,
           reports: List[str]) -> None:
    """A race check's figures into the phase outcome (summary.json workload_figures), and
    a failed check's reasons into its note."""
    outcome.figures.update({
        "race_walker_calls": float(walker_calls),
        "races_attempted": float(during),
        "race_walker_errors": float(errors),
        "collapses_refused": float(max(outcome.ops_expected - outcome.ops, 0)),
        "corrupted_bytes": float(bad),
        "kernel_reports": float(len(reports)),
    })
    if bad:
        notes.append(f"RACE CHECK FAILED: {bad} byte(s) of the range lost their pattern")
    for line in reports:
        notes.append(f"RACE CHECK FAILED: kernel log: {line}")
