"""Which scenario a recorded run was: its kernel variant, its TLB flush mode (each with
where the report learned it), and the model's inputs for it (its workload's spec adds
what only that workload records: tlbprobe/workloads/<name>/spec.py scenario_from_run)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Pattern, Sequence

from ..errors import InputError
from ..model import FLUSH_MODES, Scenario, tables_from_size
from ..rundir.reader import Run
from ..workloads import broken
from ..workloads import spec as workload_spec


@dataclass(frozen=True)
class Sourced:
    """A fact and where it came from, so the report can say which it used."""

    value: Optional[str]
    source: str


@dataclass(frozen=True)
class VariantPattern:
    variant: str
    regex: Pattern[str]

    @property
    def text(self) -> str:
        return f"{self.variant}={self.regex.pattern}"


def parse_variant_pattern(text: str) -> VariantPattern:
    """'patched=REGEX' -> VariantPattern; InputError for anything else."""
    name, sep, rx = text.partition("=")
    if not sep or name not in ("baseline", "patched") or not rx:
        raise InputError(f"bad --variant-pattern {text!r}: use baseline=REGEX or patched=REGEX")
    try:
        return VariantPattern(name, re.compile(rx))
    except re.error as e:
        raise InputError(f"bad --variant-pattern {text!r}: {e}") from None


def resolve_variant(run: Run, patterns: Sequence[VariantPattern]) -> Sourced:
    """The kernel variant: given at collect time, else recognised from the release string."""
    v = run.job.get("kernel_variant")
    if v in ("baseline", "patched"):
        return Sourced(v, "run.yaml job.kernel_variant")
    v = run.summary.get("kernel_variant")
    if v in ("baseline", "patched"):
        return Sourced(v, "summary.json kernel_variant")
    rel = run.kernel_release
    for p in patterns:
        if p.regex.search(rel):
            return Sourced(p.variant, f"kernel release {rel} matches --variant-pattern {p.text}")
    return Sourced(None, "unknown (not named at collect time; no --variant-pattern matched)")


def resolve_flush(run: Run, override: Optional[str]) -> Sourced:
    """The TLB flush mode: command line override, else the host facts recorded at collect time."""
    if override:
        if override not in FLUSH_MODES:
            raise InputError(f"bad --flush-mode {override!r}: use one of {', '.join(FLUSH_MODES)}")
        return Sourced(override, "command line --flush-mode")
    fm = run.host.get("flush_mode")
    if fm in FLUSH_MODES:
        ev = run.host.get("flush_mode_evidence")
        return Sourced(fm, f"run.yaml host.flush_mode ({ev})" if ev else "run.yaml host.flush_mode")
    fm = run.summary.get("flush_mode")
    if fm in FLUSH_MODES:
        return Sourced(fm, "summary.json flush_mode")
    return Sourced("unknown", "unknown (not recorded)")


def scenario_for(run: Run, variant: Optional[str], flush: str, hugetlb_unshare: Optional[str]) -> Scenario:
    """The model's inputs for a run: its counted ops, CPUs, threads, kernel and host, and
    what its workload's spec reads from its job and figures (WorkloadSpec.scenario_from_run)."""
    try:
        spec = workload_spec(run.workload)
    except InputError:
        why = broken().get(run.workload)  # a plug-in that did not load says why
        raise InputError(f"{run.path / 'summary.json'}: workload {run.workload!r} is not one the model knows"
                         + (f": {why}" if why else "")) from None
    threads = int(run.job.get("threads") or 0)
    size = run.job.get("size")
    return spec.scenario_from_run(run, Scenario(
        workload=spec.name,
        ops=run.ops,
        online_cpus=run.online_cpus,
        mm_cpus=max(1, min(1 + threads, run.online_cpus)),
        variant=variant,
        flush_mode=flush,
        tables_per_op=tables_from_size(int(size)) if isinstance(size, int) and size > 0 else 1,
        hugetlb_unshare=hugetlb_unshare,
    ))
