"""`tlbprobe model`: print what the reference model expects for a workload on a host."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from ..errors import InputError
from ..units import format_size, parse_size
from ..vocab import FLUSH_MODES, HUGETLB_ERAS
from ..workloads import WorkloadSpec, all_specs, names
from ..workloads import spec as workload_spec

if TYPE_CHECKING:  # the model's engine is imported by main(), not to build --help
    from ..model import ModelParams, Prediction, Scenario

EPILOG = """\
examples:
  tlbprobe model --workload collapse --size 20G --cpus 64 --variant baseline --flush-mode native
  tlbprobe model --workload collapse --size 1G --cpus 4 --threads 3 --variant patched --flush-mode native
  tlbprobe model --workload hugetlb-unshare --size 4G --operation munmap --ops 10 --cpus 2 --flush-mode pv
  tlbprobe model --workload khugepaged --size 1G --cpus 64 --variant baseline --flush-mode native
  tlbprobe model --workload hugetlb-db --size 4G --ops 1000 --sharers 1 --cpus 64 --flush-mode native
  tlbprobe model --workload hugetlb-unshare --size 4G --hugetlb-unshare per-table --cpus 8 --format json
  tlbprobe model --workload hugetlb-unshare --size 1G --ops 300 --sharers 4 --cpus 2 --flush-mode pv
  tlbprobe model --workload collapse --size 1G --cpus 16 --variant patched --flush-mode tlbi-broadcast

--flush-mode tlbi-broadcast is arm64's: its broadcast TLBI instructions interrupt nobody,
so the patched kernel keeps every broadcast (patched = baseline) and no TLB-shootdown IPI
is expected. --cpus is the host's online CPU count (at most NR_CPUS with MAXSMP: 8192 for
x86_64, 4096 for arm64's tlbi-broadcast); --size must be a whole number of the workload's operations (2M per collapse,
1G per shared hugetlb PMD table); --threads needs a CPU each besides the driver's.

The rules and their kernel sources are in analysis/model.yaml.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model",
        help="print the reference model's prediction for a workload",
        description="Predict the sync broadcasts, sync IPIs and TLB-shootdown IPIs a workload "
        "should cost, with the kernel rule behind each number.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    specs = all_specs()
    p.add_argument("--workload", choices=names() + [s.aliases[0] for s in specs if s.aliases],
                   help="operation to model (required, but with --cost-from: the run's)")
    p.add_argument("--cost-from", type=Path, metavar="RUN",
                   help="a run directory collected with --cost: project the time the broadcasts take on the "
                        "machine and size given (--cpus, --size) from its measured handler time and initiator wait")
    p.add_argument("--size", help="bytes: collapse range (2M per collapse) or hugetlb mapping (1G per PMD table)")
    p.add_argument("--ops", type=int, metavar="N", help="operation count (collapses, or unshare calls; default from --size, 1 for hugetlb)")
    p.add_argument("--cpus", type=int, required=True, metavar="N", help="online CPUs of the host (1..8192)")
    p.add_argument("--threads", type=int, default=0, metavar="K",
                   help="threads of the process besides the driver, each on its own CPU (default 0)")
    variants = ("baseline", "patched", "unknown")
    p.add_argument("--variant", dest="variant", choices=variants, default="baseline",
                   help="kernel variant (default baseline)")
    p.add_argument("--kernel", dest="variant", choices=variants, help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--flush-mode", dest="flush_mode", choices=FLUSH_MODES, default="native",
                   help="TLB flush mode of the host (default native; tlbi-broadcast: arm64)")
    p.add_argument("--flush", dest="flush_mode", choices=FLUSH_MODES, help=argparse.SUPPRESS)  # the old spelling
    add_workload_flags(p, specs)
    p.add_argument("--tables-per-op", type=int, metavar="N", help="PMD tables one unsharing operation covers (default size/1G)")
    p.add_argument(
        "--hugetlb-unshare",
        choices=HUGETLB_ERAS,
        help="kernel's hugetlb unshare behaviour: batched (8ce720d5bd91 and later), per-table "
        "(1013af4f585f..8ce720d5bd91), none (older); default from analysis/model.yaml",
    )
    p.add_argument("--params", type=Path, metavar="FILE", help="model parameters (default analysis/model.yaml)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (default): the prediction with its rules; json: the same for scripts")
    p.set_defaults(func=main)


def add_workload_flags(p: argparse.ArgumentParser, specs: Sequence[WorkloadSpec]) -> None:
    """The workloads' own model flags (WorkloadSpec.model_flags), in listing order. A key
    two workloads declare (sharers) is one flag; its help gives each meaning where they
    differ. Defaults are applied by :func:`flag_values`, so a flag not given stays None here."""
    seen = set()
    for spec in specs:
        for o in spec.model_flags:
            if o.key in seen:
                continue
            seen.add(o.key)
            owners = [(s.name, x) for s in specs for x in s.model_flags if x.key == o.key]
            text = o.help if len({x.help for _, x in owners}) == 1 else "; ".join(f"{n}: {x.help}" for n, x in owners)
            o.add_to(p, help=text)  # its record: name, hidden old spellings, choices; checked by flag_values


def flag_values(args: argparse.Namespace, spec: WorkloadSpec) -> Dict[str, Any]:
    """Every workload's model flag by key, as given, else the default the workload
    declares (or the first workload that declares it)."""
    values: Dict[str, Any] = {}
    for s in [spec] + all_specs():
        for o in s.model_flags:
            if o.key not in values:
                given = getattr(args, o.key, None)
                o.check(given)  # its record's range, before anything is predicted
                values[o.key] = o.default if given is None else given
    return values


def scenario_from_args(args: argparse.Namespace, spec: WorkloadSpec) -> "Scenario":
    """The Scenario the flags describe: the common ones here, a flag named like a Scenario
    field (sharers, control) for every workload, then the workload's own
    (WorkloadSpec.scenario_from_flags)."""
    from ..model import Scenario, ops_from_size, tables_from_size

    size = parse_size(args.size) if args.size else None
    if args.ops is not None:
        ops = args.ops
    elif size is not None:
        ops = ops_from_size(spec.name, size)
    elif spec.default_ops is None:
        raise InputError(f"{spec.name} needs --size or --ops")
    else:
        ops = spec.default_ops
    if args.tables_per_op is not None:
        tables = args.tables_per_op
    else:
        tables = tables_from_size(size) if size else 1
    if args.ops is not None and args.ops < 1 and spec.has_workload_phase:  # a size of none: its spec refuses
        raise InputError(f"--ops {args.ops}: no {spec.ops_unit} to predict")
    if args.threads < 0:
        raise InputError(f"--threads must not be negative, got {args.threads}")
    if 1 + args.threads > args.cpus >= 1:  # each thread has a CPU of its own: it used to be clamped silently
        raise InputError(f"--threads {args.threads} needs {1 + args.threads} CPUs (the driver's and one per "
                         f"thread), but --cpus is {args.cpus}: give --threads {args.cpus - 1} at most")
    values = flag_values(args, spec)
    fields = {f.name for f in dataclasses.fields(Scenario)}
    scenario = Scenario(
        workload=spec.name,
        ops=ops,
        online_cpus=args.cpus,
        mm_cpus=1 + args.threads if args.cpus >= 1 else 1,
        variant=None if args.variant == "unknown" else args.variant,
        flush_mode=args.flush_mode,
        tables_per_op=tables,
        hugetlb_unshare=args.hugetlb_unshare,
        **{k: v for k, v in values.items() if k in fields},
    )
    return spec.scenario_from_flags(scenario, values)


def main(args: argparse.Namespace) -> int:
    from ..model import load_params, predict, with_workload_rules

    run = None
    if args.cost_from is not None:
        from ..rundir.reader import load_run

        run = load_run(args.cost_from)
        args.workload = args.workload or run.workload
    if not args.workload:
        raise InputError("--workload is required (or --cost-from RUN, whose workload is used)")
    spec = workload_spec(args.workload)
    params = with_workload_rules(load_params(args.params), [spec])
    scenario = scenario_from_args(args, spec)
    pred = predict(scenario, params)
    if run is not None:
        return _cost(args, run, pred)
    if args.format == "json":
        out = pred.to_dict()
        if args.size:
            out["scenario"]["size"] = parse_size(args.size)
        out["rules"] = {rid: _rule_dict(params, rid) for rid in _rules_used(pred)}
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print("\n".join(render_text(pred, params, args.size)))
        for line in spec.model_lines(pred.scenario, flag_values(args, spec)):
            print(line)
    return 0


def _rules_used(pred: "Prediction") -> List[str]:
    seen: List[str] = []
    for f in (pred.sync_broadcasts, pred.sync_ipis, pred.tlb_ipis):
        for r in f.rules:
            if r not in seen:
                seen.append(r)
    return seen


def _rule_dict(params: "ModelParams", rid: str) -> dict:
    r = params.rule(rid)
    return {"function": r.function, "file": r.file, "since": r.since, "text": r.text}


def render_text(pred: "Prediction", params: "ModelParams", size_text: "str | None" = None) -> List[str]:
    s = pred.scenario
    what = workload_spec(s.workload).model_what(s)
    if size_text:
        what += f" ({format_size(parse_size(size_text))})"
    lines = [
        f"Workload:  {what}",
        f"Host:      {s.online_cpus} online CPUs, mm on {s.mm_cpus}, flush mode {s.flush_mode}, "
        f"{s.variant or 'unknown'} kernel",
        "",
    ]
    rows = [
        ("sync broadcasts", pred.sync_broadcasts.value, pred.sync_broadcasts),
        ("sync IPIs (other CPUs)", pred.sync_ipis.value, pred.sync_ipis),
        ("TLB-shootdown IPIs", pred.tlb_ipis.value, pred.tlb_ipis),
    ]
    for label, value, fig in rows:
        shown = _fmt(value) if value is not None else "?"
        lines.append(f"{label:<24}{shown:>12}   {fig.why}")
    if pred.tlb_ipis.value is None and pred.tlb_ipis_max is not None:
        lines.append(f"{'  (TLB upper bound)':<24}{_fmt(pred.tlb_ipis_max):>12}")
    cal = pred.cal_other_cpus
    lines.append(f"{'CAL on other CPUs':<24}{(_fmt(cal) if cal is not None else '?'):>12}   sync + TLB (x86 CAL counts both)")
    for k, v in pred.alternatives.items():
        lines.append(f"  {k}: {_fmt(v)} sync IPIs")
    lines.append("")
    lines.append("Rules:")
    for rid in _rules_used(pred):
        r = params.rule(rid)
        lines.append(f"  [{rid}] {r.cite()}; since {r.since}")
    for n in pred.notes:
        lines.append(f"Note: {n}")
    return lines


def _fmt(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.1f}"


def _cost(args: argparse.Namespace, run, pred: "Prediction") -> int:
    """--cost-from: the projection, which measured figure each line rests on, and where
    the figures do not transfer."""
    from ..model import project_cost
    from ..rundir.sections import CostSection
    from ..ui.numbers import fmt_num

    host = run.host
    emulated = bool((run.run_yaml.get("qemu") or {}).get("accel") == "tcg") or host.get("hypervisor") == "tcg"
    proj = project_cost(pred, run.section(CostSection), run.online_cpus, str(run.summary.get("flush_mode")),
                        emulated)
    if args.format == "json":
        print(json.dumps({"projection": dataclasses.asdict(proj), "scenario": dataclasses.asdict(pred.scenario),
                          "from": str(run.path)}, indent=2, sort_keys=True))
        return 0
    s = pred.scenario
    print(f"Cost of {fmt_num(proj.broadcasts)} sync broadcasts on {s.online_cpus} CPUs ({s.variant or 'either'} "
          f"kernel, {s.flush_mode} flush), from {run.path}:")
    print(f"  other CPUs lose  {proj.receivers_ms:,.1f} ms of CPU time = {fmt_num(proj.broadcasts)} x "
          f"{proj.other_cpus} CPUs x {proj.per_ipi_ns / 1e3:.3g} us")
    print(f"                   rests on: the handler time per sync IPI measured there (vector-level, "
          f"tracepoints subtracted), {run.online_cpus} CPUs")
    print(f"  initiator waits  at least {proj.initiator_ms_low:,.1f} ms ({proj.wait_p50_ns / 1e3:.3g} us per "
          f"broadcast, the median there), likely {proj.initiator_ms_likely:,.1f} ms ({proj.wait_p99_ns / 1e3:.3g} us, "
          f"its p99: the slowest of more targets)")
    print("  not included: interrupt delivery before the handler, idle exit, cache and TLB refill")
    for w in proj.warnings:
        print(f"  warning: {w}")
    return 0