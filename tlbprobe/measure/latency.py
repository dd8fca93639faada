"""cyclictest beside every phase: the wake-up latency that RT users feel while IPIs arrive.

Why cyclictest (Debian ``rt-tests``): it is what RT developers already trust and quote.
One SCHED_FIFO thread per online CPU, pinned, sleeps on an absolute timer every
``interval`` microseconds and records how late it woke. An IPI handler that runs when the
timer fires delays the wake-up on the CPU that receives it; a collapse that holds the
driver CPU for milliseconds (preempt=none) delays it there, and cyclictest then skips the
periods it missed (absolute timer: ``next`` is advanced past ``now``), so those show as
*cycles lost*: expected cycles minus measured ones.

This module has three layers, each usable alone:

* the parser of ``cyclictest --json`` output (rt-tests 2.x). Its quirks: the keys
  ``"cmdline:"`` and ``"rt_test_version:"`` really end in a colon; the per-thread
  ``histogram`` lists the non-zero 1-us buckets below the ``-h`` limit only, overflows are
  left out (they are ``cycles`` minus the histogram's total). A file cut short (cyclictest
  killed, disk full) or damaged in the middle still yields every thread object that is
  whole, with the damage listed in ``problems``.
* percentiles from histograms, and the per-CPU figures of summary.json ``latency``;
* the process runner (:class:`Cyclictest`) and the collector's observer
  (:class:`CyclictestObserver`), which starts one cyclictest per phase before the phase's
  'before' snapshot and stops it after the 'after' snapshot.

cyclictest runs with ``--default-system`` unless asked otherwise: by default it holds
/dev/cpu_dma_latency at 0, which keeps idle CPUs in the POLL idle state, and a CPU that
polls in idle takes a cross-CPU function call without an interrupt (the sender only sets
TIF_NEED_RESCHED: call_function_single_prep_ipi(), kernel/sched/core.c). Measured on the
development VM (haltpoll cpuidle): 100 paced collapses gave 1 CAL on the receiving CPU
with cpu_dma_latency held at 0 and 186 without, and the csd_function_entry trace missed
them too. ``--latency`` must not change the IPIs that tlbprobe counts, so by default the
CPUs idle as the system would; ``pm_qos_zero=True`` gives cyclictest's own setting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError, PreflightError, TlbprobeError
from .observer import Phase

if TYPE_CHECKING:
    from .host import HostFacts
    from ..rundir import RunDir
    from ..ui import Console

INTERVAL_US = 200        # 5000 wake-ups per second per CPU: fine-grained, still cheap
PRIORITY = 80            # SCHED_FIFO 80: above everything but the kernel's own RT threads
HISTOGRAM_US = 2000      # 1-us buckets up to 2 ms; longer delays count as overflows
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
#: Field name and percentile, as they appear in summary.json.
PERCENTILES: Tuple[Tuple[str, float], ...] = (("p50_us", 50.0), ("p99_us", 99.0), ("p999_us", 99.9))
INSTALL_HINT = ("apt-get install rt-tests (Debian, Ubuntu; the package is realtime-tests on "
                "Fedora and RHEL)")


class CyclictestFailed(TlbprobeError):
    """cyclictest did not start, did not measure, or did not stop as asked."""


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
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        raise InputError(f"{path}: cannot read cyclictest results ({e.strerror})") from None
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

    def figures(self, role: str) -> Dict[str, Any]:
        """The per-CPU object of summary.json ``latency``."""
        out: Dict[str, Any] = {
            "samples": self.cycles,
            # Never below zero: the expected count is estimated to a few cycles (see Cyclictest).
            "cycles_lost": max(int(round(self.expected - self.cycles)), 0),
        }
        for name, p in PERCENTILES:
            out[name] = percentile_us(self.histogram, self.overflows, self.max_us, p)
        out["max_us"] = self.max_us if self.cycles else None
        out["avg_us"] = round(self.weighted_avg / self.cycles, 2) if self.cycles else None
        out["overflows"] = self.overflows
        out["role"] = role
        return out


def cpu_figures(t: ThreadLatency, expected_cycles: float, role: str) -> Dict[str, Any]:
    """Figures of one thread of one phase."""
    acc = CpuLatency()
    acc.add(t, expected_cycles)
    return acc.figures(role)


# --- the process -----------------------------------------------------------------------


def _task_state(tid: int) -> Tuple[int, frozenset, int]:
    """(scheduling policy, CPU affinity, voluntary context switches) of one thread."""
    policy = os.sched_getscheduler(tid)
    affinity = frozenset(os.sched_getaffinity(tid))
    with open(f"/proc/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return policy, affinity, int(line.split()[1])
    return policy, affinity, 0


@dataclass
class Cyclictest:
    """One cyclictest process: one pinned SCHED_FIFO thread per CPU in ``cpus``.

    ``start()`` returns only once every measuring thread runs with its policy and pinning
    and has slept and woken a few times, so a snapshot taken afterwards is taken with
    cyclictest measuring. It also notes each thread's voluntary context switches at that
    moment: a measuring thread switches exactly once per cycle (it sleeps in
    clock_nanosleep), so that count plus the time from then to SIGINT divided by the
    interval is the number of cycles it should have measured; the difference to what it
    measured is the number of periods it lost.

    Started under ``setpriv --pdeathsig TERM`` when setpriv exists, so that cyclictest
    ends (and writes its results) even when tlbprobe is killed with SIGKILL; in its own
    session, so that a Ctrl-C reaches tlbprobe only and tlbprobe stops it in order.
    """

    cpus: Sequence[int]
    json_path: Path
    hist_path: Path
    log_path: Path
    main_cpu: Optional[int] = None
    interval_us: int = INTERVAL_US
    priority: int = PRIORITY
    histogram_us: int = HISTOGRAM_US
    executable: str = "cyclictest"
    pm_qos_zero: bool = False            # let cyclictest hold /dev/cpu_dma_latency at 0 (see module doc)
    proc: Optional[subprocess.Popen] = None
    ready_at: float = 0.0
    stopped_at: float = 0.0
    cycles_at_ready: Dict[int, int] = field(default_factory=dict)

    def command(self) -> List[str]:
        cmd = [self.executable, "-m", "-q", "-p", str(self.priority), "-i", str(self.interval_us),
               "-a", ",".join(map(str, self.cpus)), "-t", str(len(self.cpus)),
               f"--json={self.json_path}", "-h", str(self.histogram_us), f"--histfile={self.hist_path}"]
        if self.main_cpu is not None:
            cmd.append(f"--mainaffinity={self.main_cpu}")
        if not self.pm_qos_zero:
            cmd.append("--default-system")
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "TERM", "--"] + cmd
        return cmd

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Launch and wait until every thread measures; CyclictestFailed otherwise."""
        with open(self.log_path, "w") as log:
            try:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise CyclictestFailed(f"cannot run {self.executable}: {e.strerror}") from None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CyclictestFailed(f"cyclictest exited with status {self.proc.returncode} before "
                                       f"measuring{self._last_output()}")
            counts = self._measuring_threads()
            if counts is not None:
                self.ready_at = time.monotonic()
                self.cycles_at_ready = counts
                return
            if time.monotonic() > deadline:
                self.kill()
                raise CyclictestFailed(f"cyclictest did not start measuring within {timeout:g} s"
                                       f"{self._last_output()}")
            time.sleep(0.002)

    def _measuring_threads(self) -> Optional[Dict[int, int]]:
        """{cpu: voluntary switches} once every CPU has a pinned SCHED_FIFO thread that has
        woken a few times; None before that."""
        assert self.proc is not None
        found: Dict[int, int] = {}
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.proc.pid}/task")]
        except OSError:
            return None
        for tid in tids:
            if tid == self.proc.pid:
                continue  # the main thread: it only waits for the end
            try:
                policy, affinity, switches = _task_state(tid)
            except (OSError, ValueError):
                continue  # the thread is just starting or ending
            if policy == os.SCHED_FIFO and len(affinity) == 1 and switches >= 3:
                found[next(iter(affinity))] = switches
        return found if set(found) >= set(self.cpus) else None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> CyclictestOutput:
        """SIGINT (cyclictest then writes its JSON and histograms), wait, parse."""
        if self.proc is None:
            raise CyclictestFailed("cyclictest was not started")
        proc = self.proc
        if proc.poll() is not None:
            self.proc = None
            raise CyclictestFailed(f"cyclictest died during the phase (status {proc.returncode})"
                                   f"{self._last_output()}")
        self.stopped_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CyclictestFailed(f"cyclictest did not stop within {timeout:g} s of SIGINT; killed") from None
        self.proc = None
        bad_exit = "" if proc.returncode == 0 else \
            f"cyclictest ended with status {proc.returncode}{self._last_output()}"
        try:
            output = read_cyclictest_json(self.json_path)
        except InputError as e:
            raise CyclictestFailed(f"{e}; {bad_exit}" if bad_exit else str(e)) from None
        if bad_exit:
            output.problems.append(bad_exit)  # keep what it wrote, flagged
        return output

    def expected_cycles(self, cpu: int) -> float:
        """Cycles the thread on ``cpu`` would have measured had it lost none (see class doc)."""
        window_us = (self.stopped_at - self.ready_at) * 1e6
        return self.cycles_at_ready.get(cpu, 0) + window_us / self.interval_us

    def kill(self) -> None:
        """End the process whatever state it is in; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _last_output(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        lines = [ln for ln in lines if "cpu_dma_latency" not in ln]
        return f": {lines[-1]}" if lines else ""


# --- the observer ----------------------------------------------------------------------


@dataclass
class PhaseLatency:
    """One phase's cyclictest results with the cycles each CPU should have measured."""

    phase: Phase
    output: CyclictestOutput
    expected: Dict[int, float]


class CyclictestObserver:
    """Runs cyclictest beside every phase of a collect (``--latency``).

    The collector calls ``preflight(facts)`` before it creates the run directory,
    ``start()`` once, ``phase_begin(phase)`` before a phase's 'before' snapshot,
    ``phase_end(phase)`` after its 'after' snapshot, ``contribute(summary)`` whenever it
    writes summary.json and ``stop()`` on every exit path. Files: RUN/latency/<tag>.json,
    <tag>.hist (cyclictest's own) and <tag>.log (its console output).

    A missing or unusable cyclictest stops the run in preflight, before anything is
    measured; a cyclictest that fails during the run costs only the latency of that phase
    (a warning, and the phase listed under ``missing``).
    """

    def __init__(self, job: Any, interval_us: int = INTERVAL_US, priority: int = PRIORITY,
                 histogram_us: int = HISTOGRAM_US, executable: str = "cyclictest", pm_qos_zero: bool = False):
        self.driver_cpu: int = job.cpu
        self.pm_qos_zero = pm_qos_zero
        self.interval_us = interval_us
        self.priority = priority
        self.histogram_us = histogram_us
        self.executable = executable
        self.cpus: List[int] = []
        self.dir: Optional[Path] = None
        self.log: Callable[[str], None] = lambda s: None
        self.version: Optional[str] = None
        self.results: Dict[Phase, PhaseLatency] = {}
        self.missing: Dict[Phase, str] = {}
        self._running: Optional[Cyclictest] = None
        self._phase: Optional[Phase] = None

    # -- hooks ------------------------------------------------------------------------------
    def preflight(self, facts: "HostFacts") -> None:
        """Refuse to start a run that would measure without its latency: cyclictest must
        exist and be able to run a pinned SCHED_FIFO thread with --json (rt-tests 2.x)."""
        if not shutil.which(self.executable):
            raise PreflightError(f"--latency needs cyclictest, which is not installed: {INSTALL_HINT}")
        with tempfile.TemporaryDirectory(prefix="tlbprobe-cyclictest-") as tmp:
            probe = self._process([self.driver_cpu], Path(tmp), Phase(0, "probe"))
            cmd = probe.command() + ["-l", "20"]
            try:
                res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                raise PreflightError("--latency: a 20-cycle cyclictest probe did not finish in 30 s") from None
            if res.returncode != 0 or not probe.json_path.exists():
                out = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
                raise PreflightError(
                    f"--latency: cyclictest cannot run here (status {res.returncode}: "
                    f"{out[-1].strip() if out else 'no output'}); it needs root (SCHED_FIFO, mlockall) and "
                    f"rt-tests 2.0 or later for --json: {INSTALL_HINT}")
            try:
                self.version = read_cyclictest_json(probe.json_path).version
            except InputError as e:
                raise PreflightError(f"--latency: the cyclictest probe wrote no usable results ({e})") from None

    def start(self, rundir: "RunDir", facts: "HostFacts", console: "Console") -> None:
        self.dir = rundir.subdir("latency")
        self.cpus = list(facts.online_cpus)
        self.log = console.log
        version = f" {self.version}" if self.version else ""
        pm = "cpu_dma_latency held at 0" if self.pm_qos_zero else "idle states as the system sets them"
        self.log(f"latency: cyclictest{version} on CPUs {','.join(map(str, self.cpus))}, "
                 f"SCHED_FIFO {self.priority}, every {self.interval_us} us, {pm}, beside every phase")

    def phase_begin(self, phase: Phase) -> None:
        assert self.dir is not None, "start() first"
        self.stop()
        proc = self._process(self.cpus, self.dir, phase)
        self._running, self._phase = proc, phase  # before start(): a Ctrl-C while it starts still finds it
        try:
            proc.start()
        except CyclictestFailed as e:
            self._running = None
            self._fail(phase, str(e))

    def phase_end(self, phase: Phase) -> None:
        proc = self._running
        if proc is None or self._phase != phase:
            self.stop()
            return
        try:
            output = proc.stop()  # on Ctrl-C here, _running stays set and stop() kills it
        except CyclictestFailed as e:
            self._running = None
            self._fail(phase, str(e))
            return
        self._running = None
        expected = {t.cpu: proc.expected_cycles(t.cpu) for t in output.threads}
        self.results[phase] = PhaseLatency(phase, output, expected)
        absent = sorted(set(self.cpus) - {t.cpu for t in output.threads})
        if output.damaged or absent:
            why = "; ".join(output.problems + ([f"no results for CPU(s) {absent}"] if absent else []))
            self.log(f"warning: {phase.tag}: cyclictest results incomplete: {why}")

    def stop(self) -> None:
        """Kill a cyclictest that is still running (error, Ctrl-C); safe to call any time."""
        proc, self._running = self._running, None
        if proc is not None:
            proc.kill()

    def contribute(self, summary: Dict[str, Any]) -> None:
        summary["latency"] = self.summary(summary.get("repeats_done"))

    # -- figures ----------------------------------------------------------------------------
    def summary(self, repeats_done: Optional[int] = None) -> Dict[str, Any]:
        """summary.json ``latency`` over the phases of the first ``repeats_done`` repeats."""

        def counted(phase: Phase) -> bool:
            return repeats_done is None or phase.repeat < repeats_done

        phases: Dict[str, Dict[str, Any]] = {}
        pooled: Dict[str, Dict[int, CpuLatency]] = {}
        damaged: Dict[str, str] = {}
        for phase, res in self.results.items():
            if not counted(phase):
                continue
            kind = phase.name
            per_cpu: Dict[str, Any] = {}
            for t in sorted(res.output.threads, key=lambda t: t.cpu):
                per_cpu[str(t.cpu)] = cpu_figures(t, res.expected[t.cpu], self.role(t.cpu))
                pooled.setdefault(kind, {}).setdefault(t.cpu, CpuLatency()).add(t, res.expected[t.cpu])
            phases[phase.tag] = per_cpu
            if res.output.problems:
                damaged[phase.tag] = "; ".join(res.output.problems)
        return {
            "tool": f"cyclictest {self.version}" if self.version else "cyclictest",
            "interval_us": self.interval_us, "priority": self.priority, "histogram_us": self.histogram_us,
            "cpu_dma_latency": "0 (held by cyclictest)" if self.pm_qos_zero else "system default",
            "driver_cpu": self.driver_cpu,
            "phases": phases,
            "aggregate": {kind: {str(c): acc.figures(self.role(c)) for c, acc in sorted(cpus.items())}
                          for kind, cpus in pooled.items()},
            "missing": {p.tag: why for p, why in self.missing.items() if counted(p)},
            "damaged": damaged,
        }

    def role(self, cpu: int) -> str:
        return "driver" if cpu == self.driver_cpu else "receiver"

    # -- helpers ----------------------------------------------------------------------------
    def _process(self, cpus: Iterable[int], directory: Path, phase: Phase) -> Cyclictest:
        tag = phase.tag
        return Cyclictest(cpus=list(cpus), json_path=directory / f"{tag}.json", hist_path=directory / f"{tag}.hist",
                          log_path=directory / f"{tag}.log", main_cpu=self.driver_cpu, interval_us=self.interval_us,
                          priority=self.priority, histogram_us=self.histogram_us, executable=self.executable,
                          pm_qos_zero=self.pm_qos_zero)

    def _fail(self, phase: Phase, why: str) -> None:
        self.missing[phase] = why
        self.log(f"warning: {phase.tag}: no latency for this phase: {why}")
