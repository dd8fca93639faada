"""Kernel builds under sudo run as the user who ran sudo, in that user's cache.

A build runs the kernel tree's Makefiles and scripts with the user's patches applied, and
`--commits` runs git in the user's own work tree: both are code the user controls, so
neither may run as root. `tlbprobe kernel build` and `tlbprobe repro` need root only to
boot guests (and a host collect to change kernel knobs), so under sudo the build step
forks a child that drops to SUDO_UID/SUDO_GID and that user's groups, with HOME set to
the user's home (the cache is then ~user/.cache/tlbprobe, owned by the user), and runs
the build there. Started as root without sudo (a root login, CI), the build runs as root,
as before: root is then the invoking user.

The child answers over a pipe in JSON, never pickle: once it has dropped privileges the
user can ptrace it, so what it sends is untrusted input to the root parent. The parent
checks that the bzImage it names is a regular file owned by that user before anything
boots it.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import InputError, InternalError, TlbprobeError
from .build import BuildError, BuiltKernel, KernelSpec, build_kernel, cache_root, plan_build
from . import series

#: Exit codes the child may report, mapped back to tlbprobe's error classes.
_ERRORS = {cls.exit_code: cls for cls in (InputError, BuildError, TlbprobeError)}


@dataclass(frozen=True)
class InvokingUser:
    """The user behind sudo (from SUDO_UID/SUDO_GID, as sudo sets them)."""

    uid: int
    gid: int
    name: str
    home: Path


def invoking_user(environ: Optional[Mapping[str, str]] = None) -> Optional[InvokingUser]:
    """The user a build must run as, or None when it runs as the current user: not root,
    or root without sudo (SUDO_UID absent or 0)."""
    env = os.environ if environ is None else environ
    if os.geteuid() != 0:
        return None
    raw = env.get("SUDO_UID", "").strip()
    if not raw or raw == "0":
        return None
    if not raw.isdigit():
        raise InputError(f"SUDO_UID={raw!r} is not a user id: run tlbprobe through sudo, or as root without it")
    uid = int(raw)
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise InputError(f"SUDO_UID={uid} names no user in the password database: builds under sudo run as "
                         f"that user; unset SUDO_UID to build as root") from None
    gid_raw = env.get("SUDO_GID", "").strip()
    gid = int(gid_raw) if gid_raw.isdigit() else pw.pw_gid
    return InvokingUser(uid, gid, pw.pw_name, Path(pw.pw_dir))


def _drop_to(user: InvokingUser) -> None:
    """In the child: become the user for good (groups, gid, then uid) and take their HOME."""
    os.setgroups(os.getgrouplist(user.name, user.gid))
    os.setgid(user.gid)
    os.setuid(user.uid)
    if os.getuid() != user.uid or os.geteuid() != user.uid:
        raise InternalError("could not drop root privileges for the kernel build")
    os.environ.update(HOME=str(user.home), USER=user.name, LOGNAME=user.name)
    try:
        os.chdir(user.home)
    except OSError:
        os.chdir("/")


def _child_error(exc: BaseException, user: InvokingUser) -> Dict[str, Any]:
    if isinstance(exc, TlbprobeError):
        return {"error": str(exc), "exit_code": exc.exit_code}
    if isinstance(exc, PermissionError):
        return {"error": f"{exc.filename or 'a file'}: permission denied to user {user.name}. Under sudo, kernel "
                         f"builds run as the user who ran sudo ({user.name}, SUDO_UID {user.uid}), in "
                         f"{user.home}/.cache/tlbprobe or $TLBPROBE_CACHE: install tlbprobe and keep sources, "
                         f"patches and the cache where {user.name} can read and write them",
                "exit_code": InputError.exit_code}
    return {"error": f"kernel build as {user.name} failed: {type(exc).__name__}: {exc}",
            "exit_code": InternalError.exit_code, "traceback": traceback.format_exc()}


def run_as(user: InvokingUser, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run ``fn`` in a child process that is ``user``, and return the JSON-able dict it
    returns. Its errors come back as tlbprobe's error classes (one line), a bug in it as
    InternalError. Ctrl-C reaches both (one process group): the parent waits for the
    child to undo what it applied (build_kernel reverses patches in a finally) before
    it lets the interrupt go on."""
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(rfd)
        code = 0
        try:
            _drop_to(user)
            try:
                answer: Dict[str, Any] = {"ok": fn()}
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
                answer = _child_error(e, user)
                code = 1
            with os.fdopen(wfd, "w") as w:
                json.dump(answer, w)
        except BaseException:  # noqa: BLE001 - a child must not fall back into the parent's code
            code = 70
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as r:
        try:
            data = r.read()
        except KeyboardInterrupt:
            os.waitpid(pid, 0)
            raise
    try:
        _, status = os.waitpid(pid, 0)
    except KeyboardInterrupt:
        os.waitpid(pid, 0)
        raise
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if "ok" in answer and os.waitstatus_to_exitcode(status) == 0:
        return answer["ok"]
    if "error" in answer:
        cls = _ERRORS.get(answer.get("exit_code"), InternalError)
        raise cls(str(answer["error"]))
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 2:
        raise KeyboardInterrupt
    raise InternalError(f"the kernel build as {user.name} ended without an answer "
                        f"(wait status {status}); see the messages above")


def _checked_kernel(d: Dict[str, Any], user: InvokingUser) -> BuiltKernel:
    """A BuiltKernel from the child's answer, its bzImage a regular file of that user."""
    try:
        k = BuiltKernel(str(d["key"]), Path(d["bzimage"]), Path(d["log"]), str(d["release"]), bool(d["cached"]),
                        float(d["seconds"]))
    except (KeyError, TypeError, ValueError):
        raise InternalError("the kernel build as the invoking user answered something malformed") from None
    st = os.lstat(k.bzimage)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != user.uid:
        raise InputError(f"{k.bzimage}: not a regular file owned by {user.name}: refusing to boot it")
    return k


def _absolute(spec: KernelSpec) -> KernelSpec:
    """The spec with absolute paths: the child works from the user's home directory."""
    return replace(spec, source=spec.source.absolute() if spec.source else None,
                   fragments=[f.absolute() for f in spec.fragments], patches=[p.absolute() for p in spec.patches])


def build(spec: KernelSpec, log: Callable[[str], None] = print, status: Callable[[str], None] = lambda s: None,
          force: bool = False, user: Optional[InvokingUser] = None) -> BuiltKernel:
    """build_kernel() as the invoking user (see the module's docstring); as the current
    user when there is none."""
    user = user if user is not None else invoking_user()
    if user is None:
        return build_kernel(spec, log=log, status=status, force=force)
    log(f"building as {user.name} (SUDO_UID {user.uid}): the build runs the tree's Makefiles")
    spec = _absolute(spec)

    def child() -> Dict[str, Any]:
        k = build_kernel(spec, log=log, status=status, force=force)
        return {"key": k.key, "bzimage": str(k.bzimage), "log": str(k.log), "release": k.release,
                "cached": k.cached, "seconds": k.seconds}

    return _checked_kernel(run_as(user, child), user)


def plan(spec: KernelSpec, user: Optional[InvokingUser] = None) -> Dict[str, Any]:
    """What `kernel build --dry-run` prints, worked out as the user who would build."""
    user = user if user is not None else invoking_user()
    spec = _absolute(spec)

    def child() -> Dict[str, Any]:
        p = plan_build(spec)
        return {"source": str(p.tarball or p.tree), "base": p.spec.base,
                "fragments": [str(f) for f in p.spec.fragments],
                "patches": [str(x) for x in p.spec.patches], "key": p.key, "cache_entry": str(p.entry),
                "cached": p.cached, "build_user": user.name if user else pwd.getpwuid(os.getuid()).pw_name}

    return child() if user is None else run_as(user, child)


def commits(source: Path, commit_range: str, user: Optional[InvokingUser] = None) -> Tuple[Path, list]:
    """series.from_commits() as the invoking user: git runs in their tree, whose config
    and hooks are theirs."""
    user = user if user is not None else invoking_user()
    source = source.absolute()
    if user is None:
        return series.from_commits(source, commit_range, cache_root())

    def child() -> Dict[str, Any]:
        src, patches = series.from_commits(source, commit_range, cache_root())
        return {"source": str(src), "patches": [str(p) for p in patches]}

    d = run_as(user, child)
    return Path(d["source"]), [Path(p) for p in d["patches"]]
