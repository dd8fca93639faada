"""Change kernel knobs for a run and put every one of them back, even after SIGKILL.

Every change goes through a SystemState: it appends an entry to an on-disk journal
*before* touching the system (so a kill between the two leaves at worst a harmless
no-op to undo), applies the change, and undoes all changes in reverse order when the
run ends, whatever the exit path. A run killed with SIGKILL leaves the journal behind;
`tlbprobe restore` replays it.

The journal lives in /run/tlbprobe (a tmpfs): after a reboot the kernel's knobs are back
at their defaults and the journal is gone with them, which is exactly right.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from ..errors import PreflightError, TlbprobeError
from .host import sysfs_choice
from .paths import DEFAULT_STATE_DIR

#: Signals that end a run cleanly (their handlers raise Interrupted so `finally` runs).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(TlbprobeError):
    """The run was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP)."""

    exit_code = 130


@dataclass
class Change:
    """One journal entry. ``kind``: write (file value), mkdir (remove on undo), mount (umount
    on undo), kprobe (``path`` the tracefs kprobe_events file, ``new`` the "group/event" to
    remove on undo)."""

    kind: str
    path: str
    old: Optional[str] = None
    new: Optional[str] = None

    def undo(self) -> None:
        if self.kind == "write":
            write_knob(self.path, self.old or "")
        elif self.kind == "mkdir":
            if os.path.isdir(self.path):
                os.rmdir(self.path)
        elif self.kind == "mount":
            if os.path.ismount(self.path):
                subprocess.run(["umount", self.path], check=True, capture_output=True)
        elif self.kind == "kprobe":
            remove_kprobe(Path(self.path), self.new or "")
        else:
            raise ValueError(f"unknown journal entry kind {self.kind!r}")


@dataclass(frozen=True)
class AllowList:
    """The paths `tlbprobe restore` may touch: the knobs tlbprobe itself changes, nothing
    else. The journal is a file; whoever could write it could otherwise make root write,
    remove or unmount anything (doc/security.md). Roots are fields so tests can point them
    at a stand-in tree."""

    thp: str = "/sys/kernel/mm/transparent_hugepage"
    vm: str = "/proc/sys/vm"
    tracefs: Tuple[str, ...] = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    mounts: Tuple[str, ...] = ("/sys/kernel/tracing", "/sys/kernel/debug")

    def permits(self, c: "Change") -> bool:
        path = c.path
        if not isinstance(path, str) or os.path.normpath(path) != path or not path.startswith("/"):
            return False  # no relative paths, no '..', no doubled slashes
        if c.kind == "write":
            thp = re.escape(self.thp)
            return bool(re.fullmatch(thp + r"/(enabled|defrag|khugepaged/[a-z_]+|hugepages-\d+kB/enabled)", path)
                        or path in (f"{self.vm}/nr_hugepages", f"{self.vm}/nr_overcommit_hugepages")
                        or any(re.fullmatch(re.escape(t) + r"/instances/tlbprobe-\d+/(per_cpu/cpu\d+/)?buffer_size_kb",
                                            path) for t in self.tracefs))
        if c.kind == "mkdir":
            # tlbprobe-<pid>: a collect's instance; tlbprobe-watch-<pid>: a watch's
            return any(re.fullmatch(re.escape(t) + r"/instances/tlbprobe-(watch-)?\d+", path) for t in self.tracefs)
        if c.kind == "mount":
            return path in self.mounts
        if c.kind == "kprobe":
            return (any(path == f"{t}/kprobe_events" for t in self.tracefs)
                    and bool(re.fullmatch(r"tlbprobe_\d+/\w+", c.new or "")))
        return False


def check_state_dir(state_dir: Path) -> None:
    """Refuse a journal directory another user owns or can write (like ssh's StrictModes):
    what is in it decides what root writes on restore."""
    try:
        st = os.stat(state_dir)
    except FileNotFoundError:
        return
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        raise PreflightError(f"{state_dir}: owned by uid {st.st_uid} with mode {st.st_mode & 0o777:o}: another user "
                             f"could plant a journal there; it must be root's and not group- or world-writable "
                             f"(chown root {state_dir} && chmod 700 {state_dir})")


def append_line(path: Path, line: str) -> None:
    """Append to a tracefs command file such as kprobe_events (O_APPEND: without it the
    write replaces every probe). Not open(path, "a"): Python then seeks to the end, which
    kprobe_events refuses with EINVAL."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def remove_kprobe(events_file: Path, name: str) -> None:
    """Disable the kprobe event ``group/event`` wherever it is enabled (a run killed with
    SIGKILL leaves it enabled in its instance, and an enabled probe cannot be removed),
    then remove it. A probe that is gone already is fine."""
    root = events_file.parent
    for enable in [root / "events" / name / "enable", *root.glob(f"instances/*/events/{name}/enable")]:
        try:
            enable.write_text("0")
        except OSError:
            pass
    try:
        append_line(events_file, f"-:{name}")
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL) or (root / "events" / name).exists():
            raise


def read_knob(path: str) -> str:
    """A knob's current value; for choice files ('always [madvise] never') the selected one."""
    return sysfs_choice(Path(path).read_text())


def write_knob(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def process_start(pid: int) -> Optional[int]:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int, start: Optional[int] = None) -> bool:
    """Whether the process that wrote a journal still runs: same PID *and* same start time,
    so a PID reused after a SIGKILL is not mistaken for the run."""
    now = process_start(pid) if pid > 0 else None
    return now is not None and (start is None or now == start)


class SystemState:
    """The journal of one run. Use as a context manager: changes are undone on exit."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, log: Callable[[str], None] = lambda s: None):
        self.state_dir = Path(state_dir)
        self.journal = self.state_dir / "journal.json"
        self.changes: List[Change] = []
        self.log = log

    # -- journal file -------------------------------------------------------------------
    def _save(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_state_dir(self.state_dir)
        tmp = self.journal.with_suffix(".tmp")
        data = {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "started": time.time(),
                "changes": [c.__dict__ for c in self.changes]}
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.journal)

    def __enter__(self) -> "SystemState":
        # The journal is written with the first change, not here: a Ctrl-C between this
        # method and the caller's with-block would otherwise leave an empty journal that
        # blocks every later run until `tlbprobe restore`.
        check_journal(self.state_dir)
        return self

    def __exit__(self, *exc) -> None:
        with signals_blocked():
            self.restore()

    # -- changes ------------------------------------------------------------------------
    def set_knob(self, path: str, value: str) -> None:
        """Write a sysfs/procfs knob, remembering its old value."""
        old = read_knob(path)
        if old == value:
            return
        self.changes.append(Change("write", path, old, value))
        self._save()
        self.log(f"set {path} = {value} (was {old})")
        write_knob(path, value)

    def mkdir(self, path: str) -> None:
        """Create a directory that the restore removes; one that exists is not ours to remove."""
        if os.path.exists(path):
            raise PreflightError(f"{path} exists already; remove it if no tlbprobe run is using it")
        self.changes.append(Change("mkdir", path))
        self._save()
        os.mkdir(path)

    def mount(self, fstype: str, path: str) -> None:
        self.changes.append(Change("mount", path))
        self._save()
        res = subprocess.run(["mount", "-t", fstype, "nodev", path], capture_output=True, text=True)
        if res.returncode != 0:
            self.changes.pop()
            self._save()
            raise PreflightError(f"cannot mount {fstype} at {path}: {res.stderr.strip()}")

    def add_kprobe(self, events_file: Path, group: str, function: str, ret: bool = False) -> str:
        """Place a kprobe event ``group/function`` on a kernel function, or with ``ret`` a
        return probe ``group/function__ret`` (removed on restore); returns the event name."""
        name = f"{group}/{function}{'__ret' if ret else ''}"
        self.changes.append(Change("kprobe", str(events_file), None, name))
        self._save()
        try:
            append_line(events_file, f"{'r' if ret else 'p'}:{name} {function}")
        except OSError as e:
            self.changes.pop()
            self._save()
            raise PreflightError(f"cannot place a kprobe on {function}: {e.strerror}") from None
        return name

    def restore(self) -> List[str]:
        """Undo every change, newest first; returns the problems (empty when all went back).

        Changes that could not be undone stay in the journal for `tlbprobe restore`.
        """
        failed, problems = undo_changes(self.changes, self.log)
        self.changes = failed
        if failed:
            self._save()
            for p in problems:
                self.log(f"warning: {p}; `tlbprobe restore` will retry")
        else:
            self.journal.unlink(missing_ok=True)
        return problems


def undo_changes(changes: List[Change], log: Callable[[str], None]) -> Tuple[List[Change], List[str]]:
    """Undo changes newest first; returns (changes that failed, oldest first; messages)."""
    failed: List[Change] = []
    problems: List[str] = []
    for change in reversed(changes):
        try:
            change.undo()
        except (OSError, subprocess.CalledProcessError) as e:
            failed.insert(0, change)
            detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) and e.stderr else e
            problems.append(f"could not undo {change.kind} {change.path}: {detail}")
            continue
        try:
            detail = {"write": f" = {change.old}", "kprobe": f" {change.new}"}.get(change.kind, "")
            log(f"restored {change.kind} {change.path}{detail}")
        except (OSError, ValueError):
            pass  # the change is undone; only telling about it failed
    return failed, problems


def check_journal(state_dir: Path) -> None:
    """Refuse to start while another run's changes are live or were never undone."""
    check_state_dir(Path(state_dir))
    journal = Path(state_dir) / "journal.json"
    existing = load_journal(journal)
    if existing is None:
        return
    pid = existing.get("pid", 0)
    if pid_alive(pid, existing.get("pid_start")):
        raise PreflightError(f"another tlbprobe run (pid {pid}) is changing system settings; wait for it to end")
    raise PreflightError(
        f"a previous run (pid {pid}) was killed before it restored system settings "
        f"({len(existing.get('changes', []))} change(s) in {journal}); run `tlbprobe restore` first")


def load_journal(path: Path) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise TlbprobeError(f"{path}: unreadable state journal ({e}); inspect it and delete it by hand") from None


def restore_from_journal(state_dir: Path = DEFAULT_STATE_DIR, force: bool = False,
                         log: Callable[[str], None] = print, allow: AllowList = AllowList()) -> int:
    """What `tlbprobe restore` does. Returns the number of changes undone.

    Only entries the AllowList permits are undone; any other is reported as refused and
    left untouched, and the journal is then kept as journal.refused.json for a person to
    read (it no longer blocks new runs)."""
    check_state_dir(Path(state_dir))
    journal = Path(state_dir) / "journal.json"
    data = load_journal(journal)
    if data is None:
        log(f"nothing to restore: no journal at {journal}")
        return 0
    pid = data.get("pid", 0)
    if pid_alive(pid, data.get("pid_start")) and pid != os.getpid() and not force:
        raise TlbprobeError(f"tlbprobe run pid {pid} is still running and will restore its own settings "
                            "(stop it with Ctrl-C or kill it; --force to restore anyway)")
    changes, refused = [], []
    for entry in data.get("changes", []):
        try:
            change = Change(**entry)
        except TypeError:
            refused.append(f"a malformed entry {entry!r}")
            continue
        (changes if allow.permits(change) else refused).append(
            change if allow.permits(change) else f"{change.kind} {change.path!r}")
    failed, problems = undo_changes(changes, log)
    if failed:
        data["changes"] = [c.__dict__ for c in failed]
        journal.write_text(json.dumps(data, indent=1))
        raise TlbprobeError("; ".join(problems) + f" (journal kept at {journal})")
    if refused:
        kept = journal.with_name("journal.refused.json")
        os.replace(journal, kept)
        raise TlbprobeError(f"refused {len(refused)} journal entr{'y' if len(refused) == 1 else 'ies'} that "
                            f"tlbprobe does not make, left untouched: {'; '.join(refused)} "
                            f"({len(changes)} other change(s) undone; the journal is kept as {kept})")
    journal.unlink(missing_ok=True)
    return len(changes)


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold off Ctrl-C and friends while restoring, so a second Ctrl-C cannot cut it short."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into Interrupted (Ctrl-C already raises KeyboardInterrupt)."""

    def handler(signum, frame):
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
