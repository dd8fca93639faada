"""`tlbprobe collect`: measure a workload's IPIs on this host (root)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..run.job import COMMON_OPTIONS, build_job

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
  tlbprobe collect --size 20G --repeat 5 --variant baseline --out base
  tlbprobe collect --threads 3 --driver-cpu 0       # TLB shootdowns appear too
  tlbprobe collect --job workloads/collapse-small.yaml --repeat 10
  tlbprobe collect --workload idle --idle-seconds 30   # background only

Every setting it changes (THP knobs, nr_hugepages, tracefs, kprobes) is restored on
exit; if a run is killed with SIGKILL, `tlbprobe restore` puts them back. The run
directory format is described in doc/run-format.md; `tlbprobe report DIR` reads it.
"""


def add_collect_options(p: argparse.ArgumentParser) -> None:
    """The options of a collect; `tlbprobe qemu collect` passes the same ones to the guest.
    The job's options come from their records (run/job.py COMMON_OPTIONS, each workload's
    ``options``); --job, --out and -q are the command's own."""
    for opt in COMMON_OPTIONS:
        opt.add_to(p)
        if opt.key == "workload":  # where --help has always listed them
            p.add_argument("--job", metavar="FILE",
                           help="YAML job file (see workloads/); flags given here override it")
        elif opt.key == "idle_mode":
            p.add_argument("--out", type=Path, metavar="DIR",
                           help="run directory (default: runs/<timestamp>-<workload>)")
    add_workload_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the summary")


def add_workload_options(p: argparse.ArgumentParser) -> None:
    """Each workload's own options, a group per workload (tlbprobe/workloads/<name>/spec.py ``options``)."""
    from ..workloads import all_specs

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
            o.add_to(g, help=text)  # choices: checked by Option.coerce, in one line


def register(sub) -> None:
    p = sub.add_parser("collect", help="measure IPIs of a workload on this host (root)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_collect_options(p)
    p.set_defaults(func=main)


def job_from_args(args: argparse.Namespace):
    """The Job the parsed flags and their --job file describe, checked."""
    from ..workloads import all_options

    keys = [o.key for o in COMMON_OPTIONS] + list(all_options())
    return build_job({k: getattr(args, k, None) for k in keys}, args.job)


def main(args: argparse.Namespace) -> int:
    from ..run.collector import Collector, default_out
    from ..report.summary_text import render_summary
    from ..ui import Console

    job = job_from_args(args)
    out = args.out or default_out(job.workload)
    # the Collector builds the job's observers once the job is resolved (run/observers.py)
    summary = Collector(job, out, Console(quiet=args.quiet), argv=["tlbprobe"] + sys.argv[1:]).run()
    print(render_summary(summary, out))
    print(f"\nnext: tlbprobe report {out}   (add a run from the other kernel to compare; "
          f"--format lkml for a cover letter)")
    return 0
