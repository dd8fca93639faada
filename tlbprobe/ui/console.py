"""The console: log lines for a person (also kept in a run's log.txt) and a transient
status line on a terminal. Used by collect, the kernel builder and the QEMU runner, so it
depends on none of them."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional


class Console:
    """Progress for a person: log lines (also kept in log.txt) and a transient status line."""

    def __init__(self, stream=None, quiet: bool = False):
        # sys.stderr looked up now, not at import: tests replace (and close) it between calls.
        stream = sys.stderr if stream is None else stream
        self.stream = stream
        self.quiet = quiet
        # A status line needs a terminal that understands "\r" + erase-line (a guest's serial
        # console runs with TERM=dumb, and its log should stay readable).
        self.tty = hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"
        #: where log lines are kept besides the screen (a run's log.txt), once there is one
        self.keep: Optional[Callable[[str], None]] = None
        self._status = False

    def log(self, line: str) -> None:
        """Keep the line in log.txt, then show it. A terminal that went away (ssh dropped,
        stderr closed) must not turn a clean shutdown into a failure: screen errors are
        ignored, the file is what counts."""
        stamp = time.strftime("%H:%M:%S")
        if self.keep:
            self.keep(f"[{stamp}] {line}")
        if self.quiet:
            return
        try:
            self._clear()
            print(f"[{stamp}] {line}", file=self.stream, flush=True)
        except (OSError, ValueError):
            self.quiet = True

    def status(self, line: str) -> None:
        if self.tty and not self.quiet:
            try:
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
                self._status = True
            except (OSError, ValueError):
                self.quiet = True

    def _clear(self) -> None:
        if self._status:
            self.stream.write("\r\033[K")
            self._status = False


def terminal_status() -> Callable[[str], None]:
    """A status-line writer for a terminal; silent when stderr is not one."""
    console = Console()
    return lambda line: console.status(line[:150])
