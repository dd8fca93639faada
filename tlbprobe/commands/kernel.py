"""`tlbprobe kernel build`: build a guest kernel (baseline or patched), cached."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import arch as arches
from ..errors import InputError
from ..kernel.build import (CONFIG_BASES, DEBUG_FRAGMENT, DEFAULT_BASE, DEFAULT_FRAGMENT, KernelSpec, as_dict,
                            variant_patches)

EPILOG = """\
The source is the newest Debian linux-source tarball (apt-get install linux-source-6.12)
unless --source names a kernel tree or another tarball (e.g. linux-source-6.1, to see how
an older kernel behaves; kernels/patches targets 6.12). The config starts from a base
(--config-base: "minimal" is `make tinyconfig` + kernels/config/tlbprobe-minimal.config,
about half the build; "defconfig" is x86_64_defconfig + kvm_guest.config, what runs
recorded before December 2026 were built from), then kernels/config/tlbprobe-guest.config
(+ --config fragments). Every build checks the options the jobs need and names a missing one.
`--variant patched` applies kernels/patches/*.patch, or your --patch files instead, in
order. Results are cached under $TLBPROBE_CACHE (default ~/.cache/tlbprobe) by source +
config + patches; baseline and patched share one build directory, so the second build is
incremental. Under sudo the build runs as the user who ran sudo (SUDO_UID), in that
user's cache: it runs the tree's Makefiles, which a patch can change (doc/security.md).

examples:
  tlbprobe kernel build                         # baseline, prints the bzImage path
  tlbprobe kernel build --variant patched
  tlbprobe kernel build --variant patched --patch 0001-my.patch --patch 0002-my.patch
  tlbprobe kernel build --source ~/linux --format json
  tlbprobe kernel build --source ~/linux --commits v6.12..my-series --variant patched
  tlbprobe kernel build --source /usr/src/linux-source-6.1.tar.xz   # Debian 12's own kernel version
  tlbprobe kernel build --debug --variant patched   # KASAN, DEBUG_VM: for repro --race
  tlbprobe kernel build --config-base defconfig     # the configuration older runs were built from
"""


def add_arch_option(p: argparse.ArgumentParser) -> None:
    """--arch, the guest architecture: a name of tlbprobe/arch/ (shared with qemu collect
    and repro). An architecture whose record says a stage is not done yet is refused by
    the library, with what is missing."""
    pending = [a.name for a in arches.registry().values() if a.not_done]
    p.add_argument("--arch", choices=arches.names(), default=arches.DEFAULT,
                   help=f"the guest architecture (default: {arches.DEFAULT})"
                        + (f"; {', '.join(pending)}: refused with what is not done yet (tlbprobe/arch/)"
                           if pending else ""))


def add_kernel_options(p: argparse.ArgumentParser) -> None:
    """Options shared with `tlbprobe repro`."""
    p.add_argument("--source", type=Path, metavar="DIR|TARBALL",
                   help="a kernel source tree, or a source tarball such as /usr/src/linux-source-6.1.tar.xz "
                        "(default: the newest Debian linux-source tarball)")
    p.add_argument("--patch", type=Path, action="append", default=[], metavar="FILE|MBOX|DIR",
                   help="patch for the patched variant: a diff, an mbox of several patches (b4 am, git "
                        "format-patch --stdout) or a directory of NNNN-*.patch files; repeatable, applied in "
                        "order (default: kernels/patches/)")
    p.add_argument("--commits", metavar="BASE..TIP",
                   help="with --source a git work tree: baseline is BASE, patched is BASE plus the commits up to "
                        "TIP (exported and formatted into the cache; your tree and checkout are not touched)")
    p.add_argument("--config", type=Path, action="append", default=[], metavar="FRAGMENT",
                   help="extra config fragment (repeatable)")
    p.add_argument("--debug", action="store_true",
                   help="the debug flavour: adds kernels/config/tlbprobe-debug.config (KASAN, DEBUG_VM, "
                        "PAGE_TABLE_CHECK), cached separately; a KASAN build takes much longer")
    p.add_argument("--config-base", choices=tuple(CONFIG_BASES), default=DEFAULT_BASE,
                   help=f"where the .config starts (default: {DEFAULT_BASE}): minimal (tinyconfig + what the jobs "
                        f"need, about half the build) or defconfig (x86_64_defconfig + kvm_guest.config); each "
                        f"base is cached by its own key")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="make -jN (default: number of CPUs)")


def register(sub) -> None:
    p = sub.add_parser("kernel", help="build guest kernels for the QEMU A/B (cached)", description=__doc__)
    ksub = p.add_subparsers(dest="kernel_command", metavar="ACTION")
    b = ksub.add_parser("build", help="build (or find in the cache) a guest kernel", description=__doc__,
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--variant", choices=("baseline", "patched"), default=None,
                   help="baseline (no patches; the default) or patched (default with --patch)")
    add_kernel_options(b)
    add_arch_option(b)
    b.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    b.add_argument("--dry-run", action="store_true",
                   help="build nothing: print the source, config fragments and patches (a series expanded) it "
                        "would use, and its cache entry")
    b.add_argument("--format", choices=("text", "json", "path"), default="text",
                   help="text (default): what was built and where; json: the same for scripts; path: the "
                        "bzImage's path alone, for `tlbprobe qemu collect --kernel \"$(tlbprobe kernel build "
                        "--format path)\"`")
    b.set_defaults(func=main_build)
    p.set_defaults(func=_no_action)


def _no_action(args: argparse.Namespace) -> int:
    raise InputError("kernel needs an action: tlbprobe kernel build [--variant patched] (see tlbprobe kernel "
                     "build --help)")


def resolve_commits(args: argparse.Namespace) -> None:
    """--commits A..B: the source becomes a clean export of A and the patches the series
    A..B (kernel/series.py), so the rest is the ordinary baseline/patched build."""
    if not getattr(args, "commits", None):
        return
    if args.patch:
        raise InputError("--commits gives the patches itself: leave out --patch")
    if args.source is None or not (args.source / ".git").exists():
        raise InputError("--commits needs --source, a git work tree of the kernel (e.g. --source ~/linux)")
    from ..kernel import asuser

    args.source, args.patch = asuser.commits(args.source, args.commits)


def fragments_from_args(args: argparse.Namespace) -> list:
    """The guest fragment, the debug one with --debug, then the user's --config ones."""
    return [DEFAULT_FRAGMENT] + ([DEBUG_FRAGMENT] if getattr(args, "debug", False) else []) + list(args.config)


def spec_from_args(args: argparse.Namespace, variant: str) -> KernelSpec:
    spec = KernelSpec(source=args.source, fragments=fragments_from_args(args),
                      patches=variant_patches(variant, args.patch), base=args.config_base,
                      arch=getattr(args, "arch", arches.DEFAULT))
    if args.jobs:
        spec.jobs = args.jobs
    return spec


def main_build(args: argparse.Namespace) -> int:
    from ..kernel import asuser
    from ..ui import terminal_status

    resolve_commits(args)
    if args.variant == "baseline" and args.patch and not args.commits:
        raise InputError("--patch goes with the patched variant, not --variant baseline")
    args.variant = args.variant or ("patched" if args.patch and not args.commits else "baseline")
    if args.dry_run:
        info = {"variant": args.variant, **asuser.plan(spec_from_args(args, args.variant))}
        if args.format == "json":
            print(json.dumps(info, indent=1))
        elif args.format == "path":
            print(Path(info["cache_entry"]) / arches.get(args.arch).image.name)
        else:
            for k, v in info.items():
                print(f"{k}: {', '.join(v) if isinstance(v, list) else v}")
        return 0
    k = asuser.build(spec_from_args(args, args.variant), status=terminal_status(), force=args.force)
    if args.format == "json":
        print(json.dumps(as_dict(k), indent=1))
    elif args.format == "path":
        print(k.bzimage)
    else:
        how = "from the cache" if k.cached else f"built in {k.seconds:.0f} s"
        print(f"{args.variant} kernel {k.release} ({how}): {k.bzimage}")
        print(f"build log: {k.log}   cache: {k.bzimage.parents[2]}")
    return 0
