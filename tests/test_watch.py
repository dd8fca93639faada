"""`tlbprobe watch`'s parts that need no root: its options, the stack parser and the
origins on stacks recorded on the 6.18 host, the hist parser, the counters' arithmetic,
the records' rule (origins add up to the exact count), the watch directory's rotation
and compaction on a real file system, the metrics, and the systemd unit."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tlbprobe.errors import InputError
from tlbprobe.watch import config, counters, hist, origins, route
from tlbprobe.watch.counters import GroupValue
from tlbprobe.watch.interval import StackCount, Totals, build_record, count_stacks
from tlbprobe.watch.metrics import Metrics, check_textfile
from tlbprobe.watch.recorder import COMPACTED, RECORDS, WatchDir
from tlbprobe.watch.stacks import StackParser, parse_stacks, task_name

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "tlbprobe-watch.service"


# -- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                           ("1h30m", 5400), ("0.5", 0.5), ("1.5m", 90)])
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1", "soon", "1x", "h", "inf", "nan", "1e9", "400d", "5 m", "0s"])
def test_bad_durations_are_refused(text):
    with pytest.raises(InputError, match="--duration"):
        config.parse_duration(text)


@pytest.mark.parametrize("text", ["0", "-5", "0.1", "2h", "abc"])
def test_bad_intervals_are_refused(text):
    with pytest.raises(InputError, match="--interval"):
        config.parse_interval(text)


def test_listen_addresses():
    assert config.parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert config.parse_listen("[::1]:80") == ("::1", 80)
    assert config.parse_listen("localhost:9000") == ("localhost", 9000)
    for bad in ("9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "example.com:80", "1.2.3.4:x", ":9464"):
        with pytest.raises(InputError, match="--listen"):
            config.parse_listen(bad)


def test_max_disk():
    assert config.parse_max_disk("64M") == 64 << 20
    with pytest.raises(InputError, match="at least 1M"):
        config.parse_max_disk("100K")


def test_textfile_must_be_a_prom_file_in_a_directory(tmp_path):
    check_textfile(tmp_path / "x.prom")
    for bad, says in ((tmp_path / "x.txt", ".prom"), (tmp_path / "nodir" / "x.prom", "no directory")):
        with pytest.raises(InputError, match=says):
            check_textfile(bad)


def test_bad_options_are_one_line_without_root():
    for args, says in ((["--interval", "0"], "must be more than zero"), (["--duration", "x"], "not a duration"),
                       (["--max-disk", "lots"], "bad size"), (["--listen", "nowhere"], "ADDRESS:PORT")):
        res = subprocess.run([sys.executable, "-m", "tlbprobe", "watch", *args], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        assert says in res.stderr and len(res.stderr.strip().splitlines()) == 1


# -- stacks and origins, on the recording ----------------------------------------------------

def recorded():
    return parse_stacks((DATA / "trace-6.18-watch-stacks.txt").read_text())


def test_the_recorded_stacks_parse_whole():
    events = recorded()
    assert len(events) == 19
    assert all(e.frames[0] == "trace_event_raw_event_csd_queue_cpu" for e in events)
    assert {e.cpu for e in events} <= {0, 1}
    first = events[0]
    assert first.comm == "python" and first.frames[-1] == "entry_SYSCALL_64_after_hwframe"
    assert sorted(e.ts for e in events) == [e.ts for e in events]


def test_the_recorded_stacks_classify_by_origin_and_system_call():
    got = Counter((origins.classify(e.frames, e.comm), e.comm) for e in recorded())
    O = origins.Origin
    assert got == {
        (O(origins.KHUGEPAGED), "khugepaged"): 9,
        (O(origins.MADV_COLLAPSE), "python"): 1,
        (O(origins.HUGETLB_UNSHARE, "munmap"), "python"): 3,
        (O(origins.HUGETLB_UNSHARE, "mprotect"), "python"): 3,
        (O(origins.HUGETLB_UNSHARE, "exit"), "python"): 3,
    }


def test_origins_of_stacks_not_recorded_here():
    O = origins.Origin
    pt_free = ("smp_call_function", "tlb_remove_table_sync_one", "tlb_remove_table", "free_pte_range",
               "free_pgd_range", "free_pgtables", "exit_mmap")
    assert origins.classify(pt_free) == O(origins.PT_FREE_FALLBACK)
    reclaim = ("smp_call_function", "__unmap_hugepage_range", "try_to_unmap_one", "rmap_walk_file", "shrink_folio_list")
    assert origins.classify(reclaim) == O(origins.HUGETLB_UNSHARE, "reclaim")
    split = ("smp_call_function", "hugetlb_unshare_pmds", "hugetlb_split", "__split_vma", "__x64_sys_mremap")
    assert origins.classify(split) == O(origins.HUGETLB_UNSHARE, "mremap")
    # khugepaged on a kernel where the scan functions are inlined and the thread is all that tells
    assert origins.classify(("smp_call_function", "collapse_huge_page", "kthread"), "khugepaged") == \
        O(origins.KHUGEPAGED)
    unknown = ("smp_call_function", "some_new_caller", "do_syscall_64")
    assert origins.classify(unknown) == O(origins.OTHER)
    assert origins.caller_frames(unknown) == ("some_new_caller", "do_syscall_64")


def test_stack_parser_keeps_lost_lines_and_unknown_names_apart():
    p = StackParser()
    text = ("CPU:1 [LOST 7 EVENTS]\n"
            "           <...>-4242    [001] ...1.   12.500000: <stack trace>\n"
            " => trace_event_raw_event_csd_queue_cpu\n => smp_call_function\n => madvise_collapse+0x1/0x2\n"
            "  kworker/u8:1-36      [000] d..1.   12.600000: <stack trace>\n => khugepaged\n"
            "garbage line\n")
    for line in text.splitlines():
        p.feed(line)
    events = p.take()
    assert [(e.comm, e.pid, e.cpu) for e in events] == [("<...>", 4242, 1), ("kworker/u8:1", 36, 0)]
    assert events[0].frames[-1] == "madvise_collapse"
    assert p.lost == {1: 7} and p.unparsed == 1
    assert task_name(4242, "<...>", proc=Path("/nonexistent")) == "(exited)"
    assert task_name(os.getpid(), "<...>") == Path("/proc/self/comm").read_text().strip()


# -- hist ---------------------------------------------------------------------------------------

def test_hist_table_parses_keys_counts_and_drops():
    table = hist.parse_hist((DATA / "hist-csd-queue-cpu.txt").read_text())
    assert table.entries == 3 and table.dropped == 2
    by = {(pid, comm): n for (pid, comm, _), n in table.counts.items()}
    assert by == {(63, "khugepaged"): 9, (6963, "tlbp-collapser"): 32, (30210, "python"): 3}
    kinds = {comm: origins.classify(frames, comm).origin for (_, comm, frames) in table.counts}
    assert kinds == {"khugepaged": origins.KHUGEPAGED, "tlbp-collapser": origins.MADV_COLLAPSE,
                     "python": origins.HUGETLB_UNSHARE}


def test_hist_deltas_are_what_was_added():
    a = hist.HistTable({(1, "a", ("x",)): 5}, 1, 0)
    b = hist.HistTable({(1, "a", ("x",)): 8, (2, "b", ("y",)): 1}, 2, 0)
    assert hist.hist_delta(a, b) == {(1, "a", ("x",)): 3, (2, "b", ("y",)): 1}


# -- counters ---------------------------------------------------------------------------------

def test_broadcast_filter_names_one_target_per_sender():
    f = counters.broadcast_filter(0xffff, [3, 1, 2])
    assert f == "func == 0xffff && ((cpu == 1 && common_cpu != 1) || (cpu == 2 && common_cpu == 1))"
    assert counters.broadcast_filter(0xffff, [0]) == "func == 0xffff && cpu == 0 && common_cpu == 0"


def test_sync_delta_across_a_reopened_group():
    before = {0: GroupValue(10, 10, 1000, 0), 1: GroupValue(4, 4, 1000, 0)}
    after = {0: GroupValue(15, 15, 2000, 0), 1: GroupValue(2, 2, 50, 1)}  # CPU 1 reopened
    d = counters.sync_delta(before, after)
    assert (d.ipis, d.broadcasts, d.broadcasts_by_sender, d.incomplete) == (7, 7, {0: 5, 1: 2}, (1,))
    assert counters.stalled(before, {0: GroupValue(15, 15, 1100, 0)}, 1000) == [0]


# -- records ----------------------------------------------------------------------------------

def test_a_record_adds_up_to_the_exact_count():
    stacks = count_stacks(recorded())
    rec = build_record(0, 0.0, 10.0, 10.0, [0, 1], "stacktrace-trigger", 22, 22, stacks,
                       {0: 30, 1: 40}, {0: 1, 1: 2}, {0: 0, 1: 1})
    assert sum(rec.by_origin.values()) == 22
    assert rec.by_origin[origins.UNATTRIBUTED] == 3  # 19 stacks for 22 broadcasts
    assert rec.hugetlb_by_how == {"munmap": 3, "mprotect": 3, "exit": 3}
    assert rec.cal_less_own == {0: 30, 1: 39}
    assert not [p for p in rec.processes if p["origin"] == origins.KHUGEPAGED]
    assert json.loads(json.dumps(rec.to_dict()))["duration_s"] == 10.0


def test_a_record_is_bounded_and_keeps_new_callers():
    stacks = [StackCount(pid, "p", ("smp_call_function", f"caller_{pid % 20}"), 1) for pid in range(100)]
    rec = build_record(0, 0.0, 1.0, 1.0, [0, 1], "stacktrace-trigger", 100, 100, stacks, {}, {}, {})
    assert rec.by_origin[origins.OTHER] == 100 and rec.by_origin[origins.UNATTRIBUTED] == 0
    assert len(rec.other_stacks) == 8 and rec.other_stacks[0]["frames"][0].startswith("caller_")
    assert len(rec.processes) == 33 and rec.processes[-1]["origin"] == "(more)"
    assert sum(p["count"] for p in rec.processes) == 100


def test_without_a_stack_source_everything_is_unattributed_and_cal_only_has_no_origins():
    rec = build_record(0, 0.0, 1.0, 1.0, [0, 1], "none", 5, 5, [], {0: 1}, {0: 0}, {}, traced=False)
    assert rec.by_origin[origins.UNATTRIBUTED] == 5
    cal = build_record(0, 0.0, 1.0, 1.0, [0, 1], "cal-only", None, None, [], {0: 1}, {0: 0}, {}, traced=False)
    assert cal.by_origin == {} and cal.broadcasts is None


# -- the watch directory ------------------------------------------------------------------------

def fake_record(seq: int, start: float, n: int) -> dict:
    return {"seq": seq, "start": start, "end": start + 10, "duration_s": 10.0, "online": [0, 1],
            "broadcasts": n, "ipis": n, "by_origin": {"madv_collapse": n, "unattributed": 0},
            "processes": [{"origin": "madv_collapse", "comm": "db", "pid": 7, "count": n}],
            "cal": {"0": n, "1": 1}, "tlb": {"0": 0, "1": 0}, "own": {"0": 1, "1": 0},
            "cal_less_own": {"0": n - 1, "1": 1}, "notes": ["x" * 200]}


def test_records_rotate_and_compact_within_the_bound(tmp_path):
    """35 days of 10-minute intervals into a 64 KiB directory of 8 KiB segments: segments
    are compressed, the oldest summed by the hour, the hours by the day, and no broadcast
    is lost from the sums."""
    bound = 64 << 10
    wd = WatchDir.create(tmp_path / "w", bound, segment_bytes=8 << 10)
    total = 0
    for seq in range(5000):
        n = seq % 7
        total += n
        wd.append(fake_record(seq, 1_700_000_000 + 600 * seq, n))
        assert wd.disk_bytes() <= bound
    assert wd.rotations > 100 and wd.compactions > 100
    wd.close()
    summed, spans = 0, Counter()
    for line in (tmp_path / "w" / COMPACTED).read_text().splitlines():
        b = json.loads(line)
        assert b["bucket"] and b["by_origin"]["madv_collapse"] == b["broadcasts"] == b["madv_collapse_by_process"]["db"]
        spans[b["span_s"]] += 1
        summed += b["broadcasts"]
    assert spans[86400] >= 20  # the oldest days are days, not hours
    for seg in sorted((tmp_path / "w").glob("records-*.jsonl.gz")):
        summed += sum(json.loads(x)["broadcasts"] for x in gzip.decompress(seg.read_bytes()).splitlines())
    summed += sum(json.loads(x)["broadcasts"] for x in (tmp_path / "w" / RECORDS).read_text().splitlines())
    assert summed == total


def test_the_watch_directory_refuses_what_it_must(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        WatchDir.create(tmp_path / "full", 1 << 20)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        WatchDir.create(tmp_path / "file" / "w", 1 << 20)


def test_reopen_after_a_move_starts_a_new_records_file(tmp_path):
    wd = WatchDir.create(tmp_path / "w", 1 << 20)
    wd.append(fake_record(0, 0.0, 1))
    os.rename(tmp_path / "w" / RECORDS, tmp_path / "w" / "moved")
    wd.reopen()
    wd.append(fake_record(1, 10.0, 2))
    wd.close()
    assert [json.loads(x)["seq"] for x in (tmp_path / "w" / RECORDS).read_text().splitlines()] == [1]
    assert [json.loads(x)["seq"] for x in (tmp_path / "w" / "moved").read_text().splitlines()] == [0]


# -- metrics ------------------------------------------------------------------------------------

def test_metrics_count_by_origin_and_bound_process_names(tmp_path):
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics("stacktrace-trigger", "6.18")
    stacks = count_stacks(recorded())
    for i in range(30):
        more = [StackCount(1000 + i, f"proc{i}", ("madvise_collapse",), 2)]
        m.add(build_record(i, 0.0, 1.0, 1.0, [0, 1], "stacktrace-trigger", 21, 21, stacks + more,
                           {0: 5, 1: 5}, {0: 0, 1: 0}, {0: 1, 1: 0}))
    m.write_textfile(tmp_path / "t.prom")
    fams = {f.name: f for f in text_string_to_metric_families((tmp_path / "t.prom").read_text())}
    value = {s.labels.get("origin"): s.value for s in fams["tlbprobe_sync_broadcasts"].samples
             if s.name.endswith("_total")}
    assert value["madv_collapse"] == 30 * 3 and value["khugepaged"] == 30 * 9
    assert value["hugetlb_pmd_unshare"] == 30 * 9 and value["unattributed"] == 0
    comms = {s.labels["comm"] for s in fams["tlbprobe_madv_collapse_broadcasts"].samples}
    assert len(comms) == 20 + 1 and "(other)" in comms  # MAX_COMMS names, then one label for the rest
    own = [s.value for s in fams["tlbprobe_watch_own_ipis"].samples if s.name.endswith("_total")]
    cal = [s.value for s in fams["tlbprobe_function_call_interrupts"].samples if s.name.endswith("_total")]
    assert own == [30] and cal == [30 * 9]


def test_totals_rates_and_peak():
    t = Totals()
    for i, n in enumerate((0, 5, 2)):
        t.add(build_record(i, i * 10.0, i * 10.0 + 10, 10.0, [0, 1], "none", n, n, [], {}, {}, {}, traced=False))
    d = t.to_dict()
    assert d["broadcasts"] == 7 and d["broadcasts_per_hour"] == 7 * 3600 / 30
    assert d["peak_interval"] == {"seq": 1, "start": 10.0, "broadcasts": 5}


# -- route --------------------------------------------------------------------------------------

def test_route_without_csd_events_is_cal_only_and_says_so(tmp_path):
    r = route.detect(tmp_path)
    assert r.stacks == route.CAL_ONLY and not r.exact and "Linux 6.5" in r.why


def test_route_reads_the_available_triggers(tmp_path):
    ev = tmp_path / "events" / "csd" / "csd_queue_cpu"
    ev.mkdir(parents=True)
    (ev / "trigger").write_text("# Available triggers:\n# traceon traceoff snapshot stacktrace enable_event "
                                "disable_event enable_hist disable_hist hist\n")
    syms = tmp_path / "kallsyms"
    syms.write_text("ffffffff8163cbc0 t tlb_remove_table_smp_sync\n")
    assert route.detect(tmp_path, kallsyms=str(syms)).stacks == route.HIST
    assert route.detect(tmp_path, "trigger", kallsyms=str(syms)).stacks == route.STACKTRACE
    (ev / "trigger").write_text("# Available triggers:\n# traceon traceoff\n")
    r = route.detect(tmp_path, kallsyms=str(syms))
    assert r.stacks == route.NONE and r.exact and "unattributed" in r.why
    syms.write_text("0000000000000000 t tlb_remove_table_smp_sync\n")
    assert route.detect(tmp_path, kallsyms=str(syms)).stacks == route.CAL_ONLY
    syms.write_text("ffffffff81000000 T other\n")
    assert route.detect(tmp_path, kallsyms=str(syms)).never_sends


# -- the systemd unit ---------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (systemd)")
def test_the_systemd_unit_verifies_clean(tmp_path):
    """systemd-analyze verify works without systemd as PID 1 (this machine's is not): it
    warns about unknown keys and bad values (exit status 0 even then) and fails on a
    missing executable; a clean unit says nothing."""
    text = UNIT.read_text()
    exe = shutil.which("tlbprobe") or str(Path(sys.executable).parent / "tlbprobe")
    if not os.access("/usr/local/bin/tlbprobe", os.X_OK):  # verify wants the ExecStart binary to exist
        text = text.replace("/usr/local/bin/tlbprobe", exe)
    good = tmp_path / "tlbprobe-watch.service"
    good.write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", str(good)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stderr
    bad = tmp_path / "tlbprobe-bad.service"
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=everything"))
    res = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "ProtectSystem" in res.stderr or "protect system" in res.stderr  # the check can fail
