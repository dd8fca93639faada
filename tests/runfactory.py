"""Build synthetic run directories in the `tlbprobe-run/1` format (doc/run-format.md).

The numbers follow what the recorded runs in analysis/runs show: each sync broadcast is
one CAL on each other online CPU (tlb_remove_table_sync_one() -> smp_call_function() in
mm/mmu_gather.c), TLB shootdowns land on the CPUs that run the process's threads, and the
idle windows see a small background of both. Noise is seeded, so a test sees the same
run every time.

Used by the report tests and by benchmarks/report_scale.py; keep it independent of
tlbprobe's own code so a bug there cannot hide in the fixture too.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from tlbprobe.rundir.schema import PhaseFigures, RepeatFigures, run_totals
from tlbprobe.rundir.sections import (CostFigures, CostSection, VictimCpu, VictimFigures, VictimPhase,
                                      VictimSection)

GiB = 1 << 30
MiB = 1 << 20


@dataclass
class RunSpec:
    workload: str = "collapse"
    online_cpus: int = 2
    driver_cpu: int = 0
    threads: int = 0
    repeats: int = 3
    ops: int = 128  # per repeat
    ops_expected: Optional[int] = None  # per repeat; default = ops
    sync_per_op: float = 1.0  # broadcasts per op actually sent
    tlb_per_op: float = 0.0  # TLB IPIs per op on each thread CPU
    background_rate: float = 1.0  # non-TLB CAL per second per other CPU
    background_tlb_rate: float = 5.0  # TLB per second per CPU
    idle_s: float = 5.0
    work_s: float = 2.0
    flush_mode: str = "pv"
    flush_evidence: str = "dmesg: kvm-guest: KVM setup pv remote TLB flush"
    kernel_variant: Optional[str] = None
    kernel_release: str = "6.18.44-fc-v657"
    cpu_model: str = "AMD EPYC 7B13 64-Core Processor"
    hypervisor: Optional[str] = "kvm"
    complete: bool = True
    status: Optional[str] = None  # default complete/interrupted from `complete`
    repeats_done: Optional[int] = None
    size: Optional[int] = None
    op: Optional[str] = None  # hugetlb operation kind (job key "operation", as tlbprobe/run/job.py)
    sharers: int = 2
    control: bool = False
    latency: bool = False
    latency_layout: str = "collect"  # "collect": tlbprobe/measure/latency.py's; "flat": {phase: {cpu: ...}}
    trace: bool = True
    queue_traced: bool = False  # csd_queue_cpu counts ("queued"), as runs collected since it was added
    polled_fraction: float = 0.0  # share of the sync calls that found the CPU polling: no IPI
    timeseries_samples: int = 0  # >0: timeseries.csv with this many evenly spread samples per phase
    cost: bool = False    # summary.json cost and cost.csv, as collect --cost writes them
    handler_ns: float = 1500.0  # --cost: one sync IPI's handler time on a receiving CPU
    victim: bool = False  # summary.json victim, as collect --victim writes it
    #: run.yaml ``qemu`` section: the guest's accelerator ("tcg": an emulated run), None: no guest
    qemu_accel: Optional[str] = None
    #: the workload phase's duration per repeat, one per repeat (default: work_s each)
    work_s_per_repeat: Optional[List[float]] = None
    seed: int = 0
    extra_job: Dict[str, Any] = field(default_factory=dict)


def make_run(base: Path, name: str, spec: Optional[RunSpec] = None, **kw: Any) -> Path:
    """Write a run directory ``base/name`` and return its path."""
    spec = spec or RunSpec(**kw)
    rng = random.Random(spec.seed)
    d = Path(base) / name
    (d / "snapshots").mkdir(parents=True, exist_ok=True)
    cpus = list(range(spec.online_cpus))
    others = [c for c in cpus if c != spec.driver_cpu]
    thread_cpus = others[: spec.threads]
    ops_exp = spec.ops_expected if spec.ops_expected is not None else spec.ops
    size = spec.size
    if size is None:
        size = spec.ops * 2 * MiB if spec.workload == "collapse" else 4 * GiB
    done = spec.repeats if spec.repeats_done is None else spec.repeats_done
    if not spec.complete and spec.repeats_done is None:
        done = max(0, spec.repeats - 1)

    def noisy(mean: float) -> int:
        if mean <= 0:
            return 0
        return max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))

    t = 1_780_000_000.0
    phases_rows: List[List[Any]] = []
    irq_rows: List[List[Any]] = []
    vm_rows: List[List[Any]] = []
    attr_rows: List[List[Any]] = []
    ts_rows: List[List[Any]] = []
    repeats: List[Dict[str, Any]] = []
    collapse_alloc = 1000
    for r in range(done):
        phase_objs: Dict[str, Any] = {}
        idle_rate = 0.0
        work_s = spec.work_s_per_repeat[r] if spec.work_s_per_repeat else spec.work_s
        for phase, dur in (("idle", spec.idle_s), ("workload", work_s)):
            ops = spec.ops if phase == "workload" else 0
            cal: Dict[int, int] = {}
            tlb: Dict[int, int] = {}
            sync_attr = 0
            sync_queued = 0
            flush_attr = 0
            for c in cpus:
                bg_sync = noisy(spec.background_rate * dur)
                bg_tlb = noisy(spec.background_tlb_rate * dur)
                work_sync = int(round(spec.sync_per_op * ops)) if c != spec.driver_cpu else 0
                polled = int(round(spec.polled_fraction * work_sync))
                work_tlb = int(round(spec.tlb_per_op * ops)) if c in thread_cpus else 0
                tlb[c] = bg_tlb + work_tlb
                cal[c] = tlb[c] + bg_sync + work_sync - polled
                if c != spec.driver_cpu:
                    sync_attr += work_sync - polled
                    sync_queued += work_sync
                    flush_attr += tlb[c]
            cal_o = sum(cal[c] for c in others)
            tlb_o = sum(tlb[c] for c in others)
            sync_raw = cal_o - tlb_o
            if phase == "idle":
                idle_rate = sync_raw / dur if dur else 0.0
                background = 0.0
            else:
                background = round(idle_rate * dur, 3)
            attributed = {}
            if spec.trace:
                attributed = {"flush_tlb_func": flush_attr}
                if sync_attr:
                    attributed["tlb_remove_table_smp_sync"] = sync_attr
            queued = None
            if spec.trace and spec.queue_traced:
                queued = {"flush_tlb_func": flush_attr}
                if sync_queued:
                    queued["tlb_remove_table_smp_sync"] = sync_queued
            partial = phase == "workload" and ops < ops_exp
            phase_objs[phase] = PhaseFigures(
                name=phase, duration_s=dur, ops=ops, ops_expected=ops_exp if phase == "workload" else 0,
                result="partial" if partial else "ok", note="madvise: EINVAL after partial collapse" if partial else "",
                cal_per_cpu=dict(cal), tlb_per_cpu=dict(tlb), cal_other_cpus=cal_o, tlb_other_cpus=tlb_o,
                sync_raw=sync_raw, background_sync_ipis=background, sync_ipis=round(sync_raw - background, 3),
                attributed=attributed, queued=queued,
                woken_without_ipi=sync_queued - sync_attr if queued is not None else None)
            phases_rows.append(
                [r, phase, f"{t:.3f}", f"{t + dur:.3f}", dur, ops, ops_exp if phase == "workload" else 0,
                 "ok" if phase == "idle" or ops >= ops_exp else "partial",
                 "" if phase == "idle" or ops >= ops_exp else "madvise: EINVAL after partial collapse"]
            )
            for c in cpus:
                irq_rows.append([r, phase, "CAL", "function_call", "Function call interrupts", c, cal[c]])
                irq_rows.append([r, phase, "TLB", "tlb_shootdown", "TLB shootdowns", c, tlb[c]])
                irq_rows.append([r, phase, "LOC", "", "Local timer interrupts", c, int(250 * dur)])
            irq_rows.append([r, phase, "ERR", "", "", "", 0])
            coll = ops if spec.workload == "collapse" else 0
            vm_rows.append([r, phase, "thp_collapse_alloc", collapse_alloc, collapse_alloc + coll, coll])
            collapse_alloc += coll
            if spec.trace:
                for c in others:
                    w = int(round(spec.sync_per_op * ops))
                    got = w - int(round(spec.polled_fraction * w))
                    if got:
                        attr_rows.append([r, phase, "csd_function_entry", "tlb_remove_table_smp_sync", "", c, got])
                    if w and spec.queue_traced:
                        attr_rows.append([r, phase, "csd_queue_cpu", "tlb_remove_table_smp_sync", "smp_call_function",
                                          c, w])
                    attr_rows.append([r, phase, "csd_function_entry", "flush_tlb_func", "", c, tlb[c]])
            n = spec.timeseries_samples
            for k in range(1, n + 1):  # counts grow evenly over the phase, the last sample is the total
                for c in cpus:
                    ts_rows.append([r, phase, round(dur * k / n, 4), c, cal[c] * k // n, tlb[c] * k // n])
            t += dur + 0.5
        repeats.append(RepeatFigures.from_phases(r, phase_objs))

    status = spec.status or ("complete" if spec.complete else "interrupted")
    summary: Dict[str, Any] = {
        "format": "tlbprobe-run/1",
        "complete": spec.complete,
        "status": status,
        "error": None if spec.complete else "interrupted by SIGINT",
        "workload": spec.workload,
        "ops_unit": "collapses" if spec.workload == "collapse" else "unshare operations",
        "kernel_release": spec.kernel_release,
        "kernel_variant": spec.kernel_variant,
        "flush_mode": spec.flush_mode,
        "online_cpus": spec.online_cpus,
        "driver_cpu": spec.driver_cpu,
        "other_cpus": others,
        "repeats_planned": spec.repeats,
        **run_totals(repeats, len(others)),  # the collector's own totals (tlbprobe/rundir/schema.py)
    }
    if spec.latency:
        flat = _latency(spec, cpus, rng)
        if spec.latency_layout == "flat":
            summary["latency"] = flat
        else:  # as tlbprobe/measure/latency.py CyclictestObserver.summary() writes it
            summary["latency"] = {
                "tool": "cyclictest v2.40", "interval_us": 200, "priority": 80, "histogram_us": 2000,
                "driver_cpu": spec.driver_cpu,
                "phases": {f"r{r}-{ph}": flat[ph] for r in range(done) for ph in ("idle", "workload")},
                "aggregate": {ph: flat[ph] for ph in ("idle", "workload")},
                "missing": {}, "damaged": {},
            }
        (d / "latency").mkdir(exist_ok=True)
        for r in range(done):
            for phase in ("idle", "workload"):
                (d / "latency" / f"r{r}-{phase}.json").write_text(json.dumps(_cyclictest(spec, cpus, phase, rng)))
    if spec.cost:
        summary["cost"] = _cost(spec, d, done, others).to_dict()
    if spec.victim:
        summary["victim"] = _victim(spec, done, others).to_dict()
    job = {
        "workload": spec.workload,
        "size": size,
        "repeat": spec.repeats,
        "cpu": spec.driver_cpu,
        "threads": spec.threads,
        "idle_seconds": spec.idle_s,
        "trace": spec.trace,
        "latency": spec.latency,
        "cost": spec.cost,
        "victim": spec.victim,
        "kernel_variant": spec.kernel_variant,
        "job_file": None,
    }
    if spec.workload == "hugetlb-unshare":
        job.update(operation=spec.op or "munmap", sharers=spec.sharers, control=spec.control)
    job.update(spec.extra_job)
    command = ["tlbprobe", "collect", "--workload", spec.workload, "--size", _size_text(size),
               "--repeat", str(spec.repeats), "--cpu", str(spec.driver_cpu)]
    if spec.threads:
        command += ["--threads", str(spec.threads)]
    if spec.op:
        command += ["--operation", spec.op]
    run_yaml: Dict[str, Any] = {
        "format": "tlbprobe-run/1",
        "tool_version": "0.1.0",
        "command": command,
        "started": "2026-11-26T12:00:00+00:00",
        "job": job,
        "host": {
            "kernel_release": spec.kernel_release,
            "kernel_version": "#1 SMP PREEMPT_DYNAMIC Debian",
            "cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro",
            "cpu_model": spec.cpu_model,
            "cpu_flags": {"invlpgb": spec.flush_mode == "invlpgb", "pcid": True, "invpcid": True,
                          "hypervisor": spec.hypervisor is not None},
            "online_cpus": cpus,
            "possible_cpus": cpus,
            "hypervisor": spec.hypervisor,
            "flush_mode": spec.flush_mode,
            "flush_mode_evidence": spec.flush_evidence,
            "thp": {"enabled": "madvise", "defrag": "madvise"},
            "mem_total": 25_000_000_000,
            "mem_available": 24_000_000_000,
            "preempt": "none",
            "hz": 250,
        },
    }
    if spec.qemu_accel is not None:
        run_yaml["qemu"] = {"kernel": "/cache/kernels/0123456789abcdef/bzImage", "accel": spec.qemu_accel,
                            "smp": spec.online_cpus, "memory": "4G"}
    if spec.complete:
        run_yaml["finished"] = "2026-11-26T12:00:40+00:00"
    (d / "run.yaml").write_text(yaml.safe_dump(run_yaml, sort_keys=False))
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    _csv(d / "phases.csv", ["repeat", "phase", "start", "end", "duration_s", "ops", "ops_expected", "result", "note"], phases_rows)
    _csv(d / "interrupts.csv", ["repeat", "phase", "label", "canonical", "description", "cpu", "delta"], irq_rows)
    _csv(d / "vmstat.csv", ["repeat", "phase", "counter", "before", "after", "delta"], vm_rows)
    if spec.timeseries_samples:
        _csv(d / "timeseries.csv", ["repeat", "phase", "t_s", "cpu", "cal", "tlb"], ts_rows)
    if spec.trace:
        _csv(d / "attribution.csv", ["repeat", "phase", "event", "function", "callsite", "cpu", "count"], attr_rows)
    (d / "log.txt").write_text("synthetic run written by tests/runfactory.py\n")
    return d


def _latency(spec: RunSpec, cpus: List[int], rng: random.Random) -> Dict[str, Any]:
    out: Dict[str, Any] = {"driver_cpu": spec.driver_cpu}
    for phase in ("idle", "workload"):
        out[phase] = {}
        for c in cpus:
            starved = phase == "workload" and c == spec.driver_cpu
            p50 = 4.0 + rng.random() if not starved else 180.0
            out[phase][str(c)] = {
                "role": "driver" if c == spec.driver_cpu else "receiver",
                "samples": 50_000,
                "cycles_lost": 0 if not starved else 1200,
                "p50_us": round(p50, 1),
                "p99_us": round(p50 * 4, 1),
                "p999_us": round(p50 * 9, 1),
                "max_us": round(p50 * 40, 1),
            }
            if spec.latency_layout == "collect":  # the collector's CPU object has these too
                out[phase][str(c)].update(avg_us=round(p50 * 1.2, 2), overflows=0)
                out[phase][str(c)]["role"] = out[phase][str(c)].pop("role")
    return out


def _cost(spec: RunSpec, d: Path, done: int, others: List[int]) -> CostSection:
    """summary.json cost and cost.csv: every sync IPI handled in ``handler_ns`` (two 100 ns
    tracepoints included), one wait of the sender per broadcast."""
    sync = int(round(spec.sync_per_op * spec.ops))          # per other CPU and repeat
    rows: List[List[Any]] = []
    for r in range(done):
        for phase in ("idle", "workload"):
            n = sync if phase == "workload" else 0
            for kind, count, each in (("vector_all", n + 5, spec.handler_ns), ("vector_sync", n, spec.handler_ns),
                                      ("sync", n, 100.0), ("initiator", n, 4000.0)):
                total = count * (len(others) if kind != "initiator" else 1)
                rows.append([r, phase, "all", kind, total, total * each, each if total else 0.0,
                             each * 2 if total else 0.0, each * 3 if total else 0.0])
    _csv(d / "cost.csv", ["repeat", "phase", "cpu", "kind", "count", "total_ns", "p50_ns", "p99_ns", "max_ns"], rows)

    def figures(phase: str, kind: str, each: float) -> CostFigures:
        count = sum(int(row[4]) for row in rows if row[1] == phase and row[3] == kind)
        return CostFigures(count, round(count * each, 1), each * 3 if count else 0.0, each if count else 0.0,
                           each * 2 if count else 0.0)

    phases = {p: {k: figures(p, k, e) for k, e in (("vector_all", spec.handler_ns), ("vector_sync", spec.handler_ns),
                                                     ("sync", 100.0), ("initiator", 4000.0))}
              for p in ("idle", "workload")}
    vs = phases["workload"]["vector_sync"]
    head: Dict[str, Any] = {}
    if vs.count:
        per_ipi = spec.handler_ns - 200.0
        head = {"per_ipi_ns_corrected": per_ipi, "cpu_time_taken_ms": round(per_ipi * vs.count / 1e6, 3),
                "us_per_broadcast_per_cpu": round(per_ipi / 1e3, 3),
                "broadcasts_seen": round(vs.count / max(len(others), 1), 1)}
        if spec.workload == "collapse":
            head["ms_per_gib"] = round(head["cpu_time_taken_ms"] / (spec.ops * done * 2 / 1024.0), 3)
    return CostSection(tracepoint_ns=100.0 if vs.count else None, phases=phases,
                       histograms={"workload": {"vector_sync": {2000: vs.count}}} if vs.count else {},
                       lost_events=0, **head)


def _victim(spec: RunSpec, done: int, others: List[int]) -> VictimSection:
    """summary.json victim: the loop loses 2% of its units and takes one interruption per
    sync IPI in the workload phases."""
    rate = 5e6
    extra = spec.sync_per_op * spec.ops / spec.work_s
    idle = VictimFigures(int(spec.idle_s * 100), rate, 100.0, 50.0, 1.0, 10.0, 0.5, 20.0)
    work = VictimFigures(int(spec.work_s * 100), rate * 0.98, 100.0, 50.0 + extra, 1.0, 10.0 + extra * 1.3, 0.5, 35.0)
    per_cpu = {c: VictimCpu(200, idle, work, 2.0, 0.1, extra, 2.0, round(extra * 1.3, 2), 1.0) for c in others}
    t = 100.0
    phases: Dict[str, VictimPhase] = {}
    windows: Dict[str, Any] = {}
    for r in range(done):
        for phase, dur, f in (("idle", spec.idle_s, idle), ("workload", spec.work_s, work)):
            phases[f"r{r}-{phase}"] = VictimPhase(f.rate, f.interruptions_per_s, f.lost_us_per_s, f.worst_gap_us)
            windows[f"r{r}-{phase}"] = (t, t + dur)
            t += dur + 0.5
    return VictimSection(slice_ms=10, gap_ns=1000, per_cpu=per_cpu, phases=phases, windows=windows,
                         loss_pct_mean=2.0 if others else None, extra_interruptions_per_s_mean=extra if others else None,
                         extra_lost_us_per_s_mean=round(extra * 1.3, 2) if others else None,
                         worst_gap_us=35.0 if others else None, worst_gap_idle_us=20.0 if others else None)


def _cyclictest(spec: RunSpec, cpus: List[int], phase: str, rng: random.Random) -> Dict[str, Any]:
    threads = {}
    for i, c in enumerate(cpus):
        starved = phase == "workload" and c == spec.driver_cpu
        centre = 180 if starved else 5
        hist = {}
        for _ in range(2000):
            us = max(1, int(rng.lognormvariate(math.log(centre), 0.6)))
            hist[str(us)] = hist.get(str(us), 0) + 1
        threads[str(i)] = {"histogram": hist, "cycles": 2000, "min": 1, "max": max(int(k) for k in hist),
                           "avg": float(centre), "cpu": c, "node": 0}
    return {"file_version": 1, "cmdline:": "cyclictest -m -p 80 -i 200 -a -q", "rt_test_version:": "2.4",
            "num_threads": len(cpus), "resolution_in_ns": 0, "thread": threads}


def _csv(path: Path, header: List[str], rows: List[List[Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _size_text(n: int) -> str:
    for suffix, unit in (("G", GiB), ("M", MiB)):
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
