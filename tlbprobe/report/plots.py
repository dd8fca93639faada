"""PNG figures with matplotlib's Agg backend (no display needed, safe on a headless test host).

Six kinds, each written only when the runs have the data for it:
* ``percpu``   per-CPU CAL and TLB received in the workload phases, one figure per run;
* ``model``    measured sync IPIs per repeat (median, with the min..max range) beside the
               model's prediction, all runs in one figure;
* ``latency``  cyclictest histograms per CPU, log scale, one figure per run with latency/;
* ``timeline`` CAL-minus-TLB rate on the other CPUs per phase over the run's time, one
               figure per run (phases.csv gives the times, summary.json the counts);
* ``handler``  the sync IPI's handler time on the other CPUs (collect --cost);
* ``victim``   the victim loop's throughput over time, workload phases shaded (--victim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import InputError
from ..vocab import SYNC_FUNCTION
from ..rundir.sections import CostSection, VictimSection
from .analyze import RunAnalysis
from .views import latency as latency_view
from .rows import expected_per_repeat, per_cpu_rows

if TYPE_CHECKING:
    from . import Report


@dataclass(frozen=True)
class PlotFile:
    path: Path
    kind: str
    run: Optional[str]  # run name, None for figures over all runs
    title: str


def write_plots(report: "Report", outdir: Path) -> List[PlotFile]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: F401 - after use("Agg")

    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{outdir}: cannot create the plot directory: {e.strerror}") from None
    files: List[PlotFile] = []
    files.append(_model_plot(report.runs, outdir / "model-vs-measured.png"))
    for a in report.runs:
        stem = f"{a.label}-{_slug(a.run.name)}"
        files.append(_percpu_plot(a, outdir / f"{stem}-percpu.png"))
        if a.run.histograms:
            files.append(_latency_plot(a, outdir / f"{stem}-latency.png"))
        for make, suffix in ((_timeline_plot, "timeline"), (_handler_plot, "handler"), (_victim_plot, "victim")):
            made = make(a, outdir / f"{stem}-{suffix}.png")
            if made:
                files.append(made)
    return files


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _percpu_plot(a: RunAnalysis, path: Path) -> PlotFile:
    import matplotlib.pyplot as plt

    rows = per_cpu_rows(a)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(5.0, min(16.0, 0.25 * n + 3)), 3.4))
    xs = list(range(n))
    w = 0.4
    ax.bar([x - w / 2 for x in xs], [r.cal for r in rows], w, label="CAL (function call)")
    ax.bar([x + w / 2 for x in xs], [r.tlb for r in rows], w, label="TLB shootdown")
    exp = [r.expected_sync for r in rows]
    if all(e is not None for e in exp):
        ax.scatter(xs, exp, marker="_", s=200, color="black", zorder=3, label="model: sync per CPU")
    step = max(1, n // 32)
    ax.set_xticks(xs[::step])
    ax.set_xticklabels([f"{r.cpu}{'*' if r.role == 'driver' else ''}" for r in rows][::step])
    ax.set_xlabel("CPU (* driver)")
    ax.set_ylabel("interrupts, workload phases")
    title = f"{a.label} {a.run.name}: IPIs received per CPU"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return PlotFile(path, "percpu", a.run.name, title)


def _model_plot(runs: List[RunAnalysis], path: Path) -> PlotFile:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, min(16.0, 1.6 * len(runs) + 3)), 3.6))
    xs = list(range(len(runs)))
    w = 0.27

    def bars(key: str, offset: float, label: str, **kw) -> None:
        med, lo, hi = [], [], []
        for a in runs:
            s = a.stats.get(key)
            m = s.median if s else 0.0
            med.append(m)
            lo.append(m - (s.min if s else 0.0))
            hi.append((s.max if s else 0.0) - m)
        ax.bar([x + offset for x in xs], med, w, yerr=[lo, hi], capsize=4, label=label, **kw)

    bars("sync_ipis", -w, "CAL-TLB, background-subtracted (median, min..max)")
    if any("attributed_sync" in a.stats for a in runs):
        bars("attributed_sync", 0.0, f"traced {SYNC_FUNCTION}")
    exp = [expected_per_repeat(a) for a in runs]
    ax.bar([x + w for x in xs], [e if e is not None else 0.0 for e in exp], w, label="model", hatch="//",
           alpha=0.7)
    for x, e in zip(xs, exp):
        if e is None:
            ax.annotate("?", (x + w, 0), ha="center", va="bottom")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{a.label}\n{a.run.name[:24]}" for a in runs], fontsize=7)
    ax.set_ylabel("sync IPIs per repeat, other CPUs")
    title = "Sync IPIs per repeat: measured vs model"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return PlotFile(path, "model", None, title)


def _latency_plot(a: RunAnalysis, path: Path) -> PlotFile:
    import matplotlib.pyplot as plt

    hists = a.run.histograms
    cpus = sorted({h.cpu for h in hists})
    fig, axes = plt.subplots(len(cpus), 1, figsize=(7, 1.9 * len(cpus) + 0.6), squeeze=False, sharex=True)
    drv = latency_view.driver_cpu(a.run)
    for ax, cpu in zip(axes[:, 0], cpus):
        merged = {}
        for h in hists:
            if h.cpu != cpu:
                continue
            # r0-workload, r1-workload, ... -> workload: one curve per phase
            bucket = merged.setdefault(re.sub(r"^r\d+[-_]", "", h.label), {})
            for us, n in h.buckets.items():
                bucket[us] = bucket.get(us, 0) + n
        for label, b in sorted(merged.items()):
            xs = sorted(b)
            ax.step(xs, [b[x] for x in xs], where="mid", label=label, linewidth=1)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_ylabel(f"CPU {cpu}{' (driver)' if cpu == drv else ''}", fontsize=8)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("latency, us (log)")
    title = f"{a.label} {a.run.name}: cyclictest latency per CPU"
    axes[0, 0].set_title(title, fontsize=10)
    _save(fig, path)
    return PlotFile(path, "latency", a.run.name, title)


def _fine_rates(a: RunAnalysis, t0: float) -> Dict[str, List[Tuple[List[float], List[float], List[float]]]]:
    """From timeseries.csv: per phase kind, one (times, CAL-TLB/s, TLB/s) curve per phase,
    rates between consecutive samples on the other CPUs, at seconds since ``t0``."""
    ts, df = a.run.timeseries, a.run.phases
    out: Dict[str, List[Tuple[List[float], List[float], List[float]]]] = {}
    if ts.empty:
        return out
    others = ts[ts["cpu"].isin(a.run.other_cpus)]
    for (rep, name), g in others.groupby(["repeat", "phase"]):
        rows = df[(df["repeat"] == rep) & (df["phase"] == name)]
        if rows.empty:
            continue
        start = float(rows["start"].iloc[0]) - t0
        tot = g.groupby("t_s")[["cal", "tlb"]].sum().sort_index()
        t_prev, sync_prev, tlb_prev = 0.0, 0.0, 0.0
        xs, sync_r, tlb_r = [], [], []
        for t, row in tot.iterrows():
            dt = float(t) - t_prev
            if dt <= 0:
                continue
            sync = float(row["cal"] - row["tlb"])
            xs.append(start + float(t))
            sync_r.append((sync - sync_prev) / dt)
            tlb_r.append((float(row["tlb"]) - tlb_prev) / dt)
            t_prev, sync_prev, tlb_prev = float(t), sync, float(row["tlb"])
        if xs:
            out.setdefault(str(name), []).append((xs, sync_r, tlb_r))
    return out


def _timeline_plot(a: RunAnalysis, path: Path) -> Optional[PlotFile]:
    """Rate of CAL minus TLB on the other CPUs per phase, placed at the phase's time, and
    within the phases where the run sampled /proc/interrupts (timeseries.csv)."""
    import matplotlib.pyplot as plt

    df = a.run.phases
    if df.empty:
        return None
    t0 = float(df["start"].min())
    points = {"idle": [], "workload": []}
    for r in a.run.repeats:
        for name, ph in r.phases.items():
            rows = df[(df["repeat"] == r.repeat) & (df["phase"] == name)]
            if rows.empty or ph.duration_s <= 0:
                continue
            start, end = float(rows["start"].iloc[0]) - t0, float(rows["end"].iloc[0]) - t0
            points.setdefault(name, []).append((start, end, ph.sync_raw / ph.duration_s,
                                                 ph.tlb_other_cpus / ph.duration_s))
    if not any(points.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, pts in points.items():
        for i, (s, e, sync, tlb) in enumerate(pts):
            ax.hlines(sync, s, e, colors="tab:red" if name == "workload" else "tab:gray", linewidth=3,
                      label=f"{name}: CAL-TLB/s" if i == 0 else None)
            ax.hlines(tlb, s, e, colors="tab:blue", linewidth=1, linestyles="dashed",
                      label="TLB/s" if (i == 0 and name == "workload") else None)
    fine = _fine_rates(a, t0)
    for name, curves in fine.items():
        for i, (xs, sync_r, tlb_r) in enumerate(curves):
            ax.step(xs, sync_r, where="pre", color="darkred" if name == "workload" else "dimgray", linewidth=0.8,
                    label=f"{name}: CAL-TLB/s between samples" if i == 0 else None)
            if name == "workload" and any(tlb_r):
                ax.step(xs, tlb_r, where="pre", color="tab:blue", linewidth=0.6)
    ax.set_xlabel("seconds since the first phase")
    ax.set_ylabel("IPIs/s, other CPUs")
    if max([p[2] for v in points.values() for p in v] + [r for c in fine.values() for _, sr, _ in c for r in sr],
           default=0) > 0:
        ax.set_yscale("symlog", linthresh=1.0)
    title = f"{a.label} {a.run.name}: IPIs over time"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    _save(fig, path)
    return PlotFile(path, "timeline", a.run.name, title)


def _handler_plot(a: RunAnalysis, path: Path) -> Optional[PlotFile]:
    """The sync IPI's handler time on the other CPUs (collect --cost), workload phases,
    against every function-call IPI's in the idle windows."""
    import matplotlib.pyplot as plt

    cost = a.run.section(CostSection)
    if cost is None:
        return None
    series = [("sync IPIs, workload", cost.histogram("workload", "vector_sync")),
              ("all function-call IPIs, idle", cost.histogram("idle", "vector_all"))]
    if not any(h for _, h in series):
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for label, h in series:
        if h:
            edges = sorted(h)
            ax.step([e / 1e3 for e in edges], [h[e] for e in edges], where="pre", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("handler time, us (upper bucket edge; tracepoints included)")
    ax.set_ylabel("IPIs")
    title = f"{a.label} {a.run.name}: function-call handler time"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return PlotFile(path, "handler", a.run.name, title)


def _victim_plot(a: RunAnalysis, path: Path) -> Optional[PlotFile]:
    """The victim loop's throughput over the run (mean over the other CPUs per slice
    time), the workload phases shaded (collect --victim)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    victim = a.run.section(VictimSection)
    csv = a.run.path / "victim.csv"
    windows = victim.windows if victim is not None else {}
    if not csv.exists() or not windows:
        return None
    try:
        df = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if df.empty or not {"start_s", "end_s", "units"} <= set(df.columns):
        return None
    t0 = float(df["start_s"].min())
    df = df.assign(t=df["start_s"] - t0, rate=df["units"] / (df["end_s"] - df["start_s"]) / 1e6)
    fig, ax = plt.subplots(figsize=(8.0, 3.4))
    for cpu, d in df.groupby("cpu"):
        ax.plot(d["t"], d["rate"], lw=0.6, label=f"CPU {cpu}")
    for tag, (start, end) in windows.items():
        if tag.endswith("-workload"):
            ax.axvspan(start - t0, end - t0, color="orange", alpha=0.2)
    ax.set_xlabel("s (workload phases shaded)")
    ax.set_ylabel("work units per us")
    title = f"{a.label} {a.run.name}: victim throughput"
    ax.set_title(title, fontsize=10)
    if df["cpu"].nunique() <= 8:
        ax.legend(fontsize=7)
    _save(fig, path)
    return PlotFile(path, "victim", a.run.name, title)
