"""PNG figures with matplotlib's Agg backend (no display needed, safe on a headless test host).

Six kinds, each written when the runs have the data for it:
* ``model``    measured sync IPIs per repeat (median, with the min..max range) beside the
               model's prediction, all runs in one figure, one row of bars per run;
* ``percpu``   per-CPU CAL and TLB received in the workload phases, all runs in one figure,
               one panel per run on one shared scale (A and B compare at a glance);
* ``latency``  cyclictest histograms per CPU as shares of each phase's samples, one figure
               per run with latency/;
* ``timeline`` CAL-minus-TLB rate on the other CPUs per phase over the run's time, one
               figure per run (phases.csv gives the times, summary.json the counts); a run
               without a usable phases.csv gets a figure that says so instead of none;
* ``handler``  the sync IPI's handler time on the other CPUs (collect --cost);
* ``victim``   the victim loop's throughput over time, workload phases shaded (--victim).

What every figure keeps to, because a reader has it open beside the text report and a
cover letter quotes it: a title saying what it shows and from which runs, run names in
full, axis labels with units, legends outside the axes (never over data), a log scale
where the values span orders of magnitude (a symlog one where zeros must show: a patched
kernel's 0 beside a baseline's 387,072), and text no smaller than 8 pt at 100 dpi.
tests/test_plots.py checks this from matplotlib's geometry after drawing.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import InputError
from ..ui.numbers import fmt_num
from ..vocab import IDLE_PHASE, SYNC_FUNCTION, WORKLOAD_PHASE
from ..rundir.sections import CostSection, VictimSection
from .analyze import RunAnalysis
from .views import latency as latency_view
from .rows import expected_per_repeat, per_cpu_rows

if TYPE_CHECKING:
    from . import Report

#: Saved resolution: at 100 dpi a figure's inches are its size in CSS pixels at 100%.
DPI = 100
#: Font sizes in points; at DPI none is under 11 px.
TITLE_PT, LABEL_PT, TICK_PT, LEGEND_PT, NOTE_PT = 11.0, 10.0, 9.0, 9.0, 8.5
#: Widest figure (inches): fits a laptop screen at 100% (1366 px and up, less the browser).
MAX_WIDTH_IN = 13.5
#: A value axis turns logarithmic when its largest value is this many times its smallest
#: non-zero one (or than 1, when the others are zero).
LOG_SPAN = 100.0

COLORS = {"cal": "tab:blue", "tlb": "tab:orange", "model": "0.25", "traced": "tab:green",
          IDLE_PHASE: "0.45", WORKLOAD_PHASE: "tab:red"}


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
    files: List[PlotFile] = [_model_plot(report.runs, outdir / "model-vs-measured.png"),
                             _percpu_plot(report.runs, outdir / "percpu.png")]
    for a in report.runs:
        stem = f"{a.label}-{_slug(a.run.name)}"
        if a.run.histograms:
            files.append(_latency_plot(a, outdir / f"{stem}-latency.png"))
        files.append(_timeline_plot(a, outdir, stem))
        for make, suffix in ((_handler_plot, "handler"), (_victim_plot, "victim")):
            made = make(a, outdir / f"{stem}-{suffix}.png")
            if made:
                files.append(made)
    return files


# --- shared helpers ----------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _figure(width: float, height: float):
    import matplotlib.pyplot as plt

    # constrained layout makes room for legends placed outside the axes and for long labels
    return plt.figure(figsize=(min(width, MAX_WIDTH_IN), height), layout="constrained")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _style(ax) -> None:
    ax.tick_params(labelsize=TICK_PT)
    ax.xaxis.label.set_fontsize(LABEL_PT)
    ax.yaxis.label.set_fontsize(LABEL_PT)


def _legend_right(ax, **kw):
    """A legend beside the axes, right of them: it never covers the data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=LEGEND_PT,
                     frameon=False, **kw)


def _key_row(fig, spec, handles) -> None:
    """The legend in a row of its own under the title, across the figure: it never covers
    the data, and one key serves every panel."""
    key = fig.add_subplot(spec)
    key.axis("off")
    key.legend(handles=handles, loc="center", ncols=len(handles), fontsize=LEGEND_PT, frameon=False,
               borderaxespad=0.0)


def _count(v: float) -> str:
    """A count on a tick: 0, 0.5, 1, 10, 1,000, 100,000."""
    if v == 0:
        return "0"
    if abs(v) < 1:
        return f"{v:g}"
    return f"{v:,.0f}"


def _value_scale(ax, values: Iterable[float], axis: str = "y") -> bool:
    """Symlog (linear below 1, so 0 sits at the axis' end) when the values span
    LOG_SPAN or more, else linear. Returns whether the axis is logarithmic."""
    from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

    vals = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    pos = [v for v in vals if v > 0]
    if not pos or max(pos) / min(min(pos), 1.0) < LOG_SPAN:
        return False
    (ax.set_yscale if axis == "y" else ax.set_xscale)("symlog", linthresh=1.0, linscale=0.5)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1.0))
    target.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    return True


def _plain_log(axis) -> None:
    """A log axis labelled 1, 10, 100 (and 2, 3, 5 within a decade), not 10^1 or 2x10^0."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    if axis is axis.axes.xaxis:
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    axis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _run_list(runs: Sequence[RunAnalysis]) -> str:
    """Which runs a figure covers, for its title; a no-break space keeps "B" and its name
    on one line when the title wraps."""
    if len(runs) == 1:
        return f"{runs[0].label}\u00a0{runs[0].run.name}"
    if len(runs) == 2:
        return f"{runs[0].label}\u00a0{runs[0].run.name} and {runs[1].label}\u00a0{runs[1].run.name}"
    return f"{len(runs)} runs, {runs[0].label} to {runs[-1].label}"


def _wrap(text: str, width: int) -> str:
    """Wrap at spaces, never inside a run name, never cutting one."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)) or text


def _title(fig, text: str, width_in: float) -> str:
    """The figure's title, wrapped to its width (about 7 px a character at TITLE_PT);
    returns it with plain spaces, for the report's list of plots."""
    fig.suptitle(_wrap(text, max(40, int(width_in * DPI / 7.5))), fontsize=TITLE_PT)
    return text.replace("\u00a0", " ")


# --- model vs measured -------------------------------------------------------------------

def _model_plot(runs: List[RunAnalysis], path: Path) -> PlotFile:
    """One row per run (A at the top), run names in full at the left; bars for the
    CAL-minus-TLB estimate, the traced count and the model, each labelled with its value."""
    from matplotlib.patches import Patch

    traced = any("attributed_sync" in a.stats for a in runs)
    series: List[Tuple[str, str, Dict]] = [("sync_ipis", "CAL-TLB less the idle background",
                                            dict(facecolor=COLORS["cal"]))]
    if traced:
        series.append(("attributed_sync", f"traced {SYNC_FUNCTION} calls", dict(facecolor=COLORS["traced"])))
    series.append(("model", "model", dict(facecolor="0.85", hatch="//", edgecolor=COLORS["model"])))
    k = len(series)
    h = 0.8 / k
    width = 11.0
    height = 1.9 + 0.24 * k * len(runs) + 0.12 * len(runs)
    fig = _figure(width, height)
    gs = fig.add_gridspec(2, 1, height_ratios=[0.3, height - 0.3])
    ax = fig.add_subplot(gs[1, 0])
    values: List[float] = []
    ends: List[float] = []
    labels: List[Tuple[float, float, str]] = []
    for i, a in enumerate(runs):
        for j, (key, _, kw) in enumerate(series):
            y = i + (j - (k - 1) / 2) * h
            if key == "model":
                e = expected_per_repeat(a)
                v, lo, hi, text = (e or 0.0), None, None, (_no_model(a) if e is None else fmt_num(e))
            else:
                s = a.stats.get(key)
                if s is None:
                    text = "not traced" if key == "attributed_sync" else "not measured"
                    v, lo, hi = 0.0, None, None
                else:
                    # a CAL-only estimate may go below 0 (background over-estimated): show 0
                    v, lo, hi = max(s.median, 0.0), max(s.min, 0.0), max(s.max, 0.0)
                    text = fmt_num(v, 0 if float(v).is_integer() else 1)
                    if s.median < 0:
                        text += " (below background)"
                    elif s.n > 1 and fmt_num(lo) != fmt_num(hi):
                        text += f" ({fmt_num(lo)}..{fmt_num(hi)})"
            err = None if lo is None else [[v - lo], [hi - v]]
            ax.barh(y, v, h * 0.92, xerr=err, capsize=3 if err else 0, error_kw=dict(lw=1), **kw)
            values += [v] + ([lo, hi] if lo is not None else [])
            end = max(v, hi or 0.0)
            ends.append(end)
            labels.append((end, y, text))
    log = _value_scale(ax, values, "x")
    top = max(ends + [1.0])
    ax.set_xlim(0, top * (30 if log else 1.35))
    for end, y, text in labels:
        ax.annotate(text, (end, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=NOTE_PT)
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels([f"{a.label}  {a.run.name}" for a in runs])
    ax.set_ylim(len(runs) - 0.5, -0.5)  # A at the top
    ax.set_xlabel("sync IPIs per repeat to the other CPUs (count" + (", log scale; 0 at the left edge" if log else "")
                  + ")\nbar: the median over the repeats; whisker and brackets: min..max")
    ax.set_ylabel("run")
    _style(ax)
    handles = [Patch(label=lab, **kw) for _, lab, kw in series]
    _key_row(fig, gs[0, 0], handles)
    title = _title(fig, f"Sync IPIs per repeat, measured vs model: {_run_list(runs)}", width)
    _save(fig, path)
    return PlotFile(path, "model", None, title)


def _no_model(a: RunAnalysis) -> str:
    """Why a run has no model bar: the model's answers by kernel variant, when that is
    what it lacks, per repeat as the bars are."""
    alt, n = a.prediction.alternatives, max(len(a.run.repeats), 1)
    if not alt:
        return "no model figure"
    return "no model figure, variant unknown: " + ", ".join(f"{k} {fmt_num(v / n)}" for k, v in alt.items())


# --- per CPU -----------------------------------------------------------------------------

def _percpu_plot(runs: List[RunAnalysis], path: Path) -> PlotFile:
    """One panel per run, all on one y scale (shared), so A's and B's bars compare directly."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(runs)
    ncols = 1 if n <= 3 else 2
    nrows = math.ceil(n / ncols)
    width = 11.0 if ncols == 1 else MAX_WIDTH_IN
    fig = _figure(width, 1.2 + 2.5 * nrows)
    gs = fig.add_gridspec(nrows + 1, ncols, height_ratios=[0.3] + [2.5] * nrows)
    axes = []
    values: List[float] = []
    any_model = False
    for i, a in enumerate(runs):
        ax = fig.add_subplot(gs[1 + i // ncols, i % ncols], sharey=axes[0] if axes else None)
        axes.append(ax)
        rows = per_cpu_rows(a)
        xs = list(range(len(rows)))
        w = 0.4
        cal, tlb = [r.cal for r in rows], [r.tlb for r in rows]
        ax.bar([x - w / 2 for x in xs], cal, w, color=COLORS["cal"])
        ax.bar([x + w / 2 for x in xs], tlb, w, color=COLORS["tlb"])
        values += cal + tlb
        exp = [r.expected_sync for r in rows]
        if all(e is not None for e in exp):
            any_model = True
            ax.hlines(exp, [x - 0.45 for x in xs], [x + 0.45 for x in xs], colors=COLORS["model"], linewidth=1.5)
            values += exp
        most = 24 if ncols == 1 else 16  # CPU labels a panel's width holds
        step = next(s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if len(rows) / s <= most)
        ax.set_xticks(xs[::step])
        ax.set_xticklabels([f"{r.cpu}{'*' if r.role == 'driver' else ''}" for r in rows][::step])
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("CPU (* the driver's)")
        if i % ncols == 0:
            ax.set_ylabel("IPIs received")
        else:
            ax.tick_params(labelleft=False)
        others = set(a.run.other_cpus)
        cal_o = sum(r.cal for r in rows if r.cpu in others)
        tlb_o = sum(r.tlb for r in rows if r.cpu in others)
        where = "the other CPU" if len(others) == 1 else f"the {len(others)} other CPUs"
        head = f"{a.label} {a.run.name}: CAL {fmt_num(cal_o)}, TLB {fmt_num(tlb_o)} on {where}"
        ax.set_title(_wrap(head, int(width / ncols * DPI / 7.5)), fontsize=LABEL_PT)
        _style(ax)
    log = _value_scale(axes[0], values)
    top = max(values + [1.0])
    axes[0].set_ylim(0, top * (3.0 if log else 1.12))  # room above the tallest bar and its model line
    handles = [Patch(color=COLORS["cal"], label="CAL (function-call IPIs)"),
               Patch(color=COLORS["tlb"], label="TLB (shootdown IPIs)")]
    if any_model:
        handles.append(Line2D([], [], color=COLORS["model"], lw=1.5, label="model: sync IPIs per CPU"))
    _key_row(fig, gs[0, :], handles)
    title = (f"IPIs received per CPU, workload phases summed over the repeats, one{' log' if log else ''} "
             f"scale for all panels: {_run_list(runs)}")
    title = _title(fig, title, width)
    _save(fig, path)
    return PlotFile(path, "percpu", None, title)


# --- latency -----------------------------------------------------------------------------

def _latency_plot(a: RunAnalysis, path: Path) -> PlotFile:
    """cyclictest's 1 us buckets as % of each phase's samples, per CPU, one scale for all:
    the phases differ in length (30,071 idle samples beside 267 workload ones on the
    driver's CPU of host-collapse-256M-latency), so their raw counts do not compare."""
    from matplotlib.ticker import FuncFormatter

    hists = a.run.histograms
    cpus = sorted({h.cpu for h in hists})
    width = 10.0
    fig = _figure(width, 1.3 + 2.3 * len(cpus))
    axes = fig.subplots(len(cpus), 1, squeeze=False, sharex=True, sharey=True)[:, 0]
    drv = latency_view.driver_cpu(a.run)
    for ax, cpu in zip(axes, cpus):
        merged: Dict[str, Dict[int, int]] = {}
        for h in hists:
            if h.cpu != cpu:
                continue
            # r0-workload, r1-workload, ... -> workload: one curve per phase kind
            bucket = merged.setdefault(re.sub(r"^r\d+[-_]", "", h.label), {})
            for us, cnt in h.buckets.items():
                bucket[int(us)] = bucket.get(int(us), 0) + int(cnt)
        for label, b in sorted(merged.items()):
            total = sum(b.values())
            if not total:
                continue
            xs, ys = _share_steps(b, total)
            color = COLORS.get(label)
            (line,) = ax.plot(xs, ys, lw=1.1, color=color, label=f"{label}: {total:,} samples")
            lone = [(x, 100.0 * b[x] / total) for x in sorted(b) if b[x] and not b.get(x - 1) and not b.get(x + 1)]
            if lone:
                ax.plot([x for x, _ in lone], [y for _, y in lone], ".", ms=4, color=line.get_color())
        _plain_log(ax.xaxis)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.set_ylabel(f"CPU {cpu}{' (driver)' if cpu == drv else ''}\n% of samples")
        _legend_right(ax, title="phase", title_fontsize=LEGEND_PT)
        _style(ax)
    axes[-1].set_xlabel("wake-up latency (us, log scale; cyclictest's 1 us buckets)")
    title = _title(fig, f"cyclictest wake-up latency per CPU, share of each phase's samples: {_run_list([a])}", width)
    _save(fig, path)
    return PlotFile(path, "latency", a.run.name, title)


def _share_steps(b: Dict[int, int], total: int) -> Tuple[List[float], List[float]]:
    """A step outline of 1 us buckets as % of ``total``, broken (NaN) where buckets are empty:
    no line drawn through latencies nobody had."""
    xs: List[float] = []
    ys: List[float] = []
    prev = None
    for us in sorted(k for k, v in b.items() if v > 0):
        if prev is not None and us != prev + 1:
            xs.append(float("nan"))
            ys.append(float("nan"))
        share = 100.0 * b[us] / total
        xs += [us - 0.5 if us > 0.5 else us * 0.5, us + 0.5]
        ys += [share, share]
        prev = us
    return xs, ys


# --- timeline ----------------------------------------------------------------------------

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


def _timeline_plot(a: RunAnalysis, outdir: Path, stem: str) -> PlotFile:
    """Rate of CAL minus TLB on the other CPUs per phase, placed at the phase's time, and
    within the phases where the run sampled /proc/interrupts (timeseries.csv). Without
    phases.csv the phases have no times: the figure says so (and its file name), rather
    than the report leaving the timeline out without a word."""
    df = a.run.phases
    if df.empty:
        why = "the run has no phases.csv" if not (a.run.path / "phases.csv").exists() \
            else "its phases.csv lists no phase"
        return _absent(a, outdir / f"{stem}-timeline-no-phases-csv.png", "timeline",
                       "IPIs over time", f"{why}: nothing says when its phases ran. "
                       "The per-CPU and model figures come from summary.json and are drawn.")
    t0 = float(df["start"].min())
    points: Dict[str, List[Tuple[float, float, float, float]]] = {IDLE_PHASE: [], WORKLOAD_PHASE: []}
    for r in a.run.repeats:
        for name, ph in r.phases.items():
            rows = df[(df["repeat"] == r.repeat) & (df["phase"] == name)]
            if rows.empty or ph.duration_s <= 0:
                continue
            start, end = float(rows["start"].iloc[0]) - t0, float(rows["end"].iloc[0]) - t0
            points.setdefault(name, []).append((start, end, max(ph.sync_raw / ph.duration_s, 0.0),
                                                ph.tlb_other_cpus / ph.duration_s))
    if not any(points.values()):
        return _absent(a, outdir / f"{stem}-timeline-no-phases-csv.png", "timeline", "IPIs over time",
                       "phases.csv matches none of summary.json's finished phases: no phase has a time.")
    width = 11.0
    fig = _figure(width, 3.9)
    ax = fig.add_subplot()
    values: List[float] = []
    for name, pts in points.items():
        for i, (s, e, sync, tlb) in enumerate(pts):
            ax.hlines(sync, s, e, colors=COLORS.get(name, "0.45"), linewidth=3,
                      label=f"{name} phase: CAL-TLB/s" if i == 0 else None)
            ax.hlines(tlb, s, e, colors="tab:blue", linewidth=1, linestyles="dashed",
                      label="TLB/s, phase mean" if (i == 0 and name == WORKLOAD_PHASE) else None)
            values += [sync, tlb]
    fine = _fine_rates(a, t0)
    for name, curves in fine.items():
        for i, (xs, sync_r, tlb_r) in enumerate(curves):
            ax.step(xs, [max(v, 0.0) for v in sync_r], where="pre",
                    color="darkred" if name == WORKLOAD_PHASE else "dimgray", linewidth=0.8,
                    label=f"{name}: CAL-TLB/s between samples" if i == 0 else None)
            values += sync_r
            if name == WORKLOAD_PHASE and any(tlb_r):
                ax.step(xs, tlb_r, where="pre", color="tab:blue", linewidth=0.6,
                        label="TLB/s between samples" if i == 0 else None)
    log = _value_scale(ax, values)
    top = max([v for v in values if math.isfinite(v)] + [1.0])
    ax.set_ylim(0, top * (3.0 if log else 1.1))
    ax.set_xlabel("time since the first phase began (s)")
    ax.set_ylabel("IPIs per second,\nthe other CPUs" + (" (log)" if log else ""))
    # an older run has no timeseries.csv: say why there are no finer curves
    _legend_right(ax, title=None if fine else "no timeseries.csv:\none level per phase",
                  title_fontsize=LEGEND_PT)
    _style(ax)
    title = _title(fig, f"IPIs per second on the other CPUs over the run: {_run_list([a])}", width)
    path = outdir / f"{stem}-timeline.png"
    _save(fig, path)
    return PlotFile(path, "timeline", a.run.name, title)


def _absent(a: RunAnalysis, path: Path, kind: str, what: str, why: str) -> PlotFile:
    """A figure standing in for one that cannot be drawn: what is missing and why."""
    width = 8.0
    fig = _figure(width, 1.5)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, _wrap(why, 80), ha="center", va="center", fontsize=LABEL_PT, transform=ax.transAxes)
    reason = why.split(":")[0]
    title = _title(fig, f"{what} not drawn for {_run_list([a])}: {reason}", width)
    _save(fig, path)
    return PlotFile(path, kind, a.run.name, title)


# --- handler time ------------------------------------------------------------------------

def _handler_plot(a: RunAnalysis, path: Path) -> Optional[PlotFile]:
    """The sync IPI's handler time on the other CPUs (collect --cost), workload phases,
    against every function-call IPI's in the idle windows, each as % of its IPIs."""
    from matplotlib.ticker import FuncFormatter

    cost = a.run.section(CostSection)
    if cost is None:
        return None
    series = [("sync IPIs, workload phases", cost.histogram(WORKLOAD_PHASE, "vector_sync")),
              ("all function-call IPIs, idle phases", cost.histogram(IDLE_PHASE, "vector_all"))]
    if not any(h for _, h in series):
        return None
    width = 10.0
    fig = _figure(width, 3.9)
    ax = fig.add_subplot()
    for label, h in series:
        total = sum(int(v) for v in h.values()) if h else 0
        if not total:
            continue
        edges = sorted(h)
        ax.step([e / 1e3 for e in edges], [100.0 * int(h[e]) / total for e in edges], where="pre",
                label=f"{label}: {total:,}")
    _plain_log(ax.xaxis)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_xlabel("handler time (us, log scale; upper bucket edge; tracepoints included)")
    ax.set_ylabel("% of the IPIs")
    _legend_right(ax, title="IPIs on the other CPUs", title_fontsize=LEGEND_PT)
    _style(ax)
    title = _title(fig, f"Function-call IPI handler time on the other CPUs (collect --cost): {_run_list([a])}", width)
    _save(fig, path)
    return PlotFile(path, "handler", a.run.name, title)


# --- victim ------------------------------------------------------------------------------

def _victim_plot(a: RunAnalysis, path: Path) -> Optional[PlotFile]:
    """The victim loop's throughput over the run (mean over the other CPUs per slice
    time), the workload phases shaded (collect --victim)."""
    import pandas as pd
    from matplotlib.patches import Patch

    victim = a.run.section(VictimSection)
    csv = a.run.path / "victim.csv"
    windows = victim.windows if victim is not None else {}
    if not csv.exists() or not windows:
        return None
    import io

    from .. import files

    try:  # a regular file within the CSV cap, like every file of a run (tlbprobe/files.py)
        df = pd.read_csv(io.StringIO(files.read_text(csv, "victim.csv", files.cap("csv"))))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, InputError):
        return None
    if df.empty or not {"start_s", "end_s", "units", "cpu"} <= set(df.columns):
        return None
    t0 = float(df["start_s"].min())
    df = df.assign(t=df["start_s"] - t0, rate=df["units"] / (df["end_s"] - df["start_s"]) / 1e6)
    width = 11.0
    fig = _figure(width, 3.9)
    ax = fig.add_subplot()
    many = df["cpu"].nunique() > 8
    for cpu, d in df.groupby("cpu"):
        ax.plot(d["t"], d["rate"], lw=0.7, label=None if many else f"CPU {cpu}")
    for tag, (start, end) in windows.items():
        if tag.endswith("-workload"):
            ax.axvspan(start - t0, end - t0, color="orange", alpha=0.2, lw=0)
    ax.set_xlabel("time since the first slice (s)")
    ax.set_ylabel("victim throughput\n(work units per us)")
    ax.set_ylim(bottom=0)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color="orange", alpha=0.2, label="workload phases"))
    _legend_right(ax, handles=handles, title=f"{df['cpu'].nunique()} CPUs, one line each" if many else None,
                  title_fontsize=LEGEND_PT)
    _style(ax)
    title = _title(fig, f"Victim loop throughput on the other CPUs (collect --victim): {_run_list([a])}", width)
    _save(fig, path)
    return PlotFile(path, "victim", a.run.name, title)
