"""Command line: argparse subcommands only. Each subcommand lives in tlbprobe/commands/<name>.py
with ``register(subparsers)`` and ``main(args) -> int``; the work is done by the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from . import __version__
from .errors import InternalError, TlbprobeError

#: Subcommand modules, in the order `tlbprobe --help` lists them.
COMMANDS = ["collect", "report", "model", "diff", "restore", "qemu", "kernel", "repro"]

DESCRIPTION = """\
Measure what a kernel page-table operation costs in cross-CPU interrupts (IPIs)
and real-time latency, and compare kernels.

Typical use, once on the baseline kernel and once on the patched one:
  tlbprobe collect --size 4G --repeat 5 --out base       (as root)
  tlbprobe collect --size 4G --repeat 5 --out patched    (as root)
  tlbprobe report base patched --format lkml
"""

EXIT_CODES = """\
exit status (every command; doc/ci.md):
  0  done; for repro: every run matches the model
  1  repro: a run does not match the model; other commands: an error you can act on
  2  bad input: an option, a file, a directory that is not a run
  3  this host cannot run the job (not root, too little memory, old kernel)
  4  the workload failed while running (the run directory is kept, incomplete)
  6  the guest panicked or timed out
  7  the guest's collect failed (its run directory came back, incomplete)
  70 a bug in tlbprobe (the message says where the traceback is)
  130 interrupted (Ctrl-C, SIGTERM); settings restored, the run kept as incomplete
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbprobe", description=DESCRIPTION, epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tlbprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:  # register() only builds the parser: each main() imports what it runs
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ImportError as e:  # a broken install or a bug, never a command left out without a word
            raise InternalError(f"the {name} command cannot be loaded: tlbprobe/commands/{name}.py: "
                                f"{type(e).__name__}: {e}") from None
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        # the words of this command, for the runs it makes (run.yaml qemu.started_by)
        args.command_argv = ["tlbprobe", *(sys.argv[1:] if argv is None else argv)]
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except TlbprobeError as e:
        print(f"tlbprobe: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tlbprobe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug that escaped every command's own handling
        if os.environ.get("TLBPROBE_DEBUG"):
            raise
        print(f"tlbprobe: internal error: {type(e).__name__}: {e}\n(a bug in tlbprobe; run again with "
              f"TLBPROBE_DEBUG=1 for the traceback, and report it)", file=sys.stderr)
        return 70
