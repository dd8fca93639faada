"""`tlbprobe qemu collect`: run `tlbprobe collect` inside a QEMU guest and bring the run back."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..qemu.kbuild import terminal_status
from ..qemu.guest import GuestError
from ..qemu.vmrun import collect_in_guest, guest_failure, guest_spec_from_args
from .collect import add_collect_options, job_from_args

EPILOG = """\
The guest boots KERNEL with this host's root file system mounted read-only over
virtio-9p and runs this checkout's tlbprobe with the collect options given after --;
the run directory comes back to --out with the guest's facts (kernel, flush mode,
accelerator, QEMU command line) in run.yaml under `qemu`, and the console log in
OUT/guest/. --accel auto uses KVM when /dev/kvm works and TCG otherwise (a one-line
notice says so). Under KVM the guest gets paravirtual TLB flush unless
--pv-tlb-flush off; under TCG the flush is native.

examples:
  tlbprobe qemu collect --kernel $(tlbprobe kernel build | ...) -- --size 1G --repeat 2
  tlbprobe qemu collect --kernel bzImage --smp 8 --memory 8G --out patched -- --threads 3
"""


def add_guest_options(p: argparse.ArgumentParser) -> None:
    """Options shared with `tlbprobe repro`."""
    p.add_argument("--smp", type=int, default=4, metavar="N", help="guest vCPUs (default: 4)")
    p.add_argument("--memory", default="4G", metavar="M", help="guest memory, QEMU syntax (default: 4G)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto (default): KVM if it works, else TCG")
    p.add_argument("--pv-tlb-flush", choices=("on", "off"), default=None,
                   help="KVM only: give the guest KVM's paravirtual TLB flush or not (default: KVM's default, on)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                   help="kill a guest that has not finished after S seconds (default: 1800)")


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
    p.set_defaults(func=lambda args: p.print_help() or 2)


class GuestCollectError(GuestError):
    """The guest booted and ran collect, which failed: its run directory came back."""

    exit_code = 7


def main_collect(args: argparse.Namespace) -> int:
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
    job_from_args(parsed)  # the same checks the guest will make, before booting anything
    if parsed.job:  # the guest runs in the checkout: a relative job file must not move
        rest = [str(Path(parsed.job).resolve()) if a == parsed.job else a for a in rest]
        rest = [f"--job={Path(parsed.job).resolve()}" if a == f"--job={parsed.job}" else a for a in rest]
    out, status = collect_in_guest(guest_spec_from_args(args), rest, args.out, workload=parsed.workload or "collapse",
                                   status=terminal_status())
    print((out / "summary.txt").read_text() if (out / "summary.txt").exists() else f"run directory: {out}")
    if status != 0:
        raise GuestCollectError(guest_failure(out, status))
    return 0
