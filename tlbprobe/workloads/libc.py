"""The few memory-management system calls the drivers need, through ctypes.

Python's mmap module cannot map at a fixed address, returns MAP_SHARED memory by default
(shmem, which MADV_COLLAPSE refuses with EINVAL for anonymous collapse) and has no
madvise for arbitrary ranges, so we call libc directly. ctypes releases the GIL during
each call, so a madvise that runs for seconds does not stall the trace reader thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional


PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MAP_NORESERVE = 0x4000
MAP_FIXED_NOREPLACE = 0x100000
MADV_DONTNEED = 4
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15
MADV_POPULATE_WRITE = 23   # Linux 5.14
MADV_COLLAPSE = 25         # Linux 6.1
MAP_FAILED = ctypes.c_void_p(-1).value


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class SyscallError(OSError):
    """An mm syscall failed; ``errno`` and ``strerror`` as for OSError."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SyscallError(err, f"{what}: {os.strerror(err)}")


def mmap(length: int, prot: int, flags: int, fd: int = -1, addr: Optional[int] = None, offset: int = 0) -> int:
    ret = _libc.mmap(addr, length, prot, flags, fd, offset)
    if ret is None or ret == MAP_FAILED:
        err = ctypes.get_errno()
        raise SyscallError(err, f"mmap({length} bytes): {os.strerror(err)}")
    if addr is not None and flags & MAP_FIXED_NOREPLACE and ret != addr:
        # Kernels before 4.17 ignore the flag and treat addr as a hint.
        _libc.munmap(ret, length)
        raise SyscallError(0, f"mmap could not place the mapping at {addr:#x}")
    return ret


def munmap(addr: int, length: int) -> None:
    _check(_libc.munmap(addr, length), f"munmap({addr:#x}, {length})")


def madvise(addr: int, length: int, advice: int) -> None:
    _check(_libc.madvise(addr, length, advice), f"madvise({addr:#x}, {length}, {advice})")


def mprotect(addr: int, length: int, prot: int) -> None:
    _check(_libc.mprotect(addr, length, prot), f"mprotect({addr:#x}, {length}, {prot})")


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def map_small_pages(size: int, align: int) -> "tuple[int, int]":
    """A private anonymous range of ``size`` bytes at an ``align``-aligned address, faulted
    in as small pages (MADV_NOHUGEPAGE, then MADV_POPULATE_WRITE, or a touch per page on
    kernels before 5.14): what a collapse, by madvise or by khugepaged, starts from.
    Returns (the mapping's base, for munmap of size + align; the aligned address)."""
    import errno

    base = mmap(size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
    addr = align_up(base, align)
    madvise(addr, size, MADV_NOHUGEPAGE)
    try:
        madvise(addr, size, MADV_POPULATE_WRITE)
    except OSError as e:
        if e.errno != errno.EINVAL:
            munmap(base, size + align)
            raise
        touch(addr, size)
    return base, addr


def touch(addr: int, length: int, step: int = 4096) -> None:
    """Write one byte per page (the fallback when MADV_POPULATE_WRITE is missing)."""
    for off in range(0, length, step):
        ctypes.c_char.from_address(addr + off).value = b"\x01"


def read_into(dst: int, src: int, length: int) -> None:
    """Copy memory (reads the source range: keeps a thread's CPU in the mm)."""
    ctypes.memmove(dst, src, length)


# -- additions for the hugetlb-unshare driver ------------------------------------------------
PROT_NONE = 0x0
MADV_POPULATE_READ = 22    # Linux 5.14
PR_SET_PDEATHSIG = 1

_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends ``sig`` to us when the thread that forked us
    exits, so a helper process cannot outlive a driver killed with SIGKILL."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
