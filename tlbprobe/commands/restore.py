"""`tlbprobe restore`: undo the system changes of a run that was killed before it could."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import PreflightError
from ..measure.paths import DEFAULT_STATE_DIR


def register(sub) -> None:
    p = sub.add_parser(
        "restore", help="put back THP, nr_hugepages and tracing settings of a killed run or watch",
        description=__doc__ + "\n\nA run journals every change it makes in " + str(DEFAULT_STATE_DIR) +
        "/journal.json before making it, a watch in " + str(DEFAULT_STATE_DIR) + "/watch/journal.json. "
        "One that ends normally (or by Ctrl-C or SIGTERM) undoes its own changes; one killed with SIGKILL "
        "leaves its journal, and this command replays both.",
    )
    p.add_argument("--force", action="store_true", help="restore even if the run's process is still alive")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..measure.sysstate import restore_from_journal

    if os.geteuid() != 0:
        raise PreflightError("restore needs root: run it with sudo")
    watch_dir = args.state_dir / "watch"  # a watch's journal (tlbprobe/watch/watcher.py WATCH_STATE_DIR)
    n = 0
    if (watch_dir / "journal.json").exists():
        n += restore_from_journal(watch_dir, args.force)
    if n == 0 or (args.state_dir / "journal.json").exists():
        n += restore_from_journal(args.state_dir, args.force)
    if n:
        print(f"restored {n} setting(s)")
    return 0
