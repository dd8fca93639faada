"""`tlbprobe report RUN [RUN ...]`: compare runs with each other and with the reference model."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from ..errors import InputError
from ..vocab import FLUSH_MODES, HUGETLB_ERAS

FORMATS = ("text", "lkml", "markdown", "html", "json")

EPILOG = """\
examples:
  tlbprobe report base patched                      # terminal report, base is the baseline
  tlbprobe report base patched --format lkml        # 72-column text for a cover letter
  tlbprobe report base patched --format html --plots figs -o report.html
  tlbprobe report run1 --format json                # one run against the model, for scripts
  tlbprobe report base patched --variant-pattern 'patched=-syncskip$'
  tlbprobe report crashed-run --allow-incomplete    # report the repeats that finished
  tlbprobe report analysis/runs/*                   # paths that are not runs are skipped, with a note

The first run is the baseline; every other run is compared with it. Each run is also
checked against the reference model (analysis/model.yaml; see `tlbprobe model`). The kernel
variant comes from `collect --variant` (run.yaml job.kernel_variant), else from a
--variant-pattern matched against the kernel release; the flush mode from the host facts
recorded at collect time (run.yaml host.flush_mode), unless --flush-mode overrides it.
Exit status: 0 report written, 2 bad input (damaged, foreign or incomplete run).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="compare runs and check them against the reference model",
        description="Report run directories: measured sync IPIs with their spread, the model's "
        "prediction and verdict, and the comparison of each run with the first.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `tlbprobe collect`")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write PNG figures to DIR (html embeds them)")
    p.add_argument("--allow-incomplete", action="store_true", help="report runs that did not finish")
    p.add_argument(
        "--variant-pattern",
        action="append",
        default=[],
        metavar="VARIANT=REGEX",
        help="recognise a kernel variant (baseline or patched) from the kernel release, e.g. 'patched=syncskip'; "
        "used only for runs collected without --variant; repeatable",
    )
    p.add_argument("--flush-mode", choices=[m for m in FLUSH_MODES if m != "unknown"],
                   help="override the flush mode recorded in the runs")
    p.add_argument("--hugetlb-unshare", choices=HUGETLB_ERAS,
                   help="hugetlb unshare behaviour of the kernels (default from analysis/model.yaml)")
    p.add_argument("--params", type=Path, metavar="FILE", help="model parameters (default analysis/model.yaml)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..report import ReportOptions, build_report
    from ..report.scenario import parse_variant_pattern

    options = ReportOptions(
        allow_incomplete=args.allow_incomplete,
        variant_patterns=tuple(parse_variant_pattern(t) for t in args.variant_pattern),
        flush_override=args.flush_mode,
        hugetlb_unshare=args.hugetlb_unshare,
        params_path=args.params,
    )
    args.runs = runs_among(args.runs)
    groups = group_by_host(args.runs)
    if len(groups) > 1:  # a fleet: one report per host (doc/fleet.md)
        return _write(args, render_fleet(groups, options, args.format))
    report = build_report(args.runs, options)
    if args.plots:
        from ..report.plots import write_plots

        report.plots = write_plots(report, args.plots)
    if args.format == "html" and not args.plots:
        from ..report.plots import write_plots

        with tempfile.TemporaryDirectory(prefix="tlbprobe-plots-") as tmp:
            report.plots = write_plots(report, Path(tmp))
            text = _render(report, args.format)
        report.plots = []
    else:
        text = _render(report, args.format)
    return _write(args, text)


def runs_among(paths: List[str]) -> List[str]:
    """The paths that are run directories (rundir/reader.py is_run_dir), each other one
    skipped with a note on stderr: `tlbprobe report analysis/runs/*` meets the README.md
    beside the runs. A directory that is a run but damaged stays, and is refused by name.
    None left: one InputError line (a single path: why it is not a run)."""
    from ..rundir.reader import is_run_dir, load_run

    kept = [p for p in paths if is_run_dir(Path(p))]
    if not kept:
        if len(paths) == 1:
            load_run(Path(paths[0]))  # its own reason: not a directory, no run.yaml
        raise InputError(f"none of the {len(paths)} paths is a run directory (one holds run.yaml and "
                         f"summary.json): {', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''}")
    for p in paths:
        if p not in kept:
            why = "not a directory" if not Path(p).is_dir() else "no run.yaml or summary.json in it"
            print(f"tlbprobe: note: {p}: {why}, not a run: skipped", file=sys.stderr)
    return kept


def _write(args: argparse.Namespace, text: str) -> int:
    if args.output:
        try:
            args.output.write_text(text)
        except OSError as e:
            raise InputError(f"{args.output}: cannot write: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    return 0


def group_by_host(paths: List[str]) -> Dict[str, List[str]]:
    """Runs by the machine they were measured on, in the order given: the host name in
    run.yaml, else (runs recorded before it was kept, guests named "(none)") the machine
    as its provenance describes it (report/provenance.py: 'QEMU TCG guest, 4 vCPUs',
    'AMD EPYC, 2 CPUs'), so that two machines are never one report."""
    from ..report.provenance import machine_name
    from ..rundir.reader import load_run

    groups: Dict[str, List[str]] = {}
    for p in paths:
        try:
            name = machine_name(load_run(Path(p)))
        except InputError:
            name = ""  # build_report says what is wrong with it
        groups.setdefault(name, []).append(p)
    if "" in groups and len(groups) > 1:
        unnamed = groups.pop("")
        groups[next(iter(groups))] = unnamed + groups[next(iter(groups))]
    return groups


def render_fleet(groups: Dict[str, List[str]], options, fmt: str) -> str:
    """The fleet table (report/fleet.py: every run side by side), then one report per
    host; JSON gets {"fleet": [rows], "hosts": [{"host", "report"}]}."""
    import json

    from ..report import build_report
    from ..report import fleet

    reports = {host: build_report(paths, options) for host, paths in groups.items()}
    rows = fleet.fleet_rows(reports)
    if fmt == "json":
        return json.dumps({"format": "tlbprobe-fleet/1", "fleet": fleet.to_json(rows), "hosts": [
            {"host": host, "report": json.loads(_render(r, "json"))}
            for host, r in reports.items()]}, indent=2) + "\n"
    parts = [fleet.render(rows, fmt)]
    for host, report in reports.items():
        title = f"host {host}: {len(report.runs)} run{'s' if len(report.runs) != 1 else ''}"
        rule = "=" * min(72, len(title))
        parts.append(f"{rule}\n{title}\n{rule}\n\n" + _render(report, fmt))
    return "\n".join(parts)


def _render(report, fmt: str) -> str:
    if fmt == "lkml":
        from ..report import render_lkml as r
    elif fmt == "markdown":
        from ..report import render_markdown as r
    elif fmt == "html":
        from ..report import render_html as r
    elif fmt == "json":
        from ..report import render_json as r
    else:
        from ..report import render_text as r
    return r.render(report)
