"""The rows and lines shared by the renderers: the per-CPU rows, the run's facts, the
comparison's rows, what was measured.

Renderers differ in layout only; what a figure says is decided here once, so the text,
LKML, Markdown, HTML and JSON outputs cannot disagree. How a number is written and how
rows are laid out in columns is tlbprobe/ui's (numbers.py, tables.py), shared with the
collect summary and `tlbprobe diff`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

from ..ui.numbers import fmt_num, fmt_p, fmt_pct
from ..vocab import COUNT, EXACT, RATE, SYNC_FUNCTION
from .analyze import RunAnalysis
from .figures import all_queued, counted_in_kernel
from .stats import Spread


@dataclass(frozen=True)
class CpuRow:
    cpu: int
    role: str  # driver | thread | other
    cal: float
    tlb: float
    expected_sync: Optional[float]

    @property
    def sync_raw(self) -> float:
        return self.cal - self.tlb


def per_cpu_rows(a: RunAnalysis) -> List[CpuRow]:
    """CAL and TLB received per CPU, summed over the workload phases of the finished repeats."""
    run = a.run
    threads = int(run.job.get("threads") or 0)
    thread_cpus = set(run.other_cpus[:threads])
    per_other = a.prediction.sync_ipis_per_other_cpu
    rows: List[CpuRow] = []
    cpus = run.cpus
    # The driver's CPU is counted when the broadcasts come from a kernel thread on any CPU
    # (khugepaged): each CPU then gets what was sent from the others, a split the model
    # cannot know, so no per-CPU expectation is given.
    any_sender = run.driver_cpu in run.other_cpus
    for c in cpus:
        cal = sum(r.workload.cal_per_cpu.get(c, 0.0) for r in run.repeats if r.workload)
        tlb = sum(r.workload.tlb_per_cpu.get(c, 0.0) for r in run.repeats if r.workload)
        role = "driver" if c == run.driver_cpu else ("thread" if c in thread_cpus else "other")
        expected = None if any_sender else (0.0 if role == "driver" else per_other)
        rows.append(CpuRow(c, role, cal, tlb, expected))
    return rows


def expected_per_repeat(a: RunAnalysis) -> Optional[float]:
    """The model's sync IPIs for an average repeat, to set beside per-repeat means."""
    v = a.prediction.sync_ipis.value
    n = len(a.run.repeats)
    return None if v is None or n == 0 else v / n


def shown_sync(v) -> str:
    """A verdict's measured sync IPIs as a person should read them: never a negative count.
    A CAL-only estimate below 0 (the background estimate exceeded the raw count) is
    "0 (below background, at most X)", X being the raw CAL-TLB."""
    if v.below_background and v.bounds is not None:
        return f"0 (below background, at most {fmt_num(v.bounds.high)})"
    return fmt_num(None if v.measured is None else max(v.measured, 0.0))


def fmt_mean_ci(s: Optional[Spread], digits: int, kind: str = RATE) -> str:
    """A figure of the comparison table as its kind (vocab.py FIGURE_KINDS) is written:
    an exact count as the integer it is (its range "min..max" where repeats differ), no
    spread; a noisy count as an integer mean, "±half-CI" with 3+ repeats, never below 0;
    a rate or a time as 'mean ±half-CI' with ``digits`` decimals (the mean alone with
    fewer than 3 repeats)."""
    if s is None:
        return "-"
    if kind == EXACT:
        return fmt_num(s.min) if s.min == s.max else f"{fmt_num(s.min)}..{fmt_num(s.max)}"
    if kind == COUNT:
        digits = 0
    mean = max(s.mean, 0.0) if kind == COUNT else s.mean
    if s.ci_half is not None and s.ci_half > 0:
        return f"{fmt_num(mean, digits)} ±{fmt_num(s.ci_half, digits)}"
    return fmt_num(mean, digits)


def fmt_spread(s: Optional[Spread], digits: int, kind: str = RATE) -> str:
    """'median [min..max]' plus the 95% CI of the mean where there is one; a count's
    interval is cut at 0 (a count is never negative)."""
    if s is None:
        return "-"
    low = (lambda v: max(v, 0.0)) if kind in (COUNT, EXACT) else (lambda v: v)  # noqa: E731
    out = f"median {fmt_num(s.median, digits)} [{fmt_num(low(s.min), digits)}..{fmt_num(s.max, digits)}]"
    if s.ci95 is not None:
        out += f", 95% CI {fmt_num(low(s.ci95[0]), digits)}..{fmt_num(low(s.ci95[1]), digits)}"
    return out


def change_cell(f) -> str:
    """The change column of a comparison row: the percent change, or why none is given
    (an emulated time; counts too small or within their noise)."""
    if f.emulated:
        return "emulated"
    return fmt_pct(f.change_pct)


def workload_line(a: RunAnalysis) -> str:
    """'MADV_COLLAPSE of 256M on CPU 0, 0 threads, 3 repeats': what was run is the
    workload's to say (WorkloadSpec.report_what)."""
    run, s = a.run, a.scenario
    threads = int(run.job.get("threads") or 0)
    what = a.spec.report_what(run, s)
    reps = run.summary.get("repeats_planned", len(run.repeats))
    return (f"{what} on CPU {run.driver_cpu}, {threads} thread{'s' if threads != 1 else ''}, "
            f"{reps} repeat{'s' if reps != 1 else ''}")


def ops_line(a: RunAnalysis) -> str:
    unit = a.run.summary.get("ops_unit") or "operations"
    note = a.spec.ops_note(a.run)  # why they differ, when the workload knows (WorkloadSpec.ops_note)
    return f"{a.run.ops:,} of {a.run.ops_expected:,} {unit}" + (f" ({note})" if note else "")


def host_line(a: RunAnalysis) -> str:
    """Where the run was measured (report/provenance.py): host, guest and its flush mode,
    or the QEMU guest with its vCPUs, TCG threading and the host's cores."""
    return prov(a).where()


def kernel_line(a: RunAnalysis) -> str:
    """The kernel by release and variant, its cache key and its patch series."""
    p = prov(a)
    subjects = p.patch_lines()
    return p.kernel(a.variant.value) + (": " + "; ".join(subjects) if subjects else "")


def prov(a: RunAnalysis):
    from .provenance import provenance

    return a.provenance if a.provenance is not None else provenance(a.run)


def short_source(source: str) -> str:
    if "test-only wrapper" in source:  # kernels/test-only/: pv by design, IPIs underneath
        return "as recorded: tlbprobe's test-only wrapper of the native flush"
    if source.startswith("run.yaml") or source.startswith("summary.json"):
        return "as recorded"
    if source.startswith("kernel release"):
        return "by --variant-pattern"
    if source.startswith("command line"):
        return "from --flush-mode"
    return "unknown"


def reproduce_commands(runs: Sequence[RunAnalysis]) -> List[str]:
    """The command(s) that made the runs, once each (report/provenance.py): the repro or
    qemu collect line of a guest run, the collect line of a host run; no --out, job files
    by job name."""
    cmds: List[str] = []
    for a in runs:
        line = prov(a).reproduce
        if line and line not in cmds:
            cmds.append(line)
    return cmds


def reproduce_notes(runs: Sequence[RunAnalysis]) -> List[str]:
    """How each reproduce line was learned ('as recorded', 'reconstructed from ...'), once each."""
    notes: List[str] = []
    for a in runs:
        n = prov(a).reproduce_note
        if n and n not in notes:
            notes.append(n)
    return notes


def provenance_warnings(runs: Sequence[RunAnalysis]) -> List[str]:
    """What the runs' run.yaml does not record, once each, with the runs it concerns."""
    seen: dict = {}
    for a in runs:
        for w in prov(a).warnings:
            seen.setdefault(w, []).append(a.label)
    if len(runs) == 1:
        return list(seen)
    return [f"{', '.join(labels)}: {w}" for w, labels in seen.items()]


def comparison_rows(c) -> List[Tuple[str, ...]]:
    """The rows every renderer shows for a comparison: each figure per repeat (the mean
    over the repeats, as its kind is written) with its change and test or why it has none,
    then the model's expectation per repeat and the verdicts."""
    a, b = c.base, c.other
    rows: List[Tuple[str, ...]] = [
        (f.label, fmt_mean_ci(f.base, f.digits, f.kind), fmt_mean_ci(f.other, f.digits, f.kind), change_cell(f),
         fmt_p(f.welch.p if f.welch else None), "" if f.emulated else f.mark)
        for f in c.figures
    ]
    rows.append(("model, per repeat", fmt_num(expected_per_repeat(a)), fmt_num(expected_per_repeat(b)),
                 "", "", ""))
    rows.append(("verdict", a.verdict.status, b.verdict.status, "", "", ""))
    return rows


#: The marks of the comparison table, explained once under it (every renderer).
MARKS = ("per repeat: the mean over the repeats, ±95% CI with 3 or more. "
         "* marks a change with Welch's t-test p<0.05 whose [min,max] ranges do not overlap; "
         "no mark: tested, inside the noise. Untested: n=N, fewer than 3 repeats on a side "
         "(collect or repro --repeat 3 gives a test); sd=0, neither side varies; exact, "
         "counted not sampled; few, counts under 10 on both sides; noise, a change within "
         "the counts' Poisson noise (2 sigma); no percent change of a count from a baseline under 10. "
         "Emulated: a time measured in a QEMU TCG guest, the emulator's, not the kernel's: "
         "no change given, no test.")


def measured_lines(a) -> List[Tuple[str, str]]:
    """(name, text) lines for what was measured: the traced count when the verdict rests on
    it, and the CAL-TLB estimate with its spread over repeats, each under its own name."""
    v = a.verdict
    sync = a.stats.get("sync_ipis")
    estimate = v.estimate if v.estimate is not None else v.measured
    lines: List[Tuple[str, str]] = []
    if v.basis == "traced":
        if all_queued(a.run):
            received = a.run.function_totals().get(SYNC_FUNCTION, 0.0)
            how = " (counted in the kernel: perf counter on csd_queue_cpu)" if counted_in_kernel(a.run) else ""
            lines.append(("measured", f"traced tlb_remove_table_smp_sync calls {fmt_num(v.measured)} in total{how}, "
                                      f"{fmt_num(received)} of them arrived as IPIs"))
        else:
            lines.append(("measured", f"traced tlb_remove_table_smp_sync IPIs {fmt_num(v.measured)} in total"))
        lines.append(("", f"CAL-TLB estimate {fmt_num(max(estimate, 0.0))} in total; "
                          f"per repeat {fmt_spread(sync, 0, COUNT)}"))
    else:
        lines.append(("measured", f"sync IPIs (CAL-TLB) {shown_sync(v)} in total; "
                                  f"per repeat {fmt_spread(sync, 0, COUNT)}"))
        if v.bounds is not None:
            lines.append(("", f"between {fmt_num(v.bounds.low)} and {fmt_num(v.bounds.high)}: {v.bounds.method()}"))
    per_op = a.stats.get("sync_per_op_per_cpu")
    if per_op is not None:
        lines.append(("", f"CAL-TLB {fmt_num(per_op.median, 3)} per operation per other CPU (median)"))
    return lines


PER_CPU_HEADERS = ("CPU", "role", "CAL", "TLB", "CAL−TLB", "expected sync")


def per_cpu_cells(a) -> List[Tuple[str, ...]]:
    """Rows under PER_CPU_HEADERS for the Markdown and HTML reports."""
    return [(str(r.cpu), r.role, fmt_num(r.cal), fmt_num(r.tlb), fmt_num(r.sync_raw), fmt_num(r.expected_sync))
            for r in per_cpu_rows(a)]


def latency_comparison_rows(c) -> List[Tuple[str, ...]]:
    """Latency percentiles side by side (phase, CPU role, percentile, base, other)."""
    return [(r.phase, r.role, r.metric.replace("_us", ""), fmt_num(r.base, 1), fmt_num(r.other, 1))
            for r in c.latency]


def workload_figures_line(a: RunAnalysis) -> Optional[str]:
    """The workload's own figures (summary.json workload_figures), as its spec writes them
    (WorkloadSpec.figures_line: for khugepaged how fast it collapsed against what its knobs
    allow), with the --race line of a run that raced."""
    figs = [r.workload.workload_figures for r in a.run.repeats if r.workload and r.workload.workload_figures]
    if not figs:
        return None
    return a.spec.figures_line(figs, a.run, a.scenario, race_line(a, figs))


def race_line(a: RunAnalysis, figs: Sequence[Mapping[str, float]]) -> str:
    """What the walkers of a --race run saw (workloads/race.py), "" for a run that did not race."""
    if not any("races_attempted" in f for f in figs):
        return ""
    total = lambda key: sum(f.get(key, 0.0) for f in figs)  # noqa: E731
    raced = (f"{fmt_num(total('ops_raced'))} of {fmt_num(a.run.ops_expected)} ranges collapsed while a walker "
             f"pinned, "
             if any("ops_raced" in f for f in figs) else "")
    race = (f"race: {fmt_num(total('races_attempted'))} walker calls overlapped the operation, {raced}"
            f"{fmt_num(total('collapses_refused'))} {a.spec.refused_label}, {fmt_num(total('corrupted_bytes'))} "
            f"corrupted bytes, {fmt_num(total('kernel_reports'))} kernel reports")
    if any(f.get("race_writers") or f.get("lost_writes") for f in figs):  # pinning-only walkers store nothing
        race += (f", {fmt_num(total('lost_writes'))} lost writes (of {fmt_num(total('race_writes'))} by "
                 f"{fmt_num(max(f.get('race_writers', 0.0) for f in figs))} writer threads)")
    return race
