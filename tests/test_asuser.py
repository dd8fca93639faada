"""Kernel builds under sudo run as the invoking user (SUDO_UID), in that user's cache.

The root test makes a throwaway user and a fake kernel tree whose Makefile records who
ran it: the real `tlbprobe kernel build`, started as root with SUDO_UID set, must run that
Makefile as the user, never as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tlbprobe.errors import InputError
from tlbprobe.kernel.asuser import InvokingUser, invoking_user, run_as
from tlbprobe.kernel.build import DEFAULT_FRAGMENT

ROOT = os.geteuid() == 0


@pytest.mark.skipif(not ROOT, reason="SUDO_UID is honoured only by root")
def test_invoking_user_from_the_environment():
    assert invoking_user({}) is None                      # root without sudo builds as root
    assert invoking_user({"SUDO_UID": "0"}) is None       # sudo from root
    nobody = pwd.getpwnam("nobody")
    u = invoking_user({"SUDO_UID": str(nobody.pw_uid)})
    assert u == InvokingUser(nobody.pw_uid, nobody.pw_gid, "nobody", Path(nobody.pw_dir))
    with pytest.raises(InputError, match="not a user id"):
        invoking_user({"SUDO_UID": "12x"})
    with pytest.raises(InputError, match="names no user"):
        invoking_user({"SUDO_UID": "3999999"})


@pytest.mark.skipif(not ROOT, reason="dropping privileges needs root")
def test_run_as_drops_to_the_user_and_maps_errors():
    nobody = invoking_user({"SUDO_UID": str(pwd.getpwnam("nobody").pw_uid)})
    assert nobody is not None
    got = run_as(nobody, lambda: {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
                                  "home": os.environ["HOME"]})
    assert got["uid"] == got["euid"] == nobody.uid
    assert 0 not in got["groups"]
    assert got["home"] == str(nobody.home)
    assert os.geteuid() == 0  # the parent is still root

    def fails():
        raise InputError("bad patch")
    with pytest.raises(InputError, match="bad patch"):
        run_as(nobody, fails)

    def denied():
        open("/etc/shadow").read()
    with pytest.raises(InputError, match="permission denied to user nobody"):
        run_as(nobody, denied)


@pytest.fixture
def build_user():
    """A throwaway user with a home directory of its own."""
    if not ROOT or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd")
    name = f"tlbprobe-t{os.getpid() % 100000}"
    home = Path(tempfile.mkdtemp(prefix="tlbprobe-home-"))
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", name], check=True)
    pw = pwd.getpwnam(name)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    try:
        yield pw
    finally:
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


def _user_can_read(pw, path: Path) -> bool:
    r = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                        "cat", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.mark.root
def test_kernel_build_under_sudo_runs_the_makefiles_as_the_user(build_user):
    tree = Path(tempfile.mkdtemp(prefix="tlbprobe-tree-"))
    try:
        (tree / "mm").mkdir()
        # a "kernel tree" whose Makefile records who ran it, then fails
        (tree / "Makefile").write_text("%:\n\t@id -u > $(HOME)/makefile-ran-as; echo no kernel here >&2; exit 1\n")
        for p in (tree, tree / "mm", tree / "Makefile"):  # the user's own tree, as with --source ~/linux
            os.chown(p, build_user.pw_uid, build_user.pw_gid)
        env = dict(os.environ, SUDO_UID=str(build_user.pw_uid), SUDO_GID=str(build_user.pw_gid))
        env.pop("TLBPROBE_CACHE", None)
        res = subprocess.run([sys.executable, "-m", "tlbprobe", "kernel", "build", "--source", str(tree)],
                             env=env, capture_output=True, text=True, timeout=120)
        home = Path(build_user.pw_dir)
        assert "Traceback" not in res.stderr
        assert not (Path.home() / "makefile-ran-as").exists()
        if _user_can_read(build_user, DEFAULT_FRAGMENT):
            assert res.returncode == 5, res.stderr                       # BuildError: configuring failed
            assert "configuring the kernel" in res.stderr and "no kernel here" in res.stderr
            assert (home / "makefile-ran-as").read_text().strip() == str(build_user.pw_uid)
            cache = home / ".cache" / "tlbprobe"
            assert cache.is_dir() and cache.stat().st_uid == build_user.pw_uid
        else:  # tlbprobe is installed where the user cannot read it: one clear line, nothing run
            assert res.returncode == 2, res.stderr
            assert f"permission denied to user {build_user.pw_name}" in res.stderr
            assert not (home / "makefile-ran-as").exists()
    finally:
        shutil.rmtree(tree, ignore_errors=True)
