#!/usr/bin/env python3
"""Cold guest-kernel builds per configuration base (tlbprobe/kernel/build.py CONFIG_BASES):
wall seconds, compiled objects and bzImage size, one build after the other on the same
machine in the same run, so the bases are compared under the same conditions.

Each build is cold: a fresh O= build directory and an empty kernel cache, in a cache of
the benchmark's own (--cache, default ~/.cache/tlbprobe-bench; TLBPROBE_CACHE is set to
it), so the main cache (~/.cache/tlbprobe) is not touched. The source is unpacked into
that cache once, before the first build and outside the timings. The builds run under
nice 10 with -j<CPUs>, as `tlbprobe kernel build` does. Run it on a quiet machine: the
figures say what else ran (load average before and after each build).

    python3 benchmarks/kernel_build.py [--bases defconfig,minimal] [--flavours plain,debug]
                                       [--source TARBALL|DIR] [--cache DIR] [--jobs N]

Objects are the *.o files in the build directory after the build (built-in.a and the
like not counted): what make compiled, host tools and the boot decompressor included.
CPU seconds are make's and its children's user + system time: on a shared machine they
compare the builds' work where the wall time also measures the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tlbprobe.kernel.build import (DEBUG_FRAGMENT, DEFAULT_FRAGMENT, KernelSpec, build_kernel,  # noqa: E402
                                   cache_root, debian_tarball, is_tarball, plan_build, unpack)


def children_cpu() -> float:
    """User + system seconds of the waited-for children (make and what it ran): what the
    build cost, whatever else shares the CPUs, unlike the wall time."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", default="defconfig,minimal", help="configuration bases, in build order")
    ap.add_argument("--flavours", default="plain", help="plain, debug or plain,debug")
    ap.add_argument("--source", type=Path, default=None, help="kernel tree or tarball (default: Debian's newest)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tlbprobe-bench")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()
    a.cache = a.cache.resolve()
    if a.cache == (Path.home() / ".cache" / "tlbprobe").resolve():
        ap.error("--cache must not be tlbprobe's own cache: the builds empty it")
    os.environ["TLBPROBE_CACHE"] = str(a.cache)  # cache_root() reads it on every call
    os.nice(10)
    source = a.source or debian_tarball()
    if is_tarball(source):
        unpack(source, log=print)  # once, outside the timings
    rows = []
    print(f"source {source}, -j{a.jobs}, {os.cpu_count()} CPUs, cache {cache_root()}")
    for flavour in a.flavours.split(","):
        fragments = [DEFAULT_FRAGMENT] + ([DEBUG_FRAGMENT] if flavour == "debug" else [])
        for base in a.bases.split(","):
            spec = KernelSpec(source=source, fragments=fragments, patches=[], jobs=a.jobs, base=base)
            plan = plan_build(spec)
            build_dir = cache_root() / "build" / plan.tree_key
            for stale in (build_dir, plan.entry):  # cold: no build directory, no cached kernel
                shutil.rmtree(stale, ignore_errors=True)
            before = load()
            t, cpu = time.monotonic(), children_cpu()
            k = build_kernel(spec, log=print)
            wall, cpu = time.monotonic() - t, children_cpu() - cpu
            objects = sum(1 for _ in build_dir.rglob("*.o"))
            row = {"flavour": flavour, "base": base, "key": k.key, "release": k.release, "wall_s": round(wall, 1),
                   "cpu_s": round(cpu, 1),
                   "objects": objects, "bzimage_bytes": k.bzimage.stat().st_size, "load_before": before,
                   "load_after": load(), "bzimage": str(k.bzimage)}
            rows.append(row)
            print(f"{flavour} {base}: {wall:.0f} s ({cpu:.0f} CPU s), {objects} objects, bzImage {row['bzimage_bytes'] / 2**20:.1f} MiB "
                  f"(load {before} -> {row['load_after']}): {k.bzimage}", flush=True)
    print()
    print(f"{'flavour':<8} {'base':<10} {'wall s':>7} {'CPU s':>7} {'objects':>8} {'bzImage MiB':>12}  vs the first base")
    for r in rows:
        first = next(x for x in rows if x["flavour"] == r["flavour"])
        print(f"{r['flavour']:<8} {r['base']:<10} {r['wall_s']:>7.0f} {r['cpu_s']:>7.0f} {r['objects']:>8} "
              f"{r['bzimage_bytes'] / 2**20:>12.1f}  {r['wall_s'] / first['wall_s']:.2f} x time, "
              f"{r['cpu_s'] / first['cpu_s']:.2f} x CPU, {r['objects'] / first['objects']:.2f} x objects")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
