"""Shared fixtures. Tests marked ``root`` use the real kernel (madvise, /proc, tracefs,
sysfs knobs) and are skipped unless run as root."""

from __future__ import annotations

import os
import subprocess
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
    """Whether this kernel has a trace event (e.g. 'csd/csd_queue_cpu', Linux 6.5+).

    tracefs is often not mounted on a fresh machine (tlbprobe mounts it for a run and
    unmounts it afterwards), and an unmounted tracefs shows no events: a test that looked
    only there would skip on a kernel that has the event. As root, look in a tracefs
    mounted in a mount namespace of its own (unshare), which no other process sees."""
    if (TRACEFS / "events" / name).is_dir() or (Path("/sys/kernel/debug/tracing/events") / name).is_dir():
        return True
    if os.geteuid() != 0 or os.path.ismount(TRACEFS) or not TRACEFS.is_dir():
        return False
    look = f"mount -t tracefs nodev {TRACEFS} && test -d {TRACEFS}/events/{name}"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", look],
                          capture_output=True).returncode == 0


def host_flush_mode() -> str:
    """How this host flushes remote TLBs, as tlbprobe detects it (native, pv, invlpgb)."""
    from tlbprobe.measure.host import gather

    return gather(None).flush_mode


#: Skips that must not happen on CI's kind of machine (root, x86, a kernel with the csd and
#: irq_vectors trace events): under TLBPROBE_STRICT_SKIPS=1 (.ci/run sets it) a test that
#: skips with one of these reasons fails the session instead of passing unseen.
STRICT_SKIP_TAG = "[required on CI]"

#: Tests that count sync calls where the kernel queues them need the csd trace events.
needs_csd_events = pytest.mark.skipif(
    os.geteuid() == 0 and not tracefs_event("csd/csd_queue_cpu"),
    reason=f"{STRICT_SKIP_TAG} this kernel has no csd:csd_queue_cpu trace event (Linux 6.5+): "
           "the queued counts are not there")
#: The cost observer's handler times need the x86 function-call vector events.
needs_irq_vector_events = pytest.mark.skipif(
    os.geteuid() == 0 and not tracefs_event("irq_vectors/call_function_entry"),
    reason=f"{STRICT_SKIP_TAG} this kernel has no irq_vectors:call_function_entry trace event (x86 only)")


_STRICT_SKIPS: list = []


def pytest_runtest_logreport(report):
    if report.skipped and STRICT_SKIP_TAG in str(report.longrepr):
        _STRICT_SKIPS.append(report.nodeid)


def _strict_failures() -> list:
    if os.environ.get("TLBPROBE_STRICT_SKIPS") != "1":
        return []
    out = list(_STRICT_SKIPS)
    if os.geteuid() != 0:
        out.append("(the suite ran without root: every root test skipped)")
    return out


def pytest_sessionfinish(session, exitstatus):
    """Under TLBPROBE_STRICT_SKIPS=1, a strict skip fails the session."""
    if _strict_failures() and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    failures = _strict_failures()
    if failures:
        terminalreporter.write_line(f"TLBPROBE_STRICT_SKIPS: {len(failures)} test(s) skipped that must run on "
                                    "this kind of machine (root, x86, csd and irq_vectors events):", red=True)
        for nodeid in failures:
            terminalreporter.write_line(f"  {nodeid}", red=True)


@pytest.fixture
def unchanged_system():
    """Asserts that the test leaves every knob tlbprobe touches as it found it."""
    if JOURNAL.exists():
        pytest.fail(f"{JOURNAL} exists before the test: a previous run was not restored")
    before = system_state()
    yield before
    after = system_state()
    assert after == before
