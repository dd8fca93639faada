"""Reading a file someone handed us: a regular file, of a bounded size, or one clear line.

`tlbprobe report`, `diff` and `model` read files they did not write a moment ago: run
directories copied between machines, a summary.json a script produced, a /proc/interrupts
copy, a job or parameter file. Any of them may be a symlink to /dev/zero, a FIFO nobody
writes to, or 300 MB of something else: read blindly, the first grows without end (the
report was once killed by the OOM killer after 82 s, with the machine under pressure), the
second blocks forever, the third loads silently. So every such read goes through here:

- the path is stat()ed first and must be a regular file (a symlink to one is fine): a
  FIFO, a socket, a device or a directory is refused without being opened;
- its size must be within the cap of its kind (``CAPS``, doc/run-format.md "Limits"),
  each generous for real runs: a 64-vCPU run of a 20 GiB collapse has a summary.json of a
  few hundred KiB and snapshots of tens of KiB;
- it is opened O_NONBLOCK (a file swapped for a FIFO between stat and open does not
  block) and checked again with fstat, and at most cap + 1 bytes are read, so memory
  stays bounded even for a file that grows while being read.

Every refusal is an InputError (exit 2) whose one line names the file, what it was
meant to be and what is wrong; a missing file is :class:`MissingFile`, a subclass, so a
reader of optional files can tell it apart.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Dict, Union

from .errors import InputError

KiB = 1 << 10
MiB = 1 << 20

#: The largest file of each kind tlbprobe reads, in bytes (doc/run-format.md "Reading
#: limits and damage"). A real run is far below each: the recorded 64-vCPU 12 GiB runs
#: (analysis/runs/tcg64-*) have a 9 KiB summary.json, a 4 KiB run.yaml, 20 KB snapshots
#: and CSVs under 200 KB. summary.json keeps CAL and TLB per CPU for every phase, about
#: 0.5 MiB per repeat at x86's largest NR_CPUS (8192), so its cap holds over a hundred
#: repeats of the largest machine; the raw records (interrupts.csv, ...) grow the same
#: way, but only their first rows are read (rundir/integrity.py), so their cap is high.
CAPS: Dict[str, int] = {
    "run.yaml": 16 * MiB,          # the job, host facts, a QEMU command line
    "summary.json": 64 * MiB,      # per repeat and phase, per CPU counts
    "csv": 512 * MiB,              # the CSVs the report loads whole: phases, timeseries, cost, victim
    "raw record": 64 << 30,        # interrupts.csv, vmstat.csv, attribution.csv: only the head is read
    "snapshot": 16 * MiB,          # a /proc/interrupts or /proc/vmstat copy (8192 CPUs: ~5 MiB)
    "latency": 128 * MiB,          # cyclictest's JSON or histogram of one phase, every CPU
    "model parameters": 4 * MiB,   # analysis/model.yaml is 20 KiB
    "job file": 1 * MiB,           # workloads/*.yaml are under 2 KiB
    "text": 16 * MiB,              # anything else a command reads whole (a series, a log)
}


class MissingFile(InputError):
    """The file does not exist (a dangling symlink included)."""


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def human(n: int) -> str:
    """A byte count as a person reads it: 300 MiB, 16 KiB, 12 bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} bytes"


def cap(kind: str) -> int:
    """The cap of a kind of file (``CAPS``); an unknown kind gets the "text" cap."""
    return CAPS.get(kind, CAPS["text"])


def check(path: Union[str, Path], what: str, limit: int) -> os.stat_result:
    """stat() ``path`` and refuse, in one InputError line, a file that is not regular or is
    larger than ``limit`` bytes; nothing is opened. ``what`` says what the file should be
    ("summary.json", "a /proc/interrupts copy")."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise MissingFile(f"{p}: no such file ({what})") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: {_kind_of(st.st_mode)}, not a regular file: refusing to read it as {what}")
    if st.st_size > limit:
        raise InputError(f"{p}: {human(st.st_size)}, larger than any {what} tlbprobe writes (limit "
                         f"{human(limit)}): refusing to read it")
    return st


def read_bytes(path: Union[str, Path], what: str, limit: int) -> bytes:
    """The file's bytes, after :func:`check`; at most ``limit`` bytes are ever read."""
    p = Path(path)
    check(p, what, limit)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingFile(f"{p}: no such file ({what})") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat() and open()
            raise InputError(f"{p}: {_kind_of(os.fstat(fd).st_mode)}, not a regular file: refusing to read it "
                             f"as {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return _read_bounded(f, p, what, limit)
    except OSError as e:
        raise InputError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _read_bounded(f: IO[bytes], p: Path, what: str, limit: int) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{p}: larger than any {what} tlbprobe writes (limit {human(limit)}; it grew while "
                         f"being read): refusing to read it")
    return data


def read_text(path: Union[str, Path], what: str, limit: int) -> str:
    """The file as UTF-8 text, after :func:`check`; binary data is one InputError line."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text file (binary data at byte {e.start}): not {what}") from None


def read_stream(stream: IO[str], source: str, what: str, limit: int) -> str:
    """At most ``limit`` characters of an open text stream (standard input), or one
    InputError line when there is more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{source}: more than {human(limit)}, larger than any {what}: refusing to read it")
    return data


def read_head(path: Union[str, Path], what: str, limit: int, head: int = 64 * KiB) -> str:
    """The first ``head`` bytes of a capped regular file, as text (a CSV's header and its
    first rows, for a check that need not load the whole file); a partial last line is
    dropped unless it is all there is."""
    p = Path(path)
    check(p, what, limit)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{p}: not a regular file: refusing to read it as {what}")
        data = os.read(fd, head)
    except OSError as e:
        raise InputError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) == head and b"\n" in data:
        data = data[: data.rindex(b"\n") + 1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not a text file (binary data at byte {e.start}): not {what}") from None
