"""The observers' sections of summary.json as typed records (tlbprobe/rundir/sections.py):
every recorded run's sections come back key for key, the observers write through the
records, the reader gives them typed (None without them), and damage is one InputError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runfactory import make_run
from tlbprobe.errors import InputError
from tlbprobe.measure.cost import CostObserver, CostParser, PhaseCost
from tlbprobe.measure.observer import Phase
from tlbprobe.measure.victim import Slice, VictimObserver
from tlbprobe.rundir.reader import load_run
from tlbprobe.rundir.sections import SECTIONS, CostSection, LatencySection, VictimSection

REPO = Path(__file__).resolve().parents[1]
RECORDED = sorted(p.parent for p in list((REPO / "analysis").glob("*/*/summary.json"))
                  + list((REPO / "tests" / "data" / "runs").glob("*/summary.json")))


def test_there_are_recorded_runs_with_sections():
    have = {cls.KEY for d in RECORDED for cls in SECTIONS if cls.KEY in json.loads((d / "summary.json").read_text())}
    assert "latency" in have  # analysis/runs/host-collapse-256M-latency


@pytest.mark.parametrize("run", RECORDED, ids=[p.name for p in RECORDED])
def test_every_recorded_section_round_trips_key_for_key(run):
    summary = json.loads((run / "summary.json").read_text())
    loaded = load_run(run)
    for cls in SECTIONS:
        section = loaded.section(cls)
        if cls.KEY not in summary:
            assert section is None
            continue
        assert isinstance(section, cls)
        assert json.dumps(section.to_dict()) == json.dumps(summary[cls.KEY])  # values, types and order


def fake_cost_observer() -> CostObserver:
    """A cost observer that saw two phases of sync IPIs on CPUs 1 and 2 (CPU 0 sends)."""
    obs = CostObserver(ops_per_phase=4, driver_cpu=0)
    obs.cpus = [0, 1, 2]
    obs._mark = lambda *a: None
    obs._drain = lambda: None
    obs.instance = Path("/nonexistent")
    for repeat in (0, 1):
        for name in ("idle", "workload"):
            pc = PhaseCost()
            for cpu in (1, 2):
                pc.add("vector_all", cpu, 900.0 + cpu)
                if name == "workload":
                    for ns in (1500.0, 1700.0, 2500.0):
                        pc.add("vector_sync", cpu, ns)
                        pc.add("sync", cpu, 110.0)
            if name == "workload":
                pc.add("initiator", 0, 4000.0)
            obs.parser = CostParser()
            obs.parser.phases[Phase(repeat, name).tag] = pc
            obs.phase_end(Phase(repeat, name))
    return obs


def test_the_cost_observer_writes_its_section_through_the_record():
    section = fake_cost_observer().section({"other_cpus": [1, 2], "ops": 6, "ops_unit": "collapses"})
    assert isinstance(section, CostSection)
    d = section.to_dict()
    assert list(d) == ["tracepoint_ns", "phases", "histograms", "lost_events", "per_ipi_ns_corrected",
                       "cpu_time_taken_ms", "ms_per_gib", "us_per_broadcast_per_cpu", "broadcasts_seen"]
    vs = section.figures("workload", "vector_sync")
    assert (vs.count, vs.p50_ns, vs.max_ns) == (12, 1700.0, 2500.0) and isinstance(vs.count, int)
    assert section.tracepoint_ns == 110.0 and section.per_ipi_ns_corrected == pytest.approx(1680.0)
    assert section.histogram("workload", "vector_sync") == {2000: 8, 4000: 4}
    assert d["histograms"]["workload"]["vector_sync"] == {"2000": 8, "4000": 4}
    assert CostSection.from_dict("s", json.loads(json.dumps(d))) == section
    # no sync IPI handled: no headline figures, and no ms_per_gib outside collapse
    assert "per_ipi_ns_corrected" not in CostObserver().section({}).to_dict()


def test_the_victim_observer_writes_its_section_through_the_record():
    obs = VictimObserver(0)
    obs.cpus, obs.unit_ns = [1], {1: 200}
    obs.slices = {1: [Slice(10 + i * 0.01, 10 + (i + 1) * 0.01, 50_000 - (i % 2) * 1000, 3000, i % 3, 2000)
                      for i in range(200)]}
    obs.windows = {"r0-idle": (10.0, 11.0), "r0-workload": (11.0, 12.0)}
    section = obs.section({})
    assert isinstance(section, VictimSection) and set(section.per_cpu) == {1}
    d = section.to_dict()
    assert set(d["per_cpu"]) == {"1"} and d["windows"]["r0-idle"] == [10.0, 11.0]
    assert VictimSection.from_dict("s", json.loads(json.dumps(d))) == section
    empty = VictimObserver(0)
    empty.cpus, empty.slices = [1], {1: []}
    assert empty.section({}).to_dict()["per_cpu"]["1"]["idle"] == {"slices": 0, "rate": 0.0, "rate_se": 0.0,
                                                                     "worst_gap_us": 0.0}


def test_a_run_without_sections_gives_none_and_one_with_them_typed(tmp_path):
    bare = load_run(make_run(tmp_path, "bare"))
    assert all(bare.section(cls) is None for cls in SECTIONS)
    full = load_run(make_run(tmp_path, "full", online_cpus=3, latency=True, cost=True, victim=True))
    assert full.section(LatencySection).by_kind()["workload"][0].role == "driver"
    assert full.section(CostSection).figures("workload", "vector_sync").count == 2 * 128 * 3
    assert full.section(VictimSection).per_cpu[1].workload.slices == 200


@pytest.mark.parametrize("key, value, message", [
    ("cost", [1, 2], "'cost' should be an object"),
    ("cost", {"phases": {"workload": {"vector_sync": {"count": "many"}}}}, "'count' should be a number"),
    ("victim", {"windows": {"r0-idle": [1]}}, r"windows.r0-idle: damaged"),
    ("latency", {"aggregate": {"idle": {"0": {"p50_us": "fast"}}}}, "latency idle.0 holds non-numbers"),
])
def test_a_damaged_section_is_one_input_error_naming_it(tmp_path, key, value, message):
    d = make_run(tmp_path, "bad")
    summary = json.loads((d / "summary.json").read_text())
    summary[key] = value
    (d / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match=message):
        load_run(d)


def test_the_plain_latency_layout_of_early_runs_is_read_as_phases(tmp_path):
    run = load_run(make_run(tmp_path, "flat", latency=True, latency_layout="flat"))
    lat = run.section(LatencySection)
    assert lat.aggregate == {} and set(lat.by_kind()) == {"idle", "workload"} and lat.driver_cpu == 0
