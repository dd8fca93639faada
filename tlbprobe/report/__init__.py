"""`tlbprobe report`: run directories -> model predictions -> comparison -> renderers.

The library entry point is :func:`build_report`; renderers in this package turn the
:class:`Report` into text, LKML plain text, Markdown, HTML or JSON, and ``plots`` draws
the figures. ``tlbprobe/commands/report.py`` only parses arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

from .. import __version__
from ..errors import InputError

if TYPE_CHECKING:  # imported by build_report: importing this package (report.views) stays light
    from ..model import ModelParams
    from ..rundir.reader import Run
    from .analyze import RunAnalysis
    from .scenario import VariantPattern
    from .compare import Comparison


@dataclass(frozen=True)
class ReportOptions:
    allow_incomplete: bool = False
    variant_patterns: Sequence[VariantPattern] = ()
    flush_override: Optional[str] = None
    hugetlb_unshare: Optional[str] = None
    params_path: Optional[Path] = None


@dataclass
class Report:
    runs: List[RunAnalysis]
    comparisons: List[Comparison]
    params: ModelParams
    paths: List[str]
    tool_version: str = __version__
    plots: List["PlotFile"] = field(default_factory=list)  # noqa: F821 - filled by plots.write_plots
    #: what the reader must know about the set of runs (which is the baseline, variants)
    warnings: List[str] = field(default_factory=list)


def build_report(paths: Sequence[str], options: ReportOptions = ReportOptions()) -> Report:
    """Load, check, model and compare the runs, in the order given (the first is the baseline)."""
    from ..model import load_params, with_workload_rules
    from ..workloads import all_specs
    from ..rundir.reader import load_run
    from .analyze import analyze_run
    from .compare import compare_all

    if not paths:
        raise InputError("give at least one run directory")
    params = with_workload_rules(load_params(options.params_path), all_specs())  # a plug-in's rules too
    runs: List["Run"] = [load_run(Path(p)) for p in paths]
    refuse_incomplete(runs, options.allow_incomplete)
    analyses = []
    for i, run in enumerate(runs):
        try:
            analyses.append(analyze_run(run, i, params, options.variant_patterns, options.flush_override,
                                        options.hugetlb_unshare))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # A hand-edited or foreign file with a value of the wrong type somewhere.
            raise InputError(f"{run.path}: summary.json or run.yaml holds a value of the wrong type "
                             f"({type(e).__name__}: {e})") from None
    return Report(analyses, compare_all(analyses) if len(analyses) > 1 else [], params, [str(p) for p in paths],
                  warnings=order_warnings(analyses, options))


def order_warnings(runs: Sequence["RunAnalysis"], options: ReportOptions) -> List[str]:
    """The comparison's direction, said when it may not be what was meant: the first run
    given is the baseline, so a patched run first (or no baseline at all) is warned about,
    and a --variant-pattern that makes every run the same variant too."""
    out: List[str] = []
    if len(runs) < 2:
        return out
    variants = [a.variant.value for a in runs]
    first = runs[0]
    if first.variant.value == "patched" and "baseline" in variants[1:]:
        b = next(a for a in runs if a.variant.value == "baseline")
        out.append(f"the first run given ({first.label}, {first.run.name}) is the comparison's baseline, but it is "
                   f"the patched kernel; {b.label} ({b.run.name}) is the baseline kernel: give it first")
    patterned = [a for a in runs if a.variant.source.startswith("kernel release")]
    if patterned and len(set(variants)) == 1 and variants[0] is not None:
        out.append(f"every run is {variants[0]} ({', '.join(a.label for a in patterned)} by --variant-pattern "
                   f"{' '.join(sorted({p.text for p in options.variant_patterns}))}): the comparison is not "
                   f"baseline against patched; make the pattern match one kernel's release only")
    return out


def refuse_incomplete(runs: Sequence[Run], allow: bool) -> None:
    """An unfinished run's numbers look like a result but are not one: refuse it by default."""
    bad = [r for r in runs if not r.complete]
    if not bad or allow:
        return
    r = bad[0]
    done = f"{len(r.repeats)} of {r.summary.get('repeats_planned', '?')} repeats done"
    err = r.summary.get("error")
    more = f" (and {len(bad) - 1} more incomplete run{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    raise InputError(
        f"{r.path / 'summary.json'}: incomplete run (status {r.status}, {done}"
        f"{'; ' + str(err) if err else ''}){more}; pass --allow-incomplete to report the finished repeats"
    )
