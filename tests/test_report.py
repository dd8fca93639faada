"""`tlbprobe report` on synthetic run directories built per doc/run-format.md (tests/runfactory.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from runfactory import make_run
from tlbprobe.cli import main as cli_main
from tlbprobe.errors import InputError
from tlbprobe.report import ReportOptions, build_report
from tlbprobe.report.scenario import parse_variant_pattern
from tlbprobe.report.stats import betainc, describe, ranges_overlap, t_ppf, t_sf, welch

NATIVE = dict(online_cpus=4, flush_mode="native", flush_evidence="no PV TLB flush in dmesg", hypervisor=None)


@pytest.fixture
def ab(tmp_path: Path):
    """Baseline and patched runs on a native-flush host: the patch removes the sync IPIs."""
    base = make_run(tmp_path, "base", kernel_variant="baseline", seed=1, **NATIVE)
    patched = make_run(tmp_path, "patched", kernel_variant="patched", sync_per_op=0.0, seed=2,
                       kernel_release="6.18.44-syncskip", **NATIVE)
    return base, patched


def run_cli(capsys, *argv):
    rc = cli_main(["report", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --- formats ------------------------------------------------------------------------------

def test_text_report_has_verdicts_and_comparison(capsys, ab):
    rc, out, _ = run_cli(capsys, *ab)
    assert rc == 0
    assert out.count("MATCHES") == 2
    assert "B against A" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("sync IPIs, other CPUs"))
    assert row.rstrip().endswith("*"), row  # significant drop
    assert "tlb_remove_table_smp_sync 1,152" in out


def test_lkml_fits_72_columns_and_has_the_cover_letter_lines(capsys, ab):
    rc, out, _ = run_cli(capsys, *ab, "--format", "lkml")
    assert rc == 0
    lines = out.splitlines()
    too_long = [line for line in lines if len(line) > 72]
    assert not too_long, too_long
    assert "\t" not in out
    for key in ("Host:", "Kernels:", "Workload:", "Reproduce:"):
        assert any(line.startswith(key) for line in lines), key
    assert any("tlbprobe collect" in line for line in lines)
    assert any("tlbprobe report base patched --format lkml" in line for line in lines)
    assert "-100.0%" in out or "-100.6%" in out


def test_lkml_reproduce_lines_never_send_two_kernels_to_one_directory(capsys, tmp_path):
    """repro writes baseline/JOB and patched/JOB: the commands must not both say --out JOB."""
    base = make_run(tmp_path / "baseline", "collapse-1G", kernel_variant="baseline", seed=1, **NATIVE)
    patched = make_run(tmp_path / "patched", "collapse-1G", kernel_variant="patched", sync_per_op=0.0, seed=2,
                       **NATIVE)
    import yaml
    for run, variant in ((base, "baseline"), (patched, "patched")):  # as repro records them
        doc = yaml.safe_load((run / "run.yaml").read_text())
        doc["command"] += ["--kernel-variant", variant]
        (run / "run.yaml").write_text(yaml.safe_dump(doc))
    rc, out, _ = run_cli(capsys, base, patched, "--format", "lkml")
    assert rc == 0
    text = " ".join(out.split())  # commands may be wrapped
    assert "--out baseline-collapse-1G" in text and "--out patched-collapse-1G" in text
    assert "tlbprobe report baseline-collapse-1G patched-collapse-1G --format lkml" in text.replace(" \\ ", " ")


def test_lkml_many_runs_and_long_names_still_fit(capsys, tmp_path):
    runs = [make_run(tmp_path, f"a-very-long-run-directory-name-{i:02d}-for-a-kernel", seed=i,
                     cpu_model="Intel(R) Xeon(R) Platinum 8480+ with a rather long model string", **NATIVE)
            for i in range(4)]
    rc, out, _ = run_cli(capsys, *runs, "--format", "lkml")
    assert rc == 0
    assert max(len(line) for line in out.splitlines()) <= 72


def test_json_keys(capsys, ab):
    rc, out, _ = run_cli(capsys, *ab, "--format", "json")
    assert rc == 0
    data = json.loads(out)
    a, b = data["runs"]
    for key in ("path", "complete", "online_cpus", "ops", "sync_ipis_measured", "sync_ipis_expected", "attributed"):
        assert key in a, key
    assert a["path"].endswith("base") and a["complete"] is True and a["online_cpus"] == 4
    assert a["ops"] == 384 and a["sync_ipis_expected"] == 384 * 3
    assert b["sync_ipis_expected"] == 0
    assert a["attributed"]["tlb_remove_table_smp_sync"] == 1152 and a["queued"] is None  # no csd_queue_cpu data
    assert a["variant"] == {"value": "baseline", "source": "run.yaml job.kernel_variant"}
    assert a["flush_mode"]["value"] == "native"
    assert a["verdict"]["status"] == "matches" and b["verdict"]["status"] == "matches"
    comp = data["comparisons"][0]
    sync = next(f for f in comp["figures"] if f["key"] == "sync_ipis")
    assert sync["significant"] is True and sync["p_value"] < 0.05 and sync["change_pct"] < -99


def test_markdown(capsys, ab):
    rc, out, _ = run_cli(capsys, *ab, "--format", "markdown")
    assert rc == 0
    assert out.startswith("# tlbprobe report")
    assert "| sync IPIs, other CPUs |" in out


def test_html_is_self_contained(capsys, ab, tmp_path):
    out_file = tmp_path / "r.html"
    rc, _, _ = run_cli(capsys, *ab, "--format", "html", "-o", out_file)
    assert rc == 0
    html = out_file.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count('src="data:image/png;base64,') >= 3
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:") for s in srcs), srcs
    assert "<script" not in html and "<link" not in html and "url(" not in html


def test_plots_are_png_files(capsys, tmp_path, ab):
    lat = make_run(tmp_path, "lat", latency=True, threads=2, tlb_per_op=1.0, seed=3, **NATIVE)
    plots = tmp_path / "plots"
    rc, out, _ = run_cli(capsys, *ab, lat, "--plots", plots)
    assert rc == 0
    files = sorted(plots.glob("*.png"))
    kinds = {f.name.rsplit("-", 1)[-1] for f in files}
    assert {"percpu.png", "timeline.png", "latency.png", "measured.png"} <= kinds
    assert (plots / "model-vs-measured.png").exists()
    assert (plots / "C-lat-latency.png").exists() and not (plots / "A-base-latency.png").exists()
    for f in files:
        data = f.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", f
    assert str(plots / "percpu.png") in out  # every run in one figure, on one scale


# --- refusals and damaged input --------------------------------------------------------------------

def test_incomplete_run_is_refused(capsys, tmp_path):
    inc = make_run(tmp_path, "inc", complete=False, seed=4)
    rc, out, err = run_cli(capsys, inc)
    assert rc == 2 and out == ""
    assert "incomplete" in err and "--allow-incomplete" in err and "summary.json" in err
    assert err.count("\n") == 1


def test_incomplete_run_allowed(capsys, tmp_path):
    inc = make_run(tmp_path, "inc", complete=False, seed=4)
    rc, out, _ = run_cli(capsys, inc, "--allow-incomplete", "--format", "json")
    assert rc == 0
    run = json.loads(out)["runs"][0]
    assert run["complete"] is False and run["repeats_done"] == 2
    rc, out, _ = run_cli(capsys, inc, "--allow-incomplete", "--format", "lkml")
    assert "INCOMPLETE" in out


def test_damaged_summary_names_the_file(capsys, tmp_path):
    run = make_run(tmp_path, "broken", seed=5)
    (run / "summary.json").write_text('{"format": "tlbprobe-run/1", "complete": tru')
    rc, _, err = run_cli(capsys, run)
    assert rc == 2
    assert str(run / "summary.json") in err and "not valid JSON" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_summary_missing_a_key_names_it(capsys, tmp_path):
    run = make_run(tmp_path, "nokey", seed=5)
    data = json.loads((run / "summary.json").read_text())
    del data["repeats"][0]["sync_ipis_measured"]
    (run / "summary.json").write_text(json.dumps(data))
    rc, _, err = run_cli(capsys, run)
    assert rc == 2 and "summary.json" in err and "sync_ipis_measured" in err


def test_foreign_directory(capsys, tmp_path):
    (tmp_path / "photos").mkdir()
    rc, _, err = run_cli(capsys, tmp_path / "photos")
    assert rc == 2 and "run.yaml" in err and "not a tlbprobe run directory" in err


def test_other_format_version_is_refused(capsys, tmp_path):
    run = make_run(tmp_path, "future", seed=6)
    text = (run / "run.yaml").read_text().replace("tlbprobe-run/1", "tlbprobe-run/9")
    (run / "run.yaml").write_text(text)
    rc, _, err = run_cli(capsys, run)
    assert rc == 2 and "run.yaml" in err and "tlbprobe-run/9" in err


def test_damaged_phases_csv(capsys, tmp_path):
    run = make_run(tmp_path, "badcsv", seed=7)
    (run / "phases.csv").write_text("repeat,phase\n0,idle\n")
    rc, _, err = run_cli(capsys, run)
    assert rc == 2 and "phases.csv" in err


def test_damaged_timeseries_csv(capsys, tmp_path):
    run = make_run(tmp_path, "badts", timeseries_samples=2, seed=7)
    (run / "timeseries.csv").write_text("repeat,phase,t_s,cpu,cal,tlb\n0,idle,soon,1,2,3\n")
    rc, _, err = run_cli(capsys, run)
    assert rc == 2 and "timeseries.csv" in err and "t_s" in err and "Traceback" not in err


def test_missing_directory(capsys, tmp_path):
    rc, _, err = run_cli(capsys, tmp_path / "nope")
    assert rc == 2 and "nope" in err


# --- verdicts ------------------------------------------------------------------------------------

def analyze(*paths, **opts):
    return build_report([str(p) for p in paths], ReportOptions(**opts)).runs


def test_wrong_flush_mode_is_suggested(tmp_path):
    # recorded pv, but the patched kernel skipped the sync: the host really flushes natively
    run = make_run(tmp_path, "r", online_cpus=4, flush_mode="pv", kernel_variant="patched", sync_per_op=0.0, seed=8)
    (a,) = analyze(run)
    assert a.verdict.status == "differs"
    assert "flush mode" in a.verdict.reason and "native" in a.verdict.reason


def test_patch_that_did_not_skip_is_caught(tmp_path):
    run = make_run(tmp_path, "r", kernel_variant="patched", sync_per_op=1.0, seed=9, **NATIVE)
    (a,) = analyze(run)
    assert a.verdict.status == "differs"
    assert "not skipped" in a.verdict.reason


def test_partial_collapse_is_reported(tmp_path):
    run = make_run(tmp_path, "r", ops=100, ops_expected=128, seed=10)
    (a,) = analyze(run)
    assert a.verdict.status == "matches"  # the model uses the counted ops
    assert any(w.startswith("partial: 300 of 384") for w in a.verdict.warnings)


def test_partial_explains_a_mismatch(tmp_path):
    # counted 100 per repeat, but the kernel did 128 collapses' worth of syncs
    run = make_run(tmp_path, "r", ops=100, ops_expected=128, sync_per_op=1.28, seed=11)
    (a,) = analyze(run)
    assert a.verdict.status == "differs" and "partial" in a.verdict.reason


def test_noisy_host(tmp_path):
    run = make_run(tmp_path, "r", ops=10, background_rate=300.0, seed=12, trace=False)
    (a,) = analyze(run)
    assert any("noisy host" in w for w in a.verdict.warnings)
    assert a.verdict.tolerance > 100


def test_tolerance_follows_background(tmp_path):
    quiet = make_run(tmp_path, "quiet", background_rate=0.5, seed=13, trace=False)
    loud = make_run(tmp_path, "loud", background_rate=50.0, seed=13, trace=False)
    q, l_ = analyze(quiet, loud)
    assert q.verdict.basis == l_.verdict.basis == "CAL-TLB"
    assert l_.verdict.tolerance > 3 * q.verdict.tolerance


def test_traced_runs_are_judged_on_the_traced_sync_count(tmp_path):
    """With a trace, background in CAL does not move the verdict: the function is counted."""
    loud = make_run(tmp_path, "loud", background_rate=50.0, seed=13)
    (a,) = analyze(loud)
    assert a.verdict.basis == "traced" and a.verdict.status == "matches"
    assert a.verdict.measured == 3 * 128 and a.verdict.estimate != a.verdict.measured
    # a patched kernel under native flush that still sends the sync is caught by the trace
    bad = make_run(tmp_path, "bad", kernel_variant="patched", flush_mode="native", seed=14)
    (b,) = analyze(bad)
    assert b.verdict.basis == "traced" and b.verdict.status == "differs"


def test_traced_runs_are_judged_on_the_queued_calls_not_only_the_interrupts(tmp_path):
    """A CPU polling in idle takes a sync call without an interrupt: CAL and the received
    (csd_function_entry) count miss it, the queued count (csd_queue_cpu) does not."""
    polled = make_run(tmp_path, "polled", queue_traced=True, polled_fraction=0.1, seed=21)
    (a,) = analyze(polled)
    assert a.verdict.basis == "traced" and a.verdict.status == "matches"
    assert a.verdict.measured == 3 * 128
    assert any("without an interrupt" in w for w in a.verdict.warnings), a.verdict.warnings
    assert a.per_repeat["attributed_sync"] == [128.0, 128.0, 128.0]
    # a run from before the queued counts is judged on what it has: 10% short differs
    old = make_run(tmp_path, "old", queue_traced=False, polled_fraction=0.1, seed=21)
    (b,) = analyze(old)
    assert b.verdict.basis == "traced" and b.verdict.status == "differs" and b.verdict.measured == 3 * (128 - 13)
    # without polling there is nothing to warn about
    (c,) = analyze(make_run(tmp_path, "quiet", queue_traced=True, seed=22))
    assert c.verdict.status == "matches" and not any("without an interrupt" in w for w in c.verdict.warnings)


def test_comparing_a_queued_count_with_a_received_one_is_said(tmp_path):
    old = make_run(tmp_path, "old", queue_traced=False, seed=31, **NATIVE)
    new = make_run(tmp_path, "new", queue_traced=True, seed=32, **NATIVE)
    (c,) = build_report([str(old), str(new)]).comparisons
    assert any("B are those queued" in w and "of A those received" in w for w in c.warnings), c.warnings
    (same,) = build_report([str(new), str(new)]).comparisons
    assert not any("queued" in w for w in same.warnings)


def test_text_report_names_queued_and_received_counts(capsys, tmp_path):
    run = make_run(tmp_path, "polled", queue_traced=True, polled_fraction=0.1, seed=21)
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "traced tlb_remove_table_smp_sync calls 384 in total, 345 of them arrived as IPIs" in out
    assert cli_main(["report", str(run), "--format", "json"]) == 0
    (j,) = json.loads(capsys.readouterr().out)["runs"]
    assert j["queued"]["tlb_remove_table_smp_sync"] == 384 and j["attributed"]["tlb_remove_table_smp_sync"] == 345
    assert j["sync_ipis_traced"] == 384 and j["verdict_basis"] == "traced"


def test_timeline_uses_the_time_series_when_the_run_has_one(tmp_path):
    from tlbprobe.report.plots import _fine_rates

    run = make_run(tmp_path, "ts", timeseries_samples=4, background_rate=0.0, background_tlb_rate=0.0, seed=3)
    (a,) = analyze(run)
    t0 = float(a.run.phases["start"].min())
    curves = _fine_rates(a, t0)
    assert len(curves["workload"]) == 3 and len(curves["idle"]) == 3
    xs, sync_r, tlb_r = curves["workload"][0]
    # 128 sync IPIs over a 2 s workload phase, in 4 even steps: 64/s throughout, no TLB
    assert sync_r == [64.0] * 4 and tlb_r == [0.0] * 4
    start = float(a.run.phases[a.run.phases.phase == "workload"]["start"].iloc[0]) - t0
    assert xs == [start + 0.5, start + 1.0, start + 1.5, start + 2.0]
    # and a run without timeseries.csv (older runs) has none, and still gets its phase-level plot
    (b,) = analyze(make_run(tmp_path, "old", seed=3))
    assert _fine_rates(b, 0.0) == {} and b.run.timeseries.empty


def test_hugetlb_per_table_kernel_is_recognised(tmp_path):
    run = make_run(tmp_path, "h", workload="hugetlb-unshare", op="munmap", size=4 << 30, ops=20, sync_per_op=4,
                   seed=14)
    (a,) = analyze(run)
    assert a.verdict.status == "differs" and "per-table" in a.verdict.reason
    (b,) = analyze(run, hugetlb_unshare="per-table")
    assert b.verdict.status == "matches"


def test_hugetlb_batched_matches(tmp_path):
    run = make_run(tmp_path, "h", workload="hugetlb-unshare", op="mprotect", size=2 << 30, ops=20, seed=15)
    (a,) = analyze(run)
    assert a.scenario.unshare_kind == "mprotect" and a.scenario.tables_per_op == 2
    assert a.verdict.status == "matches" and a.prediction.sync_ipis.value == 60


def test_hugetlb_sharers_from_the_job(tmp_path):
    # the hugetlb workload's --sharers 4: three unsharers per round, one broadcast per round
    run = make_run(tmp_path, "h", workload="hugetlb-unshare", op="madvise-dontneed", size=1 << 30, ops=300,
                   sharers=4, sync_per_op=1 / 3, seed=21)
    (a,) = analyze(run)
    assert a.scenario.sharers == 4 and a.scenario.unshare_kind == "madvise-dontneed"
    assert a.prediction.sync_broadcasts.value == 300 and a.verdict.status == "matches"


def test_hugetlb_control_expects_nothing(tmp_path):
    run = make_run(tmp_path, "c", workload="hugetlb-unshare", op="munmap", size=1 << 30, ops=200, control=True,
                   sync_per_op=0.0, seed=22)
    (a,) = analyze(run)
    assert a.prediction.sync_ipis.value == 0 and a.verdict.status == "matches"


def test_variant_from_release_pattern(tmp_path):
    run = make_run(tmp_path, "r", kernel_release="6.18.44-syncskip", sync_per_op=0.0, seed=16, **NATIVE)
    (plain,) = analyze(run)
    assert plain.variant.value is None and plain.verdict.status == "undetermined"
    assert "fits patched" in plain.verdict.reason
    (a,) = analyze(run, variant_patterns=(parse_variant_pattern("patched=syncskip$"),))
    assert a.variant.value == "patched" and "--variant-pattern patched=syncskip$" in a.variant.source
    assert a.verdict.status == "matches"


def test_recorded_variant_wins_over_pattern(tmp_path):
    run = make_run(tmp_path, "r", kernel_variant="baseline", kernel_release="6.18.44-syncskip", seed=17, **NATIVE)
    (a,) = analyze(run, variant_patterns=(parse_variant_pattern("patched=syncskip"),))
    assert a.variant.value == "baseline" and a.variant.source == "run.yaml job.kernel_variant"


def test_flush_override(tmp_path):
    run = make_run(tmp_path, "r", flush_mode="pv", kernel_variant="patched", sync_per_op=0.0, seed=18)
    (a,) = analyze(run, flush_override="native")
    assert a.flush.source == "command line --flush-mode" and a.verdict.status == "matches"


def test_bad_variant_pattern(capsys, ab):
    rc, _, err = run_cli(capsys, ab[0], "--variant-pattern", "weird")
    assert rc == 2 and "--variant-pattern" in err


# --- latency -------------------------------------------------------------------------------------

def test_latency_side_by_side(capsys, tmp_path):
    a = make_run(tmp_path, "a", latency=True, seed=19, **NATIVE)
    b = make_run(tmp_path, "b", latency=True, sync_per_op=0.0, kernel_variant="patched", seed=20, **NATIVE)
    rc, out, _ = run_cli(capsys, a, b)
    assert rc == 0 and "latency" in out and "p99" in out
    rc, out, _ = run_cli(capsys, a, b, "--format", "json")
    data = json.loads(out)
    assert data["runs"][0]["latency"]["workload"]["0"]["p99_us"] == 720.0
    assert any(r["metric"] == "p99_us" for r in data["comparisons"][0]["latency"])


def test_latency_flat_layout(tmp_path):
    run = make_run(tmp_path, "flat", latency=True, latency_layout="flat", seed=23, **NATIVE)
    (a,) = analyze(run)
    from tlbprobe.report.views import latency

    table = latency.stats(a.run)
    assert set(table) == {"idle", "workload"} and table["workload"][0].p99_us == 720.0


def test_latency_absent_is_fine(capsys, ab):
    rc, out, _ = run_cli(capsys, *ab, "--format", "json")
    assert json.loads(out)["runs"][0]["latency"] is None


# --- statistics --------------------------------------------------------------------------------------

def test_t_quantiles_match_tables():
    assert t_ppf(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_ppf(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_ppf(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    assert t_sf(1.0, 8) == pytest.approx(0.1732968, abs=1e-6)
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-10)


def test_welch_known_value():
    w = welch([1, 2, 3, 4, 5], [2, 3, 4, 5, 6])
    assert w.t == pytest.approx(-1.0) and w.df == pytest.approx(8.0) and w.p == pytest.approx(0.346594, abs=1e-5)
    w = welch([20.1, 19.8, 20.5, 20.0], [18.0, 25.0, 30.0])
    # unequal variances: Welch-Satterthwaite df, not n1+n2-2
    assert 2.0 < w.df < 2.2


def test_welch_constant_samples_and_small_n():
    assert welch([5, 5, 5], [5, 5, 5]).p == 1.0
    assert welch([5, 5, 5], [0, 0, 0]).p == 0.0
    assert welch([1], [2, 3]) is None


def test_describe_and_overlap():
    s = describe([3, 1, 2])
    assert (s.median, s.min, s.max, s.n) == (2, 1, 3, 3)
    assert s.ci95[0] == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-6)
    assert describe([7]).ci95 is None and describe([]) is None
    assert ranges_overlap([1, 2], [2, 3]) and not ranges_overlap([1, 2], [2.5, 3])


def test_a_run_where_nothing_happened_is_no_data_not_a_match(tmp_path):
    """0 collapses of 128 would 'match' a model fed 0 operations: it must not pass."""
    run = make_run(tmp_path, "zero", ops=0, ops_expected=128, sync_per_op=0.0, kernel_variant="patched",
                   flush_mode="native")
    (a,) = analyze(run)
    assert a.verdict.status == "no data" and a.verdict.ok is None and "0 of 384" in a.verdict.reason


def test_lost_trace_events_fall_back_to_cal_minus_tlb(tmp_path):
    import json as _json

    run = make_run(tmp_path, "lossy", seed=21)
    s = _json.loads((run / "summary.json").read_text())
    s["trace_lost_events"] = 500
    (run / "summary.json").write_text(_json.dumps(s))
    (a,) = analyze(run)
    assert a.verdict.basis == "CAL-TLB" and any("trace events lost" in w for w in a.verdict.warnings)


def test_runs_of_different_jobs_are_compared_with_a_warning(tmp_path):
    a = make_run(tmp_path, "a", seed=1)
    b = make_run(tmp_path, "b", seed=2, threads=1)
    report = build_report([str(a), str(b)])
    assert any("not the same job" in w and "threads" in w for w in report.comparisons[0].warnings)
    same = build_report([str(a), str(make_run(tmp_path, "c", seed=3))])
    assert same.comparisons[0].warnings == []


def test_wrong_types_in_a_run_are_one_clear_error(tmp_path):
    import json as _json

    run = make_run(tmp_path, "typo", seed=4)
    s = _json.loads((run / "summary.json").read_text())
    s["other_cpus"] = ["x"]
    (run / "summary.json").write_text(_json.dumps(s))
    with pytest.raises(InputError, match="typo: summary.json or run.yaml holds a value of the wrong type"):
        build_report([str(run)])
