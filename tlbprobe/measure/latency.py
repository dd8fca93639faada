"""cyclictest beside every phase: the wake-up latency that RT users feel while IPIs arrive.

Why cyclictest (Debian ``rt-tests``): it is what RT developers already trust and quote.
One SCHED_FIFO thread per online CPU, pinned, sleeps on an absolute timer every
``interval`` microseconds and records how late it woke. An IPI handler that runs when the
timer fires delays the wake-up on the CPU that receives it; a collapse that holds the
driver CPU for milliseconds (preempt=none) delays it there, and cyclictest then skips the
periods it missed (absolute timer: ``next`` is advanced past ``now``), so those show as
*cycles lost*: expected cycles minus measured ones.

This module holds the processes: the runner (:class:`Cyclictest`) and the collector's
observer (:class:`CyclictestObserver`), which starts one cyclictest per phase before the
phase's 'before' snapshot and stops it after the 'after' snapshot. Parsing cyclictest's
``--json`` output and the figures of summary.json ``latency`` (percentiles, cycles lost)
are pure and live in tlbprobe/rundir/cyclictest.py, which the report's reader uses too.

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

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError, PreflightError, TlbprobeError
from ..rundir.cyclictest import CpuLatency, CyclictestOutput, cpu_figures, read_cyclictest_json
from ..rundir.sections import LatencyCpu, LatencySection
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
INSTALL_HINT = ("apt-get install rt-tests (Debian, Ubuntu; the package is realtime-tests on "
                "Fedora and RHEL)")


class CyclictestFailed(TlbprobeError):
    """cyclictest did not start, did not measure, or did not stop as asked."""


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
    ``phase_end(phase)`` after its 'after' snapshot, ``section(summary)`` whenever it
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

    def start(self, rundir: "RunDir", facts: "HostFacts", console: "Console", state: Any = None) -> None:
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

    def section(self, summary: Mapping[str, Any]) -> LatencySection:
        """summary.json ``latency`` over the finished repeats (``repeats_done``)."""
        return self.summary(summary.get("repeats_done"))

    # -- figures ----------------------------------------------------------------------------
    def summary(self, repeats_done: Optional[int] = None) -> LatencySection:
        """summary.json ``latency`` over the phases of the first ``repeats_done`` repeats."""

        def counted(phase: Phase) -> bool:
            return repeats_done is None or phase.repeat < repeats_done

        phases: Dict[str, Dict[int, LatencyCpu]] = {}
        pooled: Dict[str, Dict[int, CpuLatency]] = {}
        damaged: Dict[str, str] = {}
        for phase, res in self.results.items():
            if not counted(phase):
                continue
            kind = phase.name
            per_cpu: Dict[int, LatencyCpu] = {}
            for t in sorted(res.output.threads, key=lambda t: t.cpu):
                per_cpu[t.cpu] = cpu_figures(t, res.expected[t.cpu], self.role(t.cpu))
                pooled.setdefault(kind, {}).setdefault(t.cpu, CpuLatency()).add(t, res.expected[t.cpu])
            phases[phase.tag] = per_cpu
            if res.output.problems:
                damaged[phase.tag] = "; ".join(res.output.problems)
        return LatencySection(
            tool=f"cyclictest {self.version}" if self.version else "cyclictest",
            interval_us=self.interval_us, priority=self.priority, histogram_us=self.histogram_us,
            cpu_dma_latency="0 (held by cyclictest)" if self.pm_qos_zero else "system default",
            driver_cpu=self.driver_cpu,
            phases=phases,
            aggregate={kind: {c: acc.figures(self.role(c)) for c, acc in sorted(cpus.items())}
                       for kind, cpus in pooled.items()},
            missing={p.tag: why for p, why in self.missing.items() if counted(p)},
            damaged=damaged,
        )

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
