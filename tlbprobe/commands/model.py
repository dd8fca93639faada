"""`tlbprobe model`: print what the reference model expects for a workload on a host."""

from __future__ import annotations

import argparse
from dataclasses import asdict
import json
from pathlib import Path
from typing import List

from ..errors import InputError
from ..ui.numbers import fmt_num
from ..model import (
    khugepaged_max_rate,
    khugepaged_seconds_to_collapse,
    project_cost,
    FLUSH_MODES,
    db_exclusive_exits,
    HUGETLB_ERAS,
    UNSHARE_KINDS,
    WORKLOADS,
    ModelParams,
    Prediction,
    Scenario,
    load_params,
    ops_from_size,
    predict,
    tables_from_size,
)
from ..units import format_size, parse_size

EPILOG = """\
examples:
  tlbprobe model --workload collapse --size 20G --cpus 64 --kernel baseline --flush native
  tlbprobe model --workload collapse --size 1G --cpus 4 --threads 3 --kernel patched --flush native
  tlbprobe model --workload hugetlb-unshare --size 4G --op munmap --ops 10 --cpus 2 --flush pv
  tlbprobe model --workload khugepaged --size 1G --cpus 64 --kernel baseline --flush native
  tlbprobe model --workload hugetlb-db --size 4G --ops 1000 --sharers 1 --cpus 64 --flush native
  tlbprobe model --workload hugetlb-unshare --size 4G --hugetlb-unshare per-table --cpus 8 --format json
  tlbprobe model --workload hugetlb-unshare --size 1G --ops 300 --sharers 4 --cpus 2 --flush pv

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
    p.add_argument("--workload", choices=WORKLOADS + ("hugetlb",),
                   help="operation to model (required, but with --cost-from: the run's)")
    p.add_argument("--cost-from", type=Path, metavar="RUN",
                   help="a run directory collected with --cost: project the time the broadcasts take on the "
                        "machine and size given (--cpus, --size) from its measured handler time and initiator wait")
    p.add_argument("--size", help="bytes: collapse range (2M per collapse) or hugetlb mapping (1G per PMD table)")
    p.add_argument("--ops", type=int, help="operation count (collapses, or unshare calls; default from --size, 1 for hugetlb)")
    p.add_argument("--cpus", type=int, required=True, help="online CPUs")
    p.add_argument("--threads", type=int, default=0, help="threads of the process besides the driver, each on its own CPU")
    p.add_argument("--kernel", choices=("baseline", "patched", "unknown"), default="baseline", help="kernel variant")
    p.add_argument("--flush", choices=FLUSH_MODES, default="native", help="TLB flush mode of the host")
    p.add_argument("--op", choices=UNSHARE_KINDS, default="munmap", help="hugetlb unsharing operation (default munmap)")
    p.add_argument("--sharers", type=int, default=2,
                   help="hugetlb-unshare: processes mapping the range, one holder plus unsharers taking turns (default 2); "
                        "hugetlb-db: the servers that keep the segment mapped while clients come and go")
    p.add_argument("--control", action="store_true", help="hugetlb: MAP_PRIVATE mapping that cannot share")
    p.add_argument("--pages-to-scan", type=int, default=4096, metavar="N",
                   help="khugepaged: pages scanned per wake-up (kernel default 4096)")
    p.add_argument("--scan-sleep-millisecs", type=int, default=10000, metavar="MS",
                   help="khugepaged: sleep between wake-ups (kernel default 10000)")
    p.add_argument("--rate", type=float, metavar="R",
                   help="hugetlb-db: client sessions per second (with --client-work-ms: whether sessions overlap)")
    p.add_argument("--client-work-ms", type=float, metavar="MS",
                   help="hugetlb-db: how long each client stays attached; sessions that overlap leave the tables "
                        "exclusive only at the last exit of a run of overlapping ones")
    p.add_argument("--tables-per-op", type=int, help="PMD tables one unsharing operation covers (default size/1G)")
    p.add_argument(
        "--hugetlb-unshare",
        choices=HUGETLB_ERAS,
        help="kernel's hugetlb unshare behaviour: batched (8ce720d5bd91 and later), per-table "
        "(1013af4f585f..8ce720d5bd91), none (older); default from analysis/model.yaml",
    )
    p.add_argument("--params", type=Path, help="model parameters (default analysis/model.yaml)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=main)


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    size = parse_size(args.size) if args.size else None
    workload = "hugetlb-unshare" if args.workload == "hugetlb" else args.workload
    if args.ops is not None:
        ops = args.ops
    elif size is not None:
        ops = ops_from_size(workload, size)
    elif workload in ("collapse", "khugepaged"):
        raise InputError(f"{workload} needs --size or --ops")
    else:
        ops = 1 if workload == "hugetlb-unshare" else 0
    if args.tables_per_op is not None:
        tables = args.tables_per_op
    else:
        tables = tables_from_size(size) if size else 1
    if args.threads < 0:
        raise InputError(f"--threads must not be negative, got {args.threads}")
    exclusive = None
    if workload == "hugetlb-db" and (args.rate is not None or args.client_work_ms is not None):
        if args.rate is None or args.client_work_ms is None or args.rate <= 0 or args.client_work_ms < 0:
            raise InputError("hugetlb-db: give --rate (> 0) and --client-work-ms (>= 0) together")
        exclusive = db_exclusive_exits(ops, args.rate, args.client_work_ms) if args.sharers == 1 else 0
    return Scenario(
        exclusive_ops=exclusive,
        workload=workload,
        ops=ops,
        online_cpus=args.cpus,
        mm_cpus=min(1 + args.threads, max(args.cpus, 1)),
        variant=None if args.kernel == "unknown" else args.kernel,
        flush_mode=args.flush,
        unshare_kind=args.op if workload == "hugetlb-unshare" else None,
        tables_per_op=tables,
        hugetlb_unshare=args.hugetlb_unshare,
        sharers=args.sharers,
        control=args.control,
    )


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    run = None
    if args.cost_from is not None:
        from ..rundir.reader import load_run

        run = load_run(args.cost_from)
        args.workload = args.workload or run.workload
    if not args.workload:
        raise InputError("--workload is required (or --cost-from RUN, whose workload is used)")
    scenario = scenario_from_args(args)
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
        if scenario.workload == "khugepaged":
            print(khugepaged_lines(args, scenario.ops))
    return 0


def khugepaged_lines(args: argparse.Namespace, ranges: int) -> str:
    """[khugepaged-rate] the broadcast rate the knobs allow, and the time for the size."""
    if args.pages_to_scan < 1 or args.scan_sleep_millisecs < 0:
        raise InputError("--pages-to-scan must be at least 1 and --scan-sleep-millisecs not negative")
    rate = khugepaged_max_rate(args.pages_to_scan, args.scan_sleep_millisecs)
    least = khugepaged_seconds_to_collapse(ranges, args.pages_to_scan, args.scan_sleep_millisecs)
    bound = (f"at most {rate:g} collapses (sync broadcasts) a second, {rate * 3600:,.0f} an hour"
             if rate is not None else "no sleep between scans: as fast as it can scan")
    return (f"Rate:      [khugepaged-rate] pages_to_scan {args.pages_to_scan}, scan_sleep "
            f"{args.scan_sleep_millisecs} ms: {bound}, while memory is left to collapse; {ranges} ranges take "
            f"at least {least:,.1f} s, then none (steady state)")


def _rules_used(pred: Prediction) -> List[str]:
    seen: List[str] = []
    for f in (pred.sync_broadcasts, pred.sync_ipis, pred.tlb_ipis):
        for r in f.rules:
            if r not in seen:
                seen.append(r)
    return seen


def _rule_dict(params: ModelParams, rid: str) -> dict:
    r = params.rule(rid)
    return {"function": r.function, "file": r.file, "since": r.since, "text": r.text}


def render_text(pred: Prediction, params: ModelParams, size_text: "str | None" = None) -> List[str]:
    s = pred.scenario
    what = {
        "collapse": f"MADV_COLLAPSE: {s.ops} collapse{'s' if s.ops != 1 else ''}",
        "hugetlb-unshare": f"hugetlb unshare ({s.unshare_kind}): {s.ops} operation{'s' if s.ops != 1 else ''}"
        f" x {s.tables_per_op} PMD table{'s' if s.tables_per_op != 1 else ''}, {s.sharers} sharers"
        f"{', MAP_PRIVATE control' if s.control else ''}",
        "idle": "idle window",
        "khugepaged": f"khugepaged: {s.ops} collapse{'s' if s.ops != 1 else ''} of anonymous 2 MiB ranges",
        "hugetlb-db": f"hugetlb-db: {s.ops} client session{'s' if s.ops != 1 else ''} on a segment of "
        f"{s.tables_per_op} PMD table{'s' if s.tables_per_op != 1 else ''}, {s.sharers} server(s)",
    }[s.workload]
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


def _cost(args: argparse.Namespace, run, pred: Prediction) -> int:
    """--cost-from: the projection, which measured figure each line rests on, and where
    the figures do not transfer."""
    host = run.host
    emulated = bool((run.run_yaml.get("qemu") or {}).get("accel") == "tcg") or host.get("hypervisor") == "tcg"
    proj = project_cost(pred, run.summary.get("cost") or {}, run.online_cpus, str(run.summary.get("flush_mode")),
                        emulated)
    if args.format == "json":
        print(json.dumps({"projection": asdict(proj), "scenario": asdict(pred.scenario),
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