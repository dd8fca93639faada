"""A report across CPU counts: the same job on baseline and patched kernels at N = 2, 4, ...

The patch's argument is that the broadcast grows with the machine: one sync per
operation to each of the N-1 other CPUs. A sweep shows that growth, per N and kernel:
sync IPIs per operation per other CPU (traced, and CAL minus TLB), the total CAL the
other CPUs received, the initiator's time per operation, and the model's figure beside
them. Under TCG the time per operation mostly measures N vCPUs crowded onto the host's
cores, not the IPI's cost; the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import InputError
from ..ui.numbers import fmt_num
from . import ReportOptions, build_report
from .analyze import RunAnalysis

#: (vCPUs, variant) -> run directory
SweepRuns = Dict[int, Dict[str, Path]]


@dataclass(frozen=True)
class SweepRow:
    cpus: int
    variant: str
    ops: int
    traced_per_op_cpu: Optional[float]   # traced sync calls / ops / (N-1)
    cal_tlb_per_op_cpu: Optional[float]  # CAL-TLB estimate / ops / (N-1), never below 0
    cal_other: float                     # CAL on the other CPUs, workload phases
    sync_total: float                    # the verdict's figure: traced, else CAL-TLB
    model_total: Optional[float]         # the model's sync IPIs for this run
    ms_per_op: Optional[float]
    verdict: str
    accel: str


def sweep_rows(runs: SweepRuns, options: ReportOptions = ReportOptions(allow_incomplete=True)) -> List[SweepRow]:
    rows: List[SweepRow] = []
    for n in sorted(runs):
        for variant, path in runs[n].items():
            (a,) = build_report([str(path)], options).runs
            rows.append(_row(n, variant, a))
    if not rows:
        raise InputError("a sweep needs at least one run")
    return rows


def _row(n: int, variant: str, a: RunAnalysis) -> SweepRow:
    run, v = a.run, a.verdict
    others = max(len(run.other_cpus), 1)
    ops = run.ops
    traced = v.measured if v.basis == "traced" else None
    cal_tlb = max(v.estimate, 0.0) if v.estimate is not None else None
    per = (lambda x: x / ops / others if x is not None and ops else None)
    ms = a.stats.get("ms_per_op")
    accel = str((run.run_yaml.get("qemu") or {}).get("accel") or "host")
    return SweepRow(n, variant, ops, per(traced), per(cal_tlb), sum(r.cal_other_cpus for r in run.repeats),
                    v.measured or 0.0, v.expected, ms.median if ms else None, v.status, accel)


def render_table(rows: Sequence[SweepRow], width: int = 72) -> str:
    """The per-N table; fits 72 columns (the LKML format)."""
    head = f"{'vCPUs':>5} {'kernel':<8} {'ops':>6} {'traced':>7} {'CAL-TLB':>7} {'CAL other':>10} {'model':>10} {'ms/op':>7}"
    sub = f"{'':>5} {'':<8} {'':>6} {'/op/CPU':>7} {'/op/CPU':>7} {'CPUs':>10} {'sync':>10} {'':>7}"
    lines = [head, sub]
    for r in rows:
        lines.append(f"{r.cpus:>5} {r.variant:<8} {r.ops:>6} {fmt_num(r.traced_per_op_cpu, 3):>7} "
                     f"{fmt_num(r.cal_tlb_per_op_cpu, 3):>7} {fmt_num(r.cal_other):>10} "
                     f"{fmt_num(r.model_total):>10} {fmt_num(r.ms_per_op, 2):>7}")
    notes = ["traced: tlb_remove_table_smp_sync calls the kernel queued for the other",
             "CPUs; CAL-TLB: the same from /proc/interrupts less the idle background;",
             "model: sync IPIs the reference model predicts (ops x (N-1) unpatched)."]
    if any(r.accel == "tcg" for r in rows):
        notes += ["ms/op under TCG measures N vCPUs sharing the host's cores, not the",
                  "cost of an IPI: compare the counts, not the times."]
    bad = [f"{r.cpus}/{r.variant}: {r.verdict}" for r in rows if r.verdict != "matches"]
    if bad:
        notes.append("not matching the model: " + ", ".join(bad))
    out = lines + [""] + notes
    too_wide = [line for line in out if len(line) > width]
    assert not too_wide, too_wide  # a bug in this layout, not the user's input
    return "\n".join(out)


def write_plot(rows: Sequence[SweepRow], path: Path) -> Path:
    """Total sync IPIs and ms per operation against N, per kernel, with the model's line.

    The counts span orders of magnitude (a patched kernel's 0 beside N-1 per operation on
    the baseline), so their axis is symlog with 0 at its foot and each point labelled with
    its value; the time per operation is marked as the emulator's where the runs were TCG
    guests. Legends sit outside the axes (report/plots.py's rules; tests/test_plots.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from .plots import DPI, LABEL_PT, LEGEND_PT, NOTE_PT, TICK_PT, TITLE_PT, _count, _value_scale

    cpus = sorted({r.cpus for r in rows})
    tcg = any(r.accel == "tcg" for r in rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    counts: List[float] = []
    for variant, marker, color in (("baseline", "o", "tab:blue"), ("patched", "s", "tab:orange")):
        mine = [r for r in rows if r.variant == variant]
        if not mine:
            continue
        xs = [r.cpus for r in mine]
        ys = [max(r.sync_total, 0.0) for r in mine]
        # clip_on=False: a 0 sits on the axis' foot, whole
        left.plot(xs, ys, marker=marker, linestyle="", color=color, markersize=7, clip_on=False,
                  label=f"{variant}, measured")
        counts += ys
        for x, y in zip(xs, ys):
            left.annotate(fmt_num(y), (x, y), xytext=(7, 3), textcoords="offset points", fontsize=NOTE_PT,
                          color=color, va="bottom")
        model = [(r.cpus, r.model_total) for r in mine if r.model_total is not None]
        if model:
            left.plot([x for x, _ in model], [y for _, y in model], linestyle="--", color=color, lw=1,
                      label=f"{variant}, model")
            counts += [y for _, y in model]
        timed = [(r.cpus, r.ms_per_op) for r in mine if r.ms_per_op is not None]
        right.plot([x for x, _ in timed], [y for _, y in timed], marker=marker, color=color, label=variant)
    log = _value_scale(left, counts)
    top = max(counts + [1.0])
    left.set_ylim(0, top * (8 if log else 1.2))
    left.set_ylabel("sync IPIs to the other CPUs, per run\n(count" + (", log scale)" if log else ")"))
    left.set_title("sync IPIs per run, measured and the model's", fontsize=LABEL_PT)
    emu = " (emulator time under TCG, not an IPI's cost)" if tcg else ""
    right.set_ylabel("ms per operation, initiator")
    right.set_title("initiator's time per operation" + emu, fontsize=LABEL_PT)
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(cpus))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
        ax.set_xlim(min(cpus) / 1.5, max(cpus) * 1.6)
        ax.set_xlabel("CPUs (vCPUs of the guest)" if tcg else "CPUs")
        ax.tick_params(labelsize=TICK_PT)
        ax.xaxis.label.set_fontsize(LABEL_PT)
        ax.yaxis.label.set_fontsize(LABEL_PT)
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.2), ncols=2, fontsize=LEGEND_PT, frameon=False,
                  borderaxespad=0.0)
    kernels = " and ".join(v for v in ("baseline", "patched") if any(r.variant == v for r in rows))
    accels = sorted({r.accel for r in rows})
    where = ", ".join("runs on the host" if a == "host" else f"QEMU {a.upper()} guests" for a in accels)
    fig.suptitle(f"CPU-count sweep, {kernels} kernels at {', '.join(map(str, cpus))} CPUs ({where})",
                 fontsize=TITLE_PT)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
