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
    return Report(analyses, compare_all(analyses) if len(analyses) > 1 else [], params, [str(p) for p in paths])


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
