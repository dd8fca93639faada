"""The watch directory: what a watch leaves on disk, bounded however long it runs.

Layout (doc/watch.md "The watch directory"):

* ``watch.yaml``      written once at start: format, host facts, options, route
* ``records.jsonl``   one JSON object per interval, appended and flushed each interval
* ``records-<first>-<last>.jsonl.gz``  rotated segments: when records.jsonl reaches a
  segment's size (--max-disk / 16, at least 256 KiB) it is compressed under the numbers
  of its first and last interval and a new one begins
* ``compacted.jsonl`` what is left of the oldest segments once the directory would pass
  --max-disk: one line per hour (per day, once the hours alone pass half the bound) with
  the sums of that hour's intervals and its peak interval, so rates by origin survive
  however old the data; the per-interval detail of those hours is gone
* ``summary.json``    rewritten atomically each interval: totals, ``complete: false``
  while running; ``complete: true`` only after a clean end (SIGTERM, SIGINT, --duration).
  A watch killed with SIGKILL keeps its last summary, marked incomplete
* ``log.txt``         what the watch said, rotated once at 1 MiB (log.txt.1)

Every file is opened below the directory's own descriptor with O_NOFOLLOW, as
rundir/writer.py does for run directories (doc/security.md): root writes them.
SIGHUP reopens records.jsonl and log.txt (logrotate's create or move).
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from ..errors import InputError
from ..rundir.writer import _NOFOLLOW, atomic_write, create_empty_dir
from .origins import MADV_COLLAPSE

FORMAT = "tlbprobe-watch/1"
RECORDS = "records.jsonl"
COMPACTED = "compacted.jsonl"
LOG = "log.txt"
LOG_MAX = 1 << 20
MIN_SEGMENT = 256 << 10


class WatchDir:
    """Writer of one watch directory."""

    def __init__(self, path: Path, max_disk: int, segment_bytes: Optional[int] = None):
        self.path = Path(path)
        self.max_disk = max_disk
        #: a test gives a small one; a watch takes max_disk / 16, at least MIN_SEGMENT
        self.segment_bytes = segment_bytes or max(MIN_SEGMENT, max_disk // 16)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        self._records: Optional[int] = None
        self._log: Optional[int] = None
        self._first_seq: Optional[int] = None
        self._last_seq: Optional[int] = None
        self.rotations = 0
        self.compactions = 0

    @classmethod
    def create(cls, path: Path, max_disk: int, segment_bytes: Optional[int] = None) -> "WatchDir":
        """Create the directory; an existing one must be empty, a directory, and ours."""
        path = Path(path)
        create_empty_dir(path)
        try:
            wd = cls(path, max_disk, segment_bytes)
            wd._open_files()
        except OSError as e:
            raise InputError(f"--out {path}: cannot write there: {e.strerror}") from None
        return wd

    # -- files ------------------------------------------------------------------------------
    def _openat(self, name: str, flags: int) -> int:
        return os.open(name, flags | _NOFOLLOW, 0o644, dir_fd=self.fd)

    def _open_files(self) -> None:
        self._records = self._openat(RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._log = self._openat(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def reopen(self) -> None:
        """SIGHUP: close and reopen records.jsonl and log.txt by name (a logrotate that
        moved them away gets new files; one that copied and truncated them loses nothing)."""
        for fd in (self._records, self._log):
            if fd is not None:
                os.close(fd)
        self._records = self._log = None
        self._open_files()

    def write_yaml(self, name: str, data: Dict[str, Any]) -> None:
        atomic_write(self.path / name, yaml.safe_dump(data, sort_keys=False, default_flow_style=False), self.fd)

    def write_summary(self, data: Dict[str, Any]) -> None:
        atomic_write(self.path / "summary.json", json.dumps(data, indent=2) + "\n", self.fd)

    def log(self, line: str) -> None:
        if self._log is None:
            return
        try:
            os.write(self._log, (line.rstrip("\n") + "\n").encode())
            if os.fstat(self._log).st_size > LOG_MAX:
                os.close(self._log)
                self._log = None
                os.replace(LOG, LOG + ".1", src_dir_fd=self.fd, dst_dir_fd=self.fd)
                self._log = self._openat(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError:
            pass  # a log line must never end a watch; the records are what counts

    # -- records ------------------------------------------------------------------------------
    def append(self, record: Dict[str, Any]) -> None:
        """One interval, written whole with one write() and flushed to disk."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        assert self._records is not None
        os.write(self._records, line)
        os.fsync(self._records)
        seq = record.get("seq")
        if self._first_seq is None:
            self._first_seq = seq
        self._last_seq = seq
        if os.fstat(self._records).st_size >= self.segment_bytes:
            self.rotate()
            self.bound()  # only a rotation adds to what is kept: the live file is within a segment

    def rotate(self) -> None:
        """Compress records.jsonl into records-<first>-<last>.jsonl.gz, start a new one."""
        assert self._records is not None
        os.close(self._records)
        self._records = None
        name = f"records-{self._first_seq or 0:08d}-{self._last_seq or 0:08d}.jsonl.gz"
        src = self._openat(RECORDS, os.O_RDONLY)
        tmp = f".{name}.tmp"
        dst = self._openat(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(src, "rb") as fin, os.fdopen(dst, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                while True:
                    chunk = fin.read(1 << 16)
                    if not chunk:
                        break
                    gz.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        os.unlink(RECORDS, dir_fd=self.fd)
        self._records = self._openat(RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._first_seq = self._last_seq = None
        self.rotations += 1

    def segments(self) -> List[str]:
        """The rotated segments, oldest first."""
        return sorted(n for n in os.listdir(self.fd) if n.startswith("records-") and n.endswith(".jsonl.gz"))

    def disk_bytes(self) -> int:
        total = 0
        for name in os.listdir(self.fd):
            try:
                total += os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size
            except OSError:
                continue
        return total

    def bound(self) -> None:
        """Compact the oldest segments until the directory, with room for the next
        segment, is within --max-disk; once the hourly lines alone take half the bound,
        merge them into days."""
        while self.disk_bytes() + self.segment_bytes > self.max_disk:
            segs = self.segments()
            if segs:
                self._compact_segment(segs[0])
            elif not self._compact_days():
                break  # nothing left to compact
        if self._size(COMPACTED) > self.max_disk // 2:
            self._compact_days()

    def _size(self, name: str) -> int:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size
        except OSError:
            return 0

    def _compact_segment(self, name: str) -> None:
        hours: Dict[int, Dict[str, Any]] = {}
        with os.fdopen(self._openat(name, os.O_RDONLY), "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
            for line in gz:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                hour = int(rec.get("start", 0) // 3600 * 3600)
                merge(hours.setdefault(hour, empty_bucket(hour, 3600)), rec)
        self._append_compacted([hours[h] for h in sorted(hours)])
        os.unlink(name, dir_fd=self.fd)
        self.compactions += 1

    def _append_compacted(self, buckets: List[Dict[str, Any]]) -> None:
        fd = self._openat(COMPACTED, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, "".join(json.dumps(b, separators=(",", ":")) + "\n" for b in buckets).encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _compact_days(self) -> bool:
        """Merge compacted.jsonl's hours into days; False when it has nothing to merge."""
        try:
            with os.fdopen(self._openat(COMPACTED, os.O_RDONLY), "r") as f:
                buckets = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return False
        if not any(b.get("span_s") == 3600 for b in buckets):
            return False
        days: Dict[int, Dict[str, Any]] = {}
        for b in buckets:
            day = int(b["start"] // 86400 * 86400)
            merge_bucket(days.setdefault(day, empty_bucket(day, 86400)), b)
        atomic_write(self.path / COMPACTED, "".join(json.dumps(days[d], separators=(",", ":")) + "\n"
                                                    for d in sorted(days)), self.fd)
        self.compactions += 1
        return True

    def close(self) -> None:
        for fd in (self._records, self._log):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._records = self._log = None
        os.close(self.fd)


def empty_bucket(start: int, span: int) -> Dict[str, Any]:
    return {"bucket": True, "start": start, "span_s": span, "intervals": 0, "seconds": 0.0, "broadcasts": 0,
            "ipis": 0, "by_origin": {}, "madv_collapse_by_process": {}, "own": 0, "cal": 0, "cal_less_own": 0,
            "tlb": 0, "peak": {"seq": None, "start": None, "broadcasts": 0}}


def merge(bucket: Dict[str, Any], rec: Dict[str, Any]) -> None:
    """Add one interval record to an hour's bucket."""
    bucket["intervals"] += 1
    bucket["seconds"] = round(bucket["seconds"] + float(rec.get("duration_s") or 0), 3)
    n = rec.get("broadcasts") or 0
    bucket["broadcasts"] += n
    bucket["ipis"] += rec.get("ipis") or 0
    bucket["by_origin"] = add_counts(bucket["by_origin"], rec.get("by_origin") or {})
    procs: Counter = Counter(bucket["madv_collapse_by_process"])
    for p in rec.get("processes") or []:
        if p.get("origin") == MADV_COLLAPSE:
            procs[p.get("comm", "")] += p.get("count", 0)
    bucket["madv_collapse_by_process"] = dict(procs)
    for key in ("own", "cal", "cal_less_own", "tlb"):
        bucket[key] += sum((rec.get(key) or {}).values())
    if n > bucket["peak"]["broadcasts"]:
        bucket["peak"] = {"seq": rec.get("seq"), "start": rec.get("start"), "broadcasts": n}


def merge_bucket(into: Dict[str, Any], b: Dict[str, Any]) -> None:
    """Add an hour's bucket to a day's."""
    for key in ("intervals", "broadcasts", "ipis", "own", "cal", "cal_less_own", "tlb"):
        into[key] += b.get(key, 0)
    into["seconds"] = round(into["seconds"] + b.get("seconds", 0.0), 3)
    for key in ("by_origin", "madv_collapse_by_process"):
        into[key] = add_counts(into[key], b.get(key) or {})
    if b["peak"]["broadcasts"] > into["peak"]["broadcasts"]:
        into["peak"] = dict(b["peak"])


def add_counts(a: Dict[str, int], b: Dict[str, int]) -> Dict[str, int]:
    """Sum two count maps key by key, keeping zeros and negatives (Counter's + drops them)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def now_iso(t: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() if t is None else t))
