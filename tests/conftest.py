"""Shared fixtures. Tests marked ``root`` use the real kernel (madvise, /proc, tracefs,
sysfs knobs) and are skipped unless run as root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest

TRACEFS = Path("/sys/kernel/tracing")
THP = Path("/sys/kernel/mm/transparent_hugepage")
JOURNAL = Path("/run/tlbprobe/journal.json")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: the real kernel interfaces (run the suite as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


#: khugepaged's counters move whenever it scans any process: not knobs, not ours to restore
KHUGEPAGED_COUNTERS = {"khugepaged/pages_collapsed", "khugepaged/full_scans"}


def system_state() -> Dict[str, object]:
    """Everything a run may change, as it is now: compare before and after a run."""
    state: Dict[str, object] = {
        "tracefs_mounted": os.path.ismount(TRACEFS),
        "journal": JOURNAL.exists(),
        "nr_hugepages": Path("/proc/sys/vm/nr_hugepages").read_text().strip(),
    }
    for p in sorted(list(THP.glob("*")) + list(THP.glob("khugepaged/*")) + list(THP.glob("hugepages-*/enabled"))):
        if p.is_file() and str(p.relative_to(THP)) not in KHUGEPAGED_COUNTERS:
            state[str(p.relative_to(THP))] = p.read_text().strip()
    if (TRACEFS / "instances").is_dir():
        state["instances"] = sorted(os.listdir(TRACEFS / "instances"))
    return state


def tracefs_event(name: str) -> bool:
    """Whether this kernel has a trace event (e.g. 'csd/csd_queue_cpu', Linux 6.5+)."""
    return (TRACEFS / "events" / name).is_dir() or (Path("/sys/kernel/debug/tracing/events") / name).is_dir()


def host_flush_mode() -> str:
    """How this host flushes remote TLBs, as tlbprobe detects it (native, pv, invlpgb)."""
    from tlbprobe.measure.host import gather

    return gather(None).flush_mode


#: Tests that count sync calls where the kernel queues them need the csd trace events.
needs_csd_events = pytest.mark.skipif(
    os.geteuid() == 0 and not tracefs_event("csd/csd_queue_cpu") and os.path.ismount(TRACEFS),
    reason="this kernel has no csd:csd_queue_cpu trace event (Linux 6.5+): the queued counts are not there")


@pytest.fixture
def unchanged_system():
    """Asserts that the test leaves every knob tlbprobe touches as it found it."""
    if JOURNAL.exists():
        pytest.fail(f"{JOURNAL} exists before the test: a previous run was not restored")
    before = system_state()
    yield before
    after = system_state()
    assert after == before
