"""hugetlb-db: a database's shared hugetlb segment with client sessions that come and go.

The real situation. A database (Oracle's SGA, PostgreSQL with huge_pages=on) maps one
shared hugetlb segment into many long-lived server processes, and every client session
is a process that attaches to it, works, and exits. On x86 those mappings share their
PMD tables (mm/hugetlb.c huge_pmd_share(), one table per whole 1 GiB-aligned GiB), and
every exit or unmap unshares (huge_pmd_unshare()). The 2025 report that per-table
unshare broadcasts "broke Oracle DBs rather badly" is this pattern; 8ce720d5bd91 made
the broadcast once per unmap and only when the unshare leaves a table *exclusive*
(tlb_flush_unshared_tables(), analysis/model.yaml hugetlb-unshare-batched).

What that implies, and what this workload shows. While two or more servers keep the
segment mapped, a client's exit never leaves a table exclusive: client churn sends no
broadcast at all on a kernel with the batched unshare (this host's 6.18, Debian's 6.12.117
and 6.1.192 all have it). A run that counts 0 is only evidence when it also shows that
the sharing happened: each client's faults say whether it found the servers' tables
(one fault per table when shared, many when it built its own; sharers.Layout), and the
run records how many sessions shared. The positive control is ``--sharers 1`` (one
server): every client exit that leaves no other client attached makes the server's
tables exclusive again, one broadcast per such session. Sessions that overlap (a client
attaches while another is still attached) send fewer; the driver counts exactly how many
exits left the segment to the servers alone (``exclusive_exits``), which is what the
model predicts from.

The driver. ``--sharers N`` server processes (sharers.Sharers, pinned to the driver's
CPU like every process of ours, so nothing of ours runs on the CPUs whose interrupts are
counted) map and fault the whole segment in prepare(). Client processes are forked in
prepare() too (process creation is not what is measured) and wait. In the measured
window, a client session starts every 1/``--rate`` seconds for ``--duration`` seconds:
it maps the segment, faults it (``--client-touch all``) or the first few huge pages of
each GiB (``part``), stays attached for ``--client-work-ms`` and exits; the driver reaps
it, so the exit (exit_mmap(), the unshare) is done when it is counted. One op = one
session whose client shared the tables and exited cleanly.

``--race``: walker threads inside every server, on the other CPUs, pin pages of the
segment with GUP-fast (workloads/race.py) while clients attach and exit; the segment
holds a pattern, written and checked through a mapping of the driver's own that shares
no table, and the kernel log is scanned. The walkers the sync itself is for belong to
the exiting client and are gone by exit_mmap(); what this checks is that the servers,
whose walks go on through the same table while it changes hands, see nothing wrong.
hugetlb-unshare --race races the unsharing process's own walkers.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import Counter
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from ...errors import InputError, WorkloadError
from ...measure.sysstate import SystemState, signals_blocked
from ...units import GiB, format_size
from ...vocab import PMD_SIZE, PUD_SIZE
from .. import libc
from ..base import PhaseOutcome, Progress, Workload
from ..race import WalkerFigures, corrupted_bytes, record, write_pattern
from ..segment import aligned_address, preflight_segment, reserve_huge_pages, segment_memfd
from ..sharers import Layout, Sharers
from .spec import SPEC

#: At most this many client processes per repeat (each is forked in prepare()).
MAX_SESSIONS = 2000


class HugetlbDbWorkload(Workload):
    spec = SPEC

    @classmethod
    def resolve(cls, job, facts):
        return replace(job, size=job.size or GiB)

    def __init__(self, job, facts, log):
        super().__init__(job, facts, log)
        self.size = job.size
        self.sessions = self.opt("rate") * self.opt("duration")
        self.layout: Optional[Layout] = None
        self._memfd: Optional[int] = None
        self._servers: Optional[Sharers] = None
        self._clients: Optional[Sharers] = None
        self._view: Optional[int] = None   # the driver's own mapping, for the race pattern

    def planned_ops(self) -> int:
        return self.sessions

    def describe(self) -> str:
        overlap = self.opt("client_work_ms") * self.opt("rate") / 1000.0
        return (f"hugetlb-db: {self.opt('sharers')} server(s) sharing {format_size(self.size)} "
                f"({self.size // PUD_SIZE} PMD table(s)), {self.sessions} client sessions at {self.opt('rate')}/s "
                f"touching {self.opt('client_touch')}, {self.opt('client_work_ms')} ms each "
                f"({overlap:.2g} attached on average)")

    # -- per run --------------------------------------------------------------------------
    def preflight(self) -> None:
        if self.size % PUD_SIZE or self.size < PUD_SIZE:
            raise InputError(f"--size {format_size(self.size)} is not a multiple of 1G: a PMD table is shared per "
                             f"whole 1 GiB-aligned GiB")
        if self.sessions > MAX_SESSIONS:
            raise InputError(f"--rate x --duration = {self.sessions} client processes per repeat, above "
                             f"{MAX_SESSIONS}: lower one of them")
        preflight_segment(self.size, self.facts)

    def configure(self, state: SystemState) -> None:
        self.start_racing()
        reserve_huge_pages(state, self.size, self.log)

    # -- per repeat -----------------------------------------------------------------------
    def prepare(self) -> None:
        try:
            self._memfd = segment_memfd(self.size)
            self.layout = Layout(aligned_address(self.size), self.size, self._memfd, shared=True)
            walker_cpus = [c for c in self.facts.online_cpus if c != self.job.cpu] if self.opt("race") else []
            self._servers = Sharers(self.layout, self.job.cpu, self.log, walker_cpus=walker_cpus,
                                    walker_lib=self.racing.lib if self.racing else None)
            servers = self._servers.start(self.opt("sharers"), mapped=False)
            faults = []
            for s in servers:
                self._servers.map(s)
                faults.append(self._servers.fault(s))
            if len(servers) > 1 and not all(self.layout.looks_shared(f) for f in faults[1:]):
                raise WorkloadError(f"the servers did not share the PMD tables (faults {faults}): kernel without "
                                    f"hugetlb PMD sharing (CONFIG_HUGETLB_PMD_PAGE_TABLE_SHARING)")
            self.log(f"{len(servers)} server(s) mapped {format_size(self.size)}: faults {', '.join(map(str, faults))}"
                     f" ({self.layout.tables} table(s); 1 per table = shared)")
            self._clients = Sharers(self.layout, self.job.cpu, self.log)
            self._clients.start(self.sessions, mapped=False)
            if self.opt("race"):
                self._map_view()
                write_pattern(self._view, self.size)
                for s in servers:
                    self._servers.race(s, True)
        except BaseException:
            self.cleanup()
            raise

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        assert self._clients is not None and self.layout is not None
        clients = list(self._clients.members)
        interval = 1.0 / self.opt("rate")
        work = self.opt("client_work_ms") / 1000.0
        start = time.monotonic()
        exits: List[Tuple[float, int]] = []          # (when, index into clients): a heap
        attached: Dict[int, bool] = {}                # client index -> it shared the tables
        next_start, started = start, 0
        ops = exclusive = shared_sessions = max_attached = 0
        failed: Counter = Counter()
        while started < len(clients) or exits:
            now = time.monotonic()
            if exits and (started >= len(clients) or exits[0][0] <= next_start):
                when, i = heapq.heappop(exits)
                if when > now:
                    time.sleep(when - now)
                shared = attached.pop(i)
                # an exit with no other client attached leaves the table to the servers alone
                if self.opt("sharers") == 1 and not attached:
                    exclusive += 1
                if self._clients.exit(clients[i]):
                    ops += 1 if shared else 0
                else:
                    failed["exit"] += 1
                continue
            if next_start > now:
                time.sleep(next_start - now)
            c = clients[started]
            self._clients.map(c)
            faults = (self._clients.fault(c) if self.opt("client_touch") == "all" else self._clients.touch_part(c))
            shared = (self.layout.looks_shared(faults) if self.opt("client_touch") == "all"
                      else self.layout.looks_shared_part(faults))
            shared_sessions += 1 if shared else 0
            attached[started] = shared
            max_attached = max(max_attached, len(attached))
            heapq.heappush(exits, (time.monotonic() + work, started))
            started += 1
            next_start += interval
            if started % 20 == 0:
                progress(f"hugetlb-db: {started}/{len(clients)} sessions, {len(attached)} attached")
        elapsed = time.monotonic() - start
        notes = []
        if shared_sessions < len(clients):
            notes.append(f"{len(clients) - shared_sessions} client(s) did not share the tables (not counted)")
        if failed:
            notes.append("client exits failed: " + ", ".join(f"{k} x{v}" for k, v in failed.items()))
        if elapsed > self.opt("duration") * 1.5 + 1:
            notes.append(f"the sessions took {elapsed:.1f} s, not {self.opt('duration')} s: the rate was not kept")
        figures = {
            "sessions": float(len(clients)),
            "sessions_shared": float(shared_sessions),
            "exclusive_exits": float(exclusive),
            "tables": float(self.layout.tables),
            "servers": float(self.opt("sharers")),
            "sessions_per_s": round(len(clients) / elapsed, 3) if elapsed > 0 else 0.0,
            "max_attached": float(max_attached),
        }
        outcome = PhaseOutcome(ops=ops, ops_expected=len(clients), figures=figures)
        if self.opt("race"):
            assert self._servers is not None and self._view is not None
            calls = sum(self._servers.race(s, False) for s in self._servers.members)
            record(outcome, notes, WalkerFigures(calls=calls, during=calls), corrupted_bytes(self._view, self.size),
                   self.racing.reports() if self.racing else [])
        outcome.note = "; ".join(notes)
        return outcome

    def _map_view(self) -> None:
        """The driver's own mapping of the segment, where the race pattern is written and
        checked. It starts 2 MiB past a 1 GiB boundary, so no whole aligned GiB lies inside
        it and it shares no table: a driver sharing the tables would keep a client's exit
        from ever leaving them to the servers alone."""
        assert self._memfd is not None
        addr = aligned_address(self.size + PUD_SIZE) + PMD_SIZE
        self._view = libc.mmap(self.size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED | libc.MAP_FIXED_NOREPLACE,
                               self._memfd, addr)

    # -- cleanup --------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Every client and server gone, the memfd closed (its pages freed with the last
        mapping). Idempotent; Ctrl-C held off."""
        with signals_blocked():
            for group in (self._clients, self._servers):
                if group is not None:
                    group.close()
            self._clients = self._servers = None
            if self._view is not None:
                libc.munmap(self._view, self.size)
                self._view = None
            if self._memfd is not None:
                os.close(self._memfd)
                self._memfd = None
