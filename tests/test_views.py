"""The observers' views (tlbprobe/report/views/): every renderer, the A/B and collect's
end-of-run summary show an observer through its view, and a view stays pure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runfactory import make_run
from tlbprobe.report import ReportOptions, build_report, render_html, render_json, render_lkml, render_markdown
from tlbprobe.report import render_text, views
from tlbprobe.report.views.base import View
from tlbprobe.rundir.sections import CostSection
from tlbprobe.report.summary_text import render_summary

REPO = Path(__file__).resolve().parents[1]
NATIVE = dict(online_cpus=4, flush_mode="native", flush_evidence="no PV TLB flush in dmesg", hypervisor=None)
CPU_TIME = "CPU time taken from the other CPUs by the sync broadcast"
VICTIM = "victim loop on the other CPUs, workload vs idle"


@pytest.fixture
def ab(tmp_path):
    base = make_run(tmp_path, "base", kernel_variant="baseline", cost=True, victim=True, seed=1, **NATIVE)
    patched = make_run(tmp_path, "patched", kernel_variant="patched", sync_per_op=0.0, cost=True, victim=True,
                       seed=2, **NATIVE)
    return base, patched


def test_collect_summary_prints_the_cost_and_victim_lines(ab):
    """README.md: the summary says "CPU time taken from the other CPUs by the sync
    broadcast: X ms (Y ms per GiB collapsed), Z us per broadcast per CPU"."""
    summary = json.loads((ab[0] / "summary.json").read_text())
    text = render_summary(summary, ab[0])
    assert f"{CPU_TIME}: 1.5 ms (2 ms per GiB collapsed), 1.3 us per broadcast per CPU" in text
    assert "initiator waited p50 4 us" in text and VICTIM in text
    assert text.count("not seen:") == 1
    patched = render_summary(json.loads((ab[1] / "summary.json").read_text()), ab[1])
    assert "no sync IPI handled in the workload phases" in patched and "initiator: no broadcast" in patched
    # a run without observers: the summary has none of it
    bare = make_run(ab[0].parent, "bare", seed=3)
    text = render_summary(json.loads((bare / "summary.json").read_text()), bare)
    assert CPU_TIME not in text and VICTIM not in text and "latency (" not in text


def test_every_renderer_shows_the_views(ab):
    report = build_report([str(p) for p in ab], ReportOptions())
    for render in (render_text, render_lkml, render_markdown, render_html):
        out = render.render(report)
        assert CPU_TIME in out and "not seen:" in out, render.__name__
    text = render_text.render(report)
    assert "victim interruptions/s" in text and "initiator wait us" in text  # the patched run handled no sync IPI
    lkml = render_lkml.render(report)
    assert "Cost:" in lkml and f"A: {CPU_TIME}" in lkml and lkml.count("not seen:") == 1
    data = json.loads(render_json.render(report))
    run = data["runs"][0]
    assert run["cost"] == json.loads((ab[0] / "summary.json").read_text())["cost"]
    assert run["victim"]["per_cpu"]["1"]["loss_pct"] == 2.0 and run["latency"] is None
    assert list(run).index("cost") < list(run).index("sync_ipis_measured")       # where they always stood
    assert {"handler_us_per_sync_ipi", "initiator_us_p50", "victim_extra_irq_per_s"} <= set(run["per_repeat"])
    keys = [f["key"] for f in data["comparisons"][0]["figures"]]
    assert keys.index("ms_per_op") < keys.index("initiator_us_p50") < keys.index("victim_extra_irq_per_s")
    single = render_text.render(build_report([str(ab[0])], ReportOptions()))
    assert "handler per sync IPI p50 1.5 us" in single


def test_a_new_view_is_shown_by_every_renderer_and_the_summary(ab, monkeypatch):
    """Adding an observer's view is one module and its entry in VIEWS: the renderers and
    the end-of-run summary loop over them."""

    class Audit(View):
        section = CostSection           # any section the runs have
        label = "audit"
        note = "audit: a note said once"

        def lines(self, a):
            return [f"audited {a.run.name}"]

        def summary_lines(self, summary):
            return ["audited at the end of the run"]

    monkeypatch.setattr(views, "VIEWS", views.VIEWS + (Audit(),))
    report = build_report([str(p) for p in ab], ReportOptions())
    text = render_text.render(report)
    assert "audit      audited base" in text and text.count("audit: a note said once") == 2  # once per run
    lkml = render_lkml.render(report)
    assert "Audit:" in lkml and "A: audited base" in lkml and lkml.count("audit: a note said once") == 1
    assert "audited patched" in render_markdown.render(report) and "audited base" in render_html.render(report)
    summary = render_summary(json.loads((ab[0] / "summary.json").read_text()), ab[0])
    assert summary.splitlines()[-2:] == ["not seen: the IPI's delivery before its handler (a guest's VM exit), "
                                         "leaving idle, cache and TLB refill after it", "audit: a note said once"]
    assert "\naudited at the end of the run\n" in summary


def test_views_import_nothing_that_measures_nor_pandas():
    """collect prints its summary through the views, on a guest whose root may lack pandas."""
    code = ("import sys; import tlbprobe.report.summary_text, tlbprobe.report.views; "
            "print(sorted(m for m in sys.modules if m.startswith(('pandas', 'matplotlib', 'tlbprobe.measure', "
            "'tlbprobe.report.analyze', 'tlbprobe.rundir.reader', 'tlbprobe.model'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
