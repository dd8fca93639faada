"""One run against the model: which kernel it was (scenario.py), what it measured
(figures.py), what it should have cost and whether it did (verdict.py), held together
in a RunAnalysis that every renderer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..errors import InputError
from ..model import HUGETLB_ERAS, ModelParams, Prediction, Scenario, predict
from ..rundir.reader import Run
from ..workloads import WorkloadSpec
from ..workloads import spec as workload_spec
from .figures import per_repeat_figures
from .provenance import Provenance, provenance
from .scenario import Sourced, VariantPattern, resolve_flush, resolve_variant, scenario_for
from .stats import Spread, describe
from .verdict import Verdict, judge


@dataclass
class RunAnalysis:
    run: Run
    index: int
    variant: Sourced
    flush: Sourced
    scenario: Scenario
    prediction: Prediction
    verdict: Verdict
    stats: Dict[str, Spread] = field(default_factory=dict)
    per_repeat: Dict[str, List[float]] = field(default_factory=dict)
    background_rate: Optional[Spread] = None  # per second, summed over the other CPUs
    provenance: Optional[Provenance] = None  # where it was measured, how to make it again

    @property
    def label(self) -> str:
        return chr(ord("A") + self.index) if self.index < 26 else f"R{self.index + 1}"

    @property
    def spec(self) -> WorkloadSpec:
        """The run's workload, described (tlbprobe/workloads/<name>/spec.py)."""
        return workload_spec(self.scenario.workload)


def analyze_run(
    run: Run,
    index: int,
    params: ModelParams,
    patterns: Sequence[VariantPattern] = (),
    flush_override: Optional[str] = None,
    hugetlb_unshare: Optional[str] = None,
) -> RunAnalysis:
    if hugetlb_unshare is not None and hugetlb_unshare not in HUGETLB_ERAS:
        raise InputError(f"bad --hugetlb-unshare {hugetlb_unshare!r}: use one of {', '.join(HUGETLB_ERAS)}")
    variant = resolve_variant(run, patterns)
    flush = resolve_flush(run, flush_override)
    scen = scenario_for(run, variant.value, flush.value or "unknown", hugetlb_unshare)
    pred = predict(scen, params)
    per_repeat = per_repeat_figures(run)
    stats = {k: s for k, v in per_repeat.items() if (s := describe(v)) is not None}
    bg = describe(per_repeat.get("background_rate", []))
    verdict = judge(run, scen, pred, params, bg)
    return RunAnalysis(run, index, variant, flush, scen, pred, verdict, stats, per_repeat, bg, provenance(run))
