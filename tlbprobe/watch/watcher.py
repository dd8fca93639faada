"""The watch loop: every interval, read the exact counters, take the stacks that match
them, read CAL and TLB, write a record, the summary and the metrics; follow signals,
CPU hotplug and other tracers; on every way out, restore what it set.

What it changes, all journaled by a SystemState in its own journal directory
(WATCH_STATE_DIR, so a `tlbprobe collect` can run beside a watch: collect's journal is
the directory above) and undone on exit, or by `tlbprobe restore` after a SIGKILL:
mounting tracefs when it is not mounted, and its own tracefs instance
(instances/tlbprobe-watch-<pid>, with the trigger inside it: removing the instance
removes the trigger). The perf counters are file descriptors, gone with the process. It
never touches THP, hugetlb or any other tracer's settings.

Signals are blocked in every thread and taken synchronously with sigtimedwait() in the
loop, so a signal can never land in the middle of a record or a restore:

* SIGTERM, SIGINT: finish the interval under way (a shorter last record), restore,
  mark the summary complete, exit 0;
* SIGHUP: reopen records.jsonl and log.txt (logrotate), go on.

Order at start, and why: the per-task counters of the watcher's own calls first (so
every later call is counted, the HTTP server's threads included: they inherit them),
then the stack trigger, then the per-CPU counters, then the /metrics server. Order in
an interval: the counters, /proc/interrupts, then the stacks. The perf probe and the
trigger's probe run one after the other in the same tracepoint call with preemption off
(whichever was registered first runs first; a collect beside the watch may register
perf's), so the counter's read can interrupt a call between the two: the stack is then
written right after the read returns, and it is in the buffer by the time the stacks are
read, a few hundred microseconds later.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from ..errors import PreflightError, TlbprobeError
from ..measure.host import gather
from ..measure.paths import DEFAULT_STATE_DIR, REAL, KernelPaths
from ..measure.perfcount import CounterUnavailable
from ..measure.procfs import parse_cpulist, parse_interrupts
from ..measure.sysstate import SystemState, check_journal, signals_blocked
from ..measure.trace import remove_stale_instances, tracefs_root
from ..rundir.writer import chown_to_invoker
from ..ui.numbers import format_cpulist
from . import route as routes
from .config import WatchConfig
from .counters import (OwnCounters, SyncCounters, broadcast_filter, irq_delta, own_delta, stalled, sync_delta)
from .hist import HistSource
from .interval import IntervalRecord, StackCount, Totals, build_record, count_stacks
from .metrics import Metrics
from .origins import UNATTRIBUTED
from .recorder import FORMAT, WatchDir, now_iso
from .text import describe
from .stacks import StackTraceSource, instance_name, task_name

#: The watch's journal: beside collect's, not in it (module docstring).
WATCH_STATE_DIR = DEFAULT_STATE_DIR / "watch"
SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
#: When the last interval would have filled this much of a CPU's trace buffer, drain it
#: this many times an interval instead of once.
DRAIN_FILL = 0.25
DRAINS_PER_INTERVAL = 10


class WatchError(TlbprobeError):
    """The watch could not go on (its records cannot be written); settings are restored."""

    exit_code = 1


@dataclass
class WatchResult:
    out: Path
    totals: Totals
    complete: bool
    reason: str
    route: routes.Route
    notes: List[str] = field(default_factory=list)


def check_port_free(address) -> None:
    """Fail before anything is touched when --listen's port is taken (the server itself
    starts later, after the counters that must see its threads)."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise PreflightError(f"--listen {host}:{port}: {e.strerror or e}") from None
    family, _, _, _, sockaddr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sockaddr)
    except OSError as e:
        why = "in use (another exporter, or another watch?)" if e.errno == 98 else (e.strerror or str(e))
        from ..errors import InputError
        raise InputError(f"--listen {host}:{port}: cannot listen there: {why}") from None
    finally:
        s.close()


def read_online(paths: KernelPaths) -> List[int]:
    try:
        return parse_cpulist((paths.cpu_dir / "online").read_text())
    except OSError:
        return list(range(os.cpu_count() or 1))


class Watcher:
    """One watch. :meth:`run` returns when it ends (duration, SIGTERM, SIGINT)."""

    def __init__(self, config: WatchConfig, log: Callable[[str], None] = print, argv: Optional[List[str]] = None,
                 stacks: str = "auto", paths: KernelPaths = REAL, state_dir: Path = WATCH_STATE_DIR,
                 say: Optional[Callable[[str], None]] = None):
        self.config = config
        self.console_log = log
        self.say = say or log
        self.argv = argv or []
        self.stacks_wanted = stacks
        self.paths = paths
        self.state_dir = state_dir
        self.wd: Optional[WatchDir] = None
        self.totals = Totals()
        self.notes: List[str] = []
        self._noted: Set[str] = set()
        self.sync: Optional[SyncCounters] = None
        self.own: Optional[OwnCounters] = None
        self.source: Any = None
        self.metrics: Optional[Metrics] = None
        self.route = routes.Route(routes.CAL_ONLY, "not started")
        self.started = time.time()
        self._other_tracers: Set[str] = set()
        self._top_tracer = "nop"
        self._textfile_error: Optional[str] = None

    # -- saying things ---------------------------------------------------------------------
    def log(self, line: str) -> None:
        self.console_log(line)

    def note(self, text: str, record: Optional[List[str]] = None) -> None:
        """A note in this interval's record (``record``) and, the first time, the log and
        the summary."""
        if record is not None:
            record.append(text)  # the interval's line shows it
        if text not in self._noted:
            self._noted.add(text)
            if len(self.notes) < 100:
                self.notes.append(text)
            if record is None:
                self.log(f"note: {text}")

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> WatchResult:
        cfg = self.config
        if cfg.listen:
            check_port_free(cfg.listen)
        check_journal(self.state_dir)  # another watch running, or one killed: say so before --out is made
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            return self._run()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _run(self) -> WatchResult:
        cfg = self.config
        self.wd = WatchDir.create(cfg.out, cfg.max_disk)
        keep = self.console_log
        self.console_log = lambda line: (self.wd.log(f"[{time.strftime('%H:%M:%S')}] {line}") if self.wd else None,
                                         keep(line))[-1]
        facts = gather(None, self.paths)
        complete, reason, problems = False, "failed", []
        try:
            with SystemState(self.state_dir, self.log) as state:
                try:
                    reason = self._watch(state, facts)
                    complete = True
                finally:
                    self._close()
                    with signals_blocked():
                        problems = state.restore()
        finally:
            self._write_summary(facts, complete, reason, problems, final=True)
            if self.wd:
                self.wd.close()
                try:
                    chown_to_invoker(cfg.out)  # under sudo, the directory is the user's
                except OSError as e:
                    self.log(f"warning: {cfg.out} stays root's: {e.strerror}")
        return WatchResult(cfg.out, self.totals, complete, reason, self.route, self.notes)

    def _close(self) -> None:
        for thing in (self.metrics and self.metrics.stop, self.source and self.source.close,
                      self.sync and self.sync.close, self.own and self.own.close):
            if thing:
                try:
                    thing()
                except (OSError, TlbprobeError) as e:
                    self.log(f"warning: while stopping: {e}")

    def _open(self, state: SystemState, online: List[int]) -> None:
        tracefs = tracefs_root(state, self.paths.tracefs)
        self.route = routes.detect(tracefs, self.stacks_wanted)
        if not self.route.exact or self.route.never_sends:
            return
        remove_stale_instances(tracefs, self.log)
        address = self.route.address or 0
        try:
            self.own = OwnCounters.open(tracefs, online)
        except CounterUnavailable as e:
            self.route = routes.Route(routes.CAL_ONLY, f"no perf counter on csd:csd_queue_cpu ({e}): counting CAL "
                                                       f"and TLB per CPU only")
            return
        flt = broadcast_filter(address, online)
        if self.route.stacks == routes.STACKTRACE:
            self.source = StackTraceSource.open(state, tracefs, flt, self.log)
        elif self.route.stacks == routes.HIST:
            self.source = HistSource.open(state, tracefs, flt, self.log)
        try:
            self.sync = SyncCounters.open(tracefs, address, online)
        except CounterUnavailable as e:
            self.route = routes.Route(routes.CAL_ONLY, f"no perf counter on csd:csd_queue_cpu ({e}): counting CAL "
                                                       f"and TLB per CPU only")
            self._close()
            self.source = self.sync = self.own = None

    def _watch(self, state: SystemState, facts) -> str:
        cfg = self.config
        online = read_online(self.paths)
        self._open(state, online)
        self.metrics = Metrics(self.route.stacks, facts.kernel_release)
        if cfg.listen:
            self.metrics.listen(cfg.listen)
        self._write_header(facts, online)
        self.say(self._intro(online))
        self._scan_tracers([])

        interrupts = self._read_interrupts()
        groups = self.sync.read() if self.sync else {}
        own = self.own.read() if self.own else {}
        t_wall, t_mono = time.time(), time.monotonic()
        t0 = t_mono
        seq = 0
        drains = 1
        reason = "duration reached"
        while True:
            deadline = min(t0 + (seq + 1) * cfg.interval_s, t0 + cfg.duration_s if cfg.duration_s else float("inf"))
            stop = self._wait(deadline, drains)
            now_groups = self.sync.read() if self.sync else {}
            now_own = self.own.read() if self.own else {}
            now_irq = self._read_interrupts()
            now_wall, now_mono = time.time(), time.monotonic()
            rec = self._interval(seq, t_wall, now_wall, now_mono - t_mono, online, groups, now_groups,
                                 own, now_own, interrupts, now_irq)
            # follow the CPUs before the record is written, so its notes say what changed
            online, next_groups = self._follow_hotplug(rec, online, groups, now_groups, now_mono - t_mono)
            self._emit(rec, facts)
            seq += 1
            drains = self._drains_for(rec)
            groups, own, interrupts, t_wall, t_mono = next_groups, now_own, now_irq, now_wall, now_mono
            if stop:
                return stop
            if cfg.duration_s and now_mono - t0 >= cfg.duration_s - 1e-3:
                return reason

    def _wait(self, deadline: float, drains: int) -> Optional[str]:
        """Sleep until ``deadline``, draining the stack buffer ``drains`` times on the way;
        returns why to stop (a signal) or None. SIGHUP reopens the output files."""
        step_end = deadline
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if drains > 1:
                step_end = min(deadline, now + self.config.interval_s / drains)
            info = signal.sigtimedwait(SIGNALS, max(0.0, step_end - now))
            if info is None:
                if drains > 1 and self.source is not None:
                    self.source.drain()
                continue
            if info.si_signo == signal.SIGHUP:
                if self.wd:
                    try:
                        self.wd.reopen()
                        self.log("SIGHUP: reopened records.jsonl and log.txt")
                    except OSError as e:
                        raise WatchError(f"SIGHUP: cannot reopen the records in {self.config.out}: "
                                         f"{e.strerror}") from None
                continue
            return f"stopped by {signal.Signals(info.si_signo).name}"

    def _drains_for(self, rec: IntervalRecord) -> int:
        if not isinstance(self.source, StackTraceSource) or not rec.broadcasts:
            return 1
        fill = self.source.fill_fraction(rec.broadcasts, rec.duration_s, self.config.interval_s, len(rec.online))
        return DRAINS_PER_INTERVAL if fill > DRAIN_FILL else 1

    def _read_interrupts(self):
        with open(self.paths.interrupts) as f:
            return parse_interrupts(f.read(), str(self.paths.interrupts))

    def _interval(self, seq, t_wall, now_wall, wall_s, online, groups, now_groups, own, now_own,
                  interrupts, now_irq) -> IntervalRecord:
        notes: List[str] = []
        broadcasts = ipis = None
        stacks: List[StackCount] = []
        traced = self.source is not None
        if self.route.never_sends:
            broadcasts = ipis = 0
        elif self.sync is not None:
            delta = sync_delta(groups, now_groups)
            broadcasts, ipis = delta.broadcasts, delta.ipis
            if delta.incomplete:
                self.note(f"CPU hotplug: the counts of CPU {format_cpulist(delta.incomplete)} in interval {seq} "
                          f"are incomplete", notes)
            stacks = self._take_stacks(delta.broadcasts_by_sender, notes)
            others = len(online) - 1
            if not delta.incomplete and ipis != broadcasts * others:
                notes.append(f"IPIs {ipis} != broadcasts {broadcasts} x {others} other CPUs (a CPU went offline "
                             f"or came online during the interval?)")
        irq = irq_delta(interrupts, now_irq)
        for w in irq.warnings:
            self.note(f"/proc/interrupts: {w}", notes)
        self._scan_tracers(notes)
        rec = build_record(seq, t_wall, now_wall, wall_s, online, self.route.stacks, broadcasts, ipis, stacks,
                           irq.cal, irq.tlb, own_delta(own, now_own), notes, traced)
        if rec.by_origin.get(UNATTRIBUTED, 0) and traced:
            why = (self.source.gone if self.source is not None and self.source.gone
                   else "no stack for them (the trace buffer dropped them)")
            rec.notes.append(f"{rec.by_origin[UNATTRIBUTED]} broadcast(s) unattributed: {why}")
        return rec

    def _take_stacks(self, by_sender: Dict[int, int], notes: List[str]) -> List[StackCount]:
        src = self.source
        if src is None:
            return []
        if isinstance(src, HistSource):
            delta, dropped = src.take()
            if dropped:
                notes.append(f"the hist table dropped {dropped} new key(s): those broadcasts are unattributed")
            return [StackCount(pid, task_name(pid, comm), frames, n) for (pid, comm, frames), n in delta.items()]
        events, _missing = src.take(by_sender)
        gone = f"{src.gone}: origins unattributed from now on (the counts stay exact)" if src.gone else None
        if gone and gone not in self._noted:  # once; the records' unattributed notes say why after
            self.note(gone, notes)
        return [StackCount(s.pid, task_name(s.pid, s.comm), s.frames, s.count) for s in count_stacks(events)]

    def _follow_hotplug(self, rec: IntervalRecord, online: List[int], groups, now_groups, wall_s: float):
        """A CPU gone or back, or a group that stopped counting (its CPU went offline and
        came back within the interval): reopen, refilter, and start the next interval
        from fresh readings. Returns (online CPUs, the next interval's starting groups).
        Nothing here ends the watch: what cannot be reopened is noted and retried."""
        now_online = read_online(self.paths)
        stale = stalled(groups, now_groups, int(wall_s * 1e9)) if self.sync is not None else []
        missing = self.sync is not None and not self.sync.complete
        if now_online == online and not stale and not missing:
            return online, now_groups
        if now_online != online or stale:
            self.note(f"CPU hotplug: online CPUs {format_cpulist(online)} -> {format_cpulist(now_online)}"
                      + (f"; the counters of CPU {format_cpulist(stale)} had stopped and are reopened"
                         if stale else ""), rec.notes)
        if self.sync is None:
            return now_online, now_groups
        for why in self.sync.set_online(now_online, stale):
            self.note(f"CPU hotplug: cannot reopen the counters of {why}; retried next interval", rec.notes)
        try:
            if self.own is not None:
                self.own.add(now_online)
            if self.source is not None:
                self.source.set_filter(broadcast_filter(self.route.address or 0, now_online))
        except (CounterUnavailable, TlbprobeError, OSError) as e:
            self.note(f"CPU hotplug: {e}", rec.notes)
        return now_online, self.sync.read()

    def _scan_tracers(self, notes: List[str]) -> None:
        """Other tracefs instances and the top-level tracer: noted when they change (they
        do not disturb this watch: its instance and counters are its own)."""
        root = self.paths.tracefs
        try:
            names = set(os.listdir(root / "instances")) - {instance_name()}
        except OSError:
            names = set()
        for n in sorted(names - self._other_tracers):
            self.note(f"another tracer: tracefs instance {n} appeared (this watch's counts are not affected)", notes)
        self._other_tracers = names
        try:
            top = (root / "current_tracer").read_text().strip()
        except OSError:
            top = "nop"
        if top != self._top_tracer:
            if top != "nop":
                self.note(f"another tracer: the top-level tracer is now {top!r} (this watch's counts are not "
                          f"affected)", notes)
            self._top_tracer = top

    def _emit(self, rec: IntervalRecord, facts) -> None:
        assert self.wd is not None and self.metrics is not None
        self.totals.add(rec)
        try:
            self.wd.append(rec.to_dict())
        except OSError as e:
            raise WatchError(f"cannot write the records in {self.config.out}: {e.strerror}") from None
        self.metrics.add(rec)
        if self.config.textfile:
            try:
                self.metrics.write_textfile(self.config.textfile)
                self._textfile_error = None
            except OSError as e:
                if self._textfile_error != e.strerror:
                    self._textfile_error = e.strerror
                    self.note(f"--textfile {self.config.textfile}: cannot write it ({e.strerror}); will retry "
                              f"each interval", rec.notes)
        self._write_summary(facts, False, "running", [], final=False)
        if rec.broadcasts or any(not n.startswith("IPIs") for n in rec.notes):
            self.log(describe(rec))

    # -- files -----------------------------------------------------------------------------
    def _write_header(self, facts, online: List[int]) -> None:
        assert self.wd is not None
        cfg = self.config
        self.wd.write_yaml("watch.yaml", {
            "format": FORMAT,
            "started": now_iso(self.started),
            "command": self.argv,
            "options": {"interval_s": cfg.interval_s, "duration_s": cfg.duration_s, "max_disk": cfg.max_disk,
                        "textfile": str(cfg.textfile) if cfg.textfile else None,
                        "listen": f"{cfg.listen[0]}:{cfg.listen[1]}" if cfg.listen else None,
                        "stacks": self.stacks_wanted},
            "route": {"stacks": self.route.stacks, "exact": self.route.exact, "why": self.route.why},
            "online_cpus": online,
            "host": facts.to_dict(),
        })

    def _write_summary(self, facts, complete: bool, reason: str, problems: List[str], final: bool) -> None:
        if self.wd is None:
            return
        data = {
            "format": FORMAT,
            "complete": complete,
            "state": ("complete" if complete else "failed") if final else "running",
            "reason": reason,
            "host": facts.hostname, "kernel": facts.kernel_release, "cpus": len(facts.online_cpus),
            "flush_mode": facts.flush_mode,
            "started": now_iso(self.started), "updated": now_iso(),
            "route": {"stacks": self.route.stacks, "exact": self.route.exact, "why": self.route.why},
            "interval_s": self.config.interval_s,
            "totals": self.totals.to_dict(),
            "restored": final and not problems,
            "restore_problems": problems,
            "notes": self.notes[:100],
            "rotations": self.wd.rotations, "compactions": self.wd.compactions,
        }
        try:
            self.wd.write_summary(data)
        except OSError as e:
            if final:
                self.log(f"warning: cannot write summary.json in {self.config.out}: {e.strerror}")
            else:
                raise WatchError(f"cannot write summary.json in {self.config.out}: {e.strerror}") from None

    def _intro(self, online: List[int]) -> str:
        cfg = self.config
        every = f"every {cfg.interval_s:g} s"
        until = f"for {cfg.duration_s:g} s" if cfg.duration_s else "until SIGTERM or Ctrl-C"
        where = [str(cfg.out)] + ([str(cfg.textfile)] if cfg.textfile else []) + (
            [f"http://{cfg.listen[0]}:{cfg.listen[1]}/metrics"] if cfg.listen else [])
        return (f"watching sync broadcasts on CPUs {format_cpulist(online)} {every}, {until}: {self.route.why}. "
                f"Writing to {', '.join(where)}")

