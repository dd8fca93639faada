"""`tlbprobe audit`: every call site of the table-sync broadcast in a kernel tree, and the
reviewed table's answer for each (tlbprobe/audit/)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError

DESCRIPTION = """\
Find every call of tlb_remove_table_sync_one() and of the series' hook
(tlb_table_flush_implies_ipi_broadcast()) in a kernel tree, through #define and
inline-function aliases (pmdp_get_lockless_sync(), tlb_flush_unshared_tables()),
and give each the answer of the reviewed table kernels/audit/callers.yaml: the flush
that precedes it, which CPUs that flush reaches, the job that drives it, where it can
run, and the verdict for the skip. A call site the table does not know is
"unaudited" and fails the audit: a caller added by a newer kernel or by the series
under test is caught. Each verdict rests on facts (the flush comes first, freed_tables
is passed as true, ...) that are checked in the tree under audit. doc/audit.md says
what "every CPU that could be walking" means for each caller.
"""

EPILOG = """\
examples:
  tlbprobe audit                                   # 6.12 (newest Debian tarball) with kernels/patches/
  tlbprobe audit --variant baseline
  tlbprobe audit --source /usr/src/linux-source-6.1.tar.xz
  tlbprobe audit --patch v10.mbox --format json
  tlbprobe audit --source ~/linux --patch 0001-my.patch --patch 0002-my.patch

The tree is never written to: the series is applied to copies of the files it touches
(and patches a kernel build has applied to the cached tree right now are reversed in
those copies). Exit status: 0 every call site audited and every skip supported by its
facts; 1 the audit failed (the text's last line says why); 2 bad input (not a kernel
tree, a patch that does not apply, a malformed table).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("audit", help="every caller of the table-sync broadcast, and why its skip is safe",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, metavar="DIR|TARBALL",
                   help="a kernel source tree, or a source tarball such as /usr/src/linux-source-6.1.tar.xz "
                        "(default: the newest Debian linux-source tarball, unpacked in the cache)")
    p.add_argument("--patch", type=Path, action="append", default=[], metavar="FILE|MBOX|DIR",
                   help="patch of the patched variant: a diff, an mbox of several patches or a directory of "
                        "NNNN-*.patch files; repeatable, applied in order (default: kernels/patches/)")
    p.add_argument("--variant", choices=("baseline", "patched"), default=None,
                   help="baseline (the tree as it is) or patched (the series applied; the default)")
    p.add_argument("--table", type=Path, metavar="FILE",
                   help="the reviewed table of callers (default: kernels/audit/callers.yaml)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..audit.render import render_json, render_text
    from ..audit.source import open_view, resolve_source
    from ..audit.static import run_audit
    from ..audit.table import load_table
    from ..kernel import series
    from ..kernel.build import variant_patches

    if args.variant == "baseline" and args.patch:
        raise InputError("--patch goes with the patched variant, not --variant baseline")
    variant = args.variant or "patched"
    table = load_table(args.table)
    tree, label = resolve_source(args.source, lambda line: print(f"tlbprobe: {line}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="tlbprobe-audit-series-") as work:
        patches = variant_patches(variant, series.expand(args.patch, Path(work)) if args.patch else None)
        if variant == "patched" and not patches:
            raise InputError("the patched variant has no patches: kernels/patches/ is empty (give --patch FILE)")
        with open_view(tree, label, patches) as view:
            result = run_audit(view, table, variant)
    print(render_json(result) if args.format == "json" else render_text(result))
    return 0 if result.ok else 1
