#!/usr/bin/env python3
"""What one /proc/interrupts snapshot costs the sampler, and how that grows with the CPU count.

`collect` takes a snapshot before and after every phase and diffs them once per phase,
so the figures that matter are read+parse per snapshot and diff per phase. The real
file of this machine gives the first row; synthetic files in the kernel's layout
(tests/irqgen.py) give 8..512 CPUs, each with the arch lines only and with one MSI-X
queue line per CPU (what a multi-queue NVMe or NIC adds on a big server, so the file
grows as CPUs x lines). Counts are 6-9 digits, as on a machine that has been up a while.

Prints a table of medians over --repeat runs; makes no assertions. Usage:
    python3 benchmarks/sampler_cost.py [--repeat 5] [--target-ms 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # irqgen: the synthetic-file generator the tests use

from irqgen import X86_DEVICES, X86_LINES, X86_TAIL, x86_interrupts  # noqa: E402
from tlbprobe.measure.procfs import diff_interrupts, parse_interrupts, parse_keyvalue, read_text  # noqa: E402
from tlbprobe.ui.tables import render_table  # noqa: E402

CPU_COUNTS = (8, 16, 64, 128, 256, 512)


def per_call_us(func: Callable[[], object], repeat: int, target_ms: float) -> float:
    """Median microseconds per call: each run loops long enough (~target_ms) to beat timer noise."""
    start = time.perf_counter()
    func()
    once = max(time.perf_counter() - start, 1e-7)
    loops = max(1, int(target_ms / 1000 / once))
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            func()
        runs.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(runs)


def synthetic_counts(ncpus: int, queues: int, bump: int) -> Dict[str, Callable[[int], int]]:
    """Large, CPU-dependent counts for every per-CPU line; ``bump`` makes the 'after' copy."""
    labels = [str(irq) for irq, _ in X86_DEVICES] + [str(100 + q) for q in range(queues)]
    labels += [label for label, _ in X86_LINES] + [label for label, _ in X86_TAIL]
    return {
        label: (lambda c, i=i: 123456 + 7919 * c + 104729 * i + bump * (c % 5))
        for i, label in enumerate(labels)
    }


def real_row(repeat: int, target_ms: float) -> List[str]:
    path = "/proc/interrupts"
    text = read_text(path)
    first = parse_interrupts(text, path)
    second = parse_interrupts(read_text(path), path)
    read_us = per_call_us(lambda: read_text(path), repeat, target_ms)
    parse_us = per_call_us(lambda: parse_interrupts(text, path), repeat, target_ms)
    both_us = per_call_us(lambda: parse_interrupts(read_text(path), path), repeat, target_ms)
    diff_us = per_call_us(lambda: diff_interrupts(first, second), repeat, target_ms)
    return [f"this host ({len(first.cpus)})", str(len(first.lines)), str(len(text)),
            f"{read_us:.0f}", f"{parse_us:.0f}", f"{both_us:.0f}", f"{diff_us:.0f}"]


def synthetic_row(ncpus: int, queues: int, repeat: int, target_ms: float) -> List[str]:
    cpus = range(ncpus)
    before_text = x86_interrupts(cpus, synthetic_counts(ncpus, queues, 0), queues=queues)  # type: ignore[arg-type]
    after_text = x86_interrupts(cpus, synthetic_counts(ncpus, queues, 3), queues=queues)  # type: ignore[arg-type]
    before = parse_interrupts(before_text, "synthetic")
    after = parse_interrupts(after_text, "synthetic")
    assert not diff_interrupts(before, after).warnings
    parse_us = per_call_us(lambda: parse_interrupts(before_text, "synthetic"), repeat, target_ms)
    diff_us = per_call_us(lambda: diff_interrupts(before, after), repeat, target_ms)
    return [str(ncpus), str(len(before.lines)), str(len(before_text)), "", f"{parse_us:.0f}", "", f"{diff_us:.0f}"]


def vmstat_row(repeat: int, target_ms: float) -> List[str]:
    path = "/proc/vmstat"
    counters = parse_keyvalue(read_text(path), path)
    both_us = per_call_us(lambda: parse_keyvalue(read_text(path), path), repeat, target_ms)
    return [f"{len(counters)} counters", f"{both_us:.0f}"]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is printed")
    parser.add_argument("--target-ms", type=float, default=50.0, help="length of one timed run")
    args = parser.parse_args(argv)

    print(f"python {sys.version.split()[0]}; medians of {args.repeat} runs, microseconds per call\n")
    headers = ["CPUs", "lines", "bytes", "read us", "parse us", "read+parse us", "diff us"]
    rows = [real_row(args.repeat, args.target_ms)]
    for queues_per_cpu in (0, 1):
        for n in CPU_COUNTS:
            rows.append(synthetic_row(n, n * queues_per_cpu, args.repeat, args.target_ms))
    print("/proc/interrupts (synthetic rows: first block arch lines only, second block + 1 queue IRQ per CPU)")
    print(render_table(headers, rows, align="lrrrrrr"))
    print()
    print("/proc/vmstat")
    print(render_table(["file", "read+parse us"], [vmstat_row(args.repeat, args.target_ms)], align="lr"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
