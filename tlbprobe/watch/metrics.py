"""The watch's counters as Prometheus metrics: a node_exporter textfile collector file and
an optional /metrics endpoint, both from one prometheus_client registry.

Metrics (all counters since the watch started; Prometheus's rate() and increase() turn
them into rates, and a restart of the watch is a counter reset they handle):

* ``tlbprobe_sync_broadcasts_total{origin}``  broadcasts by origin (origins.ORIGINS,
  ``unattributed`` included): their sum is the exact count
* ``tlbprobe_sync_ipis_total``                the sync calls those broadcasts queued,
  one per target CPU
* ``tlbprobe_madv_collapse_broadcasts_total{comm}``  MADV_COLLAPSE broadcasts by process
  name (at most MAX_COMMS names, the rest under "(other)": a label per PID would grow
  without bound)
* ``tlbprobe_watch_own_ipis_total``           cross-CPU calls the watcher queued itself
* ``tlbprobe_function_call_interrupts_total`` CAL summed over CPUs, less the watcher's own
* ``tlbprobe_tlb_shootdowns_total``           TLB summed over CPUs
* ``tlbprobe_watch_intervals_total``, ``tlbprobe_watch_last_interval_end_seconds``
* ``tlbprobe_watch_info{route,kernel}`` = 1: how this host counts (route.py)

The textfile is replaced atomically each interval (a temporary file with an unpredictable
name, O_EXCL and O_NOFOLLOW, then rename: rundir/writer.py atomic_write(); the library's
own write_to_textfile() opens a predictable name, which root should not do in a
directory others may write). node_exporter reads only names ending in ``.prom``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Set, Tuple

from ..errors import InputError
from ..rundir.writer import atomic_write, check_parents
from .interval import IntervalRecord
from .origins import MADV_COLLAPSE, ORIGINS

MAX_COMMS = 20
OTHER_COMM = "(other)"


def check_textfile(path: Path) -> None:
    """--textfile: a .prom file in an existing directory we may write to."""
    if path.suffix != ".prom":
        raise InputError(f"--textfile {path}: node_exporter's textfile collector reads only files ending in .prom")
    if not path.parent.is_dir():
        raise InputError(f"--textfile {path}: no directory {path.parent} (node_exporter's is usually "
                         f"/var/lib/prometheus/node-exporter)")
    if path.is_dir():
        raise InputError(f"--textfile {path}: is a directory")
    check_parents(path)
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"--textfile {path}: cannot write in {path.parent}")


@dataclass
class Metrics:
    """The registry and its metrics; :meth:`add` feeds one interval."""

    route: str
    kernel: str
    registry: Any = None
    comms: Set[str] = field(default_factory=set)
    server: Any = None
    thread: Any = None

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        r = self.registry = CollectorRegistry()
        self.broadcasts = Counter("tlbprobe_sync_broadcasts", "Page-table sync broadcasts "
                                  "(tlb_remove_table_sync_one) by origin; the sum is the exact count",
                                  ["origin"], registry=r)
        for o in ORIGINS:  # every origin present from the start, so rate() sees zeros, not gaps
            self.broadcasts.labels(origin=o)
        self.ipis = Counter("tlbprobe_sync_ipis", "Sync calls queued to other CPUs by the broadcasts "
                            "(one per target CPU)", registry=r)
        self.by_comm = Counter("tlbprobe_madv_collapse_broadcasts", "MADV_COLLAPSE sync broadcasts by process "
                               "name", ["comm"], registry=r)
        self.own = Counter("tlbprobe_watch_own_ipis", "Cross-CPU calls the watcher queued itself (its counter "
                           "reads), already left out of tlbprobe_function_call_interrupts_total", registry=r)
        self.cal = Counter("tlbprobe_function_call_interrupts", "Function-call interrupts (CAL) summed over "
                           "CPUs, less the watcher's own", registry=r)
        self.tlb = Counter("tlbprobe_tlb_shootdowns", "TLB shootdown interrupts summed over CPUs", registry=r)
        self.intervals = Counter("tlbprobe_watch_intervals", "Intervals the watch recorded", registry=r)
        self.last = Gauge("tlbprobe_watch_last_interval_end_seconds", "Unix time the last interval ended",
                          registry=r)
        info = Gauge("tlbprobe_watch_info", "How this host counts (route) and its kernel", ["route", "kernel"],
                     registry=r)
        info.labels(route=self.route, kernel=self.kernel).set(1)

    def add(self, rec: IntervalRecord) -> None:
        for origin, n in rec.by_origin.items():
            if n > 0:  # a counter never goes down (a hist-route edge can give unattributed < 0)
                self.broadcasts.labels(origin=origin).inc(n)
        if rec.ipis:
            self.ipis.inc(rec.ipis)
        for p in rec.processes:
            if p["origin"] == MADV_COLLAPSE and p["count"] > 0:
                comm = p["comm"]
                if comm not in self.comms:
                    comm = OTHER_COMM if len(self.comms) >= MAX_COMMS else comm
                    self.comms.add(comm)
                self.by_comm.labels(comm=comm).inc(p["count"])
        own = sum(rec.own.values())
        if own > 0:
            self.own.inc(own)
        cal = sum(rec.cal_less_own.values())
        if cal > 0:
            self.cal.inc(cal)
        tlb = sum(rec.tlb.values())
        if tlb > 0:
            self.tlb.inc(tlb)
        self.intervals.inc()
        self.last.set(rec.end)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        atomic_write(path, self.text().decode())

    def listen(self, address: Tuple[str, int]) -> None:
        """Serve /metrics on ``address`` (a thread of prometheus_client's WSGI server).
        start_http_server() returns the server, to stop it, from prometheus_client 0.20
        (client_python #883, #999); Debian 12's python3-prometheus-client 0.16 returns
        nothing, hence pyproject.toml's bound."""
        from prometheus_client import start_http_server

        host, port = address
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            why = "in use (another exporter, or another watch?)" if e.errno == 98 else (e.strerror or str(e))
            raise InputError(f"--listen {host}:{port}: cannot listen there: {why}") from None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

