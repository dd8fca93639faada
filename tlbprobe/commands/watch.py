"""`tlbprobe watch`: count this machine's page-table sync broadcasts, by origin, beside
whatever it runs, for as long as it runs (root)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EPILOG = """\
what it counts, every interval (doc/watch.md has every figure and its limits):
  broadcasts   tlb_remove_table_sync_one() calls, exactly (a perf counter on
               csd:csd_queue_cpu filtered to one target CPU per broadcast)
  IPIs         the sync calls they queued, one per other online CPU
  origins      each broadcast's kernel stack -> khugepaged, madv_collapse (with the
               process name and PID), hugetlb_unshare (by munmap, mprotect, exit, ...),
               pt_free_fallback, other (its stack kept); what has no stack is
               "unattributed": the origins always add up to the exact count
  CAL, TLB     per CPU from /proc/interrupts; CAL less the watcher's own calls (it
               sends one to each other CPU per interval to read its counters)
On a kernel without csd trace events (before 6.5) it counts CAL and TLB only, and says so.

examples:
  tlbprobe watch                                   # until Ctrl-C, into watch/<time>
  tlbprobe watch --duration 24h --out /var/lib/tlbprobe/watch
  tlbprobe watch --interval 60 --textfile /var/lib/prometheus/node-exporter/tlbprobe.prom
  tlbprobe watch --listen 127.0.0.1:9464           # Prometheus scrapes /metrics

It changes nothing but its own tracefs instance (and mounts tracefs if it is not
mounted), journaled: SIGTERM or Ctrl-C restores and marks the watch directory complete;
after a SIGKILL, `tlbprobe restore` undoes it. SIGHUP reopens the records for
logrotate. contrib/tlbprobe-watch.service runs it as a systemd service.
"""


def register(sub) -> None:
    from ..watch.config import DEFAULT_INTERVAL_S

    p = sub.add_parser("watch", help="count sync broadcasts by origin on this host, for hours (root)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", metavar="S", default=str(DEFAULT_INTERVAL_S),
                   help=f"seconds per record, 0.5 to 3600 (default: {DEFAULT_INTERVAL_S:g})")
    p.add_argument("--duration", metavar="D",
                   help="stop after D: seconds or 90s, 15m, 2h, 1d, 1h30m (default: until SIGTERM or Ctrl-C)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="watch directory, created empty (default: watch/<date>-<time>)")
    p.add_argument("--max-disk", metavar="SIZE", default="64M",
                   help="bound of the watch directory: older records are compressed, then summed by the hour "
                        "(default: 64M)")
    p.add_argument("--textfile", type=Path, metavar="PATH",
                   help="also write Prometheus metrics to this .prom file each interval (node_exporter's "
                        "textfile collector)")
    p.add_argument("--listen", metavar="ADDR:PORT",
                   help="also serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9464)")
    p.add_argument("--stacks", choices=("auto", "hist", "trigger", "none"), default="auto",
                   help="where origins come from: auto (a hist trigger where the kernel has one, else the "
                        "stacktrace trigger), hist, trigger, or none (counts only)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the final summary")
    p.set_defaults(func=main)


def default_out() -> Path:
    return Path("watch") / time.strftime("%Y%m%d-%H%M%S")


def main(args: argparse.Namespace) -> int:
    from ..errors import PreflightError
    from ..ui import Console
    from ..watch.config import WatchConfig, parse_duration, parse_interval, parse_listen, parse_max_disk
    from ..watch.metrics import check_textfile
    from ..watch.text import final_lines
    from ..watch.watcher import Watcher

    config = WatchConfig(
        out=args.out or default_out(),
        interval_s=parse_interval(args.interval),
        duration_s=parse_duration(args.duration) if args.duration is not None else None,
        textfile=args.textfile,
        listen=parse_listen(args.listen) if args.listen else None,
        max_disk=parse_max_disk(args.max_disk),
        quiet=args.quiet,
    )
    if config.textfile:
        check_textfile(config.textfile)
    if os.geteuid() != 0:
        raise PreflightError("watch needs root (perf counters on a tracepoint, tracefs): run it with sudo")
    console = Console(quiet=args.quiet)
    result = Watcher(config, console.log, argv=["tlbprobe"] + sys.argv[1:], stacks=args.stacks).run()
    print("\n".join(final_lines(result)))
    return 0
