"""Collect inside a guest: run `tlbprobe collect` jobs in one boot, bring the run
directories back, and record the guest's side of the story in each run.yaml (``qemu``)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import yaml

from ..errors import TlbprobeError
from ..rundir import RunDir, atomic_write, read_summary
from ..report.summary_text import render_summary
from .guest import GUEST_OUT, GuestResult, GuestSpec, check_spec, guest_python, run_guest


@dataclass(frozen=True)
class GuestOrigin:
    """Which tlbprobe command started a guest, as the run should say it: ``repro`` (the
    A/B, a sweep) or ``qemu collect``, and its words (``tlbprobe repro --smp 64 ...``).
    The run's own run.yaml ``command`` is the collect the guest ran; a reviewer
    reproduces the run with this one (report/provenance.py)."""

    command: str
    argv: List[str] = field(default_factory=list)


def host_record() -> dict:
    """The machine QEMU runs on: its name, its CPUs (os.cpu_count(): what the vCPUs
    share; under single-threaded TCG one host thread runs them all) and its CPU model."""
    from ..measure.host import read_cpuinfo

    try:
        model = read_cpuinfo()[0]
    except OSError:
        model = None
    return {"hostname": socket.gethostname() or None, "cpus": os.cpu_count(),
            "cpu_model": model if model and model != "unknown" else None}


def _record_guest(run: Path, spec: GuestSpec, result: GuestResult, origin: Optional[GuestOrigin] = None,
                  host: Optional[dict] = None) -> None:
    """Add the QEMU facts to run.yaml and keep the console log beside the run: how the
    guest ran (accelerator, vCPUs, TCG threading), on which host (``host``: its cores),
    started by which command (``started_by``), with which kernel build (``kernel_build``:
    the kernel cache's meta.json, its patch series with their subjects). doc/run-format.md."""
    from ..kernel.build import kernel_record

    guest_dir = run / "guest"
    guest_dir.mkdir(exist_ok=True)
    share = result.console.parent
    for name in ("console.log", "console-first-boot.log", "init.sh", "qemu-cmdline.txt"):
        if (share / name).exists():
            shutil.copy2(share / name, guest_dir / name)
    run_yaml = run / "run.yaml"
    data = yaml.safe_load(run_yaml.read_text()) if run_yaml.exists() else {}
    data["qemu"] = {
        "kernel": str(spec.kernel), "arch": spec.arch, "accel": result.accel, "smp": spec.smp, "memory": spec.memory,
        "pv_tlb_flush": (spec.pv_tlb_flush if result.accel == "kvm" or spec.pv_tlb_flush == "wrapper"
                         else "n/a (tcg)"),
        "tcg_thread": spec.tcg_thread if result.accel == "tcg" else "n/a (kvm)",
        "cmdline": result.qemu_cmdline, "seconds": round(result.seconds, 1), "notes": result.notes,
        "console_log": "guest/console.log",
        "host": host if host is not None else host_record(),
        "started_by": ({"command": origin.command, "argv": [str(w) for w in origin.argv]} if origin else None),
        "kernel_build": kernel_record(spec.kernel),
    }
    atomic_write(run_yaml, yaml.safe_dump(data, sort_keys=False))


#: A run directory from a guest is this large at most (a 20 GiB, 64-vCPU run is ~2 MB).
COPY_LIMIT = 1 << 30


def copy_back(src: Path, out: Path, limit: int = COPY_LIMIT) -> List[str]:
    """Copy a guest's run directory from the writable share to ``out``, as regular files
    and directories only: the guest wrote that share, so a symlink in it (or a file far
    larger than a run) is skipped and said, never followed by root on the host."""
    notes: List[str] = []
    rd = RunDir.create(out)  # the same checks as a host run's directory
    total = 0
    for root, dirs, files in os.walk(src, followlinks=False):
        rel = Path(root).relative_to(src)
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                dirs.remove(d)
                notes.append(f"{rel / d}: a symlink in the guest's run directory, skipped")
            else:
                (out / rel / d).mkdir(exist_ok=True)
        for name in files:
            srcfile = os.path.join(root, name)
            st = os.lstat(srcfile)
            if not stat.S_ISREG(st.st_mode):
                notes.append(f"{rel / name}: not a regular file in the guest's run directory, skipped")
                continue
            total += st.st_size
            if total > limit:
                notes.append(f"{rel / name}: the guest's run directory is over {limit >> 20} MiB, rest skipped")
                return notes
            fd = os.open(srcfile, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fin, open(out / rel / name, "xb") as fout:
                shutil.copyfileobj(fin, fout)
    os.close(rd.fd)
    return notes


def run_jobs(spec: GuestSpec, jobs: Sequence[Tuple[str, List[str]]], outs: Sequence[Path],
             log: Callable[[str], None] = print, status: Callable[[str], None] = lambda s: None,
             origin: Optional[GuestOrigin] = None) -> Tuple[List[int], GuestResult]:
    """Boot once and run one collect per job; each run directory lands at its out path,
    its run.yaml saying which command (``origin``) started the guest."""
    for out in outs:
        if out.exists() and any(out.iterdir()):
            raise TlbprobeError(f"{out} already exists and is not empty; choose another --out")
    check_spec(spec)
    share = outs[0].parent / f".{outs[0].name}.guest-{dt.datetime.now().strftime('%H%M%S')}"
    share.mkdir(parents=True)
    commands = [[guest_python(), "-m", "tlbprobe", "collect", *args, "--out", f"{GUEST_OUT}/run-{i}"]
                for i, (_, args) in enumerate(jobs)]
    try:
        result = run_guest(spec, commands, share, log=log, status=status)
        for i, out in enumerate(outs):
            src = share / f"run-{i}"
            if not src.exists():
                said = [line for line in result.console.read_text(errors="replace").splitlines()
                        if line.startswith("tlbprobe: ")]
                raise TlbprobeError(f"the guest wrote no run directory for job {jobs[i][0]!r}"
                                    + (f" ({said[-1]})" if said else "")
                                    + f"; console log: {share / 'console.log'}")
            for note in copy_back(src, out):
                log(f"warning: {note}")
            _record_guest(out, spec, result, origin)
    except BaseException:
        log(f"guest files kept in {share}")
        raise
    shutil.rmtree(share, ignore_errors=True)
    return result.statuses, result


def collect_in_guest(spec: GuestSpec, collect_args: List[str], out: Optional[Path], workload: str,
                     log: Callable[[str], None] = print, status: Callable[[str], None] = lambda s: None,
                     origin: Optional[GuestOrigin] = None) -> Tuple[Path, int]:
    """`tlbprobe qemu collect`: one job in one boot. Returns the run directory and its exit status."""
    out = out or Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-qemu-{workload}"
    statuses, result = run_jobs(spec, [(workload, collect_args)], [out], log, status,
                                origin or GuestOrigin("qemu collect"))
    summary = read_summary(out)
    atomic_write(out / "summary.txt", render_summary(summary, out) + "\n")
    return out, statuses[0]


def guest_failure(out: Path, status: int) -> str:
    """What to tell the user when the guest's collect failed: what, where, and the files.

    From the run's own summary.json (status, error with its phase), then the guest's
    ``tlbprobe:`` line on the console; a console line alone never decides success.
    """
    summary = read_summary(out)
    console = out / "guest" / "console.log"
    said: List[str] = []
    text = console.read_text(errors="replace") if console.exists() else ""
    said = [line for line in text.splitlines() if line.startswith("tlbprobe: ")]
    if status == 137:  # SIGKILL: the console's last tlbprobe line may be another job's
        what = summary.get("error") or (
            "killed by the guest kernel's OOM killer: give the guest more memory (--memory)"
            if "Out of memory: Killed process" in text else "killed (SIGKILL)")
    else:
        what = summary.get("error") or (said[-1][len("tlbprobe: "):] if said else f"exit status {status}")
    return (f"collect failed in the guest ({summary.get('status', 'unknown')}, exit status {status}): {what}\n"
            f"run directory {out} (kept, {summary.get('repeats_done', 0)}/{summary.get('repeats_planned', '?')} "
            f"repeats, marked incomplete); guest console log {console}")
