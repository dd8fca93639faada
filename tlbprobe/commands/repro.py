"""`tlbprobe repro`: the QEMU A/B in one command: build baseline and patched kernels, run the
same jobs in a guest of each, print the comparison, exit non-zero when the patched kernel
does not do what the model predicts for the flush mode used."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Dict

from .. import arch as arches
from ..errors import InputError
from ..units import format_size, parse_size
from ..workflows.repro import AUDIT_JOBS, DEFAULT_JOBS
from .kernel import add_kernel_options, fragments_from_args, resolve_commits
from .qemu import add_guest_options, check_host_memory, guest_memory_for_jobs, guest_spec_from_args

EPILOG = """\
Jobs are job files in workloads/ (edit them there), each run as it is written, idle
windows included. The default set (each with 3 repeats, the fewest the report tests, and
a 2 s idle window, driver on CPU 0): collapse-1G, collapse-1G-threads (a touching
thread on every other vCPU: TLB shootdowns appear) and hugetlb-unshare-1G. --job picks
others: khugepaged-fast (khugepaged's collapses with aggressive knobs), hugetlb-db-churn
(a database's client sessions on a shared hugetlb segment), or a file of your own.
Kernels come from `tlbprobe kernel build` (cached: a warm
repro only boots the guests). Results: OUT/<variant>/<job>/ run directories,
OUT/repro.json (verdicts, timings), and the LKML tables printed here.

Under TCG (no working KVM) the guest flushes with native IPIs, so the patched kernel
must show ~0 sync IPIs. Under KVM with paravirtual flush (--pv-tlb-flush on, KVM's
default) the model says patched = baseline, and that is what is checked. The same branch
without KVM: --pv-tlb-flush wrapper builds both kernels with a test-only patch
(kernels/test-only/: pv_ops.mmu.flush_tlb_multi becomes a wrapper of the native flush,
page tables are freed through tlb_remove_table() as under KVM) and boots them with
tlbprobe_wrap_flush; the guest's kernel log says so, the run records flush mode pv with
that line as evidence, and the patched kernel must keep every broadcast (traced patched
= traced baseline).

With --audit both kernels carry kernels/instrumentation/ (every table sync recorded with
the CPUs its preceding flush interrupted), the guests run the audit jobs
(workloads/audit-*.yaml) with collect --check, and a table per caller joins their counts
with the static audit of the patched tree (tlbprobe audit): reachable, calls, sent on the
baseline, skipped on the patched kernel, covered, unverified, violations. Any violation,
unaudited call site or caller the audit table does not know fails it (doc/audit.md).

With --smp 4,16,64 (a list) it runs a sweep instead: one collapse (--size, default
256M) at each vCPU count on both kernels, and prints a table across N (sync IPIs per
operation per other CPU, traced and CAL-TLB, the total CAL on the other CPUs, the
model's figure, ms per operation) with a plot in OUT/sweep.png. With --smp N --size S
it runs the seed's job file, workloads/seed-20G-64cpu.yaml (one repeat, a 5 s idle
window, streamed 1G at a time), with its size replaced by S: --smp 64 --size 20G is the
seed's experiment, in guests of 4G (the window + 2G; the host must have that plus 1G
available): 12 minutes for the A/B on this project's 2-core machine with the kernels
cached (benchmarks/README.md).

--repeat N replaces every job's repeat count. What a repeat costs under TCG on a 2-core
host (per kernel, from the recorded runs in analysis/runs): collapse-1G about 4 s,
collapse-1G-threads about 8-11 s, hugetlb-unshare-1G about 2 s (4 vCPUs): about 30 s
for the default set on both kernels; the seed's job at --smp 64 --size 20G about 5
minutes on each kernel (its recorded one-repeat runs: workload phases of 247 s and 261
s, streamed steps included), so --repeat 3 adds about 20 minutes.
With fewer than 3 repeats the report says n and tests nothing: --repeat 3 gives a test.

examples:
  tlbprobe repro                          # our patch, Debian's linux-source
  tlbprobe repro --smp 4,16,64            # the broadcast's growth with the CPU count
  tlbprobe repro --job khugepaged-fast --job hugetlb-db-churn   # real triggers
  tlbprobe repro --job default --job my-job.yaml
  tlbprobe repro --race                   # KASAN builds of both kernels, walkers racing collapse and unshare
  tlbprobe repro --audit                  # every sync recorded in both kernels, joined with the static audit
  tlbprobe repro --audit --job audit-collapse   # the smallest run-time check: one 64M collapse (about 1 min)
  tlbprobe repro --smp 64 --size 20G      # the seed's experiment at its size (streamed, 4G guests)
  tlbprobe repro --smp 64 --size 20G --repeat 3   # the same with a test: about 20 min more
  tlbprobe repro --patch 0001-a.patch --patch 0002-b.patch --source ~/linux
  tlbprobe repro --patch series.mbx       # b4 am / git format-patch --stdout output
  tlbprobe repro --source ~/linux --commits v6.12..my-series
  tlbprobe repro --accel kvm --pv-tlb-flush off --smp 8 --memory 8G
  tlbprobe repro --pv-tlb-flush wrapper   # the paravirtual branch under TCG: patched must equal baseline
"""


def register(sub) -> None:
    p = sub.add_parser("repro", help="QEMU A/B: baseline vs patched kernel, in one command",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_kernel_options(p)
    add_guest_options(p, sweep=True)
    p.add_argument("--size", type=parse_size, metavar="SIZE",
                   help="collapse size of a sweep, or of the one collapse job with --smp N --size S (the "
                        "seed's experiment: --smp 64 --size 20G); default: the 1G job set, 256M per sweep point")
    p.add_argument("--job", action="append", default=[], dest="job_names", metavar="NAME|FILE",
                   help="run this job in both guests instead of the default set (repeatable): a shipped job "
                        "(workloads/NAME.yaml, e.g. khugepaged-fast, hugetlb-db-churn) or your own job file; "
                        "'default' stands for the default set (" + ", ".join(DEFAULT_JOBS) + ")")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="repeats of every job, replacing each job file's count (default: the file's; "
                        "3 in the default set, 1 in the seed's job and a sweep's); the epilog says "
                        "what a repeat costs")
    p.add_argument("--race", action="store_true",
                   help="the safety check: build the debug flavour of both kernels (--debug: KASAN, DEBUG_VM, "
                        "PAGE_TABLE_CHECK) and run the race jobs (collapse-race and hugetlb-db-race, or the --job ones) in "
                        "both; fails when either reports corrupted bytes, lost writes or a kernel splat "
                        "(kernels/README.md: the fault injection that shows it catches a broken skip)")
    p.add_argument("--audit", action="store_true",
                   help="the run-time check: build both kernels with kernels/instrumentation/ (every table sync "
                        "recorded with the flush before it), run the audit jobs (" + ", ".join(AUDIT_JOBS) + ", "
                        "or the --job ones) with collect --check, run the static audit on the patched tree and "
                        "print per caller: reachable, calls, sent (baseline), skipped (patched), violations; fails "
                        "on any violation or unaudited call site (doc/audit.md)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results (default: runs/<time>-repro)")
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="JUnit XML for a CI system: a test case per job (or vCPU count) and kernel, failing "
                        "with the verdict line, with the LKML table as system-out")
    p.add_argument("--json", type=Path, metavar="FILE", dest="json_out",
                   help="the reports' JSON (tlbprobe report --format json) per job, verdicts and timings")
    p.set_defaults(func=main)


def format_timings(timings: Dict[str, float]) -> str:
    """'build baseline 0 s, guest baseline 1 min 25 s, ...' instead of a Python dict."""
    def human(seconds: float) -> str:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s} s" if m else f"{s} s"
    return ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {human(v)}" for k, v in timings.items())


def main(args: argparse.Namespace) -> int:
    from ..kernel.build import CHECK_PATCH, WRAP_FLUSH_PATCH, KernelSpec
    from ..ui import terminal_status
    from ..workflows.repro import default_out, resolve_jobs, run_repro, run_sweep, seed_job, tradeoff, with_check
    from ..workflows.results import Case, write_results

    arches.get(args.arch).require(("build", "guest"), f"repro --arch {args.arch}")  # before anything is built
    out = args.out or default_out()
    if len(args.smp) > 1 and args.job_names:
        raise InputError("--job goes with one --smp; a sweep (--smp 4,16,64) runs its own collapse job")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose another --out")
    resolve_commits(args)
    if args.race:
        args.debug = True
        args.job_names = args.job_names or ["collapse-race", "hugetlb-db-race"]
        # a race needs the vCPUs to run at once: single-threaded TCG interleaves them
        # (6 of 384 ranges raced a walker there, 384 of 384 with multi; kernels/README.md)
        args.tcg_thread = args.tcg_thread or "multi"
    # --pv-tlb-flush wrapper: both kernels carry the test-only wrapper, so they differ by
    # the series alone, and the guests boot with it switched on
    common = [WRAP_FLUSH_PATCH] if args.pv_tlb_flush == "wrapper" else []
    if args.audit:
        if len(args.smp) > 1 or args.size:
            raise InputError("--audit runs its own jobs (or the --job ones): leave out the sweep's --smp list and --size")
        # the instrumentation first: it is written against the unpatched tree, as the series is
        common = [CHECK_PATCH] + common
        args.job_names = args.job_names or list(AUDIT_JOBS)
    kspec = KernelSpec(source=args.source, fragments=fragments_from_args(args), patches=common,
                       base=args.config_base, arch=args.arch)
    if args.jobs:
        kspec.jobs = args.jobs
    if args.repeat is not None and not 1 <= args.repeat <= 1000:
        raise InputError(f"--repeat {args.repeat}: give 1 to 1000 repeats")
    size = format_size(args.size) if args.size else None
    sweep = len(args.smp) > 1
    if not sweep and size and args.job_names:
        raise InputError("--size sizes the one collapse job of --smp N --size S; with --job the size is the job "
                         "file's: leave out one of them")
    # the jobs the guests run, resolved here (job files included): the largest sizes the guests
    jobs = ([seed_job(size or "256M", args.repeat)] if sweep else [seed_job(size, args.repeat)] if size
            else resolve_jobs(args.job_names, args.repeat))
    if args.audit:
        jobs = with_check(jobs)
    memory = args.memory or guest_memory_for_jobs([j.job for j in jobs])
    check_host_memory(memory)
    # the kernel is filled in per variant by run_repro
    guest = replace(guest_spec_from_args(args, kernel=Path()), smp=args.smp[0], memory=memory)
    for f in (args.junit, args.json_out):
        if f and not f.parent.is_dir():
            raise InputError(f"{f}: its directory does not exist")
    if sweep:
        sw = run_sweep(kspec, guest, args.smp, size or "256M", out, patches=args.patch, status=terminal_status(),
                       repeat=args.repeat, argv=getattr(args, "command_argv", ()))
        cases = [Case(f"smp{r.cpus}[{r.variant}]", r.verdict == "matches", f"{r.cpus} vCPUs, {r.variant}: {r.verdict}",
                      sw.table, sw.timings.get(f"smp{r.cpus}_{r.variant}_s", 0.0)) for r in sw.rows]
        write_results(args.junit, args.json_out, "tlbprobe repro sweep", cases,
                      {"ok": sw.ok, "timings": sw.timings, "sweep": [r.__dict__ for r in sw.rows]})
        print(sw.table)
        print(f"plot: {sw.plot}")
        print(f"timings: {format_timings(sw.timings)}")
        print(f"results: {out}   ({'every run matches the model' if sw.ok else 'MISMATCH: see above'})")
        return 0 if sw.ok else 1
    res = run_repro(kspec, guest, out, patches=args.patch, jobs=jobs, status=terminal_status(),
                    argv=getattr(args, "command_argv", ()))
    cases = [Case(f"{job}[{variant}]", res.oks[job][variant], f"{job}, {variant} kernel: {v}", res.reports[job],
                  res.timings.get(f"guest_{variant}_s", 0.0))
             for job, d in res.verdicts.items() for variant, v in d.items()]
    data = {"ok": res.ok, "timings": res.timings, "verdicts": res.verdicts, "reports": res.report_data}
    ac = None
    if args.audit:  # the static audit of the patched tree, joined with both guests' checks per caller
        from ..workflows.audit_check import audit_runs

        ac = audit_runs(res, args.source, args.patch)
        cases.append(Case("audit", ac.ok, "; ".join(ac.failures()) or "every skip covered, every call site audited",
                          ac.text))
        data["ok"] = res.ok and ac.ok
        data["audit"] = ac.to_dict()
    write_results(args.junit, args.json_out, "tlbprobe repro", cases, data)
    for job, text in res.reports.items():
        print(f"===== {job} =====")
        print(text)
    trade = tradeoff(res.report_data)
    if trade:
        print(trade)
    audit_ok = ac is None or ac.ok
    if ac is not None:
        print("===== audit =====")
        print(ac.text)
    print("===== verdict =====")
    for job, d in res.verdicts.items():
        for variant, v in d.items():
            print(f"{job:<22} {variant:<9} {v}")
    print(f"timings: {format_timings(res.timings)}")
    ok = res.ok and audit_ok
    print(f"results: {out}   ({'the patch does what the model predicts' if res.ok else 'MISMATCH: see above'}"
          + ("" if not args.audit else "; audit OK" if audit_ok else "; AUDIT FAILED: see above") + ")")
    return 0 if ok else 1
