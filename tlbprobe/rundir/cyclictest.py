"""cyclictest's results as a run directory holds them (RUN/latency/<tag>.json), and the
per-CPU figures of summary.json ``latency`` computed from them. Pure: no processes, no
/proc; the collector's observer (measure/latency.py) and the report's reader
(rundir/reader.py) both read the files with this one parser.

* The parser of ``cyclictest --json`` output (rt-tests 2.x). Its quirks: the keys
  ``"cmdline:"`` and ``"rt_test_version:"`` really end in a colon; the per-thread
  ``histogram`` lists the non-zero 1-us buckets below the ``-h`` limit only, overflows are
  left out (they are ``cycles`` minus the histogram's total). A file cut short (cyclictest
  killed, disk full) or damaged in the middle still yields every thread object that is
  whole, with the damage listed in ``problems``.
* Percentiles from histograms (nearest rank, overflows counted), and the pooling of one
  CPU's threads over phases (:class:`CpuLatency`): the per-CPU objects of summary.json
  ``latency``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import InputError
from .sections import LatencyCpu

#: Field name and percentile, as they appear in summary.json.
PERCENTILES: Tuple[Tuple[str, float], ...] = (("p50_us", 50.0), ("p99_us", 99.0), ("p999_us", 99.9))


# --- the parser ------------------------------------------------------------------------


@dataclass
class ThreadLatency:
    """One measuring thread of one cyclictest run (all times in microseconds)."""

    thread: int
    cpu: int
    cycles: int
    min_us: int
    max_us: int
    avg_us: float
    histogram: Dict[int, int]

    @property
    def overflows(self) -> int:
        """Samples beyond the -h limit: cyclictest leaves them out of the histogram."""
        return max(self.cycles - sum(self.histogram.values()), 0)


@dataclass
class CyclictestOutput:
    """What a ``--json`` file held. ``problems`` is empty for a whole, successful run."""

    threads: List[ThreadLatency]
    version: Optional[str] = None
    cmdline: Optional[str] = None
    return_code: Optional[int] = None
    num_threads: Optional[int] = None
    problems: List[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def by_cpu(self) -> Dict[int, ThreadLatency]:
        return {t.cpu: t for t in self.threads}


_HEADER_KEYS = ("cmdline:", "rt_test_version:", "return_code", "num_threads")
_THREAD_START = re.compile(r'"(\d+)"\s*:\s*(\{)\s*"histogram"')


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{what} is {value!r}, not a whole number")
    return int(value)


def _thread(index: str, obj: Any) -> ThreadLatency:
    """One thread object, checked; ValueError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    missing = [k for k in ("histogram", "cycles", "max", "cpu") if k not in obj]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    hist_raw = obj["histogram"]
    if not isinstance(hist_raw, dict):
        raise ValueError("histogram is not an object")
    histogram: Dict[int, int] = {}
    for bucket, count in hist_raw.items():
        if not str(bucket).isdigit():
            raise ValueError(f"histogram bucket {bucket!r} is not a number of microseconds")
        n = _as_int(count, f"histogram bucket {bucket}")
        if n < 0:
            raise ValueError(f"histogram bucket {bucket} is negative")
        if n:
            histogram[int(bucket)] = n
    cycles = _as_int(obj["cycles"], "cycles")
    max_us = _as_int(obj["max"], "max")
    return ThreadLatency(
        thread=int(index), cpu=_as_int(obj["cpu"], "cpu"), cycles=cycles,
        min_us=_as_int(obj.get("min", min(histogram, default=max_us)), "min"), max_us=max_us,
        avg_us=float(obj.get("avg", 0.0)), histogram=dict(sorted(histogram.items())))


def _salvage(text: str) -> Tuple[Dict[str, Any], List[Tuple[str, Any]], List[str]]:
    """Header values and thread objects from a file that is not valid JSON as a whole.

    Each thread object starts with ``"<n>": {"histogram"``; every one found is decoded on
    its own, so a cut or a scribble loses the threads it touches and no others.
    """
    decoder = json.JSONDecoder()
    header: Dict[str, Any] = {}
    for key in _HEADER_KEYS:
        m = re.search(r'"%s"\s*:\s*' % re.escape(key), text)
        if m:
            try:
                header[key] = decoder.raw_decode(text, m.end())[0]
            except ValueError:
                pass
    threads: List[Tuple[str, Any]] = []
    problems: List[str] = []
    for m in _THREAD_START.finditer(text):
        try:
            threads.append((m.group(1), decoder.raw_decode(text, m.start(2))[0]))
        except ValueError:
            problems.append(f"thread {m.group(1)} is cut short or damaged")
    return header, threads, problems


def parse_cyclictest_json(text: str, source: str = "cyclictest JSON") -> CyclictestOutput:
    """Parse ``cyclictest --json`` output; survives a truncated or damaged file.

    Returns every whole thread, with ``problems`` naming what was lost (the output is then
    ``damaged``). Raises InputError, one line, when no thread at all is usable.
    """
    if not text.strip():
        raise InputError(f"{source}: empty (cyclictest wrote no results)")
    problems: List[str] = []
    try:
        data = json.loads(text)
    except ValueError as e:
        header, raw_threads, salvage_problems = _salvage(text)
        if not raw_threads and not salvage_problems:
            if "cmdline:" in header or "rt_test_version:" in header:
                raise InputError(f"{source}: cyclictest results cut short before the first thread's") from None
            raise InputError(f"{source}: not cyclictest --json output (not JSON: {e.msg} at line {e.lineno}, "
                             "and no thread results in it)") from None
        problems.append(f"not valid JSON ({e.msg} at line {e.lineno}): the whole thread objects were kept")
        problems += salvage_problems
    else:
        if not isinstance(data, dict) or not isinstance(data.get("thread"), dict):
            raise InputError(f"{source}: not cyclictest --json output (no \"thread\" object)")
        header = data
        raw_threads = list(data["thread"].items())
    threads: List[ThreadLatency] = []
    for index, obj in raw_threads:
        try:
            threads.append(_thread(index, obj))
        except ValueError as e:
            problems.append(f"thread {index}: {e}")
    if not threads:
        why = f" ({problems[-1]})" if problems else ""
        raise InputError(f"{source}: no usable cyclictest thread results{why}")
    out = CyclictestOutput(threads=sorted(threads, key=lambda t: t.thread), problems=problems)
    out.cmdline = header.get("cmdline:") if isinstance(header.get("cmdline:"), str) else None
    version = header.get("rt_test_version:")
    out.version = str(version) if version is not None else None
    for key, attr in (("return_code", "return_code"), ("num_threads", "num_threads")):
        try:
            setattr(out, attr, _as_int(header[key], key) if key in header else None)
        except ValueError:
            problems.append(f"{key} is not a number")
    if out.num_threads is not None and len(threads) < out.num_threads:
        problems.append(f"{out.num_threads - len(threads)} of {out.num_threads} thread(s) missing")
    if out.return_code not in (None, 0):
        problems.append(f"cyclictest reported return_code {out.return_code}")
    return out


def read_cyclictest_json(path: Path) -> CyclictestOutput:
    """:func:`parse_cyclictest_json` of a file, with the file named in every message."""
    from .. import files

    text = files.read_bytes(path, "cyclictest results", files.cap("latency")).decode("utf-8", errors="replace")
    return parse_cyclictest_json(text, str(path))


# --- figures ---------------------------------------------------------------------------


def percentile_us(histogram: Mapping[int, int], overflows: int, max_us: int, p: float) -> Optional[int]:
    """The nearest-rank p-th percentile of a 1-us histogram, in microseconds.

    The smallest bucket below which at least p% of all samples lie, overflows included
    in the count. A percentile that falls among the overflows (beyond the -h limit) is
    reported as ``max_us``: an upper bound, the conservative answer for RT work.
    None when there are no samples.
    """
    total = sum(histogram.values()) + overflows
    if total <= 0:
        return None
    milli = int(round(p * 1000))                     # integer rank: no 0.999*1000 rounding traps
    rank = max(1, -(-milli * total // 100000))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket
    return max_us


@dataclass
class CpuLatency:
    """Samples of one CPU over one or more phases: histograms add up, maxima take the max.

    Percentiles of a pooled histogram are the honest aggregate over repeats; an average
    of per-repeat percentiles is not a percentile of anything.
    """

    histogram: Counter = field(default_factory=Counter)
    cycles: int = 0
    expected: float = 0.0
    overflows: int = 0
    max_us: int = 0
    weighted_avg: float = 0.0

    def add(self, t: ThreadLatency, expected_cycles: float) -> None:
        self.histogram.update(t.histogram)
        self.cycles += t.cycles
        self.expected += expected_cycles
        self.overflows += t.overflows
        self.max_us = max(self.max_us, t.max_us)
        self.weighted_avg += t.avg_us * t.cycles

    def figures(self, role: str) -> LatencyCpu:
        """The per-CPU figures of summary.json ``latency`` (rundir/sections.py)."""
        percentiles = {name: percentile_us(self.histogram, self.overflows, self.max_us, p) for name, p in PERCENTILES}
        return LatencyCpu(
            samples=self.cycles,
            # Never below zero: the expected count is estimated to a few cycles (see Cyclictest).
            cycles_lost=max(int(round(self.expected - self.cycles)), 0),
            **percentiles,
            max_us=self.max_us if self.cycles else None,
            avg_us=round(self.weighted_avg / self.cycles, 2) if self.cycles else None,
            overflows=self.overflows,
            role=role)


def cpu_figures(t: ThreadLatency, expected_cycles: float, role: str) -> LatencyCpu:
    """Figures of one thread of one phase."""
    acc = CpuLatency()
    acc.add(t, expected_cycles)
    return acc.figures(role)
