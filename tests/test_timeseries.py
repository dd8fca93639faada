"""timeseries.csv: CAL and TLB per CPU sampled during a phase (tlbprobe/measure/timeseries.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tlbprobe.measure import procfs
from tlbprobe.measure.timeseries import PhaseSeries, cal_tlb

DATA = Path(__file__).parent / "data"
BEFORE = procfs.parse_interrupts((DATA / "x86-kvm-2cpu.before.interrupts").read_text())
AFTER = procfs.parse_interrupts((DATA / "x86-kvm-2cpu.after.interrupts").read_text())


def test_rows_count_from_the_before_snapshot_and_end_with_the_after_snapshot():
    s = PhaseSeries(start=100.0)
    s.add(100.5, BEFORE)   # nothing happened yet at the first sample
    rows = s.rows(0, "workload", BEFORE, AFTER, end=102.0)
    df = pd.DataFrame(rows, columns=["repeat", "phase", "t_s", "cpu", "cal", "tlb"])
    assert list(df.t_s) == ["0.5000", "0.5000", "2.0000", "2.0000"]
    assert list(df.cal) == [0, 0, 6, 1] and list(df.tlb) == [0, 0, 3, 0]  # the recorded deltas (data/README.md)


def test_sampling_is_rate_limited():
    s = PhaseSeries(start=0.0, interval_s=0.1)
    calls = []
    s.add = lambda when, snap: calls.append(when)   # count reads, not parse them
    for t in (0.05, 0.11, 0.15, 0.2, 0.25, 0.33):
        s.maybe_sample(now=t)
    assert calls == [0.11, 0.25]


def test_arm64_has_function_calls_but_no_tlb_line():
    arm = procfs.parse_interrupts((DATA / "arm64-rpi4-4cpu.before.interrupts").read_text())
    assert cal_tlb(arm) == {0: (15227, 0), 1: (18740, 0), 2: (17302, 0), 3: (16911, 0)}  # IPI1, no TLB
