#!/usr/bin/env python3
"""Does `tlbprobe repro --race` catch a broken skip, and how fast? (run as root on a quiet
machine; not in CI: two KASAN kernels and two TCG guests, see kernels/README.md).

The broken kernel is our patch (kernels/patches/) plus the fault injection
kernels/fault-injection/0002-*.patch: collapse_huge_page() clears the PMD but flushes only
its own CPU's TLB, so the skip of the table sync that 0001 makes is no longer backed by a
flush that reached every CPU -- the mistake an unsafe patch would make. The baseline is
the plain debug build. Each round runs

    tlbprobe repro --race --job collapse-race --patch kernels/patches/0001-* \
        --patch kernels/fault-injection/0002-*

(only the collapse job: the fault is in the collapse, and the guest's time is then that
job's alone)

and must end non-zero with the baseline's race run clean and the broken kernel's run
failed (lost writes, corrupted bytes, a kernel report, or a guest that died of one). It
prints per round: the verdicts, each repeat's lost writes, corrupted bytes and kernel
reports, and the time to catch: the guest's seconds up to the end of the first repeat
that failed (boot included), from repro.json and the run's log.

    python3 benchmarks/race_fault_injection.py [--rounds 1] [--smp 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
OURS = sorted((REPO / "kernels" / "patches").glob("*.patch"))
BROKEN = sorted((REPO / "kernels" / "fault-injection").glob("*.patch"))
FIGURES = ("lost_writes", "corrupted_bytes", "kernel_reports", "races_attempted", "race_writes")


def repeat_figures(run: Path) -> List[Dict[str, float]]:
    """Per finished repeat: the race figures and the workload phase's seconds."""
    try:
        s = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for rep in s.get("repeats", []):
        w = rep.get("phases", {}).get("workload", {})
        f = w.get("workload_figures", {})
        rows.append({**{k: f.get(k, 0.0) for k in FIGURES}, "seconds": w.get("duration_s", 0.0)})
    return rows


def caught(row: Dict[str, float]) -> bool:
    return bool(row["lost_writes"] or row["corrupted_bytes"] or row["kernel_reports"])


def catch_seconds(run: Path, guest_s: float) -> Optional[float]:
    """Guest seconds from QEMU's start to the first "RACE CHECK FAILED" line of the run's
    log: the boot (the guest's seconds less the log's span) plus the log's time to it."""
    stamps = []
    fail = None
    try:
        lines = (run / "log.txt").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        m = re.match(r"\[(\d\d):(\d\d):(\d\d)\]", line)
        if not m:
            continue
        t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
        if stamps and t < stamps[0]:
            t += 86400  # past midnight
        stamps.append(t)
        if fail is None and "RACE CHECK FAILED" in line:
            fail = t
    if fail is None or not stamps:
        return None
    return guest_s - (stamps[-1] - stamps[0]) + (fail - stamps[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--smp", default="4")
    ap.add_argument("--accel", default="auto", help="repro --accel (tcg skips the KVM probe where KVM does not work)")
    ap.add_argument("--tcg-thread", default="multi", choices=("single", "multi"),
                    help="repro --tcg-thread (default multi, as repro --race; kernels/README.md has both)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "race_fault_injection")
    a = ap.parse_args()
    if not OURS or not BROKEN:
        print("kernels/patches or kernels/fault-injection has no patch", file=sys.stderr)
        return 2
    patches = [arg for p in OURS + BROKEN for arg in ("--patch", str(p))]
    failures = 0
    for k in range(1, a.rounds + 1):
        out = a.out / f"round-{k}"
        cmd = [sys.executable, "-m", "tlbprobe", "repro", "--race", "--smp", a.smp, "--accel", a.accel, "--tcg-thread", a.tcg_thread, "--job", "collapse-race", "--out", str(out), *patches]
        t = time.monotonic()
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - t
        try:
            meta = json.loads((out / "repro.json").read_text())
        except (OSError, ValueError):
            print(f"round {k}: repro wrote no repro.json (exit {res.returncode}):\n{res.stderr[-2000:]}")
            failures += 1
            continue
        print(f"round {k}: repro exit {res.returncode} after {wall:.0f} s; verdicts:")
        for job, vs in meta["verdicts"].items():
            for variant, v in vs.items():
                print(f"  {job}/{variant}: {v}")
        base_ok = all(meta.get("verdicts", {}).get(j, {}).get("baseline", "").startswith("matches")
                      for j in meta["verdicts"])
        guest_s: Optional[float] = meta["timings"].get("guest_patched_s")
        for job, paths in meta["runs"].items():
            rows = repeat_figures(Path(paths["patched"]))
            for i, row in enumerate(rows, 1):
                print(f"  patched {job} repeat {i}: " + ", ".join(f"{key} {row[key]:.0f}" for key in FIGURES)
                      + f", {row['seconds']:.1f} s")
            first = next((i for i, row in enumerate(rows, 1) if caught(row)), None)
            if first is not None:
                secs = catch_seconds(Path(paths["patched"]), guest_s) if guest_s else None
                when = f"; time to catch {secs:.0f} s of the guest's {guest_s:.0f} s (boot included)" if secs else ""
                print(f"  caught in repeat {first}: {sum(caught(r) for r in rows)} of {len(rows)} repeats "
                      f"caught it{when}")
            else:
                print(f"  NOT CAUGHT by any finished repeat ({len(rows)}); see {out}/patched")
        detected = res.returncode != 0 and base_ok and any(
            caught(r) for paths in meta["runs"].values() for r in repeat_figures(Path(paths["patched"])))
        died = res.returncode != 0 and base_ok and not detected
        if died:
            print("  the broken guest's run did not finish: see its console.log for the splat that ended it")
        if not (detected or died):
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
