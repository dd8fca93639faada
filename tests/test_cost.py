"""collect --cost and --victim: the parsers on synthetic input, and a real collapse on this host."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import JOURNAL, needs_csd_events, needs_irq_vector_events, system_state
from tlbprobe.measure.cost import MARK, CostParser, figures
from tlbprobe.measure.victim import RECORD, difference, loss, phase_figures, read_slices

REPO = Path(__file__).resolve().parents[1]


def line(cpu: int, ts: str, event: str, body: str) -> str:
    return f"          <idle>-0       [{cpu:03d}] d.h2. {ts}: {event}: {body}"


def test_cost_parser_times_handlers_and_the_initiators_wait():
    p = CostParser()
    p.scale = 0.5  # ns per tick: a 2 GHz counter clock
    for text in [
        line(0, "1000", "tracing_mark_write", f"{MARK} begin r0-workload"),
        # CPU 0 sends one broadcast to CPUs 1 and 2
        line(0, "2000", "csd_queue_cpu", "cpu=1 callsite=smp_call_function_many_cond+0x1 "
                                         "func=tlb_remove_table_smp_sync csd=0x1"),
        line(0, "2010", "csd_queue_cpu", "cpu=2 callsite=smp_call_function_many_cond+0x1 "
                                         "func=tlb_remove_table_smp_sync csd=0x2"),
        line(1, "3000", "call_function_entry", "vector=251"),
        line(1, "3100", "csd_function_entry", "func=tlb_remove_table_smp_sync, csd=0x1"),
        line(1, "3700", "csd_function_exit", "func=tlb_remove_table_smp_sync, csd=0x1"),
        line(1, "5000", "call_function_exit", "vector=251"),
        line(2, "4000", "call_function_single_entry", "vector=251"),
        line(2, "4100", "csd_function_entry", "func=tlb_remove_table_smp_sync, csd=0x2"),
        line(2, "4700", "csd_function_exit", "func=tlb_remove_table_smp_sync, csd=0x2"),
        line(2, "9000", "call_function_single_exit", "vector=251"),
        # another function's IPI on CPU 1: vector_all only
        line(1, "12000", "call_function_entry", "vector=251"),
        line(1, "12100", "csd_function_entry", "func=flush_tlb_func, csd=0x3"),
        line(1, "12200", "csd_function_exit", "func=flush_tlb_func, csd=0x3"),
        line(1, "14000", "call_function_exit", "vector=251"),
        line(0, "20000", "tracing_mark_write", f"{MARK} end r0-workload"),
        line(1, "21000", "call_function_entry", "vector=251"),  # after the phase: not counted
    ]:
        p.line(text)
    d = p.phases["r0-workload"].durations
    assert d["vector_sync"] == {1: [1000.0], 2: [2500.0]}           # (5000-3000) x 0.5, (9000-4000) x 0.5
    assert d["vector_all"][1] == [1000.0, 1000.0]
    assert d["sync"] == {1: [300.0], 2: [300.0]}
    assert d["initiator"] == {0: [1350.0]}                          # first queue (2000) to last exit (4700)
    assert figures([3.0, 1.0, 2.0]) == {"count": 3, "total_ns": 6.0, "p50_ns": 2.0, "p99_ns": 3.0, "max_ns": 3.0}


def test_cost_parser_reads_microsecond_timestamps_of_clock_mono():
    p = CostParser()
    for text in [line(0, "10.000000", "tracing_mark_write", f"{MARK} begin r0-idle"),
                 line(1, "10.000010", "call_function_entry", "vector=251"),
                 line(1, "10.000013", "call_function_exit", "vector=251")]:
        p.line(text)
    assert p.phases["r0-idle"].durations["vector_all"][1] == [pytest.approx(3000.0)]


def test_victim_slices_figures_and_differences(tmp_path):
    f = tmp_path / "cpu1.bin"
    recs = [(int(1e9) + i * int(1e7), int(1e9) + (i + 1) * int(1e7), 50_000, 2_000, 10 + i % 2, 20_000)
            for i in range(10)]
    f.write_bytes(b"".join(RECORD.pack(*r) for r in recs) + b"\0" * 7)  # a record cut short: not read
    slices, offset = read_slices(f)
    assert len(slices) == 10 and offset == 10 * RECORD.size
    assert read_slices(f, offset) == ([], offset)
    idle = phase_figures(slices)
    assert idle.rate == pytest.approx(5e6) and idle.interruptions_per_s == pytest.approx(1050.0)
    assert idle.worst_gap_us == 2.0
    busy = replace(idle, rate=4.5e6, interruptions_per_s=1300.0)
    pct, half = loss(idle, busy)
    assert pct == pytest.approx(10.0) and half >= 0
    extra, ci = difference(idle, busy, "interruptions_per_s", "interruptions_se")
    assert extra == pytest.approx(250.0) and ci >= 0
    assert loss(replace(idle, rate=0.0), busy) == (None, None)
    assert phase_figures([]).to_dict() == {"slices": 0, "rate": 0.0, "rate_se": 0.0, "worst_gap_us": 0.0}


@pytest.mark.root
@needs_csd_events
@needs_irq_vector_events
def test_a_collapse_with_cost_and_victim_on_this_host(tmp_path):
    if JOURNAL.exists():
        pytest.fail(f"{JOURNAL} exists before the test")
    before = system_state()
    out = tmp_path / "cost"
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "collect", "--size", "256M", "--repeat", "2",
                          "--idle-seconds", "2", "--cost", "--victim", "--out", str(out), "-q"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert system_state() == before
    s = json.loads((out / "summary.json").read_text())
    cost, victim = s["cost"], s["victim"]
    w = cost["phases"]["workload"]
    received = s["attributed"]["tlb_remove_table_smp_sync"]
    # every sync that arrived as an interrupt ran inside a function-call vector, once
    assert w["vector_sync"]["count"] == received == w["sync"]["count"]
    assert w["vector_sync"]["p50_ns"] > 0 and w["vector_sync"]["max_ns"] >= w["vector_sync"]["p99_ns"]
    assert cost["tracepoint_ns"] > 0 and cost["per_ipi_ns_corrected"] > 0 and cost["ms_per_gib"] > 0
    # one wait per broadcast: the sender waited for every target of each of its collapses
    assert w["initiator"]["count"] == s["ops"] and w["initiator"]["p50_ns"] > 0
    assert cost["lost_events"] == 0
    for cpu in map(str, s["other_cpus"]):
        v = victim["per_cpu"][cpu]
        assert v["idle"]["slices"] > 100 and v["workload"]["slices"] > 10 and v["unit_ns"] > 0
        # each sync IPI took the loop away for its handler (> 1 us): at least as many gaps
        seconds = v["workload"]["slices"] * victim["slice_ms"] / 1000
        per_cpu_sync = received / len(s["other_cpus"])
        assert v["workload"]["interruptions_per_s"] * seconds >= 0.5 * per_cpu_sync * seconds / (
            sum(r["phases"]["workload"]["duration_s"] for r in s["repeats"]))
    text = subprocess.run([sys.executable, "-m", "tlbprobe", "report", str(out)], cwd=REPO, capture_output=True,
                          text=True).stdout
    assert "CPU time taken from the other CPUs by the sync broadcast" in text and "initiator waited" in text
    assert (out / "cost.csv").exists() and (out / "victim.csv").exists()


def test_cost_projection_adds_up_receivers_and_flags_where_it_does_not_transfer():
    from tlbprobe.errors import InputError
    from tlbprobe.model import Scenario, load_params, predict, project_cost
    from tlbprobe.rundir.sections import CostFigures, CostSection

    pred = predict(Scenario("collapse", ops=10240, online_cpus=64, variant="baseline", flush_mode="native"),
                   load_params())
    cost = CostSection(per_ipi_ns_corrected=1000.0,
                       phases={"workload": {"initiator": CostFigures(count=5, p50_ns=5000.0, p99_ns=20000.0)}})
    p = project_cost(pred, cost, measured_cpus=2, flush_mode="pv", emulated=False)
    assert project_cost(pred, cost.to_dict(), 2, "pv", False) == p   # the section's dict, as summary.json holds it
    assert p.receivers_ms == pytest.approx(10240 * 63 * 1000 / 1e6)       # 645 ms over 63 CPUs
    assert p.initiator_ms_low == pytest.approx(51.2) and p.initiator_ms_likely == pytest.approx(204.8)
    assert any("paravirtual" in w for w in p.warnings) and any("extrapolated" in w for w in p.warnings)
    assert any("TCG" in w for w in project_cost(pred, cost, 64, "native", emulated=True).warnings)
    assert project_cost(pred, cost, 64, "native", emulated=False).warnings == ()
    with pytest.raises(InputError, match="--cost"):
        project_cost(pred, {}, 2, "pv", False)
    with pytest.raises(InputError, match="--cost"):
        project_cost(pred, None, 2, "pv", False)
