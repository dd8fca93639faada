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
COMMANDS = ["collect", "watch", "report", "model", "diff", "restore", "qemu", "kernel", "repro", "audit"]

DESCRIPTION = """\
Measure what a kernel page-table operation costs in cross-CPU interrupts (IPIs)
and real-time latency, and compare kernels.

Typical use, once on the baseline kernel and once on the patched one:
  tlbprobe collect --size 4G --repeat 5 --variant baseline --out base    # as root
  tlbprobe collect --size 4G --repeat 5 --variant patched --out patched  # as root
  tlbprobe report base patched --format lkml
"""

EXIT_CODES = """\
exit status (every command; doc/ci.md):
  0  done; for repro: every run matches the model; for audit: every call site audited
  1  repro: a run does not match the model; audit: the audit failed; other commands:
     an error you can act on
  2  bad input: an option, a file, a directory that is not a run
  3  this host cannot run the job (not root, too little memory, old kernel)
  4  the workload failed while running (the run directory is kept, incomplete)
  6  the guest panicked or timed out
  7  the guest's collect failed (its run directory came back, incomplete)
  70 a bug in tlbprobe (the message says where the traceback is)
  130 interrupted (Ctrl-C, SIGTERM); settings restored, the run kept as incomplete
"""


class Parser(argparse.ArgumentParser):
    """argparse, with what tlbprobe's commands need of it, for the top parser and every
    subparser (add_subparsers() makes them of this class):

    - no prefix matching (``allow_abbrev=False``): `model --cpu 4` was taken as
      `--cpus 4`, while `collect --cpu` is the driver's CPU (doc/cli.md);
    - a usage error is one line on stderr, exit 2, with where to look, like every other
      bad input (argparse prints the whole usage first).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        if not getattr(ns, "_prog", None):  # the innermost subcommand parsed first: it names itself
            ns._prog = self.prog
        return ns, extras

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an unknown option is blamed on the subcommand it was given to."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(ns, "_prog", None) or self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help)\n")
        return ns


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
