"""workloads/sharers.py: the sharer processes and their command protocol, without root.

A plain memfd (4 KiB pages) stands in for the hugetlb file: the protocol, the replies,
the pinning and the clean-up on every path do not depend on what is mapped. (That the
kernel shares hugetlb PMD tables is the root tests' business, tests/test_hugetlb.py.)
"""

from __future__ import annotations

import os
import signal

import pytest

from tlbprobe.errors import WorkloadError
from tlbprobe.workloads import libc, sharers
from tlbprobe.workloads.sharers import Layout, Sharers

SIZE = 4 << 20


@pytest.fixture
def layout():
    fd = os.memfd_create("tlbprobe-test-sharers", os.MFD_CLOEXEC)
    os.ftruncate(fd, SIZE)
    base = libc.mmap(SIZE, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)
    libc.munmap(base, SIZE)  # a free range for MAP_FIXED_NOREPLACE
    yield Layout(base, SIZE, fd, shared=True)
    os.close(fd)


@pytest.fixture
def cpu():
    return min(os.sched_getaffinity(0))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_map_fault_unmap_and_replies(layout, cpu):
    log = []
    with Sharers(layout, cpu, log.append) as group:
        members = group.start(2, mapped=False)
        assert [s.idx for s in members] == [0, 1]
        for s in members:
            group.map(s)
            assert os.sched_getaffinity(s.pid) == {cpu}     # pinned where the driver runs
            assert group.fault(s) > 0                       # 4 KiB pages: one fault each
        with pytest.raises(WorkloadError, match="helper 0 could not map the range"):
            group.map(members[0])                           # MAP_FIXED_NOREPLACE: already there
        group.unmap(members[1])
        assert group.share(members[1]) > 0                  # back to a whole mapping, faulted
        assert not members[1].shared                        # 4 KiB pages share no PMD table
        pids = [s.pid for s in members]
    assert all(gone(pid) for pid in pids) and group.members == []
    assert log == []
    group.close()                                           # idempotent


def test_unshare_is_the_groups_operation_and_failures_are_returned(layout, cpu):
    with Sharers(layout, cpu, lambda line: None, operation="mprotect") as group:
        s = group.start(1, mapped=False)[0]
        group.map(s)
        assert group.unshare(s).ok
        assert group.share(s) >= 0                          # read-write again
    with Sharers(layout, cpu, lambda line: None) as group:
        s = group.start(1, mapped=False)[0]
        reply = group.unshare(s)                            # no operation given
        assert not reply.ok and reply.error == "EINVAL"
    with pytest.raises(ValueError):
        Sharers(layout, cpu, lambda line: None, operation="munmapp")


def test_sharers_inherit_the_drivers_mapping(layout, cpu):
    layout.map()
    try:
        with Sharers(layout, cpu, lambda line: None, operation="munmap") as group:
            a, b = group.start(2)                           # mapped=True: as fork left them
            assert group.share(a) > 0                       # state "mapped": fault only
            assert group.unshare(b).ok                      # munmap of the inherited mapping
            assert group.share(b) > 0                       # map again, then fault
    finally:
        libc.munmap(layout.addr, layout.size)


def test_exit_reaps_and_a_dead_sharer_is_named(layout, cpu):
    with Sharers(layout, cpu, lambda line: None) as group:
        a, b, c = group.start(3, mapped=False)
        assert group.exit(a) and a.reaped and gone(a.pid)
        with pytest.raises(WorkloadError, match="helper 0 is gone"):
            group.fault(a)
        os.kill(b.pid, signal.SIGKILL)
        with pytest.raises(WorkloadError, match=f"helper 1 \\(pid {b.pid}\\) died"):
            group.map(b)


def test_close_kills_a_sharer_that_does_not_exit(layout, cpu, monkeypatch):
    monkeypatch.setattr(sharers, "CLOSE_TIMEOUT_S", 0.2)
    log = []
    group = Sharers(layout, cpu, log.append)
    a, b = group.start(2, mapped=False)
    for s in (a, b):
        group.map(s)                                        # both running their command loop
    os.kill(b.pid, signal.SIGSTOP)                          # cannot see the EOF
    group.close()
    assert gone(a.pid) and gone(b.pid)
    assert log == ["warning: killed 1 helper process(es) that did not exit"]


def test_every_sharer_is_gone_when_the_driver_fails_midway(layout, cpu):
    pids = []
    with pytest.raises(RuntimeError):
        with Sharers(layout, cpu, lambda line: None) as group:
            pids = [s.pid for s in group.start(3, mapped=False)]
            raise RuntimeError("the workload failed")
    assert len(pids) == 3 and all(gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="once per group"):
        group.start(1)
