"""`tlbprobe repro`: the whole A/B in QEMU. Build (or take from the cache) a baseline and a
patched kernel, run the same jobs in a guest of each, report, and say whether the patched
kernel does what the model predicts for the flush mode the guests used.

Exit status: 0 when every run matches the model (for a native-flush guest: the patched
kernel sends no sync IPIs; for a PV-flush guest: patched looks like baseline), 1 when
one does not, so a CI job fails when the patch stops doing what it claims.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import InputError
from ..run.job import COMMON, Job, build_job, find_job_file
from ..vocab import KERNEL_VARIANTS as VARIANTS
from ..vm.guest import GuestSpec
from ..kernel.build import BuiltKernel, KernelSpec, variant_patches
from ..workloads import default_name

if TYPE_CHECKING:
    from ..report.sweep import SweepRow


#: The A/B's default jobs: job files in workloads/ (edit them there, or name others with
#: --job): single-threaded collapse, collapse with the mm live on every vCPU, hugetlb unshare.
#: Each runs 3 repeats, the fewest a significance test takes (report/compare.py MIN_REPEATS).
DEFAULT_JOBS: Tuple[str, ...] = ("collapse-1G", "collapse-1G-threads", "hugetlb-unshare-1G")

#: The jobs of `repro --audit` (workloads/audit-*.yaml): every caller of the sync a job can
#: drive (kernels/audit/callers.yaml ``job``), small and one repeat each, run with --check.
#: The hugetlb jobs first: khugepaged, once woken by a job, went on collapsing in the next
#: one (3 collapses in the hugetlb unshare job of the first recorded run, 6 sync IPIs more
#: than its model), and the khugepaged job last.
AUDIT_JOBS: Tuple[str, ...] = ("audit-hugetlb-unshare", "audit-hugetlb-db-single", "audit-collapse",
                               "audit-collapse-race", "audit-khugepaged")

#: The job `repro --smp N --size S` runs, with its size replaced by S: the seed's
#: experiment as its job file says it (one repeat: at 64 vCPUs under TCG one takes minutes).
SEED_JOB = "seed-20G-64cpu"


@dataclass(frozen=True)
class ReproJob:
    """One job of the A/B: its run's name, the guest's collect options, and the job they
    describe, resolved on the host (its size sizes the guest: commands/qemu.py
    guest_memory_for_jobs)."""

    name: str
    args: List[str]
    job: Job


def resolve_jobs(names: Sequence[str] = (), repeat: Optional[int] = None) -> List[ReproJob]:
    """Job names or files (``default``: DEFAULT_JOBS) -> the A/B's jobs. Each file is
    loaded and checked here, on the host, before a kernel is built; the guest reads it by
    its absolute path (its root is the host's, read-only). ``repeat`` (repro --repeat)
    replaces every file's repeat count; nothing else of a file is changed."""
    wanted: List[str] = []
    for n in names or ("default",):
        wanted.extend(DEFAULT_JOBS if n == "default" else [n])
    jobs: List[ReproJob] = []
    for n in wanted:
        path = find_job_file(n)
        job = build_job(_repeat(repeat), str(path))  # one clear error for a missing or malformed job
        if job.kernel_variant is not None:
            raise InputError(f"{path}: sets kernel_variant, which the A/B sets for each guest: remove it")
        name = path.stem if path.suffix == ".yaml" else path.name
        if any(name == other.name for other in jobs):
            raise InputError(f"job {name!r} is named twice")
        jobs.append(ReproJob(name, ["--job", str(path.resolve())] + _repeat_args(repeat), job))
    return jobs


def with_check(jobs: Sequence[ReproJob]) -> List[ReproJob]:
    """The jobs with the check observer on (collect --check), as repro --audit runs them."""
    flag = COMMON["check"].flag_name
    return [ReproJob(j.name, j.args + [flag] if flag not in j.args else list(j.args), j.job) for j in jobs]


def _repeat(repeat: Optional[int]) -> Dict[str, Any]:
    """The job keys repro --repeat sets (none without it)."""
    return {} if repeat is None else {"repeat": COMMON["repeat"].coerce(repeat, "repro --repeat")}


def _repeat_args(repeat: Optional[int]) -> List[str]:
    return [] if repeat is None else [COMMON["repeat"].flag_name, str(repeat)]


@dataclass
class ReproResult:
    out: Path
    kernels: Dict[str, BuiltKernel]
    runs: Dict[str, Dict[str, Path]]            # job -> variant -> run directory
    verdicts: Dict[str, Dict[str, str]]         # job -> variant -> verdict text
    ok: bool
    timings: Dict[str, float] = field(default_factory=dict)
    reports: Dict[str, str] = field(default_factory=dict)
    #: job -> the report's JSON (render_json), for --json
    report_data: Dict[str, dict] = field(default_factory=dict)
    #: job -> variant -> whether the run matched the model (None: not judged)
    oks: Dict[str, Dict[str, Optional[bool]]] = field(default_factory=dict)


def build_variants(kernel_spec: KernelSpec, patches: Sequence[Path], timings: Dict[str, float],
                   log: Callable[[str], None], status: Callable[[str], None]) -> Dict[str, BuiltKernel]:
    """Baseline and patched kernels, built or taken from the cache (one build directory:
    the second build is incremental). ``kernel_spec.patches`` go into both, before the
    patched variant's own (e.g. the test-only flush wrapper of --pv-tlb-flush wrapper)."""
    from ..kernel import asuser

    kernels: Dict[str, BuiltKernel] = {}
    for variant in VARIANTS:
        spec = replace(kernel_spec, patches=list(kernel_spec.patches) + variant_patches(variant, list(patches)))
        t = time.monotonic()
        log(f"{variant} kernel: building or taking from the cache")
        kernels[variant] = asuser.build(spec, log=log, status=status)
        timings[f"build_{variant}_s"] = round(time.monotonic() - t, 1)
        k = kernels[variant]
        log(f"{variant} kernel {k.release}: {k.bzimage} "
            f"({'cached' if k.cached else f'built in {k.seconds:.0f} s'})")
    return kernels


def run_repro(kernel_spec: KernelSpec, guest: GuestSpec, out: Path, patches: Sequence[Path] = (),
              jobs: Optional[List[ReproJob]] = None, log: Callable[[str], None] = print,
              status: Callable[[str], None] = lambda s: None, argv: Sequence[str] = ()) -> ReproResult:
    """``argv``: the repro command's words, recorded in each run (run.yaml qemu.started_by)."""
    from ..report import ReportOptions, build_report, render_json, render_lkml  # the verdicts, at the end
    from ..vm.collect import GuestOrigin, guest_failure, run_jobs

    jobs = [(j.name, j.args) for j in (jobs or resolve_jobs())]
    guest = replace(guest)  # the accelerator may change after the first boot: not in the caller's spec
    timings: Dict[str, float] = {}
    kernels = build_variants(kernel_spec, patches, timings, log, status)
    runs: Dict[str, Dict[str, Path]] = {name: {} for name, _ in jobs}
    for variant in VARIANTS:
        vjobs = [(name, args + ["--variant", variant]) for name, args in jobs]
        outs = [out / variant / name for name, _ in jobs]
        log(f"{variant}: booting a {guest.smp}-vCPU guest for {len(jobs)} job(s): {', '.join(n for n, _ in jobs)}")
        t = time.monotonic()
        spec = GuestSpec(kernels[variant].bzimage, guest.smp, guest.memory, guest.accel, guest.pv_tlb_flush,
                         guest.timeout, guest.extra_append, guest.tcg_thread, guest.arch)
        statuses, result = run_jobs(spec, vjobs, outs, log=log, status=status,
                                    origin=GuestOrigin("repro", list(argv)))
        timings[f"guest_{variant}_s"] = round(time.monotonic() - t, 1)
        # Both kernels must run under the same accelerator (and so the same flush mode):
        # whatever the first boot ended up with is what the second one uses.
        guest.accel = result.accel  # (its notes were logged as they happened, and are in run.yaml)
        for (name, _), st, o in zip(jobs, statuses, outs):
            runs[name][variant] = o
            if st != 0:
                log(f"{variant}/{name}: {guest_failure(o, st)}")
    verdicts: Dict[str, Dict[str, str]] = {}
    reports: Dict[str, str] = {}
    report_data: Dict[str, dict] = {}
    oks: Dict[str, Dict[str, Optional[bool]]] = {}
    ok = True
    for name, _ in jobs:
        paths = [str(runs[name][v]) for v in VARIANTS]
        report = build_report(paths, ReportOptions(allow_incomplete=True))
        reports[name] = render_lkml.render(report)
        report_data[name] = json.loads(render_json.render(report))
        verdicts[name], oks[name] = {}, {}
        for variant, a in zip(VARIANTS, report.runs):
            v = a.verdict
            verdicts[name][variant] = (f"{v.status}: measured {v.measured}, expected {v.expected}"
                                       + (f" ({v.reason})" if v.reason else ""))
            # under --race the walkers' pins make some collapses fail (EAGAIN), by design:
            # the model is fed the counted ones, and the race check is in the verdict
            raced = any("races_attempted" in r.workload.workload_figures for r in a.run.repeats if r.workload)
            good = a.run.complete and v.ok is True and (raced or a.run.ops >= a.run.ops_expected)
            oks[name][variant] = good if (v.ok is not None or not a.run.complete) else None
            if not good:
                ok = False
    result = ReproResult(out, kernels, runs, verdicts, ok, timings, reports, report_data, oks)
    (out / "repro.json").write_text(json.dumps({
        "ok": ok, "timings": timings, "verdicts": verdicts,
        "kernels": {v: {"release": k.release, "bzimage": str(k.bzimage), "cached": k.cached,
                        "build_seconds": round(k.seconds, 1)} for v, k in kernels.items()},
        "runs": {j: {v: str(p) for v, p in d.items()} for j, d in runs.items()},
    }, indent=1))
    return result


def tradeoff(report_data: Dict[str, dict]) -> Optional[str]:
    """The trade-off a maintainer weighs, when the A/B ran both: the sync IPIs the patch
    saved per operation (a collapse job) beside what GUP-fast lost or gained (the gup-fast
    job: our patch must show no change; a step-2 patch shows its cost here)."""
    def figure(job: dict, key: str) -> Optional[dict]:
        comps = job.get("comparisons") or []
        return next((f for f in (comps[0].get("figures") or []) if f.get("key") == key), None) if comps else None

    saved = gup = None
    for name, data in report_data.items():
        runs = data.get("runs") or []
        if len(runs) == 2 and runs[0].get("workload") == default_name() and saved is None and runs[0].get("ops"):
            b, p = runs[0].get("sync_ipis_traced"), runs[1].get("sync_ipis_traced")
            if b is not None and p is not None:
                saved = (name, (b - p) / runs[0]["ops"])
        f = figure(data, "gup_ns_per_page")
        if f and gup is None:
            gup = (name, f)
    if saved is None or gup is None:
        return None
    f = gup[1]
    if f.get("emulated"):  # a TCG guest's time is the emulator's (report/compare.py): no change to weigh
        return (f"trade-off: the patch saves {saved[1]:.2f} sync IPIs per collapse ({saved[0]}); GUP-fast ns per "
                f"page ({gup[0]}) was measured in a TCG guest, the emulator's time: quote a host's run")
    change = "n/a" if f.get("change_pct") is None else f"{f['change_pct']:+.1f}%"
    test = ("significant" if f.get("significant") else "within the noise" if f.get("significant") is False
            else f"not tested: {f.get('untested')}")
    return (f"trade-off: the patch saves {saved[1]:.2f} sync IPIs per collapse ({saved[0]}); GUP-fast ns per "
            f"page changes {change} ({gup[0]}, {test})")


def default_out() -> Path:
    return Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-repro"


@dataclass
class SweepResult:
    out: Path
    runs: Dict[int, Dict[str, Path]]            # vCPUs -> variant -> run directory
    rows: List["SweepRow"]
    ok: bool
    table: str
    plot: Optional[Path]
    timings: Dict[str, float] = field(default_factory=dict)


def _sweep_params(size: str, repeat: Optional[int] = None) -> Dict[str, Any]:
    return {"workload": default_name(), "size": size, "repeat": repeat or 1, "idle_seconds": 1, "cpu": 0}


def sweep_job(size: str, repeat: Optional[int] = None) -> List[str]:
    """The job a sweep runs at every N: one collapse (the default workload) of ``size``, one
    repeat (``repeat`` with repro --repeat): a sweep reads the trend across N, not a test."""
    return [word for key, value in _sweep_params(size, repeat).items() for word in (COMMON[key].flag_name, str(value))]


def seed_job(size: str, repeat: Optional[int] = None) -> ReproJob:
    """The seed's experiment as the one job of an A/B (repro --smp N --size S): its job file
    (SEED_JOB) as written, idle window and repeats included, with the size S (and the
    repeats of repro --repeat)."""
    path = find_job_file(SEED_JOB)
    cli = {"size": COMMON["size"].coerce(size, "repro --size"), **_repeat(repeat)}
    job = build_job(cli, str(path))
    args = ["--job", str(path.resolve()), COMMON["size"].flag_name, size] + _repeat_args(repeat)
    return ReproJob(f"seed-{size}", args, job)


def run_sweep(kernel_spec: KernelSpec, guest: GuestSpec, smps: Sequence[int], size: str, out: Path,
              patches: Sequence[Path] = (), memory: Optional[str] = None, log: Callable[[str], None] = print,
              status: Callable[[str], None] = lambda s: None, repeat: Optional[int] = None,
              argv: Sequence[str] = ()) -> SweepResult:
    """The same collapse at each vCPU count on both kernels; a table and a plot across N."""
    from ..report.sweep import render_table, sweep_rows, write_plot
    from ..vm.collect import GuestOrigin, guest_failure, run_jobs

    guest = replace(guest)
    timings: Dict[str, float] = {}
    kernels = build_variants(kernel_spec, patches, timings, log, status)
    runs: Dict[int, Dict[str, Path]] = {}
    for n in smps:
        runs[n] = {}
        for variant in VARIANTS:
            spec = GuestSpec(kernels[variant].bzimage, n, memory or guest.memory, guest.accel, guest.pv_tlb_flush,
                             guest.timeout, guest.extra_append, guest.tcg_thread, guest.arch)
            o = out / f"smp{n}" / variant
            log(f"{n} vCPUs, {variant}: collapse of {size}")
            t = time.monotonic()
            args = sweep_job(size, repeat) + ["--variant", variant]
            statuses, result = run_jobs(spec, [(default_name(), args)], [o], log=log, status=status,
                                        origin=GuestOrigin("repro", list(argv)))
            timings[f"smp{n}_{variant}_s"] = round(time.monotonic() - t, 1)
            guest.accel = result.accel
            if statuses[0] != 0:
                log(f"{n}/{variant}: {guest_failure(o, statuses[0])}")
            runs[n][variant] = o
    rows = sweep_rows(runs)
    ok = all(r.verdict == "matches" for r in rows)
    table = render_table(rows)
    plot = write_plot(rows, out / "sweep.png")
    (out / "sweep.txt").write_text(table + "\n")
    (out / "repro.json").write_text(json.dumps({
        "ok": ok, "timings": timings, "sweep": [r.__dict__ for r in rows],
        "kernels": {v: {"release": k.release, "bzimage": str(k.bzimage), "cached": k.cached} for v, k in kernels.items()},
        "runs": {str(n): {v: str(p) for v, p in d.items()} for n, d in runs.items()},
    }, indent=1))
    return SweepResult(out, runs, rows, ok, table, plot, timings)
