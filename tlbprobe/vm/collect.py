"""Collect inside a guest: run `tlbprobe collect` jobs in one boot, bring the run
directories back, and record the guest's side of the story in each run.yaml (``qemu``)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import yaml

from ..errors import TlbprobeError
from ..rundir import atomic_write, read_summary
from ..summary_text import render_summary
from .guest import GUEST_OUT, GuestResult, GuestSpec, check_spec, guest_python, run_guest


def _record_guest(run: Path, spec: GuestSpec, result: GuestResult) -> None:
    """Add the QEMU facts to run.yaml and keep the console log beside the run."""
    guest_dir = run / "guest"
    guest_dir.mkdir(exist_ok=True)
    share = result.console.parent
    for name in ("console.log", "console-first-boot.log", "init.sh", "qemu-cmdline.txt"):
        if (share / name).exists():
            shutil.copy2(share / name, guest_dir / name)
    run_yaml = run / "run.yaml"
    data = yaml.safe_load(run_yaml.read_text()) if run_yaml.exists() else {}
    data["qemu"] = {
        "kernel": str(spec.kernel), "accel": result.accel, "smp": spec.smp, "memory": spec.memory,
        "pv_tlb_flush": spec.pv_tlb_flush if result.accel == "kvm" else "n/a (tcg)",
        "tcg_thread": spec.tcg_thread if result.accel == "tcg" else "n/a (kvm)",
        "cmdline": result.qemu_cmdline, "seconds": round(result.seconds, 1), "notes": result.notes,
        "console_log": "guest/console.log",
    }
    atomic_write(run_yaml, yaml.safe_dump(data, sort_keys=False))


def run_jobs(spec: GuestSpec, jobs: Sequence[Tuple[str, List[str]]], outs: Sequence[Path],
             log: Callable[[str], None] = print, status: Callable[[str], None] = lambda s: None
             ) -> Tuple[List[int], GuestResult]:
    """Boot once and run one collect per job; each run directory lands at its out path."""
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
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.exists():
                out.rmdir()
            shutil.move(str(src), str(out))
            _record_guest(out, spec, result)
    except BaseException:
        log(f"guest files kept in {share}")
        raise
    shutil.rmtree(share, ignore_errors=True)
    return result.statuses, result


def collect_in_guest(spec: GuestSpec, collect_args: List[str], out: Optional[Path], workload: str,
                     log: Callable[[str], None] = print, status: Callable[[str], None] = lambda s: None
                     ) -> Tuple[Path, int]:
    """`tlbprobe qemu collect`: one job in one boot. Returns the run directory and its exit status."""
    out = out or Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-qemu-{workload}"
    statuses, result = run_jobs(spec, [(workload, collect_args)], [out], log, status)
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
    said = []
    if console.exists():
        said = [line for line in console.read_text(errors="replace").splitlines() if line.startswith("tlbprobe: ")]
    what = summary.get("error") or (said[-1][len("tlbprobe: "):] if said else f"exit status {status}")
    return (f"collect failed in the guest ({summary.get('status', 'unknown')}, exit status {status}): {what}\n"
            f"run directory {out} (kept, {summary.get('repeats_done', 0)}/{summary.get('repeats_planned', '?')} "
            f"repeats, marked incomplete); guest console log {console}")
