"""Job files and flags: the file sets, flags override, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlbprobe.errors import InputError
from tlbprobe.run.job import build_job

WORKLOADS = sorted((Path(__file__).resolve().parents[1] / "workloads").glob("*.yaml"))


@pytest.mark.parametrize("path", WORKLOADS, ids=[p.name for p in WORKLOADS])
def test_every_shipped_job_file_loads_and_says_what_it_shows(path):
    job = build_job({}, str(path))
    assert job.job_file == str(path)
    assert path.read_text().lstrip().startswith("#"), "each job file starts with a comment saying what it shows"


def test_flags_override_the_job_file(tmp_path):
    f = tmp_path / "j.yaml"
    f.write_text("workload: collapse\nsize: 20G\nrepeat: 5\nthreads: 2\n")
    job = build_job({"repeat": 2, "size": None, "threads": None}, str(f))
    assert (job.size, job.repeat, job.threads) == (20 << 30, 2, 2)


@pytest.mark.parametrize("text, message", [
    ("sise: 1G\n", "unknown key 'sise'"),
    ("repeat: two\n", "repeat: 'two' is not valid"),
    ("size: lots\n", "size: 'lots' is not valid"),
    ("trace: maybe\n", "trace: 'maybe' is not valid"),
    ("- a\n- b\n", "YAML mapping"),
    ("size: [1\n", "not a readable YAML job file"),
    ("repeat: 0\n", "out of range"),
    ("workload: fork-bomb\n", "unknown workload"),
])
def test_bad_job_files_are_named_in_one_line(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=message):
        build_job({}, str(f))


def test_missing_job_file(tmp_path):
    with pytest.raises(InputError, match="no such job file"):
        build_job({}, str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("content, message", [
    (b"repeat: .inf\n", "repeat: inf is not valid"),
    (b"\xff\xfe\x00binary\x00", "not a text file"),
    (b"flush_mode: bogus\n", "flush_mode 'bogus'"),
])
def test_odd_job_files_are_refused_in_one_line(tmp_path, content, message):
    f = tmp_path / "odd.yaml"
    f.write_bytes(content)
    with pytest.raises(InputError, match=message):
        build_job({}, str(f))


def test_workload_drivers_are_found_by_name_and_a_broken_module_is_named(monkeypatch):
    """Adding a workload = a spec (its options, model and report hooks) naming its driver
    class; a driver that does not import is a clear error naming it (it used to vanish
    from the registry)."""
    import sys
    import types

    import pytest

    from tlbprobe.errors import InternalError
    from tlbprobe.workloads import DRIVERS, Option, Workload, WorkloadSpec, driver, registry

    assert driver("collapse").name == "collapse" and driver("idle").name == "idle"
    from tlbprobe.run.job import build_job

    tiny_spec = WorkloadSpec(name="tiny", description="a test's workload", driver="tlbprobe_test_tiny:Tiny",
                             options=(Option("widgets", "widgets per phase", kind=int, default=3, low=1, high=9),))
    tiny = types.ModuleType("tlbprobe_test_tiny")

    class Tiny(Workload):
        spec = tiny_spec
    tiny.Tiny = Tiny
    monkeypatch.setitem(sys.modules, "tlbprobe_test_tiny", tiny)
    monkeypatch.setitem(registry(), "tiny", tiny_spec)
    monkeypatch.delitem(DRIVERS, "tiny", raising=False)
    assert driver("tiny") is Tiny and Tiny.name == "tiny" and Tiny.options == tiny_spec.options
    # its options are job keys and flags of their own, checked, with their default, in run.yaml
    assert build_job({"workload": "tiny"}).to_dict()["widgets"] == 3
    assert build_job({"workload": "tiny", "widgets": 5}).options == {"widgets": 5}
    with pytest.raises(InputError, match="--widgets 12 is out of range"):
        build_job({"workload": "tiny", "widgets": 12})
    with pytest.raises(InputError, match="sharers is an option of the hugetlb-unshare and hugetlb-db workloads, not of tiny"):
        build_job({"workload": "tiny", "sharers": 3})
    from tlbprobe.commands.collect import add_collect_options
    import argparse
    p = argparse.ArgumentParser()
    add_collect_options(p)
    assert "--widgets" in p.format_help()
    DRIVERS.pop("tiny")
    monkeypatch.setitem(registry(), "broken", WorkloadSpec(name="broken", description="", driver="no_such_module:X"))
    with pytest.raises(InternalError, match=r"workload 'broken': its driver no_such_module:X cannot be imported"):
        driver("broken")


def test_a_key_without_a_value_means_the_default(tmp_path):
    """Found by tests/test_parsers_fuzz.py: 'idle_seconds:' (YAML null) raised a TypeError."""
    f = tmp_path / "j.yaml"
    f.write_text("workload: collapse\nidle_seconds:\nrepeat:\n")
    job = build_job({}, str(f))
    assert (job.idle_seconds, job.repeat) == (5.0, 3)


def test_repro_jobs_are_job_files_resolved_on_the_host(tmp_path):
    from tlbprobe.workflows.repro import DEFAULT_JOBS, resolve_jobs

    jobs = resolve_jobs()
    assert [j.name for j in jobs] == list(DEFAULT_JOBS)
    for j in jobs:
        assert j.args[0] == "--job" and Path(j.args[1]).is_absolute() and Path(j.args[1]).stem == j.name
        assert j.job.size == 1 << 30
    assert [j.name for j in resolve_jobs(["default", "khugepaged-fast"])] == list(DEFAULT_JOBS) + ["khugepaged-fast"]
    own = tmp_path / "mine.yaml"
    own.write_text("workload: collapse\nsize: 64M\n")
    (mine,) = resolve_jobs([str(own)])
    assert (mine.name, mine.args, mine.job.size) == ("mine", ["--job", str(own.resolve())], 64 << 20)
    with pytest.raises(InputError, match="no such job file; shipped jobs: .*khugepaged"):
        resolve_jobs(["no-such-job"])
    with pytest.raises(InputError, match="named twice"):
        resolve_jobs(["collapse-1G", "default"])
    own.write_text("workload: collapse\nkernel_variant: patched\n")
    with pytest.raises(InputError, match="kernel_variant"):
        resolve_jobs([str(own)])


def test_threads_all_means_one_per_other_cpu():
    from tlbprobe.run.job import ALL_OTHERS, resolve_common

    job = build_job({}, "collapse-1G-threads")
    assert job.threads == ALL_OTHERS
    assert resolve_common(job, 64).threads == 63 and resolve_common(job, 1).threads == 0
    with pytest.raises(InputError, match="threads"):
        build_job({"threads": "some"})


def test_common_options_are_declared_once_and_feed_the_job_the_parser_and_run_yaml():
    """Each common option is one Option record (run/job.py COMMON_OPTIONS): a Job field of
    the same name holds its value and default (an observer's switch: its key in
    Job.observers), the parser gets its flag from the record, and run.yaml's job keys are
    the fields, each observer's switch where Job.observers stands."""
    import argparse
    import dataclasses

    from tlbprobe.commands.collect import add_collect_options
    from tlbprobe.run.job import COMMON_OPTIONS, OBSERVER_KEYS, Job
    from tlbprobe.rundir.sections import SECTIONS

    fields = [f.name for f in dataclasses.fields(Job)]
    keys = [o.key for o in COMMON_OPTIONS]
    assert set(fields) == set(keys) - OBSERVER_KEYS | {"options", "observers", "job_file", "description"}
    switches = [s.KEY for s in SECTIONS]
    at = fields.index("observers")
    assert list(Job().to_dict()) == [f for f in fields[:at]] + switches + [f for f in fields[at + 1:] if f != "options"]
    p = argparse.ArgumentParser()
    add_collect_options(p)
    flags = {a.dest: a.option_strings for a in p._actions if a.help != argparse.SUPPRESS}
    hidden = {s for a in p._actions if a.help == argparse.SUPPRESS for s in a.option_strings}
    for o in COMMON_OPTIONS:
        assert flags[o.key] == [o.flag_name], o.key
        assert set(o.aliases) <= hidden, o.key  # old spellings: accepted, not shown (doc/cli.md)
    ns = p.parse_args(["--no-trace", "--size", "1G", "--threads", "all", "--idle-seconds", "0.5", "--latency"])
    assert (ns.trace, ns.size, ns.threads, ns.idle_seconds, ns.latency, ns.cost) == (False, 1 << 30, -1, 0.5, True, None)
    assert p.parse_args([]).trace is None  # not given: the job file's value, else the Job's default


def test_option_kinds_parse_negate_and_checks():
    from tlbprobe.options import Option

    neg = Option("trace", "t", kind=bool, negate=True)
    assert neg.flag_name == "--no-trace" and neg.coerce(False, "f") is False
    with pytest.raises(InputError, match=r"f: trace: 'no' is not valid \(expected true or false\)"):
        neg.coerce("no", "f")
    fl = Option("idle_seconds", "s", kind=float, low=0, high=3600)
    assert fl.coerce("2.5", "f") == 2.5
    with pytest.raises(InputError, match=r"--idle-seconds 4000.0 is out of range \(0..3600\)"):
        fl.coerce(4000, "f")
    sized = Option("size", "s", kind=int, parse=lambda v: int(str(v).rstrip("K")) * 1024, low=1,
                   message="{flag} must be positive")
    assert sized.coerce("4K", "f") == 4096
    with pytest.raises(InputError, match="--size must be positive"):
        sized.coerce("0K", "f")
    with pytest.raises(InputError, match=r"f: size: 'xK' is not valid"):
        sized.coerce("xK", "f")
    pick = Option("mode", "m", choices=lambda: ("a", "b"), show_choices=True)
    assert pick.choice_list() == ("a", "b") and pick.coerce("b", "f") == "b"
    with pytest.raises(InputError, match="--mode 'c' is unknown: choose one of a, b"):
        pick.coerce("c", "f")
    some = Option("threads", "t", kind=int, low=0, high=9, allowed=(-1,), range_text="0..9, or all")
    assert some.coerce(-1, "f") == -1
    with pytest.raises(InputError, match=r"--threads 10 is out of range \(0..9, or all\)"):
        some.coerce(10, "f")


def test_guest_memory_comes_from_the_resolved_jobs_sizes(tmp_path):
    """qemu collect and repro size the guest from the job as resolved on the host, a --job
    file's size included (it used to come from --size alone: a 12G job file booted a 4G
    guest that its own preflight then refused)."""
    from tlbprobe.commands.qemu import guest_memory_for_jobs
    from tlbprobe.workflows.repro import resolve_jobs, seed_job, sweep_job

    big = tmp_path / "big.yaml"
    big.write_text("workload: collapse\nsize: 12G\n")
    assert guest_memory_for_jobs([build_job({}, str(big))]) == "14G"
    assert guest_memory_for_jobs([build_job({"size": 20 << 30}, str(big))]) == "22G"   # the flag wins, as in the guest
    assert guest_memory_for_jobs([j.job for j in resolve_jobs(["default", str(big)])]) == "14G"   # the largest job
    assert guest_memory_for_jobs([build_job({})]) == "4G"    # no size: the guest sizes its collapse to 4G
    assert guest_memory_for_jobs([j.job for j in resolve_jobs()]) == "4G"
    seed = seed_job("20G")
    assert sweep_job("20G") == ["--workload", "collapse", "--size", "20G", "--repeat", "1",
                                "--idle-seconds", "1", "--driver-cpu", "0"]
    assert (seed.name, seed.job.size, seed.job.repeat) == ("seed-20G", 20 << 30, 1)
    # the seed's job file streams 1G at a time (its window): 1G + 2G, at least 4G, whatever S
    assert guest_memory_for_jobs([seed.job]) == "4G"
    assert guest_memory_for_jobs([seed_job("12G").job]) == "4G"


def test_repro_runs_the_seed_job_file_as_written():
    """repro --smp N --size S runs workloads/seed-20G-64cpu.yaml (its 5 s idle window, its
    one repeat), the size replaced; it used to run a job of its own (1 s idle windows)."""
    from tlbprobe.workflows.repro import SEED_JOB, seed_job

    seed = seed_job("12G")
    path = Path(seed.args[1])
    assert seed.args[0] == "--job" and path.is_absolute() and path.stem == SEED_JOB
    assert seed.args[2:] == ["--size", "12G"]
    written = build_job({}, str(path))
    assert (seed.job.idle_seconds, seed.job.repeat, seed.job.cpu) == (written.idle_seconds, written.repeat,
                                                                      written.cpu) == (5.0, 1, 0)
    assert seed.job.size == 12 << 30


def test_repro_repeat_replaces_every_jobs_repeat_and_nothing_else():
    from tlbprobe.workflows.repro import resolve_jobs, seed_job, sweep_job

    for j in resolve_jobs(["default", "khugepaged-fast"], repeat=4):
        assert j.job.repeat == 4 and j.args[2:] == ["--repeat", "4"]
        assert j.job.idle_seconds == build_job({}, j.args[1]).idle_seconds
    assert seed_job("12G", 3).job.repeat == 3 and seed_job("12G", 3).args[-2:] == ["--repeat", "3"]
    assert "--repeat 2" in " ".join(sweep_job("256M", 2))
    with pytest.raises(InputError, match="repeat"):
        resolve_jobs(["default"], repeat=0)


def test_the_default_ab_jobs_run_at_least_three_repeats():
    """The fewest repeats a significance test takes (report/compare.py MIN_REPEATS); the
    seed's job may run fewer (a repeat takes minutes at 64 vCPUs), and the report then says n."""
    from tlbprobe.report.compare import MIN_REPEATS
    from tlbprobe.workflows.repro import resolve_jobs

    for j in resolve_jobs():
        assert j.job.repeat >= MIN_REPEATS, j.name


def test_repro_help_offers_repeat_with_its_cost():
    from tlbprobe.cli import build_parser

    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "repro" in a.choices)
    text = sub.choices["repro"].format_help()
    assert "--repeat N" in text and "What a repeat costs" in text and "seed-20G-64cpu.yaml" in text


def test_qemu_collect_with_a_job_file_sizes_the_guest_from_it(tmp_path, monkeypatch):
    """`tlbprobe qemu collect --kernel K -- --job FILE`: the guest's memory follows the job
    file's size (no QEMU: the boot is replaced by a stand-in that records the guest)."""
    import tlbprobe.commands.qemu as qemu
    import tlbprobe.vm.collect as vm_collect
    from tlbprobe.cli import main

    big = tmp_path / "big.yaml"
    big.write_text("workload: collapse\nsize: 12G\n")
    seen = {}

    def boot(spec, rest, out, workload, **kw):
        seen.update(memory=spec.memory, rest=rest, workload=workload)
        raise InputError("stop before booting")

    monkeypatch.setattr(qemu, "check_host_memory", lambda memory: seen.setdefault("checked", memory))
    monkeypatch.setattr(vm_collect, "collect_in_guest", boot)
    monkeypatch.setattr(qemu, "collect_in_guest", boot, raising=False)
    assert main(["qemu", "collect", "--kernel", str(tmp_path / "bzImage"), "--", "--job", str(big)]) == 2
    assert seen["memory"] == seen["checked"] == "14G" and seen["workload"] == "collapse"
    assert seen["rest"] == ["--job", str(big.resolve())]
