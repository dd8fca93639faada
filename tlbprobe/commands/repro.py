"""`tlbprobe repro`: the QEMU A/B in one command: build baseline and patched kernels, run the
same jobs in a guest of each, print the comparison, exit non-zero when the patched kernel
does not do what the model predicts for the flush mode used."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..qemu.guest import GuestSpec
from ..qemu.kbuild import DEFAULT_FRAGMENT, KernelSpec
from ..ui import terminal_status
from ..qemu.repro import default_out, run_repro
from .kernel import add_kernel_options
from .qemu import add_guest_options

EPILOG = """\
Jobs (each with 2 repeats and a 2 s idle window, driver on CPU 0): a 1 GiB collapse,
the same with a touching thread on every other vCPU (TLB shootdowns appear), and a
1 GiB hugetlb PMD-unshare. Kernels come from `tlbprobe kernel build` (cached: a warm
repro only boots the guests). Results: OUT/<variant>/<job>/ run directories,
OUT/repro.json (verdicts, timings), and the LKML tables printed here.

Under TCG (no working KVM) the guest flushes with native IPIs, so the patched kernel
must show ~0 sync IPIs. Under KVM with paravirtual flush (--pv-tlb-flush on, KVM's
default) the model says patched = baseline, and that is what is checked.

examples:
  tlbprobe repro                          # our patch, Debian's linux-source
  tlbprobe repro --patch 0001-a.patch --patch 0002-b.patch --source ~/linux
  tlbprobe repro --accel kvm --pv-tlb-flush off --smp 8 --memory 8G
"""


def register(sub) -> None:
    p = sub.add_parser("repro", help="QEMU A/B: baseline vs patched kernel, in one command",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_kernel_options(p)
    add_guest_options(p)
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results (default: runs/<time>-repro)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.smp < 2:
        raise InputError("--smp must be at least 2: the sync IPIs go to the other vCPUs")
    out = args.out or default_out()
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose another --out")
    kspec = KernelSpec(source=args.source, fragments=[DEFAULT_FRAGMENT] + list(args.config))
    if args.jobs:
        kspec.jobs = args.jobs
    # the kernel is filled in per variant by run_repro
    guest = GuestSpec(kernel=Path(), smp=args.smp, memory=args.memory or "4G", accel=args.accel,
                      pv_tlb_flush=args.pv_tlb_flush, timeout=args.timeout)
    res = run_repro(kspec, guest, out, patches=args.patch, status=terminal_status())
    for job, text in res.reports.items():
        print(f"===== {job} =====")
        print(text)
    print("===== verdict =====")
    for job, d in res.verdicts.items():
        for variant, v in d.items():
            print(f"{job:<22} {variant:<9} {v}")
    print(f"timings: {res.timings}")
    print(f"results: {out}   ({'the patch does what the model predicts' if res.ok else 'MISMATCH: see above'})")
    return 0 if res.ok else 1
