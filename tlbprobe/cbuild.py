"""The two small C programs tlbprobe ships (the victim loop, the GUP-fast benchmark),
compiled at the start of a run with the system's C compiler.

Why C: their loops must be cheap and steady (a Python interpreter loop is neither), and
the GUP-fast calls must not pay a system call's worth of Python per pinned page. Why at
run time: the source is a few kilobytes of plain C, gcc is on every machine that builds
kernels (build-essential), and a binary built here matches this machine. Each build goes
into a private temporary directory (0700, an unpredictable name) that the caller removes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from .errors import PreflightError


class Program:
    """A compiled program and the directory that holds it; ``close()`` removes both."""

    def __init__(self, source: Path, flags: Sequence[str] = (), what: str = "") -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        what = what or source.stem
        if cc is None:
            raise PreflightError(f"{what} compiles {source.name} and needs a C compiler: apt-get install gcc")
        self.dir = tempfile.mkdtemp(prefix=f"tlbprobe-{source.stem}-")
        self.path = Path(self.dir) / source.stem
        res = subprocess.run([cc, "-O2", *flags, "-o", str(self.path), str(source)], capture_output=True, text=True)
        if res.returncode != 0:
            self.close()
            raise PreflightError(f"{what}: compiling {source} failed: {res.stderr.strip()[-300:]}")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
