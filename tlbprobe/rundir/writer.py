"""Writing a run directory as a run goes: files created once, CSVs appended, summary.json
and run.yaml replaced atomically. See doc/run-format.md; schema.py has what goes in them."""

from __future__ import annotations

import csv
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

import yaml

from ..errors import InputError
from .schema import FORMAT


#: Never follow a symlink where a run's file should be: root writes these files.
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def invoker_uid() -> int:
    """The user behind sudo (SUDO_UID), else whoever runs tlbprobe."""
    uid = os.environ.get("SUDO_UID", "")
    return int(uid) if uid.isdigit() else os.geteuid()


def check_parents(path: Path) -> None:
    """Refuse to create a run directory where another user could swap it for a symlink:
    every existing directory above it must belong to root or the invoking user and must
    not be writable by anyone else unless it has the sticky bit (/tmp), as ssh's
    StrictModes asks of a home directory."""
    trusted = {0, os.geteuid(), invoker_uid()}
    for d in [p for p in Path(os.path.abspath(path)).parents if p.exists()]:
        st = os.stat(d)
        sticky = bool(st.st_mode & stat.S_ISVTX)
        others_write = st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0)
        if (st.st_uid not in trusted or others_write) and not sticky:
            raise InputError(
                f"{d} is writable by users other than root and you (owner uid {st.st_uid}, mode "
                f"{st.st_mode & 0o7777:o}, no sticky bit): one of them could replace the run directory with a "
                f"symlink and make root write elsewhere; choose an --out under a directory only you can write")


def atomic_write(path: Path, text: str, dir_fd: Optional[int] = None) -> None:
    """Replace a file so that a reader (or a crash) sees the old or the new text, never half.

    The temporary file has an unpredictable name and is created exclusively (O_EXCL), and
    neither it nor the directory (``dir_fd``, when given) is reached through a symlink."""
    own = dir_fd is None
    if own:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        if own:
            os.close(dir_fd)


def create_empty_dir(path: Path) -> None:
    """Create an output directory and its parents. An existing one is accepted only when
    it is an empty directory (not a symlink) owned by root or the invoking user: a run
    (or a watch) never writes into what another left, nor follows a planted link."""
    check_parents(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"--out {path}: {path.parent} is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o755)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or any(path.iterdir()):
            raise InputError(f"--out {path}: exists and is not empty (or not a directory); choose another") from None
        if st.st_uid not in (0, os.geteuid(), invoker_uid()):
            raise InputError(f"--out {path}: belongs to uid {st.st_uid}, not to you or root; choose another") from None
    except OSError as e:
        raise InputError(f"--out {path}: cannot create it: {e.strerror}") from None


class RunDir:
    """Writer for one run directory. Every file is opened relative to the directory's own
    descriptor with O_NOFOLLOW (doc/security.md): once tlbprobe has created it, nothing
    another user does to the path can redirect root's writes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)

    @classmethod
    def create(cls, path: Path) -> "RunDir":
        """Create the run directory (its parents too); see :func:`create_empty_dir`."""
        path = Path(path)
        create_empty_dir(path)
        rd = cls(path)
        os.mkdir("snapshots", 0o755, dir_fd=rd.fd)
        return rd

    def _open(self, name: str, flags: int, dir_fd: Optional[int] = None) -> int:
        return os.open(name, flags | _NOFOLLOW, 0o644, dir_fd=self.fd if dir_fd is None else dir_fd)

    def write_yaml(self, name: str, data: Dict[str, Any]) -> None:
        atomic_write(self.path / name, yaml.safe_dump(data, sort_keys=False, default_flow_style=False), self.fd)

    def write_json(self, name: str, data: Dict[str, Any]) -> None:
        atomic_write(self.path / name, json.dumps(data, indent=2, sort_keys=False) + "\n", self.fd)

    def append_csv(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append rows (and the header on first use), flushed to disk before returning."""
        fd = self._open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a", newline="") as f:
            w = csv.writer(f)
            if os.fstat(f.fileno()).st_size == 0:
                w.writerow(columns)
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def save_snapshot(self, name: str, text: str) -> None:
        snaps = os.open("snapshots", os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=self.fd)
        try:
            with os.fdopen(self._open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, snaps), "w") as f:
                f.write(text)
        finally:
            os.close(snaps)

    def log(self, line: str) -> None:
        with os.fdopen(self._open("log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def subdir(self, name: str) -> Path:
        """A directory of the run for files other tools write by path (cyclictest)."""
        try:
            os.mkdir(name, 0o755, dir_fd=self.fd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                raise InputError(f"{self.path / name} is not a directory") from None
        return self.path / name

    def chown_to_invoker(self) -> Optional[str]:
        """Give the directory to the user who ran sudo, so they can read, move and delete it."""
        return chown_to_invoker(self.path)


def chown_to_invoker(path: Path) -> Optional[str]:
    """Give a directory tlbprobe wrote as root (a run, a watch) to the user who ran sudo;
    returns their uid, or None when there is no such user."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() != 0 or not uid or not uid.isdigit():
        return None
    uid_i, gid_i = int(uid), int(gid) if gid and gid.isdigit() else -1
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid_i, gid_i, follow_symlinks=False)
    os.chown(path, uid_i, gid_i)
    return uid


def read_summary(path: Path) -> Dict[str, Any]:
    """summary.json of a run directory, with one clear error for anything that is not one."""
    path = Path(path)
    f = path / "summary.json"
    if not path.is_dir():
        raise InputError(f"{path}: not a directory (expected a tlbprobe run directory)")
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        raise InputError(f"{f}: missing; {path} is not a tlbprobe run directory") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{f}: damaged ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{f}: not a {FORMAT} summary (format={data.get('format') if isinstance(data, dict) else None!r})")
    return data
