"""Every parser of outside input, fed random and mutated input (hypothesis): the answer is
a value or tlbprobe's own InputError, never another exception. The seeds are real files
from tests/data; the mutations are what a cut-off copy, a wrong tool version or a damaged
disk gives: truncated lines, wrong column counts, NULs, huge numbers, bytes that are not
UTF-8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlbprobe.errors import InputError, TlbprobeError
from tlbprobe.run.job import build_job
from tlbprobe.measure.perfcount import kernel_addresses
from tlbprobe.measure.procfs import diff_interrupts, parse_interrupts, parse_keyvalue
from tlbprobe.measure.trace import TraceSession
from tlbprobe.report import build_report
from tlbprobe.rundir.cyclictest import parse_cyclictest_json
from tlbprobe.vm.guest import find_panic, read_statuses

DATA = Path(__file__).parent / "data"
RUN = Path(__file__).resolve().parents[1] / "analysis" / "runs" / "host-collapse-256M-latency"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutate(seed: str):
    """Strategies that damage a real file the ways files get damaged."""
    lines = seed.splitlines()

    @st.composite
    def damaged(draw):
        out = list(lines)
        for _ in range(draw(st.integers(1, 4))):
            if not out:
                break
            i = draw(st.integers(0, len(out) - 1))
            how = draw(st.sampled_from(["cut", "drop", "dup", "nul", "huge", "junk", "split"]))
            if how == "cut":
                out[i] = out[i][:draw(st.integers(0, max(len(out[i]) - 1, 0)))]
            elif how == "drop":
                del out[i]
            elif how == "dup":
                out.insert(i, out[i])
            elif how == "nul":
                out[i] = out[i].replace(" ", "\x00", 1)
            elif how == "huge":
                out[i] = out[i] + " 99999999999999999999999999999999"
            elif how == "junk":
                out[i] = draw(st.text(max_size=40))
            else:
                out[i:i + 1] = out[i].split(None, 1) if out[i].strip() else [out[i]]
        return "\n".join(out) + draw(st.sampled_from(["", "\n"]))
    return st.one_of(damaged(), st.text(max_size=300))


def returns_or_input_error(fn, *args):
    try:
        return fn(*args)
    except InputError:
        return None


INTERRUPTS = (DATA / "x86-kvm-2cpu.before.interrupts").read_text()


@FAST
@given(text=mutate(INTERRUPTS))
def test_proc_interrupts(text):
    parsed = returns_or_input_error(parse_interrupts, text)
    if parsed is not None:
        returns_or_input_error(diff_interrupts, parse_interrupts(INTERRUPTS), parsed)


@FAST
@given(text=mutate((DATA / "x86-kvm-2cpu.vmstat").read_text() + (DATA / "x86-kvm-2cpu.meminfo").read_text()))
def test_proc_vmstat_and_meminfo(text):
    returns_or_input_error(parse_keyvalue, text, "/proc/vmstat")


@FAST
@given(text=mutate((DATA / "cyclictest-x86-kvm-2cpu.json").read_text()))
def test_cyclictest_json(text):
    returns_or_input_error(parse_cyclictest_json, text)


@FAST
@given(text=mutate("workload: hugetlb-unshare\nsize: 2G\nrepeat: 3\nsharers: 4\ncycles: 100\noperation: exit\n"
                   "control: false\nidle_seconds: 2\ntrace_buffer_kb: 4096\n"))
def test_job_files(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("job") / "job.yaml"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    returns_or_input_error(build_job, {}, str(f))


@FAST
@given(raw=st.binary(max_size=400))
def test_job_files_of_random_bytes(tmp_path_factory, raw):
    f = tmp_path_factory.mktemp("job") / "job.yaml"
    f.write_bytes(raw)
    returns_or_input_error(build_job, {}, str(f))


@FAST
@given(text=mutate("ffffffff8160f1b0 t __pfx_tlb_remove_table_smp_sync\n"
                   "ffffffff8160f1c0 t tlb_remove_table_smp_sync\nffffffff81123450 T flush_tlb_func\n"))
def test_kallsyms(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("ksyms") / "kallsyms"
    f.write_text(text, errors="surrogateescape")
    found = kernel_addresses(["tlb_remove_table_smp_sync", "flush_tlb_func"], str(f))
    assert all(isinstance(v, int) for v in found.values())


@FAST
@given(text=mutate((DATA / "trace-6.18-collapse-polling.txt").read_text()))
def test_trace_pipe_lines(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("trace")
    (d / "trace_pipe").write_text(text, errors="surrogateescape")
    s = TraceSession(d)
    s.drain()
    c = s.counts("r0-workload")
    assert c.queued([1]) is not None and c.received([1]) is not None


CONSOLE = ("[    0.1] Linux version 6.12.117\nTLBPROBE-INIT-START\n[ 3.0] Oops: int3: 0000 [#1]\n"
           "[ 3.1] Kernel panic - not syncing: Fatal exception in interrupt\nTLBPROBE-EXIT=0:0\n")


@FAST
@given(text=mutate(CONSOLE))
def test_guest_console(text):
    assert find_panic(text) is None or isinstance(find_panic(text), str)


@FAST
@given(raw=st.lists(st.binary(max_size=12), max_size=4))
def test_guest_status_files(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("share")
    for i, content in enumerate(raw):
        (d / f".status-{i}").write_bytes(content)
    assert all(isinstance(n, int) for n in read_statuses(d))


SUMMARY = (RUN / "summary.json").read_text()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutate(SUMMARY))
def test_run_directory_summary(tmp_path_factory, text):
    run = tmp_path_factory.mktemp("run") / "r"
    shutil.copytree(RUN, run)
    (run / "summary.json").write_text(text, errors="surrogateescape")
    try:
        build_report([str(run)])
    except TlbprobeError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["ops", "repeats", "online_cpus", "other_cpus", "attributed", "queued", "latency",
                            "driver_cpu", "complete", "sync_ipis_measured"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=5), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)))
def test_run_directory_wrong_types(tmp_path_factory, key, value):
    run = tmp_path_factory.mktemp("run") / "r"
    shutil.copytree(RUN, run)
    data = json.loads(SUMMARY)
    data[key] = value
    (run / "summary.json").write_text(json.dumps(data))
    try:
        build_report([str(run)])
    except TlbprobeError:
        pass


def cut_points(run: Path):
    """A run directory as a SIGKILL can leave it: each file cut at a few points."""
    for f in sorted(p for p in run.rglob("*") if p.is_file()):
        size = f.stat().st_size
        for cut in sorted({0, size // 3, size // 2, max(size - 1, 0)}):
            yield f.relative_to(run), cut


@pytest.mark.parametrize("rel, cut", list(cut_points(RUN))[::7])
def test_run_directories_cut_where_a_sigkill_can_cut_them(tmp_path, rel, cut):
    """report reads each (marked incomplete where it is) or refuses it in one line."""
    run = tmp_path / "r"
    shutil.copytree(RUN, run)
    with open(run / rel, "r+b") as f:
        f.truncate(cut)
    try:
        build_report([str(run)])
    except InputError as e:
        assert "\n" not in str(e)
