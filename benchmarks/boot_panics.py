#!/usr/bin/env python3
"""How often a TCG guest of our kernel build panics while booting, per vCPU count and per
remedy (run as root on a quiet machine; it takes minutes per boot at 64 vCPUs).

The panic: "Oops: int3" in sched_clock_cpu() from the timer interrupt, then "Fatal
exception in interrupt", early in boot. Each boot here runs only `true` as init's
command: no retry, no measurement, just whether the kernel came up. The remedies:

  default       QEMU's defaults (multi-threaded TCG: one host thread per vCPU)
  thread=single -accel tcg,thread=single: all vCPUs take turns in one host thread
  tsc=unstable  kernel parameter instead of tsc=reliable
  single+lpj    thread=single and lpj= (what tlbprobe uses now: no per-vCPU delay-loop
                calibration, which is slow under TCG)

    python3 benchmarks/boot_panics.py [--kernel BZIMAGE] [--smp 4,16,64] [--boots 20]
                                      [--remedies default,thread=single] [--seconds 3000]

Boots stop when --seconds have passed; the counts say how many boots each cell got.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tlbprobe.vm.guest import START_MARK, GuestSpec, boot_once  # noqa: E402
from tlbprobe.kernel.build import DEFAULT_FRAGMENT, KernelSpec, build_kernel  # noqa: E402

# tlbprobe's own command line now has lpj= for every TCG guest (tlbprobe/arch/x86_64.py TCG_LPJ); the
# figures in kernels/README.md were measured before, with lpj= given here where named.
REMEDIES = {
    "default": {"tcg_thread": None},
    "thread=single": {"tcg_thread": "single"},
    "tsc=unstable": {"tcg_thread": None, "extra_append": "tsc=unstable"},
    "single+lpj": {"tcg_thread": "single"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", type=Path, help="bzImage (default: the cached baseline build)")
    ap.add_argument("--smp", default="4,16,64")
    ap.add_argument("--boots", type=int, default=20)
    ap.add_argument("--remedies", default="default,thread=single")
    ap.add_argument("--seconds", type=float, default=3000)
    a = ap.parse_args()
    kernel = a.kernel or build_kernel(KernelSpec(source=None, fragments=[DEFAULT_FRAGMENT], patches=[])).bzimage
    deadline = time.monotonic() + a.seconds
    print(f"kernel {kernel}; boots stop after {a.seconds:.0f} s")
    print(f"{'vCPUs':>5} {'remedy':<14} {'boots':>5} {'panics':>6} {'no init':>7} {'s/boot (median)':>16}")
    for n in (int(x) for x in a.smp.split(",")):
        for name in a.remedies.split(","):
            spec = replace(GuestSpec(kernel=kernel, smp=n, memory="2G", accel="tcg", timeout=900),
                           **REMEDIES[name])
            boots = panics = no_init = 0
            times = []
            while boots < a.boots and time.monotonic() < deadline:
                out = Path(tempfile.mkdtemp(prefix="tlbprobe-boot-"))
                r = boot_once(spec, "tcg", [["true"]], out, lambda s: None)
                text = r.console.read_text(errors="replace")
                boots += 1
                times.append(r.seconds)
                if r.panic:
                    panics += 1
                    keep = REPO / "benchmarks" / "out" / f"panic-{n}-{name}-{boots}.log"
                    keep.parent.mkdir(exist_ok=True)
                    shutil.copy(r.console, keep)
                elif START_MARK not in text or not r.statuses:
                    no_init += 1
                shutil.rmtree(out, ignore_errors=True)
            med = sorted(times)[len(times) // 2] if times else float("nan")
            print(f"{n:>5} {name:<14} {boots:>5} {panics:>6} {no_init:>7} {med:>16.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
