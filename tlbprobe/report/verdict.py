"""The verdict on one run: does what it measured match the model?

Two bases, in this order of trust:

* traced: the kernel's own count of tlb_remove_table_smp_sync calls (csd_queue_cpu,
  counted in the kernel or in the trace buffer). No background to allow for: the
  tolerance is a small relative term for another process's odd collapse.
* CAL minus TLB, when nothing traced the calls (--no-trace, or a kernel with neither
  csd nor kprobe events). The background of sync-looking IPIs is not stationary: a
  2 s idle window can catch a burst on one CPU, and the workload changes what the
  other CPUs do (a 64-vCPU patched run received 453 CAL in 39 s while its idle window
  said 28/s, so subtracting "28/s x 39 s" made the sync count -634). So the verdict
  does not rest on a subtraction. It bounds: the sync IPIs lie between the raw CAL-TLB
  of the workload phases minus the most background they can have held (the busiest
  idle window's rate at its Poisson upper bound, times the workload's duration) and
  the raw count itself (background is never negative). A run matches when the model's
  figure lies in that interval, widened by a small relative term. A patched kernel
  that leaves 1% of a 64-CPU baseline's broadcasts (3,870 in that run) lands far
  above the bound (~1,500) and is judged "differs". The point estimate (raw minus the
  pooled idle rate times the duration) is kept for tables, shown as 0 when the
  background estimate exceeds the raw count.

When measured and expected disagree, the model is asked again under other assumptions
(other flush mode, other variant, other hugetlb kernel behaviour, the asked-for operation
count) and the first one that fits is given as the likely reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

from ..model import ModelParams, Prediction, Scenario, predict
from ..rundir.reader import Run
from ..rundir.sections import CheckSection
from ..vocab import SYNC_FUNCTION
from ..workloads import spec as workload_spec
from .figures import (counted_in_kernel, other_functions, ring_lost, trace_lost, traced_sync,
                      without_interrupt)
from .stats import Spread


@dataclass(frozen=True)
class Verdict:
    status: str  # "matches" | "differs" | "undetermined" | "no data"
    measured: Optional[float]
    expected: Optional[float]
    ratio: Optional[float]
    tolerance: Optional[float]
    reason: Optional[str]
    warnings: Tuple[str, ...] = ()
    basis: str = "CAL-TLB"            # "traced": the tlb_remove_table_smp_sync count of the trace
    estimate: Optional[float] = None  # CAL minus TLB minus background, whatever the basis (may be < 0)
    bounds: Optional["CalBounds"] = None  # what CAL minus TLB allows, whatever the basis
    failed_check: Optional[str] = None  # the workload's safety check that failed it (WorkloadSpec.check_failure)

    @property
    def below_background(self) -> bool:
        """The point estimate went negative: the background estimate exceeded the raw count."""
        return self.basis != "traced" and self.estimate is not None and self.estimate < 0

    @property
    def ok(self) -> Optional[bool]:
        return {"matches": True, "differs": False}.get(self.status)


@dataclass(frozen=True)
class CalBounds:
    """What CAL minus TLB says about the sync IPIs of a run's workload phases."""

    raw: float             # CAL-TLB on the other CPUs, nothing subtracted: an upper bound
    background: float      # pooled idle rate x duration: the point estimate's subtraction
    background_max: float  # the busiest idle window's rate (Poisson upper bound) x duration
    duration_s: float

    @property
    def low(self) -> float:
        return max(self.raw - self.background_max, 0.0)

    @property
    def high(self) -> float:
        return max(self.raw, 0.0)

    @property
    def estimate(self) -> float:
        return self.raw - self.background

    def admits(self, value: float, slack: float) -> bool:
        return self.low - slack <= value <= self.high + slack

    def method(self) -> str:
        return (f"CAL minus TLB {self.raw:,.0f}, less a background of 0 to {self.background_max:,.0f} "
                f"(the busiest idle window's rate at +3 sigma over {self.duration_s:,.1f} s)")


def cal_bounds(run: Run, params: ModelParams) -> CalBounds:
    """The interval CAL minus TLB allows for the sync IPIs (see the module docstring)."""
    sigma = params.verdict.sigma
    rate_max = 0.0
    for r in run.repeats:
        idle = r.idle
        if idle is not None and idle.duration_s > 0:
            n = max(idle.sync_raw, 0.0)
            rate_max = max(rate_max, (n + sigma * math.sqrt(max(n, 1.0))) / idle.duration_s)
    # CAL-TLB is a whole count; summary.json stores both terms rounded to 0.01
    raw = round(sum(r.sync_ipis_measured + r.background_sync_ipis for r in run.repeats), 2)
    background = sum(r.background_sync_ipis for r in run.repeats)
    duration = sum(r.workload.duration_s for r in run.repeats if r.workload is not None)
    return CalBounds(raw, background, max(rate_max * duration, background), duration)


def slack(expected: float, params: ModelParams) -> float:
    """Stray IPIs per thousand operations, and a floor for tiny runs."""
    return params.verdict.relative * abs(expected) + params.verdict.absolute


def race_failure(run: Run) -> Optional[str]:
    """Why the run failed its workload's safety check (WorkloadSpec.check_failure: for
    --race, the lost writes, corrupted bytes and kernel reports per repeat), or None."""
    figs = [dict(r.workload.workload_figures) if r.workload else {} for r in run.repeats]
    return workload_spec(run.workload).check_failure(figs)


def check_failure(run: Run) -> Optional[str]:
    """Why the run failed the table-sync check (collect --check, rundir/sections.py
    CheckSection.failures: a skip whose flush missed a CPU that could be walking, named by
    caller and CPU; a baseline kernel that skipped at all), or None."""
    sec = run.section(CheckSection)
    why = sec.failures(run.job.get("kernel_variant")) if sec is not None else []
    return "; ".join(why) or None


def judge(run: Run, scen: Scenario, pred: Prediction, params: ModelParams, bg_rate: Optional[Spread]) -> Verdict:
    warnings: List[str] = []
    if not run.repeats:
        return Verdict("no data", None, pred.sync_ipis.value, None, None, "no repeat finished", ())
    if run.ops == 0 and run.ops_expected > 0:
        # The model is fed the counted operations: 0 done would "match" 0 expected.
        return Verdict("no data", None, pred.sync_ipis.value, None, None,
                       f"no operation happened (0 of {run.ops_expected}: {_partial_note(run) or 'the run records no reason'})", ())
    # corruption, a kernel splat or a skip the check saw uncovered fails the run, whatever the counts say
    race = "; ".join(w for w in (race_failure(run), check_failure(run)) if w) or None
    if run.ops < run.ops_expected:
        warnings.append(
            f"partial: {run.ops} of {run.ops_expected} operations done "
            f"({_partial_note(run) or 'the run records no reason'})"
        )
    if ring_lost(run):
        what = f"{trace_lost(run)} trace events lost" if trace_lost(run) else "a trace marker was refused"
        if counted_in_kernel(run):
            warnings.append(f"{what}: the received counts are short; the {SYNC_FUNCTION} count is exact "
                            f"(in-kernel counter) and the verdict uses it")
        else:
            warnings.append(f"{what}: attribution undercounts, so the verdict uses CAL minus TLB")
    bounds = cal_bounds(run, params)
    estimate = bounds.estimate
    expected = pred.sync_ipis.value
    traced = traced_sync(run)
    basis = "traced" if traced is not None else "CAL-TLB"
    measured = traced if traced is not None else max(estimate, 0.0)

    def fits(value: float) -> bool:
        if traced is not None:
            return abs(traced - value) <= slack(value, params)
        return bounds.admits(value, slack(value, params))

    if expected is None:
        if race:  # no model figure to compare, but a failed safety check fails the run all the same
            return Verdict("differs", measured, None, None, None, race, tuple(warnings), basis, estimate, bounds,
                           failed_check=race)
        fitting = [k for k, v in pred.alternatives.items() if fits(v)]
        reason = pred.sync_broadcasts.why
        if len(fitting) == 1:
            reason += f"; the measurement fits {fitting[0]}"
        return Verdict("undetermined", measured, None, None, None, reason, tuple(warnings), basis, estimate, bounds)
    tol = slack(expected, params)
    tlb = tlb_gap(run, pred, params)
    if tlb:
        warnings.append(tlb)
    if race:
        fit = "fits" if fits(expected) else "does not fit"
        return Verdict("differs", measured, expected, measured / expected if expected else None, tol,
                       f"{race}; the sync count {fit} the model", tuple(warnings), basis, estimate, bounds,
                       failed_check=race)
    if traced is not None:
        # The trace counts the function itself: no background to allow for. The queued
        # count has been exact in every run; the small allowance covers another process's
        # collapse, and (runs without queued counts) calls that found a CPU polling in idle.
        if not bounds.admits(expected, tol):
            warnings.append(
                f"CAL-TLB estimate {estimate:.0f} is off the model by more than the background allows: "
                f"the workload caused other function-call IPIs ({other_functions(run)}); "
                f"the verdict uses the traced {SYNC_FUNCTION} count")
        quiet = without_interrupt(run)
        if quiet > params.verdict.relative * max(traced, 1.0):
            warnings.append(
                f"{quiet:.0f} of the {traced:.0f} {SYNC_FUNCTION} calls reached a CPU polling in idle and ran "
                f"without an interrupt: CAL and the received count miss them, the queued count (the verdict's) does not")
    ratio = measured / expected if expected else None
    scale = signal_scale(scen, params, expected)
    if traced is None:
        if bounds.background > params.verdict.noisy_fraction * max(scale, 1.0):
            warnings.append(f"noisy host: background {bounds.background:.0f} against a signal of {scale:.0f}")
        blind = bounds.background_max + tol
        if scale > 0 and blind > 0.05 * scale:
            warnings.append(f"without tracing this run cannot tell up to {blind:,.0f} sync IPIs "
                            f"({100 * blind / scale:.0f}% of the {scale:,.0f} an unpatched kernel sends) from "
                            f"background: trace it, or give longer idle windows")
    if traced is None:  # the interval's width below the raw count, for tables and JSON
        tol += bounds.background_max
    if fits(expected):
        return Verdict("matches", measured, expected, ratio, tol, None, tuple(warnings), basis, estimate, bounds)
    reason = _likely_reason(run, scen, params, fits, measured, expected, tol, bounds.background)
    return Verdict("differs", measured, expected, ratio, tol, reason, tuple(warnings), basis, estimate, bounds)


def tlb_gap(run: Run, pred: Prediction, params: ModelParams) -> Optional[str]:
    """The TLB shootdowns measured against the model's, when they are far apart: a flush
    that reached fewer CPUs than the mm ran on (0 of 1,221 in a broken kernel's race run)
    is the fault the sync was there to cover. TLB counts include the background, so only
    a gap beyond the verdict's slack and half the expectation is flagged."""
    measured = sum(r.tlb_other_cpus for r in run.repeats)
    exp = pred.tlb_ipis.value
    if exp is not None and exp > 0 and measured < 0.5 * exp - slack(exp, params):
        return (f"TLB shootdowns: {exp:,.0f} expected ({pred.tlb_ipis.why}), {measured:,.0f} measured: "
                f"the flushes reached fewer CPUs than the model's")
    return None  # above the model: the background's own shootdowns (other mms) count there too


def _likely_reason(
    run: Run,
    scen: Scenario,
    params: ModelParams,
    admits: Callable[[float], bool],
    measured: float,
    expected: float,
    tol: float,
    bg_total: float,
) -> str:
    def fits(s: Scenario) -> bool:
        v = predict(s, params).sync_ipis.value
        return v is not None and v != expected and admits(v)

    recorded = run.host.get("flush_mode") or run.summary.get("flush_mode") or "no flush mode"
    used = (f"the run records {recorded}" if recorded == scen.flush_mode else
            f"the report assumed {scen.flush_mode} (--flush-mode), the run records {recorded}")
    for fm in ("native", "pv", "invlpgb"):
        if fm != scen.flush_mode and fits(replace(scen, flush_mode=fm)):
            if scen.variant == "patched" and fm == "native":
                return f"wrong flush mode? the sync was skipped as under native flush, but {used}"
            if scen.variant == "patched":
                return (f"wrong flush mode? the sync was not skipped, as under {fm} flush (PV flush or "
                        f"INVLPGB keep it); {used}")
            return f"wrong flush mode? the measurement fits {fm}; {used}"
    for var in ("baseline", "patched"):
        if var != scen.variant and fits(replace(scen, variant=var)):
            return f"wrong kernel variant? the measurement fits a {var} kernel"
    for alt, why in workload_spec(scen.workload).alternatives(scen, params):  # e.g. another hugetlb era
        if fits(alt):
            return why
    if run.ops < run.ops_expected and fits(replace(scen, ops=run.ops_expected)):
        return (f"partial run: the count fits the {run.ops_expected} operations asked for, not the "
                f"{run.ops} counted (were collapses missed by thp_collapse_alloc?)")
    if run.ops < run.ops_expected:
        return f"partial run: only {run.ops} of {run.ops_expected} operations done"
    scale = signal_scale(scen, params, expected)
    if bg_total > params.verdict.noisy_fraction * max(scale, 1.0) or tol > 0.5 * max(scale, 1.0):
        return f"noisy host: background {bg_total:.0f} (tolerance {tol:.0f}) is large against {expected:.0f} expected"
    ratio = f"{measured / expected:.3f}x" if expected else f"{measured:.0f} instead of 0"
    return f"unexplained: measured is {ratio} the expectation; compare the attributed {SYNC_FUNCTION} count"


def signal_scale(scen: Scenario, params: ModelParams, expected: float) -> float:
    """The size of the effect under study: what an unpatched kernel would send.

    A patched run expects 0, so its background is judged against the count the patch
    removes, not against 0.
    """
    base = predict(replace(scen, variant="baseline"), params).sync_ipis.value
    return max(expected, base or 0.0)


def _partial_note(run: Run) -> str:
    df = run.phases
    if df.empty or "note" not in df.columns:
        return ""
    notes = [str(n) for n in df.loc[df["result"] == "partial", "note"].dropna().unique() if str(n)]
    return "; ".join(notes[:2])
