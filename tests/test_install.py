"""tlbprobe from a wheel, outside the checkout: its data files (model, job files, guest
config, our patch) must come with it (tlbprobe/datafiles.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_finds_its_data_files(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies come from the test's own environment, tlbprobe only from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    *wheels.glob("tlbprobe-*.whl")], check=True, capture_output=True)

    def tlbprobe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(env_dir / "bin" / "tlbprobe"), *args], cwd="/", capture_output=True, text=True)

    where = subprocess.run([str(py), "-c", "import tlbprobe, sys; print(tlbprobe.__file__)"], cwd="/",
                           capture_output=True, text=True).stdout
    assert str(REPO) not in where, where
    res = tlbprobe("model", "--workload", "collapse", "--size", "20G", "--cpus", "64")
    assert res.returncode == 0 and "645,120" in res.stdout.replace(" ", ""), res.stdout + res.stderr
    res = tlbprobe("report", str(REPO / "analysis" / "runs" / "host-collapse-256M"))
    assert res.returncode == 0 and "MATCHES" in res.stdout, res.stderr
    share = env_dir / "share" / "tlbprobe"
    assert (share / "kernels" / "config" / "tlbprobe-guest.config").is_file()
    assert list((share / "kernels" / "patches").glob("*.patch")) and (share / "workloads" / "collapse-20G.yaml").is_file()
    if not list(Path("/usr/src").glob("linux-source-*.tar.xz")):
        return
    res = tlbprobe("kernel", "build", "--variant", "patched", "--dry-run", "--format", "json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["fragments"] == [str(share / "kernels" / "config" / "tlbprobe-guest.config")]
    assert plan["patches"][0].startswith(str(share / "kernels" / "patches"))
    base = json.loads(tlbprobe("kernel", "build", "--dry-run", "--format", "json").stdout)
    if not base["cached"] or shutil.which("qemu-system-x86_64") is None:
        return  # the guest part needs the baseline kernel that repro (CI) builds first
    bz = Path(base["cache_entry"]) / "bzImage"
    res = tlbprobe("qemu", "collect", "--kernel", str(bz), "--smp", "2", "--memory", "2G", "--accel", "tcg",
                   "--out", str(tmp_path / "guest-run"), "--", "--size", "64M", "--repeat", "1", "--idle-seconds", "0")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((tmp_path / "guest-run" / "summary.json").read_text())
    assert summary["complete"] and summary["ops"] == 32
