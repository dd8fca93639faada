"""The collector end to end without root: `Collector` against a stand-in kernel tree.

KernelPaths.under(tree) points every file the collector reads at a temporary directory
holding recorded /proc files (tests/data: the development VM's /proc/interrupts, vmstat
and meminfo), a THP sysfs directory, CPU lists and a kernel log. With --no-trace nothing
else of the kernel is touched (no knob is written, no tracefs), so the whole path from
host facts through the phases to summary.json runs as a normal test, and the run
directory it writes must load with rundir's reader like a real one. The real thing stays
tested by tests/test_collect_real.py (root).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict

import pytest

from tlbprobe.run.collector import Collector
from tlbprobe.run.job import build_job
from tlbprobe.measure.paths import REAL, KernelPaths
from tlbprobe.rundir.reader import load_run
from tlbprobe.ui import Console
from tlbprobe.workloads import DRIVERS, PhaseOutcome, Workload, WorkloadSpec, registry

DATA = Path(__file__).parent / "data"
BEFORE = DATA / "x86-kvm-2cpu.before.interrupts"
AFTER = DATA / "x86-kvm-2cpu.after.interrupts"

#: A KVM guest's boot log, as far as host.py reads it.
DMESG = """[    0.000000] Linux version 6.18.44 (fake) #1 SMP PREEMPT_DYNAMIC
[    0.000000] Hypervisor detected: KVM
[    0.021000] KVM setup pv remote TLB flush
[    0.050000] Dynamic Preempt: voluntary
"""

pytestmark = pytest.mark.skipif(0 not in os.sched_getaffinity(0),
                                reason="the collector pins itself to the driver CPU, 0, which this process may not use")


@pytest.fixture
def tree(tmp_path) -> Path:
    """A stand-in for /proc and /sys as a 2-CPU KVM guest has them."""
    root = tmp_path / "kernel"
    paths = KernelPaths.under(root)
    files: Dict[Path, str] = {
        paths.interrupts: BEFORE.read_text(),
        paths.vmstat: (DATA / "x86-kvm-2cpu.vmstat").read_text(),
        paths.meminfo: (DATA / "x86-kvm-2cpu.meminfo").read_text(),
        paths.cpuinfo: "processor\t: 0\nmodel name\t: AMD EPYC (fake)\nflags\t\t: fpu pcid hypervisor\n\n",
        paths.cmdline: "console=ttyS0 quiet\n",
        paths.cpu_dir / "online": "0-1\n",
        paths.cpu_dir / "possible": "0-1\n",
        paths.thp_dir / "enabled": "always [madvise] never\n",
        paths.thp_dir / "defrag": "always defer defer+madvise [madvise] never\n",
        paths.thp_dir / "khugepaged" / "pages_to_scan": "4096\n",
        paths.kernel_log: DMESG,
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def tiny(tree, monkeypatch):
    """A workload whose one 'operation' is the interrupts the recorded VM took in 2 s:
    prepare() puts the 'before' copy of /proc/interrupts in place, run() the 'after' one."""
    interrupts = KernelPaths.under(tree).interrupts

    class Recorded(Workload):
        name = "recorded"
        ops_unit = "replays"

        def prepare(self) -> None:
            shutil.copyfile(BEFORE, interrupts)

        def run(self, progress, vmstat_before) -> PhaseOutcome:
            progress("replaying")
            shutil.copyfile(AFTER, interrupts)
            return PhaseOutcome(1, 1)

    monkeypatch.setitem(registry(), "recorded", WorkloadSpec(name="recorded", description="a recorded VM's 2 s",
                                                              driver="tests:Recorded", ops_unit="replays"))
    monkeypatch.setitem(DRIVERS, "recorded", Recorded)
    return Recorded


def collect(tree: Path, out: Path, **job) -> dict:
    job = build_job({"trace": False, "idle_seconds": 0.05, "idle_mode": "sleep", **job})
    collector = Collector(job, out, Console(quiet=True), argv=["tlbprobe", "collect"],
                          paths=KernelPaths.under(tree), require_root=False)
    return collector.run()


def test_paths_under_a_root_move_every_path():
    paths = KernelPaths.under(Path("/t"))
    assert paths.interrupts == Path("/t/proc/interrupts") and paths.thp_dir == Path("/t/sys/kernel/mm/transparent_hugepage")
    assert paths.state_dir == Path("/t/run/tlbprobe") and paths.kernel_log == Path("/t/dmesg.txt")
    assert REAL.interrupts == Path("/proc/interrupts") and REAL.kernel_log is None


def test_idle_run_against_the_fake_tree_writes_a_complete_run(tree, tmp_path):
    out = tmp_path / "run"
    summary = collect(tree, out, workload="idle", repeat=2)
    assert summary["complete"] is True and summary["status"] == "complete"
    run = load_run(out)
    assert run.complete and run.status == "complete" and len(run.repeats) == 2
    assert run.host["cpu_model"] == "AMD EPYC (fake)" and run.online_cpus == 2
    assert run.host["thp"]["enabled"] == "madvise"
    assert summary["flush_mode"] == "pv"                        # from the recorded kernel log
    for rep in run.repeats:                                       # the same file before and after
        assert rep.phases["idle"].cal_other_cpus == 0
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == [f"r{r}-idle-{w}.{f}" for r in (0, 1) for w in ("after", "before") for f in ("interrupts", "vmstat")]
    assert (out / "snapshots" / "r0-idle-before.interrupts").read_text() == BEFORE.read_text()
    assert not (tree / "run" / "tlbprobe" / "journal.json").exists()   # nothing changed, nothing journaled


def test_workload_phase_counts_the_recorded_interrupts(tree, tmp_path, tiny):
    out = tmp_path / "run"
    collect(tree, out, workload="recorded", repeat=2)
    run = load_run(out)
    assert run.complete and len(run.repeats) == 2
    # tests/data/README.md: CAL 6/1 and TLB 3/0 on CPUs 0/1 in those 2 s; CPU 0 drives.
    for rep in run.repeats:
        w = rep.phases["workload"]
        assert (w.cal_other_cpus, w.tlb_other_cpus, w.ops) == (1, 0, 1)
    assert run.ops == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["other_cpus"] == [1] and summary["ops_unit"] == "replays"
    assert (out / "timeseries.csv").exists() and (out / "interrupts.csv").exists()


def test_root_is_still_required_for_the_real_kernel(tree, tmp_path, monkeypatch):
    from tlbprobe.errors import PreflightError

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    job = build_job({"workload": "idle", "trace": False})
    with pytest.raises(PreflightError, match="collect needs root"):
        Collector(job, tmp_path / "run", Console(quiet=True), paths=KernelPaths.under(tree)).run()
    assert not (tmp_path / "run").exists()


def test_the_collector_builds_the_observers_the_job_asks_for(tree, tmp_path):
    """No observer is built by the command line: the Collector builds them from the
    resolved job, with the stand-in tree's paths (the cost observer looks for tracefs
    there, and refuses before anything is measured)."""
    from tlbprobe.errors import PreflightError

    with pytest.raises(PreflightError, match=f"--cost needs tracefs \\({tree}/sys/kernel/tracing is missing"):
        collect(tree, tmp_path / "cost", workload="idle", cost=True)
    assert not (tmp_path / "cost").exists()


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"), reason="--victim needs a C compiler")
@pytest.mark.skipif(1 not in os.sched_getaffinity(0), reason="the victim runs on the other CPU, 1")
def test_a_victim_run_against_the_fake_tree_writes_its_typed_section(tree, tmp_path):
    from tlbprobe.rundir.sections import VictimSection

    out = tmp_path / "run"
    summary = collect(tree, out, workload="idle", repeat=1, victim=True, idle_seconds=0.3)
    assert set(summary["victim"]["per_cpu"]) == {"1"}
    victim = load_run(out).section(VictimSection)
    assert victim.per_cpu[1].idle.slices > 5 and set(victim.windows) == {"r0-idle"}
    assert (out / "victim.csv").exists()


def test_observers_are_sized_from_the_workloads_planned_operations():
    """--cost's ring buffers follow the operations a phase asks for, not --size (which
    was right for collapse alone, and 0 without --size)."""
    from tlbprobe.measure.cost import CostObserver
    from tlbprobe.measure.latency import CyclictestObserver
    from tlbprobe.measure.victim import VictimObserver
    from tlbprobe.run.observers import observers_for

    class Planned(Workload):
        name = "planned"

        def planned_ops(self) -> int:
            return 1234

    job = build_job({"workload": "idle", "cost": True, "victim": True, "latency": True, "cpu": 1})
    obs = observers_for(job, Planned(job, None, print))
    assert [type(o) for o in obs] == [CyclictestObserver, CostObserver, VictimObserver]
    assert obs[1].ops_per_phase == 1234 and obs[1].driver_cpu == 1 and obs[2].driver_cpu == 1
    assert observers_for(build_job({"workload": "idle"}), Planned(job, None, print)) == []


def test_each_observer_has_its_job_switch_its_section_and_its_view():
    """An observer is one entry in run/observers.py: its section's KEY is a common option
    (a job switch), and report/views/ shows that section."""
    from tlbprobe.report.views import VIEWS
    from tlbprobe.run.job import COMMON, Job
    from tlbprobe.run.observers import OBSERVERS
    from tlbprobe.rundir.sections import SECTIONS

    assert [s for s, _ in OBSERVERS] == list(SECTIONS) == [v.section for v in VIEWS]
    for section, _ in OBSERVERS:
        assert COMMON[section.KEY] is section.SWITCH and COMMON[section.KEY].flag
        assert Job().value(section.KEY) is False and Job().to_dict()[section.KEY] is False
