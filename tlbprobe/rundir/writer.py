"""Writing a run directory as a run goes: files created once, CSVs appended, summary.json
and run.yaml replaced atomically. See doc/run-format.md; schema.py has what goes in them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import yaml

from ..errors import InputError
from .schema import FORMAT


def atomic_write(path: Path, text: str) -> None:
    """Replace a file so that a reader (or a crash) sees the old or the new text, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """Writer for one run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path) -> "RunDir":
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InputError(f"{path} already exists and is not empty; choose another --out")
        try:
            (path / "snapshots").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create run directory {path}: {e.strerror}") from None
        return cls(path)

    def write_yaml(self, name: str, data: Dict[str, Any]) -> None:
        atomic_write(self.path / name, yaml.safe_dump(data, sort_keys=False, default_flow_style=False))

    def write_json(self, name: str, data: Dict[str, Any]) -> None:
        atomic_write(self.path / name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def append_csv(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append rows (and the header on first use), flushed to disk before returning."""
        path = self.path / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(columns)
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def save_snapshot(self, name: str, text: str) -> None:
        (self.path / "snapshots" / name).write_text(text)

    def log(self, line: str) -> None:
        with open(self.path / "log.txt", "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def subdir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(exist_ok=True)
        return d

    def chown_to_invoker(self) -> Optional[str]:
        """Give the directory to the user who ran sudo, so they can read, move and delete it."""
        uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
        if os.geteuid() != 0 or not uid or not uid.isdigit():
            return None
        uid_i, gid_i = int(uid), int(gid) if gid and gid.isdigit() else -1
        for root, dirs, files in os.walk(self.path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid_i, gid_i, follow_symlinks=False)
        os.chown(self.path, uid_i, gid_i)
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


def list_rows(rows: List[Dict[str, Any]], columns: Sequence[str]) -> List[List[Any]]:
    return [[r.get(c, "") for c in columns] for r in rows]
