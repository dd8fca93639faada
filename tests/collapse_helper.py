"""A process that runs one MADV_COLLAPSE of SIZE MiB and says what it did, as JSON on
stdout: its PID and name, the 2 MiB collapses the kernel counted around its madvise call
(/proc/vmstat thp_collapse_alloc) and the huge pages its range ended up with
(/proc/self/smaps AnonHugePages). tests/test_watch_real.py runs it beside a watch.
Other processes' collapses (khugepaged's) move the vmstat counter too: ``huge_pmds`` is
this process's own figure.

    python tests/collapse_helper.py SIZE_MIB [--name NAME]

(--name sets the process name, so the watch's MADV_COLLAPSE origin can be checked
against it.)
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tlbprobe.workloads import libc  # noqa: E402

PMD = 2 << 20


def collapses() -> int:
    with open("/proc/vmstat") as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == "thp_collapse_alloc":
                return int(value)
    return 0


def anon_huge_kb(addr: int, size: int) -> int:
    """AnonHugePages of the smaps entry that holds ``addr``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    return 0


def main() -> int:
    size = int(sys.argv[1]) << 20
    if "--name" in sys.argv:
        name = sys.argv[sys.argv.index("--name") + 1].encode()[:15]
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        always = "[always]" in f.read()
    if always:  # faults would give huge pages: fault in small ones, then allow huge ones again
        base, addr = libc.map_small_pages(size, PMD)
        libc.madvise(addr, size, libc.MADV_HUGEPAGE)  # (khugepaged may take a range first)
    else:
        # THP madvise or never: faults give small pages, and without MADV_HUGEPAGE khugepaged
        # leaves the range alone (MADV_COLLAPSE ignores the sysfs mode and needs no
        # MADV_HUGEPAGE: Documentation/admin-guide/mm/transhuge.rst), so every collapse
        # of the range is this process's own
        base = libc.mmap(size + PMD, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS)
        addr = libc.align_up(base, PMD)
        libc.touch(addr, size)
    before = collapses()
    error = None
    try:
        libc.madvise(addr, size, libc.MADV_COLLAPSE)
    except OSError as e:  # may stop part way; what happened is counted below
        error = str(e)
    after = collapses()
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    print(json.dumps({"pid": os.getpid(), "comm": comm, "collapsed": after - before,
                      "huge_pmds": anon_huge_kb(addr, size) // 2048, "error": error}), flush=True)
    libc.munmap(base, size + PMD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
