"""Where each run was measured, said in every format (report/provenance.py), and what a
new guest run records for it (vm/collect.py _record_guest): issue 22's provenance rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tlbprobe.report import ReportOptions, build_report, render_html, render_json, render_lkml, render_markdown
from tlbprobe.report import render_text
from tlbprobe.report.provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "analysis" / "runs"
TCG64 = [str(RUNS / "tcg64-baseline-collapse-12G-traced"), str(RUNS / "tcg64-patched-collapse-12G-traced")]


def test_a_new_guest_run_records_host_command_and_series(tmp_path):
    """_record_guest on a fake guest result (no QEMU boot) writes every new qemu key."""
    from tlbprobe.vm.collect import GuestOrigin, _record_guest
    from tlbprobe.vm.guest import GuestResult, GuestSpec

    entry = tmp_path / "cache" / "kernels" / "0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "bzImage").write_bytes(b"x")
    patch = tmp_path / "0001-mm-skip.patch"
    patch.write_text("From 1 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 1/1] mm/mmu_gather: skip the sync\n\n"
                     "---\n+++ b/mm/x.c\n")
    (entry / "meta.json").write_text(json.dumps({
        "key": "0123456789abcdef", "release": "6.12.117", "source": "/usr/src/linux-source-6.12.tar.xz",
        "fragments": ["/x/tlbprobe-guest.config"], "patches": [str(patch)]}))
    share = tmp_path / "share"
    share.mkdir()
    (share / "console.log").write_text("boot\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text(yaml.safe_dump({"format": "tlbprobe-run/1", "host": {}}))
    spec = GuestSpec(kernel=entry / "bzImage", smp=64, memory="14G", accel="tcg", tcg_thread="single")
    result = GuestResult([0], share / "console.log", "tcg", ["qemu-system-x86_64"], 12.0)
    _record_guest(run, spec, result, GuestOrigin("repro", ["tlbprobe", "repro", "--smp", "64", "--size", "12G"]))
    q = yaml.safe_load((run / "run.yaml").read_text())["qemu"]
    assert q["smp"] == 64 and q["tcg_thread"] == "single" and q["accel"] == "tcg"
    assert isinstance(q["host"]["cpus"], int) and q["host"]["cpus"] >= 1 and "cpu_model" in q["host"]
    assert q["started_by"] == {"command": "repro", "argv": ["tlbprobe", "repro", "--smp", "64", "--size", "12G"]}
    kb = q["kernel_build"]
    assert kb["key"] == "0123456789abcdef" and kb["release"] == "6.12.117"
    assert kb["series"]["patches"] == [{"file": "0001-mm-skip.patch", "subject": "mm/mmu_gather: skip the sync"}]
    assert len(kb["series"]["key"]) == 16


def test_a_recorded_guest_run_reports_its_new_keys(tmp_path):
    """A run that records them is reported with them: host cores, the command, the series."""
    dst = tmp_path / "tcg64-patched"
    shutil.copytree(TCG64[1], dst)
    data = yaml.safe_load((dst / "run.yaml").read_text())
    data["qemu"]["host"] = {"hostname": "lab-a", "cpus": 2, "cpu_model": "AMD EPYC"}
    data["qemu"]["started_by"] = {"command": "repro", "argv": ["tlbprobe", "repro", "--smp", "64", "--size", "12G",
                                                             "--out", "/tmp/x"]}
    data["qemu"]["kernel_build"] = {"key": "695f0115740beccf", "release": "6.12.117", "series": {
        "key": "aaaabbbbccccdddd", "patches": [{"file": "0001-x.patch", "subject": "mm/mmu_gather: skip the sync"}]}}
    (dst / "run.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    text = render_lkml.render(build_report([str(dst)]))
    assert "host of 2 CPUs (AMD EPYC)" in text
    assert "mm/mmu_gather: skip the sync" in text and "aaaabbbbccccdddd" in text
    assert "tlbprobe repro --smp 64 --size 12G" in text and "/tmp/x" not in text
    assert "not recorded" not in text.split("Reproduce:")[0].split("Kernels:")[0]


def test_the_tcg64_pair_says_where_it_ran():
    report = build_report(TCG64)
    text = render_lkml.render(report)
    head = " ".join(text.split("\n\n")[1].split())  # the lines above the table, unwrapped
    assert "QEMU TCG guests started by tlbprobe repro" in head
    assert "64 vCPUs" in head and "single-threaded TCG" in head
    assert "ecd3bb8cfb017f17" in head and "695f0115740beccf" in head
    assert "host's cores not recorded" in head
    assert "series not recorded" in head
    assert "bare metal" not in text and "unknown guest" not in text
    repro = head.split("Reproduce:")[1]
    assert "tlbprobe repro --smp 64 --accel tcg --size 12G --out DIR" in repro
    assert "tlbprobe collect" not in repro and "/" not in repro.split("then")[0]
    for render in (render_text, render_markdown, render_html):
        out = render.render(report)
        assert "QEMU TCG" in out and "ecd3bb8cfb017f17" in out and "not recorded" in out
    runs = json.loads(render_json.render(report))["runs"]
    p = runs[0]["provenance"]
    assert p["environment"] == "qemu-tcg" and p["vcpus"] == 64 and p["tcg_thread"] == "single"
    assert p["started_by"]["command"] == "repro" and p["host_cpus"] is None
    assert p["kernel_key"] == "ecd3bb8cfb017f17" and p["series"] is None
    assert any("not recorded" in w for w in p["warnings"])


def test_bare_metal_is_never_a_guess(tmp_path):
    """A run.yaml without host: says unknown (with a warning), not bare metal."""
    dst = tmp_path / "run"
    shutil.copytree(RUNS / "host-collapse-256M", dst)
    data = yaml.safe_load((dst / "run.yaml").read_text())
    del data["host"]
    (dst / "run.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    a = build_report([str(dst)]).runs[0]
    p = provenance(a.run)
    assert p.environment == "unknown" and "bare metal" not in p.where()
    assert p.warnings
    assert "bare metal" not in render_lkml.render(build_report([str(dst)]))


def test_kvm_guest_says_its_flush_mode():
    p = provenance(build_report([str(RUNS / "host-collapse-256M")]).runs[0].run)
    assert p.environment == "kvm-guest" and "KVM guest" in p.where() and "pv" in p.where()


# -- verdicts that point the right way (issue 22, finding 8) -------------------------------

def test_flush_override_says_what_was_given_and_what_is_recorded():
    a = build_report([str(RUNS / "tcg-patched-collapse-1G")], ReportOptions(flush_override="pv")).runs[0]
    assert a.verdict.status == "differs"
    assert "the report assumed pv (--flush-mode), the run records native" in a.verdict.reason


def test_a_pattern_that_makes_every_run_patched_warns():
    from tlbprobe.report.scenario import parse_variant_pattern

    report = build_report([str(RUNS / "host-collapse-256M"), str(RUNS / "host-collapse-256M-threads")],
                          ReportOptions(variant_patterns=(parse_variant_pattern(r"patched=6\.18"),)))
    assert any("every run is patched" in w for w in report.warnings)
    assert "every run is patched" in " ".join(render_lkml.render(report).split())
    assert json.loads(render_json.render(report))["warnings"] == report.warnings


def test_the_patched_run_first_is_warned_about():
    report = build_report([str(RUNS / "tcg-patched-collapse-1G"), str(RUNS / "tcg-baseline-collapse-1G")])
    assert any("is the comparison's baseline, but it is the patched kernel" in w for w in report.warnings)
    for render in (render_text, render_markdown, render_html):
        assert "the patched kernel" in " ".join(render.render(report).split())
    assert not build_report([str(RUNS / "tcg-baseline-collapse-1G"), str(RUNS / "tcg-patched-collapse-1G")]).warnings


# -- failed checks by their cause (issue 22, finding 4) ------------------------------------

def test_a_failed_race_check_shows_its_counts_per_repeat():
    run = REPO / "analysis" / "fault-injection" / "tcg-debug-broken-collapse-race"
    report = build_report([str(run)])
    v = report.runs[0].verdict
    assert v.status == "differs" and v.failed_check and v.measured == 0.0
    assert "lost writes 144 (64, 64, 16 per repeat)" in v.reason
    assert any("TLB shootdowns: 1,221 expected" in w and "0 measured" in w for w in v.warnings)
    text = render_text.render(report)
    assert "- in total" not in text and "±-" not in text and "phases.csv's note" not in text
    assert "traced tlb_remove_table_smp_sync calls 0 in total" in text
    ops = next(line for line in text.splitlines() if line.strip().startswith("ops"))
    assert "407 of 384" in ops and "not khugepaged (THP was never for the run" in ops
    assert "(14, 3, 6 per repeat)" in ops


# -- the fleet table (issue 22, finding 14) ------------------------------------------------

def test_runs_of_two_machines_get_one_table_first(capsys):
    from tlbprobe.cli import main

    paths = [str(RUNS / n) for n in ("host-collapse-256M", "tcg-baseline-collapse-1G", "tcg-patched-collapse-1G")]
    assert main(["report", *paths, "--format", "lkml"]) == 0
    out = capsys.readouterr().out
    assert out.index("sync/op/CPU") < out.index("host AMD EPYC, 2 CPUs: 1 run") < \
        out.index("host QEMU TCG guest, 4 vCPUs: 2 runs")
    keys, table = out.split("\n\n")[:2]
    assert keys.splitlines() == ["H1  AMD EPYC, 2 CPUs (1 run)", "H2  QEMU TCG guest, 4 vCPUs (2 runs)"]
    table = table.splitlines()
    assert len(table) == 1 + 3 and all(len(line) <= 72 and line.isascii() for line in out.splitlines())
    tcg = [line for line in table if "patched" in line][0]
    assert tcg.startswith("H2 ")
    assert "-100.0%" in tcg and "native" in tcg
    assert main(["report", *paths, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in data["fleet"]] == [Path(p).name for p in paths]
    assert data["fleet"][0]["flush_mode"] == "pv" and data["fleet"][2]["model_per_op_per_cpu"] == 0.0
    for fmt in ("markdown", "html", "text"):
        assert main(["report", *paths, "--format", fmt]) == 0
        assert "sync/op/CPU" in capsys.readouterr().out


def test_reproduce_words_name_jobs_and_hide_the_makers_paths():
    from tlbprobe.report.provenance import clean_words

    words = ["/usr/local/bin/tlbprobe", "qemu", "collect", "--kernel", "/root/.cache/k/bzImage", "--out", "/tmp/o",
             "--", "--job", "/work/main/workloads/collapse-1G.yaml", "--job=/srv/mine.yaml"]
    assert clean_words(words) == ["tlbprobe", "qemu", "collect", "--kernel", "BZIMAGE", "--", "--job", "collapse-1G",
                                  "--job=mine.yaml"]


@pytest.mark.parametrize("host, env, says", [
    ({"hypervisor": None, "cpu_flags": {"hypervisor": False}, "cpu_model": "Xeon"}, "bare-metal", "bare-metal host"),
    ({"hypervisor": "microsoft", "flush_mode": "pv", "cpu_model": "EPYC"}, "hyperv-guest", "Hyper-V guest"),
    ({"hypervisor": "xen", "flush_mode": "native"}, "xen-guest", "Xen guest"),
    ({"hypervisor": "unknown"}, "guest", "unknown hypervisor"),
    ({"hypervisor": None, "cpu_model": "Xeon"}, "unknown", "unknown machine"),
])
def test_where_a_host_run_was_measured(tmp_path, host, env, says):
    dst = tmp_path / "run"
    shutil.copytree(RUNS / "host-collapse-256M", dst)
    data = yaml.safe_load((dst / "run.yaml").read_text())
    data["host"] = {**{k: data["host"][k] for k in ("kernel_release", "online_cpus")}, **host}
    (dst / "run.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    p = build_report([str(dst)]).runs[0].provenance
    assert p.environment == env and says in p.where()
    assert bool(p.warnings) == (env == "unknown")


def test_run_jobs_passes_the_starting_command_to_each_run(tmp_path, monkeypatch):
    """run_jobs (repro's and qemu collect's boot) records its origin in every run it brings
    back; the guest is faked (no QEMU): it writes run-0 into the share."""
    from tlbprobe.vm import collect
    from tlbprobe.vm.guest import GuestResult, GuestSpec

    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"x")

    def fake_guest(spec, commands, share, log=print, status=None):
        (share / "run-0").mkdir()
        (share / "run-0" / "run.yaml").write_text(yaml.safe_dump({"format": "tlbprobe-run/1", "host": {}}))
        (share / "console.log").write_text("")
        return GuestResult([0], share / "console.log", "tcg", ["qemu"], 1.0)

    monkeypatch.setattr(collect, "run_guest", fake_guest)
    monkeypatch.setattr(collect, "check_spec", lambda spec: None)
    out = tmp_path / "out" / "patched" / "collapse-1G"
    origin = collect.GuestOrigin("repro", ["tlbprobe", "repro", "--job", "collapse-1G"])
    collect.run_jobs(GuestSpec(kernel=kernel, accel="tcg"), [("collapse-1G", ["--job", "x"])], [out],
                     log=lambda s: None, origin=origin)
    q = yaml.safe_load((out / "run.yaml").read_text())["qemu"]
    assert q["started_by"]["command"] == "repro" and q["started_by"]["argv"][-1] == "collapse-1G"
    assert q["kernel_build"] is None and q["host"]["cpus"]


def test_the_cli_keeps_its_words_for_the_runs(monkeypatch):
    from tlbprobe import cli

    seen = {}
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["report", "x"])
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    args.func = lambda a: seen.setdefault("argv", a.command_argv) and 0
    cli.main(["report", "x"])
    assert seen["argv"] == ["tlbprobe", "report", "x"]
