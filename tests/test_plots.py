"""The PNG figures (`tlbprobe report --plots`, `tlbprobe repro --smp 4,16,64`), checked from
matplotlib's own geometry after drawing, on the recorded runs (analysis/runs).

A figure is checked as it was saved: Figure.savefig is wrapped, and after the real save the
renderer's extents are read from the layout that save drew (a figure saved at a dpi other
than its own is drawn again at that dpi first):

* every text (titles, axis labels, tick labels, annotations) and every legend lies inside
  the figure: nothing is cut off at its edge;
* no two texts overlap, and no legend overlaps a text;
* no legend covers drawn data of any axes: bars, error bars, markers, and the segments of
  lines and line collections, each clipped to its axes as matplotlib clips it;
* each run a figure is about is named in it in full (a label "tcg64-baseline-collapse-" is
  a cut label even if it fits the figure);
* a value axis whose data span two orders of magnitude or more is logarithmic (log or
  symlog); every axes with data has labelled axes; the figure has a title;
* at 100% on a laptop screen: no text under 10 px, no figure wider than 1600 px.

And per kind: A and B per CPU in one figure on one (shared) scale; latency and handler-time
histograms in % of samples over a time in us; the model figure's 0 written out beside the
baseline's 387,072; a run without phases.csv gets a timeline that says why it has no curve;
--cost, --victim and the sweep plot on synthetic runs (no recorded run has them).
test_the_checker_catches_bad_figures keeps the checker honest: a figure with each fault
must be caught.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from runfactory import make_run  # noqa: E402
from tlbprobe.report import ReportOptions, build_report  # noqa: E402
from tlbprobe.report.plots import write_plots  # noqa: E402

RUNS = Path(__file__).resolve().parent.parent / "analysis" / "runs"
FAULT = Path(__file__).resolve().parent.parent / "analysis" / "fault-injection"
ALL_RUNS = sorted(p for p in RUNS.iterdir() if (p / "summary.json").is_file())
PAIRS = [
    ("tcg-baseline-collapse-1G", "tcg-patched-collapse-1G"),
    ("tcg-baseline-collapse-1G-threads", "tcg-patched-collapse-1G-threads"),
    ("tcg-baseline-hugetlb-unshare-1G", "tcg-patched-hugetlb-unshare-1G"),
    ("tcg64-baseline-collapse-12G-traced", "tcg64-patched-collapse-12G-traced"),
    ("tcg64-baseline-collapse-12G-notrace", "tcg64-patched-collapse-12G-notrace"),
    ("host-hugetlb-unshare-1G", "host-hugetlb-unshare-1G-control"),
]

MIN_TEXT_PX = 10.0  # 7.5 pt at 96 dpi: the smallest text read without zooming
MAX_WIDTH_PX = 1600  # a laptop screen at 100%
SPAN_NEEDS_LOG = 100.0  # max / smallest non-zero value on a linear value axis


# --- capturing the saved figures ---------------------------------------------------------

@dataclass
class Saved:
    path: Path
    fig: Figure
    dpi: float


@pytest.fixture
def saved(monkeypatch) -> Dict[Path, Saved]:
    """Every figure saved while the test runs, by the path it was saved to."""
    out: Dict[Path, Saved] = {}
    real = Figure.savefig

    def spy(self, fname, *args, **kw):
        real(self, fname, *args, **kw)
        dpi = kw.get("dpi")
        out[Path(fname)] = Saved(Path(fname), self, float(self.dpi if dpi in (None, "figure") else dpi))

    monkeypatch.setattr(Figure, "savefig", spy)
    return out


def render(paths: Sequence[Path], outdir: Path, saved: Dict[Path, Saved]):
    report = build_report([str(p) for p in paths], ReportOptions(allow_incomplete=True))
    files = write_plots(report, outdir)
    assert files, "no plots written"
    for f in files:
        assert f.path in saved, f"{f.path} listed but not saved"
        assert f.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f.path
    return report, files


# --- geometry ----------------------------------------------------------------------------

def _renderer(s: Saved):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(s.fig)  # a closed figure keeps only a base canvas
    if s.fig.dpi != s.dpi:  # saved at another dpi: lay it out and draw it again at that one
        s.fig.set_dpi(s.dpi)
        canvas.draw()
    return canvas.get_renderer()  # else the layout of the save stands: measure it as drawn


def _shown(t) -> bool:
    return t is not None and t.get_visible() and bool(t.get_text().strip())


def texts(fig: Figure) -> List[Tuple[str, "matplotlib.text.Text"]]:
    """(what, Text) for each visible, non-empty text the figure draws, legends' own excepted."""
    out = [(f"figure text {t.get_text()!r}", t) for t in fig.texts if _shown(t)]
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        out += [(f"axes {i} text {t.get_text()!r}", t) for t in ax.texts if _shown(t)]
        if not ax.axison:  # axis("off"): a key's or a note's holder, no title, labels or ticks
            continue
        for t in (ax.title, ax._left_title, ax._right_title):
            if _shown(t):
                out.append((f"axes {i} title {t.get_text()!r}", t))
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if _shown(axis.label):
                out.append((f"axes {i} {name} label {axis.label.get_text()!r}", axis.label))
            if _shown(axis.get_offset_text()):
                out.append((f"axes {i} {name} offset text", axis.get_offset_text()))
            for tick in axis._update_ticks():  # the ticks inside the view: the ones drawn
                for lab in (tick.label1, tick.label2):
                    if _shown(lab):
                        out.append((f"axes {i} {name} tick label {lab.get_text()!r}", lab))
    return out


def legends(fig: Figure) -> List:
    out = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [lg for lg in out + list(fig.legends) if lg.get_visible()]


def all_strings(fig: Figure) -> List[str]:
    out = [t.get_text() for _, t in texts(fig)]
    for lg in legends(fig):
        out += [t.get_text() for t in lg.get_texts()]
        if lg.get_title().get_text():
            out.append(lg.get_title().get_text())
    return out


def _overlap(a: Bbox, b: Bbox, tol: float = 1.0) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tol and min(a.y1, b.y1) - max(a.y0, b.y0) > tol


def _segments_cross(p0: np.ndarray, p1: np.ndarray, box: Bbox) -> np.ndarray:
    """Liang-Barsky: which segments p0[i]-p1[i] pass through the box."""
    d = p1 - p0
    lo, hi = np.zeros(len(p0)), np.ones(len(p0))
    ok = np.isfinite(p0).all(axis=1) & np.isfinite(p1).all(axis=1)
    for p, q in ((-d[:, 0], p0[:, 0] - box.x0), (d[:, 0], box.x1 - p0[:, 0]),
                 (-d[:, 1], p0[:, 1] - box.y0), (d[:, 1], box.y1 - p0[:, 1])):
        flat = p == 0
        ok &= ~(flat & (q < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(flat, 0.0, q / np.where(flat, 1.0, p))
        lo = np.where(~flat & (p < 0), np.maximum(lo, r), lo)
        hi = np.where(~flat & (p > 0), np.minimum(hi, r), hi)
    return ok & (lo <= hi)


def _points_in(pts: np.ndarray, box: Bbox, r: float) -> np.ndarray:
    pts = pts[np.isfinite(pts).all(axis=1)]
    return ((pts[:, 0] + r > box.x0) & (pts[:, 0] - r < box.x1)
            & (pts[:, 1] + r > box.y0) & (pts[:, 1] - r < box.y1))


def _stepped(line: Line2D) -> np.ndarray:
    xy = np.asarray(line.get_xydata(), dtype=float)
    style = line.get_drawstyle()
    if style in (None, "default") or len(xy) < 2:
        return xy
    from matplotlib.cbook import STEP_LOOKUP_MAP

    x, y = STEP_LOOKUP_MAP[style](xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def data_under(ax, box: Bbox) -> List[str]:
    """The data artists of ``ax`` that draw something inside ``box`` (display pixels)."""
    clip = Bbox.intersection(box, ax.bbox)
    if clip is None or clip.width < 1 or clip.height < 1:
        return []
    inner = Bbox.from_extents(clip.x0 + 1, clip.y0 + 1, clip.x1 - 1, clip.y1 - 1)
    hits = []
    for art in list(ax.patches) + list(ax.lines) + list(ax.collections):
        if not art.get_visible():
            continue
        where = inner if art.get_clip_on() else Bbox.intersection(box, box)
        name = f"{type(art).__name__} {art.get_label()!r}"
        if isinstance(art, Patch):
            verts = art.get_transform().transform(art.get_path().vertices)
            if len(verts) and np.isfinite(verts).all():
                bb = Bbox.from_extents(*verts.min(axis=0), *verts.max(axis=0))
                if bb.width >= 0.5 and bb.height >= 0.5 and _overlap(bb, where, 0.0):
                    hits.append(name)
        elif isinstance(art, Line2D):
            pts = art.get_transform().transform(_stepped(art))
            if art.get_linestyle() not in ("None", "none", "", " ") and len(pts) > 1 \
                    and _segments_cross(pts[:-1], pts[1:], where).any():
                hits.append(name)
            elif art.get_marker() not in (None, "None", "none", "", " ") and len(pts) \
                    and _points_in(pts, where, art.get_markersize() * ax.figure.dpi / 144).any():
                hits.append(name)
        elif isinstance(art, LineCollection):
            tr = art.get_transform()
            for path in art.get_paths():
                v = tr.transform(path.vertices)
                if len(v) > 1 and _segments_cross(v[:-1], v[1:], where).any():
                    hits.append(name)
                    break
        elif isinstance(art, PathCollection):
            offs = art.get_offset_transform().transform(art.get_offsets())
            sizes = art.get_sizes()
            r = float(np.sqrt(sizes.max()) * ax.figure.dpi / 144) if len(sizes) else 0.0
            if len(offs) and _points_in(offs, where, r).any():
                hits.append(name)
        else:
            bb = art.get_window_extent()
            if bb.width > 0 and bb.height > 0 and _overlap(bb, where, 0.0):
                hits.append(name)
    return hits


def _value_spans(ax) -> List[Tuple[str, List[float]]]:
    """(axis, values) of the data drawn in data coordinates: bar lengths on their value axis,
    line and marker positions on y."""
    vertical, horizontal, ys = [], [], []
    for p in ax.patches:
        if p.get_data_transform() != ax.transData or not hasattr(p, "get_height"):
            continue
        if p.get_y() == 0:
            vertical.append(abs(p.get_height()))
        elif p.get_x() == 0:
            horizontal.append(abs(p.get_width()))
    for line in ax.lines:
        if line.get_transform() == ax.transData:
            ys += [abs(v) for v in np.asarray(line.get_ydata(), dtype=float) if np.isfinite(v)]
    return [("y", vertical + ys), ("x", horizontal)]


def check_figure(s: Saved, about: Sequence[str] = ()) -> List[str]:
    """What is wrong with a saved figure; ``about``: the run names it must show in full."""
    fig, bad = s.fig, []
    renderer = _renderer(s)
    w, h = fig.bbox.width, fig.bbox.height
    where = s.path.name
    if w > MAX_WIDTH_PX:
        bad.append(f"{where}: {w:.0f} px wide, more than a laptop screen's {MAX_WIDTH_PX}")
    boxes: List[Tuple[str, Bbox, Optional[object]]] = []
    for what, t in texts(fig):
        bb = t.get_window_extent(renderer)
        boxes.append((what, bb, None))
        px = t.get_fontsize() * s.dpi / 72
        if px < MIN_TEXT_PX - 1e-6:
            bad.append(f"{where}: {what} is {px:.1f} px high, under {MIN_TEXT_PX:.0f} px")
    for i, lg in enumerate(legends(fig)):
        boxes.append((f"legend {i}", lg.get_window_extent(renderer), lg))
        for t in lg.get_texts():
            px = t.get_fontsize() * s.dpi / 72
            if px < MIN_TEXT_PX - 1e-6:
                bad.append(f"{where}: legend text {t.get_text()!r} is {px:.1f} px high")
                break
        for j, ax in enumerate(fig.axes):
            for hit in data_under(ax, lg.get_window_extent(renderer)):
                bad.append(f"{where}: legend {i} covers the data of axes {j}: {hit}")
    for what, bb, _ in boxes:
        if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > w + 1 or bb.y1 > h + 1:
            bad.append(f"{where}: {what} is cut off at the figure's edge "
                       f"({bb.x0:.0f},{bb.y0:.0f})-({bb.x1:.0f},{bb.y1:.0f}) in {w:.0f}x{h:.0f}")
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if _overlap(boxes[i][1], boxes[j][1]):
                bad.append(f"{where}: {boxes[i][0]} overlaps {boxes[j][0]}")
    flat = "".join("".join(all_strings(fig)).split())
    for name in about:
        if name not in flat:
            bad.append(f"{where}: the run {name!r} is not named in full")
    sup = fig._suptitle
    if not (sup is not None and sup.get_text().strip()) and not any(what.split()[2:3] == ["title"]
                                                                     for what, _ in texts(fig)):
        bad.append(f"{where}: no title")
    for j, ax in enumerate(fig.axes):
        if not (ax.patches or ax.lines or ax.collections):
            continue
        for axis, values in _value_spans(ax):
            pos = [v for v in values if v > 0]
            scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
            if pos and max(pos) / min(pos) >= SPAN_NEEDS_LOG and scale == "linear":
                bad.append(f"{where}: axes {j}'s {axis} values span {min(pos):g}..{max(pos):g} on a linear axis")
        for axis in ("x", "y"):
            shared = (ax.get_shared_x_axes() if axis == "x" else ax.get_shared_y_axes()).get_siblings(ax)
            labels = [(a.get_xlabel() if axis == "x" else a.get_ylabel()) for a in shared]
            sup = getattr(fig, "_supxlabel" if axis == "x" else "_supylabel", None)
            if not any(labels) and not (sup is not None and sup.get_text()):
                bad.append(f"{where}: axes {j} has no {axis} label")
    return bad


def assert_clean(problems: Iterable[str]) -> None:
    problems = list(problems)
    assert not problems, f"{len(problems)} problem(s):\n  " + "\n  ".join(problems[:60])


def check_all(report, files, saved) -> List[str]:
    names = [a.run.name for a in report.runs]
    bad = []
    for f in files:
        bad += check_figure(saved[f.path], names if f.run is None else [f.run])
    return bad


def check_percpu_shared(report, files, saved) -> List[str]:
    """A and B per CPU in one figure, every run's panel on one shared y scale."""
    names = [a.run.name for a in report.runs]
    per = [f for f in files if f.kind == "percpu"]
    if len(per) != 1 or per[0].run is not None:
        return [f"per-CPU plots: {len(per)} figures ({', '.join(f.path.name for f in per)}), "
                f"not the {len(names)} runs in one figure on one scale"]
    fig = saved[per[0].path].fig
    panels = [ax for ax in fig.axes if ax.patches]
    if len(panels) < len(names):
        return [f"{per[0].path.name}: {len(panels)} panels with bars for {len(names)} runs"]
    shared = panels[0].get_shared_y_axes()
    return [f"{per[0].path.name}: panel {i} not on the first panel's y scale"
            for i, ax in enumerate(panels) if not shared.joined(panels[0], ax)]


# --- the recorded runs -------------------------------------------------------------------

@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[0])
def test_recorded_pair(pair, tmp_path, saved):
    report, files = render([RUNS / n for n in pair], tmp_path, saved)
    assert_clean(check_all(report, files, saved) + check_percpu_shared(report, files, saved))


def test_fault_injection_pair(tmp_path, saved):
    pair = [RUNS / "tcg-debug-baseline-collapse-race", FAULT / "tcg-debug-broken-collapse-race"]
    report, files = render(pair, tmp_path, saved)
    assert_clean(check_all(report, files, saved) + check_percpu_shared(report, files, saved))


def test_all_recorded_runs_together(tmp_path, saved):
    assert len(ALL_RUNS) == 20
    report, files = render(ALL_RUNS, tmp_path, saved)
    assert_clean(check_all(report, files, saved) + check_percpu_shared(report, files, saved))
    (model,) = [f for f in files if f.kind == "model"]
    fig = saved[model.path].fig
    # baseline 387,072 and patched 0 on one axis: log-like, and the zero written out
    (ax,) = [a for a in fig.axes if a.patches]
    assert "log" in ax.get_xscale() + ax.get_yscale()
    assert "0" in [t.get_text() for t in ax.texts]


def shares_in_us(s: Saved) -> List[str]:
    """A histogram of shares: an x label with the unit us, a y label in %, no curve over 100."""
    fig, where = s.fig, s.path.name
    xl = " ".join(a.get_xlabel() for a in fig.axes)
    yl = " ".join(a.get_ylabel() for a in fig.axes)
    bad = [] if re.search(r"\bus\b", xl) else [f"{where}: no unit (us) on the x axis: {xl!r}"]
    bad += [] if "%" in yl else [f"{where}: the y axis is not in % of samples: {yl!r}"]
    top = max((np.nanmax(np.asarray(line.get_ydata(), dtype=float)) for ax in fig.axes for line in ax.lines
               if len(line.get_ydata())), default=0.0)
    return bad + ([f"{where}: a curve reaches {top:g}: counts, not % shares"] if top > 100.0 else [])


def test_latency_histograms_are_shares_in_us(tmp_path, saved):
    run = RUNS / "host-collapse-256M-latency"
    report, files = render([run], tmp_path, saved)
    (lat,) = [f for f in files if f.kind == "latency"]
    assert_clean(shares_in_us(saved[lat.path]) + check_figure(saved[lat.path], [run.name]))


def test_missing_phases_csv_is_said_in_the_timeline(tmp_path, saved):
    run = tmp_path / "runs" / "host-collapse-256M"
    shutil.copytree(RUNS / run.name, run)
    (run / "phases.csv").unlink()
    report, files = render([run], tmp_path / "plots", saved)
    timeline = [f for f in files if f.kind == "timeline"]
    assert timeline, "no timeline and no word why: " + ", ".join(f.path.name for f in files)
    s = saved[timeline[0].path]
    assert any("phases.csv" in t for t in all_strings(s.fig)), all_strings(s.fig)
    assert "phases.csv" in timeline[0].title
    assert_clean(check_figure(s, [run.name]))


# --- what no recorded run has: --cost, --victim and a sweep, on synthetic runs -----------

def _add_cost_and_victim(run: Path) -> None:
    import json

    summary = json.loads((run / "summary.json").read_text())
    sync = {str(1000 * (2 + i)): n for i, n in enumerate([5, 40, 300, 90, 12, 3, 1])}
    every = {str(1000 * (1 + i)): n for i, n in enumerate([2000, 9000, 800, 60, 4])}
    summary["cost"] = {"histograms": {"workload": {"vector_sync": sync}, "idle": {"vector_all": every}}}
    t = 100.0
    rows, windows = [], {}
    for r in range(3):
        for phase, dur in (("idle", 2.0), ("workload", 2.0)):
            windows[f"r{r}-{phase}"] = [t, t + dur]
            for k in range(int(dur / 0.1)):
                for cpu in (1, 2, 3):
                    units = 50_000 if phase == "idle" else 42_000 + 1000 * cpu
                    rows.append(f"{cpu},{t + 0.1 * k:.3f},{t + 0.1 * (k + 1):.3f},{units},0,0,0")
            t += dur
    summary["victim"] = {"windows": windows}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "victim.csv").write_text("cpu,start_s,end_s,units,max_gap_ns,gaps,excess_ns\n" + "\n".join(rows) + "\n")


def test_handler_and_victim_plots(tmp_path, saved):
    run = make_run(tmp_path, "cost-and-victim-run-with-a-long-name", online_cpus=4, seed=5,
                   flush_mode="native", hypervisor=None, timeseries_samples=4)
    _add_cost_and_victim(run)
    report, files = render([run], tmp_path / "plots", saved)
    kinds = {f.kind for f in files}
    assert {"handler", "victim"} <= kinds, kinds
    (handler,) = [f for f in files if f.kind == "handler"]
    assert_clean(shares_in_us(saved[handler.path]) + check_all(report, files, saved))


def test_sweep_plot(tmp_path, saved):
    from tlbprobe.report.sweep import sweep_rows, write_plot

    runs = {}
    for n in (4, 16, 64):
        base = make_run(tmp_path, f"smp{n}-baseline", online_cpus=n, repeats=1, kernel_variant="baseline",
                        flush_mode="native", hypervisor=None, seed=n)
        patched = make_run(tmp_path, f"smp{n}-patched", online_cpus=n, repeats=1, kernel_variant="patched",
                           sync_per_op=0.0, flush_mode="native", hypervisor=None, seed=n + 1)
        runs[n] = {"baseline": base, "patched": patched}
    rows = sweep_rows(runs)
    path = write_plot(rows, tmp_path / "sweep" / "sweep.png")
    assert path in saved
    assert_clean(check_figure(saved[path]))
    # as repro makes them: TCG guests, where the time per operation is the emulator's
    tcg = [dataclasses.replace(r, accel="tcg", ms_per_op=(r.ms_per_op or 1.0) * (1 + r.cpus / 8)) for r in rows]
    path = write_plot(tcg, tmp_path / "sweep-tcg" / "sweep.png")
    assert_clean(check_figure(saved[path]))
    strings = " ".join(all_strings(saved[path].fig))
    assert "emulator time" in strings and "TCG" in strings and "4, 16, 64" in strings
    (counts,) = [a for a in saved[path].fig.axes if "sync IPIs" in a.get_ylabel()]
    assert counts.get_yscale() == "symlog" and "0" in [t.get_text() for t in counts.texts]


# --- the checker itself: it must catch what it is there to catch --------------------------

def test_the_checker_catches_bad_figures(tmp_path, saved):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 10], [5, 5], label="level")
    ax.bar([2, 8], [0.01, 9], label="bars")  # 900x on a linear axis
    ax.legend(loc="center", fontsize=6)  # over the line, and too small
    ax.set_xticks([0, 0.1, 10])
    ax.set_xticklabels(["tcg64-baseline-collapse-", "overlapping", "a very long label at the right edge"])
    ax.set_ylabel("count")
    p = tmp_path / "bad.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    bad = check_figure(saved[p], ["tcg64-baseline-collapse-12G-traced"])
    text = "\n".join(bad)
    assert "legend 0 covers the data" in text
    assert "cut off at the figure's edge" in text
    assert "overlaps" in text
    assert "not named in full" in text
    assert "on a linear axis" in text
    assert "px high" in text
    assert "no x label" in text
    assert "no title" in text
