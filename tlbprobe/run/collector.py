"""`tlbprobe collect`: run a job on this host and write its run directory.

The order of things matters for honest numbers:
  preflight -> run directory + run.yaml -> system knobs (journaled) -> tracing on
  -> per repeat: [idle window] [prepare] [workload window] [cleanup]
  -> tracing off -> knobs restored -> summary.json complete
Each window is: snapshot before, trace marker, the work, trace marker, snapshot after.
The observers the job asks for (--latency, --cost, --victim: run/observers.py) are built
here, once the job is resolved, and run beside every window.
Tracing is switched on once, before the first snapshot, because enabling tracepoints
patches kernel text and that sends IPIs of its own. The whole process is pinned to the
driver CPU so that tlbprobe itself does not run on the CPUs whose interrupts it counts
(only --threads touchers and cyclictest do, on purpose).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .. import __version__
from ..errors import InternalError, PreflightError, TlbprobeError
from .job import Job, resolve_common
from ..measure import host, procfs
from ..measure.paths import REAL, KernelPaths
from ..rundir import (ATTRIBUTION_COLUMNS, FORMAT, INTERRUPTS_COLUMNS, PHASES_COLUMNS, TIMESERIES_COLUMNS,
                     VMSTAT_COLUMNS, RunDir)
from .observers import observers_for
from .summary import PhaseRecord, all_repeats, build_summary, ipi_lines
from ..rundir.schema import RepeatFigures
from ..measure.sysstate import Interrupted, SystemState, check_journal, signals_blocked, stop_signals_raise
from ..measure.observer import Observer, Phase
from ..measure.timeseries import PhaseSeries
from ..measure.trace import COUNTER_EVENT, PhaseCounts, TracePlan, TraceSession, open_session
from ..ui import Console
from ..vocab import IDLE_PHASE, SYNC_FUNCTION, WORKLOAD_PHASE
from ..workloads import PhaseOutcome, Workload, driver


@dataclass
class Snapshot:
    """Raw texts of /proc/interrupts and /proc/vmstat at one moment."""

    when: float
    interrupts: str
    vmstat: str

    @classmethod
    def take(cls, paths: KernelPaths = REAL) -> "Snapshot":
        when = time.time()
        return cls(when, procfs.read_text(str(paths.interrupts)), procfs.read_text(str(paths.vmstat)))


def default_out(workload: str) -> Path:
    return Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{workload}"


def preflight(job: Job, facts: host.HostFacts, require_root: bool = True) -> None:
    """The checks that apply to every workload; the workload adds its own."""
    if require_root and os.geteuid() != 0:
        raise PreflightError("collect needs root (it reads the kernel log, sets THP and tracing knobs): "
                             "run it with sudo")
    if job.cpu not in facts.online_cpus:
        raise PreflightError(f"--driver-cpu {job.cpu} is not an online CPU (online: "
                             f"{','.join(map(str, facts.online_cpus))})")
    if len(facts.online_cpus) < 2:
        raise PreflightError("only one CPU is online: there is nobody to send IPIs to")


def check_trace_memory(plan: TracePlan, mem_available: int) -> None:
    """Trace buffers take kernel memory the workload then lacks: at most a quarter of
    MemAvailable, or a clear refusal with the figure and the ways out."""
    need = plan.total_kb(counter=plan.sync_counter == "perf") * 1024
    if need > mem_available // 4:
        raise PreflightError(
            f"the trace buffers for {plan.ops_per_phase} operations per phase on {len(plan.cpus)} CPUs need "
            f"{need >> 20} MiB, more than a quarter of MemAvailable ({mem_available >> 20} MiB): give a smaller "
            f"--trace-buffer-kb (the sync count stays exact with --sync-counter perf), or --no-trace")


@dataclass
class Collector:
    """One run of a job. ``run()`` returns the summary dict it wrote."""

    job: Job
    out: Path
    console: Console = field(default_factory=Console)
    argv: List[str] = field(default_factory=list)
    #: where the kernel's files and the journal are: the real ones, or a test's stand-in tree
    paths: KernelPaths = REAL
    #: False only for a stand-in tree (tests/test_collect_fake.py): root writes the real knobs
    require_root: bool = True
    #: what runs beside every phase: the resolved job's (run/observers.py), built by run()
    _observers: List[Observer] = field(default_factory=list)
    #: the phase being measured, for error messages
    _where: Optional[str] = None

    def run(self) -> Dict[str, Any]:
        facts = host.gather(self.job.flush_mode, self.paths)
        preflight(self.job, facts, self.require_root)
        cls = driver(self.job.workload)
        # every default explicit before run.yaml is written
        self.job = cls.resolve(resolve_common(self.job, len(facts.online_cpus)), facts)
        workload: Workload = cls(self.job, facts, self.console.log)
        workload.preflight()
        if self.job.trace:
            check_trace_memory(self._trace_plan(facts, workload), facts.mem_available)
        self._observers = observers_for(self.job, workload, self.paths)  # --latency, --cost, --victim
        for obs in self._observers:  # e.g. cyclictest missing: refuse before anything is measured
            obs.preflight(facts)
        state_dir = self.paths.state_dir
        check_journal(state_dir)
        rundir = RunDir.create(self.out)
        self.console.keep = rundir.log
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        run_yaml = {"format": FORMAT, "tool_version": __version__, "command": self.argv, "started": started,
                    "job": self.job.to_dict(), "host": facts.to_dict()}
        rundir.write_yaml("run.yaml", run_yaml)
        counted = self.job.cpu if workload.sender_is_driver else None  # the CPU left out of the counts
        others = [c for c in facts.online_cpus if c != counted]
        meta = {
            "format": FORMAT, "complete": False, "status": "running", "error": None,
            "workload": self.job.workload, "ops_unit": workload.ops_unit,
            "kernel_release": facts.kernel_release, "kernel_variant": self.job.kernel_variant,
            "flush_mode": facts.flush_mode, "online_cpus": len(facts.online_cpus),
            "driver_cpu": self.job.cpu, "other_cpus": others, "repeats_planned": self.job.repeat,
        }
        repeats: List[RepeatFigures] = []
        rundir.write_json("summary.json", build_summary(repeats, meta))
        self.console.log(f"run directory {rundir.path}")
        self.console.log(f"{workload.describe()}, {self.job.repeat} repeat(s), driver on CPU {self.job.cpu}, "
                         f"{len(facts.online_cpus)} CPUs online, flush mode {facts.flush_mode} "
                         f"({facts.flush_mode_evidence})")
        try:
            with ExitStack() as stack:
                stack.enter_context(stop_signals_raise())
                state = stack.enter_context(SystemState(state_dir, self.console.log))
                stack.callback(workload.close)
                stack.callback(workload.cleanup)
                workload.configure(state)
                old_affinity = os.sched_getaffinity(0)
                os.sched_setaffinity(0, {self.job.cpu})
                stack.callback(os.sched_setaffinity, 0, old_affinity)
                trace = (stack.enter_context(open_session(state, self._trace_plan(facts, workload), self.console.log,
                                                          self.paths.tracefs))
                         if self.job.trace else None)
                for obs in self._observers:
                    stack.callback(obs.stop)  # registered first: stop() runs even if start() fails
                    obs.start(rundir, facts, self.console, state)
                records: List[List[PhaseRecord]] = []
                for r in range(self.job.repeat):
                    records.append(self._one_repeat(r, workload, trace, rundir))
                    repeats[:] = all_repeats(records, counted, ipi_lines(facts.arch))
                    rundir.write_json("summary.json", self._summary(repeats, meta))
                    self._log_repeat(repeats[-1], workload.ops_unit)
            meta.update(complete=True, status="complete")
        except (KeyboardInterrupt, Interrupted) as e:
            meta.update(status="interrupted", error=str(e) or "interrupted by Ctrl-C")
            raise Interrupted(f"run interrupted; the {len(repeats)} finished repeat(s) are kept in "
                              f"{rundir.path}, marked incomplete") from None
        except TlbprobeError as e:
            meta.update(status="failed", error=str(e))
            raise TlbprobeError(f"{e}\n(run directory {rundir.path} kept, marked incomplete)") from None
        except Exception as e:  # a bug: one clear line for the user, the traceback in log.txt
            where = f"phase {self._where}" if self._where else "setup"
            meta.update(status="failed", error=f"{type(e).__name__}: {e} (in {where})")
            rundir.log("".join(traceback.format_exception(e)).rstrip())
            raise InternalError(f"collect failed in {where}: {type(e).__name__}: {e}\n"
                                f"(a bug in tlbprobe: the traceback is in {rundir.path / 'log.txt'}; "
                                f"run directory kept, marked incomplete)") from None
        except BaseException as e:
            meta.update(status="failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            with signals_blocked():
                run_yaml["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                rundir.write_yaml("run.yaml", run_yaml)
                summary = self._summary(repeats, meta)
                rundir.write_json("summary.json", summary)
                rundir.chown_to_invoker()
        return summary

    def _trace_plan(self, facts: host.HostFacts, workload: Workload) -> TracePlan:
        sender = self.job.cpu if workload.sender_is_driver else None
        return TracePlan(cpus=tuple(facts.online_cpus), driver_cpu=sender, ops_per_phase=workload.planned_ops(),
                         sync_counter=self.job.sync_counter, buffer_kb=self.job.trace_buffer_kb)

    def _summary(self, repeats: List[RepeatFigures], meta: Dict[str, Any]) -> Dict[str, Any]:
        """summary.json with the observers' sections, so a killed run keeps them too."""
        summary = build_summary(repeats, meta)
        for obs in self._observers:
            section = obs.section(summary)
            summary[section.KEY] = section.to_dict()
        return summary

    # -- one repeat -----------------------------------------------------------------------
    def _one_repeat(self, r: int, workload: Workload, trace: Optional[TraceSession],
                    rundir: RunDir) -> List[PhaseRecord]:
        records = []
        # a workload without a phase of its own (idle) is measured by its idle windows
        if self.job.idle_seconds > 0 or not workload.has_workload_phase:
            self.console.log(f"repeat {r + 1}/{self.job.repeat}: idle window {self.job.idle_seconds:g} s")
            records.append(self._phase(r, IDLE_PHASE, trace, rundir, lambda p, v: self._idle(p), workload))
        if workload.has_workload_phase:
            workload.prepare()
            try:
                self.console.log(f"repeat {r + 1}/{self.job.repeat}: {workload.describe()}")
                records.append(self._phase(r, WORKLOAD_PHASE, trace, rundir, workload.run, workload))
            finally:
                workload.cleanup()
        return records

    def _idle(self, progress: Callable[[str], None]) -> PhaseOutcome:
        """The control window. By default the driver CPU spins in user space: a busy CPU
        makes the scheduler send IPIs of its own to idle CPUs (nohz idle-balance and
        blocked-load kicks, nohz_csd_func, every ~32 ms), as it does while the workload
        runs, and those belong to the background, not to the operation measured."""
        end = time.monotonic() + self.job.idle_seconds
        spin = self.job.idle_mode == "spin"
        next_status = 0.0
        while (now := time.monotonic()) < end:
            if now >= next_status:
                progress(f"idle window ({self.job.idle_mode}): {end - now:4.1f} s left")
                next_status = now + 0.5
            if not spin:
                time.sleep(min(end - now, 0.5))
        return PhaseOutcome(0, 0)

    def _phase(self, r: int, phase: str, trace: Optional[TraceSession], rundir: RunDir,
               body: Callable, workload: Workload) -> PhaseRecord:
        ph = Phase(r, phase)
        tag = ph.tag
        self._where = tag
        for obs in self._observers:
            obs.phase_begin(ph)
        if trace:
            trace.open_phase(tag)  # reads the sync counter: IPIs, so before the window
        before = Snapshot.take(self.paths)
        if trace:
            trace.begin(tag)
        ru0 = resource.getrusage(resource.RUSAGE_THREAD)
        vm_before = procfs.parse_keyvalue(before.vmstat, str(self.paths.vmstat))
        series = PhaseSeries(start=before.when, interrupts=self.paths.interrupts)

        def progress(text: str) -> None:  # the workloads call it between chunks
            series.maybe_sample()
            self.console.status(text)

        outcome = body(progress, vm_before)
        ru1 = resource.getrusage(resource.RUSAGE_THREAD)
        counts: Optional[PhaseCounts] = None
        if trace:
            trace.end(tag)
        after = Snapshot.take(self.paths)
        if trace:
            counts = trace.counts(tag)
        for obs in self._observers:
            obs.phase_end(ph)
        self.console.status("")
        parsed_before, parsed_after = (procfs.parse_interrupts(s.interrupts) for s in (before, after))
        irq = procfs.diff_interrupts(parsed_before, parsed_after)
        for w in irq.warnings:
            self.console.log(f"warning: {tag}: {w}")
        vm_after = procfs.parse_keyvalue(after.vmstat, str(self.paths.vmstat))
        vm_delta = procfs.diff_keyvalue(vm_before, vm_after)
        if phase != IDLE_PHASE:
            outcome = workload.count_ops(outcome, vm_delta)
        rec = PhaseRecord(r, phase, before.when, after.when, outcome, irq, vm_delta, counts,
                          ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime)
        self._write_phase(rundir, rec, before, after, vm_before, vm_after)
        rundir.append_csv("timeseries.csv", TIMESERIES_COLUMNS,
                          series.rows(r, phase, parsed_before, parsed_after, after.when))
        if outcome.note:
            self.console.log(f"warning: {tag}: {outcome.note}")
        self._where = None
        return rec

    def _write_phase(self, rundir: RunDir, rec: PhaseRecord, before: Snapshot, after: Snapshot,
                     vm_before: Dict[str, int], vm_after: Dict[str, int]) -> None:
        tag = f"r{rec.repeat}-{rec.phase}"
        rundir.save_snapshot(f"{tag}-before.interrupts", before.interrupts)
        rundir.save_snapshot(f"{tag}-after.interrupts", after.interrupts)
        rundir.save_snapshot(f"{tag}-before.vmstat", before.vmstat)
        rundir.save_snapshot(f"{tag}-after.vmstat", after.vmstat)
        o = rec.outcome
        rundir.append_csv("phases.csv", PHASES_COLUMNS, [[
            rec.repeat, rec.phase, f"{rec.start:.6f}", f"{rec.end:.6f}", f"{rec.duration:.6f}", o.ops,
            o.ops_expected, o.result, o.note, f"{rec.utime_s:.4f}", f"{rec.stime_s:.4f}"]])
        rows = []
        for line in rec.irq.lines.values():
            if line.single is not None:
                rows.append([rec.repeat, rec.phase, line.label, line.canonical or "", line.description, "", line.single])
            for cpu, d in line.per_cpu.items():
                rows.append([rec.repeat, rec.phase, line.label, line.canonical or "", line.description, cpu, d])
        rundir.append_csv("interrupts.csv", INTERRUPTS_COLUMNS, rows)
        rundir.append_csv("vmstat.csv", VMSTAT_COLUMNS, [
            [rec.repeat, rec.phase, k, vm_before[k], vm_after[k], vm_after[k] - vm_before[k]]
            for k in vm_after if k in vm_before])
        if rec.attribution is not None:
            rows = [[rec.repeat, rec.phase, ev, func, site, cpu, n]
                    for (ev, func, site, cpu), n in sorted(rec.attribution.counts.items())]
            if rec.attribution.sync_queued is not None:  # the in-kernel count, over all the other CPUs
                rows.append([rec.repeat, rec.phase, COUNTER_EVENT, SYNC_FUNCTION, "", "",
                             rec.attribution.sync_queued])
            rundir.append_csv("attribution.csv", ATTRIBUTION_COLUMNS, rows)

    def _log_repeat(self, rep: RepeatFigures, unit: str) -> None:
        w = rep.workload
        if w is None:
            idle = rep.phases[IDLE_PHASE]
            self.console.log(f"  idle: CAL {idle.cal_other_cpus} TLB {idle.tlb_other_cpus} on the other CPUs "
                             f"in {idle.duration_s:.1f} s")
            return
        sync = w.attributed.get(SYNC_FUNCTION, "n/a")
        if w.queued is not None:
            sync = f"{w.queued.get(SYNC_FUNCTION, 0)} queued, {w.attributed.get(SYNC_FUNCTION, 0)} as IPIs"
        self.console.log(f"  {w.ops} {unit} in {w.duration_s:.2f} s; other CPUs: CAL {w.cal_other_cpus}, "
                         f"TLB {w.tlb_other_cpus}, sync IPIs {max(w.sync_ipis, 0.0):.0f} "
                         f"(traced {SYNC_FUNCTION}: {sync})")
