"""`tlbprobe collect`: measure a workload's IPIs on this host (root)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..run.collector import Collector, default_out
from ..ui import Console
from ..run.job import IDLE_MODES, KERNEL_VARIANTS, SYNC_COUNTERS, build_job, parse_threads
from ..rundir.summary_text import render_summary
from ..units import parse_size
from ..workloads import all_options, all_specs, default_name, names
from ..vocab import FLUSH_MODES

EPILOG = """\
what it measures:
  For each repeat: an idle control window (the background IPI rate), then the
  workload. Around each window it snapshots every line of /proc/interrupts and
  /proc/vmstat (and samples CAL and TLB in between, for IPIs over time), and
  (unless --no-trace) attributes every function-call IPI to its kernel function from
  tracefs: the csd/ipi events, or on kernels without them (6.1) kprobes. Sync IPIs =
  CAL minus TLB on the CPUs that did not run the driver, minus the idle windows' rate
  times the workload's duration; the trace counts the sync calls exactly, including
  those that reach a CPU polling in idle without an interrupt. During the idle window
  the driver CPU spins in user space (--idle-mode spin), so IPIs the scheduler sends
  because a CPU is busy count as background.

examples:
  tlbprobe collect                                  # collapse sized to the machine
  tlbprobe collect --size 20G --repeat 5 --kernel-variant baseline --out base
  tlbprobe collect --threads 3 --cpu 0              # TLB shootdowns appear too
  tlbprobe collect --job workloads/collapse-small.yaml --repeat 10
  tlbprobe collect --workload idle --idle-seconds 30   # background only

Every setting it changes (THP knobs, nr_hugepages, tracefs, kprobes) is restored on
exit; if a run is killed with SIGKILL, `tlbprobe restore` puts them back. The run
directory format is described in doc/run-format.md; `tlbprobe report DIR` reads it.
"""


def add_collect_options(p: argparse.ArgumentParser) -> None:
    """The options of a collect; `tlbprobe qemu collect` passes the same ones to the guest."""
    p.add_argument("--workload", choices=names(), help=f"what to measure (default: {default_name()})")
    p.add_argument("--job", metavar="FILE", help="YAML job file (see workloads/); flags given here override it")
    p.add_argument("--size", type=parse_size, metavar="SIZE",
                   help="bytes to collapse or unshare, e.g. 512M, 20G (default: up to 4G, sized to free memory)")
    p.add_argument("--repeat", type=int, metavar="N", help="repeats, each with its own idle window (default: 3)")
    p.add_argument("--cpu", type=int, metavar="C", help="CPU that runs the driver (default: 0)")
    p.add_argument("--threads", type=_threads, metavar="K|all",
                   help="extra threads reading the range from other CPUs, so the mm runs on K+1 CPUs; all: one "
                        "per other online CPU (default: 0)")
    p.add_argument("--idle-seconds", type=float, metavar="S",
                   help="idle control window before each repeat (default: 5; 0 disables background subtraction)")
    p.add_argument("--idle-mode", choices=IDLE_MODES,
                   help="spin (default): the driver CPU busy-loops in user space during the idle window, so "
                        "scheduler IPIs a busy CPU causes count as background; sleep: everything idle")
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/<timestamp>-<workload>)")
    p.add_argument("--no-trace", dest="trace", action="store_const", const=False,
                   help="do not attribute IPIs with tracefs (counts from /proc/interrupts only)")
    p.add_argument("--trace-buffer-kb", type=int, metavar="KB",
                   help="trace buffer per CPU in KiB (default: sized from the job, said in the log); a buffer "
                        "that fills marks its phase's received counts lost, it does not end the run")
    p.add_argument("--sync-counter", choices=SYNC_COUNTERS,
                   help="perf (default): count the sync calls queued in the kernel with a perf counter, exact "
                        "at any CPU count; trace: count them in the trace buffer (the older way)")
    p.add_argument("--kernel-variant", choices=KERNEL_VARIANTS,
                   help="say which kernel this is, for the report (default: unknown)")
    p.add_argument("--flush-mode", choices=[m for m in FLUSH_MODES if m != "unknown"],
                   help="override the detected TLB flush mode (recorded as given)")
    p.add_argument("--latency", action="store_const", const=True,
                   help="run cyclictest on every online CPU beside each phase")
    p.add_argument("--cost", action="store_const", const=True,
                   help="time what the broadcast costs: the receivers' function-call handlers (irq_vectors and "
                        "csd trace events) and the initiator's wait in tlb_remove_table_sync_one (kprobes); the "
                        "events cost time themselves (benchmarks/cost_observer.py)")
    p.add_argument("--victim", action="store_const", const=True,
                   help="run a pinned work loop on every other CPU and report the throughput it loses in the "
                        "workload phases and its longest gap (needs a C compiler)")
    seen = set()
    specs = all_specs()
    for spec in specs:  # each workload declares its own options (tlbprobe/workloads/<name>/spec.py)
        mine = [o for o in spec.options if o.key not in seen]
        if not mine:
            continue
        g = p.add_argument_group(f"{spec.name} workload")
        for o in mine:
            seen.add(o.key)
            # a key two workloads declare (sharers) is one flag: its help gives each meaning
            also = [(d.name, x) for d in specs if d is not spec for x in d.options if x.key == o.key]
            text = o.help if not also else "; ".join([f"{spec.name}: {o.help}"] + [f"{n}: {x.help}" for n, x in also])
            if o.flag:
                g.add_argument(o.flag_name, dest=o.key, action="store_const", const=True, help=text)
            else:
                g.add_argument(o.flag_name, dest=o.key, metavar=o.metavar, help=text,
                               type=o.kind if o.kind is int else str)  # choices: checked by Option.coerce, in one line
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the summary")


def _threads(text: str) -> int:
    try:
        return parse_threads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count or 'all'") from None


def register(sub) -> None:
    p = sub.add_parser("collect", help="measure IPIs of a workload on this host (root)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_collect_options(p)
    p.set_defaults(func=main)


def job_from_args(args: argparse.Namespace):
    keys = ["workload", "size", "repeat", "cpu", "threads", "idle_seconds", "idle_mode", "trace", "trace_buffer_kb",
            "sync_counter", "kernel_variant", "flush_mode", "latency", "cost", "victim"] + list(all_options())
    return build_job({k: getattr(args, k, None) for k in keys}, args.job)


def main(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    out = args.out or default_out(job.workload)
    collector = Collector(job, out, Console(quiet=args.quiet), argv=["tlbprobe"] + sys.argv[1:])
    if job.latency:
        from ..measure.latency import CyclictestObserver
        collector.add_observer(CyclictestObserver(job))
    if job.cost:
        from ..measure.cost import CostObserver
        collector.add_observer(CostObserver(ops_per_phase=(job.size or 0) // (2 << 20), driver_cpu=job.cpu))
    if job.victim:
        from ..measure.victim import VictimObserver
        collector.add_observer(VictimObserver(job.cpu))
    summary = collector.run()
    print(render_summary(summary, out))
    print(f"\nnext: tlbprobe report {out}   (add a run from the other kernel to compare; "
          f"--format lkml for a cover letter)")
    return 0
