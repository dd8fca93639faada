"""`tlbprobe qemu collect`: run `tlbprobe collect` inside a QEMU guest and bring the run back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import InputError, PreflightError
from ..run.job import Job, find_job_file
from ..units import parse_size
from ..vm.guest import GuestError, GuestSpec
from .collect import add_collect_options, job_from_args
from .kernel import add_arch_option

EPILOG = """\
The guest boots KERNEL with this host's root file system mounted read-only over
virtio-9p and runs this checkout's tlbprobe with the collect options given after --;
the run directory comes back to --out with the guest's facts (kernel, flush mode,
accelerator, QEMU command line) in run.yaml under `qemu`, and the console log in
OUT/guest/. --accel auto uses KVM when /dev/kvm works and TCG otherwise (a one-line
notice says so). Under KVM the guest gets paravirtual TLB flush unless
--pv-tlb-flush off; under TCG the flush is native.

examples:
  tlbprobe qemu collect --kernel "$(tlbprobe kernel build --format path)" -- --size 1G --repeat 2
  tlbprobe qemu collect --kernel bzImage --smp 8 --memory 8G --out patched -- --threads 3
"""


def _no_action(args: argparse.Namespace) -> int:
    raise InputError("qemu needs an action: tlbprobe qemu collect --kernel BZIMAGE -- [collect options] (see "
                     "tlbprobe qemu collect --help)")


def smp_list(text: str) -> List[int]:
    """'4,16,64' -> [4, 16, 64]: vCPU counts, each 2..256."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give vCPU counts such as 4 or 4,16,64") from None
    if not values or any(not 2 <= v <= 256 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each vCPU count must be 2..256 (the sync IPIs go to the others)")
    return sorted(set(values))


def add_guest_options(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Options shared with `tlbprobe repro` (whose --smp may be a list: a sweep)."""
    if sweep:
        p.add_argument("--smp", type=smp_list, default=[4], metavar="N[,N...]",
                       help="guest vCPUs (default: 4); a list such as 4,16,64 runs a sweep across them")
    else:
        p.add_argument("--smp", type=int, default=4, metavar="N", help="guest vCPUs (default: 4)")
    p.add_argument("--memory", default=None, metavar="M",
                   help="guest memory, QEMU syntax (default: the job's --size plus 2G, at least 4G; "
                        "refused when the host's MemAvailable cannot give it)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto (default): KVM if it works, else TCG")
    p.add_argument("--pv-tlb-flush", choices=("on", "off", "wrapper"), default=None,
                   help="on/off (KVM only): give the guest KVM's paravirtual TLB flush or not (default: KVM's "
                        "default, on); wrapper (TCG or KVM): boot with tlbprobe_wrap_flush, tlbprobe's test-only "
                        "paravirtual flush that wraps the native one (kernels/test-only/; repro builds both "
                        "kernels with it, qemu collect needs a --kernel built with it), so the patched kernel "
                        "must keep every broadcast")
    p.add_argument("--tcg-thread", choices=("single", "multi"), default=None,
                   help="TCG only: single (the default, but multi for repro --race): the vCPUs take turns in one "
                        "host thread; multi: one host thread each (QEMU's default), so walkers and the operation "
                        "really run at once; its boots panicked now and then at 16 vCPUs (kernels/README.md)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                   help="kill a guest that has not finished after S seconds (default: 1800)")
    add_arch_option(p)


def register(sub) -> None:
    p = sub.add_parser("qemu", help="run tlbprobe collect inside a QEMU guest", description=__doc__)
    qsub = p.add_subparsers(dest="qemu_command", metavar="ACTION")
    c = qsub.add_parser("collect", help="boot a kernel, collect inside, bring the run back",
                        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                        usage="tlbprobe qemu collect --kernel BZIMAGE [options] [--out DIR] -- [collect options]")
    c.add_argument("--kernel", type=Path, required=True, metavar="BZIMAGE", help="the kernel to boot")
    add_guest_options(c)
    c.add_argument("--out", type=Path, metavar="DIR", help="run directory on the host (default: runs/<time>-qemu-<workload>)")
    c.add_argument("collect_args", nargs=argparse.REMAINDER, help="options for tlbprobe collect, after --")
    c.set_defaults(func=main_collect)
    p.set_defaults(func=_no_action)


#: What a collect guest needs beside the workload's memory: the kernel, python and
#: pandas from the host's root (page cache), page tables, trace buffers.
GUEST_OVERHEAD = 2 << 30
#: What the host keeps for itself beside a guest (QEMU's own memory, the page cache).
HOST_MARGIN = 1 << 30


def guest_memory_for(size: Optional[int]) -> str:
    """The guest's memory when --memory is not given: the job's size plus the overhead,
    in whole GiB, at least 4G (what a guest without --size sizes its collapse from)."""
    if not size:
        return "4G"
    return f"{max(4, -(-(size + GUEST_OVERHEAD) >> 30))}G"


def guest_memory_for_jobs(jobs: Sequence[Job]) -> str:
    """The memory of a guest that runs these jobs, when --memory is not given: for the
    largest, as each job is resolved on the host (flags and its --job file alike), so a
    job file of 12G boots a 14G guest rather than one its own preflight then refuses. What
    a job holds in memory at once is its workload's to say (WorkloadSpec.memory_for: a
    streamed collapse, its window)."""
    from ..workloads import spec

    return guest_memory_for(max((spec(j.workload).memory_for(j) or 0 for j in jobs), default=0) or None)


def check_host_memory(memory: str) -> None:
    """Refuse, with the figures, a guest the host cannot give its memory to."""
    from ..measure.procfs import read_meminfo

    want = parse_size(memory if memory[-1:].isalpha() else memory + "M")
    avail = read_meminfo().get("MemAvailable", 0)
    if avail and want + HOST_MARGIN > avail:
        raise PreflightError(f"the guest needs --memory {memory} and the host keeps {HOST_MARGIN >> 30}G beside it, "
                             f"but MemAvailable is {avail / (1 << 30):.1f}G: give a smaller --size (or --memory), "
                             f"or free memory")


class GuestCollectError(GuestError):
    """The guest booted and ran collect, which failed: its run directory came back."""

    exit_code = 7


def guest_spec_from_args(args: argparse.Namespace, kernel: Optional[Path] = None) -> GuestSpec:
    """The GuestSpec the guest options describe (shared with repro)."""
    return GuestSpec(kernel=kernel or args.kernel, smp=args.smp, memory=args.memory, accel=args.accel,
                     pv_tlb_flush=args.pv_tlb_flush, timeout=args.timeout,
                     tcg_thread=args.tcg_thread or "single", arch=args.arch)


def main_collect(args: argparse.Namespace) -> int:
    from ..ui import terminal_status
    from ..vm.collect import GuestOrigin, collect_in_guest, guest_failure

    rest = list(args.collect_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    probe = argparse.ArgumentParser(prog="tlbprobe qemu collect ... --", add_help=False)
    add_collect_options(probe)
    try:
        parsed = probe.parse_args(rest)
    except SystemExit:
        raise InputError(f"bad collect options after --: {' '.join(rest)}") from None
    if parsed.out:
        raise InputError("give --out before --, to tlbprobe qemu collect (the host's directory)")
    job = job_from_args(parsed)  # the same checks the guest will make, before booting anything
    if parsed.job:  # the guest's working directory is not ours: give it the file's absolute path
        where = find_job_file(parsed.job).resolve()
        rest = [str(where) if a == parsed.job else a for a in rest]
        rest = [f"--job={where}" if a == f"--job={parsed.job}" else a for a in rest]
    args.memory = args.memory or guest_memory_for_jobs([job])
    check_host_memory(args.memory)
    out, status = collect_in_guest(guest_spec_from_args(args), rest, args.out, workload=job.workload,
                                   status=terminal_status(),
                                   origin=GuestOrigin("qemu collect", list(getattr(args, "command_argv", ()))))
    print((out / "summary.txt").read_text() if (out / "summary.txt").exists() else f"run directory: {out}")
    if status != 0:
        raise GuestCollectError(guest_failure(out, status))
    return 0
