#!/usr/bin/env python3
"""How long `tlbprobe report` takes over 10, 30 and 100 runs of 5 repeats, and how it grows.

The runs are copies of one template run directory, stretched to 5 repeats: a real run from
analysis/runs/ when there is one (the first complete one, or --template DIR), else a
synthetic one written per doc/run-format.md by tests/runfactory.py. Everything is written to
a temporary directory and removed afterwards.

Each measurement is a fresh `python3 -m tlbprobe report ...` process (what a user waits
for, imports included) and, separately, the in-process build + render time (the part
that grows with the number of runs).

    python3 benchmarks/report_scale.py [--template DIR] [--counts 10,30,100] [--formats text,json]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

REPEATS = 5
SUMMED = ("ops", "ops_expected", "cal_other_cpus", "tlb_other_cpus", "background_sync_ipis", "sync_ipis_measured")


def find_template(explicit: Optional[Path]) -> Optional[Path]:
    if explicit:
        return explicit
    runs = REPO / "analysis" / "runs"
    if not runs.is_dir():
        return None
    for d in sorted(runs.iterdir()):
        try:
            if json.loads((d / "summary.json").read_text()).get("complete") is True and (d / "run.yaml").exists():
                return d
        except (OSError, ValueError):
            continue
    return None


def synthetic_template(where: Path) -> Path:
    from runfactory import make_run

    return make_run(where, "template", repeats=REPEATS, online_cpus=2, latency=True, seed=1)


def stretch(template: Path, dest: Path, repeats: int) -> None:
    """Copy a run directory with its repeats cycled to ``repeats`` (totals recomputed)."""
    shutil.copytree(template, dest)
    summary = json.loads((template / "summary.json").read_text())
    reps = summary.get("repeats") or []
    if not reps:
        raise SystemExit(f"{template}: the template has no finished repeat")
    k = len(reps)
    new = []
    for i in range(repeats):
        r = copy.deepcopy(reps[i % k])
        r["repeat"] = i
        new.append(r)
    summary["repeats"] = new
    summary["repeats_planned"] = summary["repeats_done"] = repeats
    for key in SUMMED:
        if all(key in r for r in new):
            summary[key] = sum(r[key] for r in new)
    for key in ("attributed", "queued"):  # queued: runs that traced csd_queue_cpu
        if key == "attributed" or all(key in r for r in new):
            counts: Dict[str, float] = {}
            for r in new:
                for f, n in (r.get(key) or {}).items():
                    counts[f] = counts.get(f, 0) + n
            summary[key] = counts
    (dest / "summary.json").write_text(json.dumps(summary, indent=2))
    span = _time_span(template / "phases.csv")
    for name in ("phases.csv", "interrupts.csv", "vmstat.csv", "attribution.csv"):
        src = template / name
        if src.exists():
            _stretch_csv(src, dest / name, k, repeats, span if name == "phases.csv" else 0.0)


def _time_span(phases: Path) -> float:
    if not phases.exists():
        return 0.0
    with open(phases, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return 0.0
    return max(float(r["end"]) for r in rows) - min(float(r["start"]) for r in rows) + 1.0


def _stretch_csv(src: Path, dst: Path, k: int, repeats: int, span: float) -> None:
    with open(src, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = list(reader)
    if "repeat" not in fields:
        return
    by_repeat: Dict[int, List[dict]] = {}
    for r in rows:
        by_repeat.setdefault(int(r["repeat"]), []).append(r)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for i in range(repeats):
            for r in by_repeat.get(i % k, []):
                r = dict(r, repeat=i)
                if span and "start" in r:
                    shift = (i // k) * span
                    r["start"] = f"{float(r['start']) + shift:.3f}"
                    r["end"] = f"{float(r['end']) + shift:.3f}"
                w.writerow(r)


def time_cli(dirs: List[Path], fmt: str) -> float:
    cmd = [sys.executable, "-m", "tlbprobe", "report", *map(str, dirs), "--format", fmt]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"report failed ({proc.returncode}): {proc.stderr.strip()}")
    return dt


def time_inprocess(dirs: List[Path], fmt: str) -> float:
    from tlbprobe.commands.report import _render
    from tlbprobe.report import build_report

    t0 = time.perf_counter()
    _render(build_report([str(d) for d in dirs]), fmt)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template", type=Path, help="run directory to copy (default: first complete analysis/runs/*)")
    ap.add_argument("--counts", default="10,30,100")
    ap.add_argument("--formats", default="text,json")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    formats = args.formats.split(",")
    with tempfile.TemporaryDirectory(prefix="tlbprobe-bench-") as tmp:
        tmpd = Path(tmp)
        template = find_template(args.template)
        origin = f"real run {template}" if template else "synthetic run (tests/runfactory.py)"
        if template is None:
            template = synthetic_template(tmpd / "tpl")
        dirs = []
        for i in range(max(counts)):
            d = tmpd / "runs" / f"run{i:03d}"
            stretch(template, d, REPEATS)
            dirs.append(d)
        print(f"template: {origin}; {max(counts)} copies x {REPEATS} repeats in {tmpd}")
        time_inprocess(dirs[:2], "text")  # warm imports for the in-process figures
        print(f"{'runs':>5} {'format':>7} {'process s':>10} {'in-proc s':>10} {'ms/run':>8} {'growth':>8}")
        for fmt in formats:
            prev = None
            for n in counts:
                cli = time_cli(dirs[:n], fmt)
                inproc = time_inprocess(dirs[:n], fmt)
                growth = f"x{inproc / prev[1]:.2f}/x{n / prev[0]:.1f}" if prev else "-"
                print(f"{n:>5} {fmt:>7} {cli:>10.2f} {inproc:>10.3f} {1000 * inproc / n:>8.1f} {growth:>8}")
                prev = (n, inproc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
