"""The reference model's rules (analysis/model.yaml) and `tlbprobe model`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tlbprobe.cli import main as cli_main
from tlbprobe.errors import InputError
from tlbprobe.model import (
    DEFAULT_PARAMS_PATH,
    REQUIRED_RULES,
    Scenario,
    load_params,
    ops_from_size,
    predict,
    tables_from_size,
)
from tlbprobe.units import GiB, parse_size


@pytest.fixture(scope="module")
def params():
    return load_params()


def collapse(**kw) -> Scenario:
    base = dict(workload="collapse", ops=10240, online_cpus=64, mm_cpus=1, variant="baseline", flush_mode="native")
    base.update(kw)
    return Scenario(**base)


# --- the parameter file ----------------------------------------------------------------

def test_every_rule_names_its_kernel_function_and_commit(params):
    for rid in REQUIRED_RULES:
        r = params.rule(rid)
        assert r.function and r.file and r.since and r.text, rid
    assert params.rule("collapse-sync").function == "collapse_huge_page"
    assert "2ba99c5e0881" in params.rule("collapse-sync").since
    assert params.rule("hugetlb-unshare-batched").function == "huge_pmd_unshare_flush"
    assert "8ce720d5bd91" in params.rule("hugetlb-unshare-batched").since
    assert "1013af4f585f" in params.rule("hugetlb-unshare-per-table").since
    assert params.rule("patched-skip").skips_when_flush_mode == ("native",)


def test_yaml_has_a_comment_before_every_rule():
    lines = DEFAULT_PARAMS_PATH.read_text().splitlines()
    rules = yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())["rules"]
    for rid in rules:
        i = lines.index(f"  {rid}:")
        assert lines[i - 1].lstrip().startswith("#"), f"rule {rid} has no comment above it"


def test_broken_params_file_is_named(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("format: tlbprobe-model/1\nrules: {collapse-sync: {function: x}}\n")
    with pytest.raises(InputError, match=str(bad)):
        load_params(bad)
    bad.write_text("format: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_params(bad)


# --- collapse ---------------------------------------------------------------------------

def test_issue_example_baseline_native_20g_64_cpus(params):
    ops = ops_from_size("collapse", parse_size("20G"))
    assert ops == 10240
    p = predict(collapse(ops=ops), params)
    assert p.sync_broadcasts.value == 10240
    assert p.sync_ipis.value == 10240 * 63
    assert "collapse-sync" in p.sync_broadcasts.rules and "sync-fanout" in p.sync_ipis.rules


@pytest.mark.parametrize("flush", ["native", "pv", "invlpgb"])
def test_baseline_sends_one_broadcast_per_collapse_under_every_flush_mode(params, flush):
    p = predict(collapse(flush_mode=flush), params)
    assert p.sync_broadcasts.value == 10240
    assert p.sync_ipis.value == 10240 * 63


def test_patched_native_skips_every_broadcast(params):
    p = predict(collapse(variant="patched", flush_mode="native"), params)
    assert p.sync_broadcasts.value == 0
    assert p.sync_ipis.value == 0
    assert "patched-skip" in p.sync_broadcasts.rules


@pytest.mark.parametrize("flush", ["pv", "invlpgb"])
def test_patched_keeps_the_broadcast_under_pv_and_invlpgb(params, flush):
    p = predict(collapse(variant="patched", flush_mode=flush), params)
    assert p.sync_broadcasts.value == 10240
    assert p.sync_ipis.value == 10240 * 63
    assert "patched-skip" in p.sync_broadcasts.rules


def test_facts_two_cpu_host(params):
    # analysis/runs/host-collapse-256M: 2 vCPUs, PV flush: 384 traced sync IPIs on the other CPU for 384 collapses
    p = predict(collapse(ops=384, online_cpus=2, flush_mode="pv", variant="patched"), params)
    assert p.sync_ipis.value == 384


def test_tlb_shootdowns_native_follow_the_threads(params):
    # analysis/runs/tcg-baseline-collapse-1G-threads (TCG, native): 1 GiB collapse, threads on CPUs 1-3:
    # 1,024 TLB on each over 2 repeats, 512 per collapse of the range
    p = predict(collapse(ops=512, online_cpus=4, mm_cpus=4), params)
    assert p.tlb_ipis.value == 512 * 3
    assert p.cal_other_cpus == 512 * 3 + 512 * 3
    patched = predict(collapse(ops=512, online_cpus=4, mm_cpus=4, variant="patched"), params)
    assert patched.tlb_ipis.value == 512 * 3 and patched.sync_ipis.value == 0


def test_tlb_shootdowns_single_thread_are_zero(params):
    p = predict(collapse(flush_mode="pv"), params)
    assert p.tlb_ipis.value == 0


@pytest.mark.parametrize("flush,rule", [("pv", "tlb-pv"), ("invlpgb", "tlb-invlpgb")])
def test_tlb_shootdowns_are_only_bounded_under_pv_and_invlpgb(params, flush, rule):
    p = predict(collapse(ops=100, online_cpus=8, mm_cpus=3, flush_mode=flush), params)
    assert p.tlb_ipis.value is None
    assert p.tlb_ipis_max == 200
    assert rule in p.tlb_ipis.rules
    assert p.cal_other_cpus is None


def test_unknown_variant_is_answered_only_where_it_does_not_matter(params):
    pv = predict(collapse(variant=None, flush_mode="pv"), params)
    assert pv.sync_broadcasts.value == 10240
    native = predict(collapse(variant=None, flush_mode="native"), params)
    assert native.sync_broadcasts.value is None
    assert native.alternatives == {"baseline": 10240 * 63, "patched": 0}


def test_unknown_flush_mode(params):
    assert predict(collapse(flush_mode="unknown"), params).sync_ipis.value == 10240 * 63
    assert predict(collapse(flush_mode="unknown", variant="patched"), params).sync_ipis.value is None


def test_idle_expects_nothing(params):
    p = predict(Scenario("idle", ops=0, online_cpus=8), params)
    assert p.sync_ipis.value == 0 and p.tlb_ipis.value == 0


def test_one_cpu_has_no_targets(params):
    p = predict(collapse(online_cpus=1), params)
    assert p.sync_broadcasts.value == 10240 and p.sync_ipis.value == 0


# --- hugetlb unshare ----------------------------------------------------------------------

def unshare(**kw) -> Scenario:
    base = dict(workload="hugetlb-unshare", ops=5, online_cpus=2, variant="baseline", flush_mode="pv",
                unshare_kind="munmap", tables_per_op=4)
    base.update(kw)
    return Scenario(**base)


@pytest.mark.parametrize("kind", ["munmap", "mprotect", "madvise-dontneed", "exit", "partial-munmap"])
def test_hugetlb_batched_one_broadcast_per_operation_whatever_the_tables(params, kind):
    # one broadcast per unsharing operation whatever the tables: huge_pmd_unshare_flush() syncs once per
    # gather (mm/hugetlb.c); analysis/runs/host-hugetlb-unshare-1G (6.18.44): 600 for 600 operations
    for tables in (1, 2, 4):
        p = predict(unshare(unshare_kind=kind, tables_per_op=tables), params)
        assert p.sync_broadcasts.value == 5, (kind, tables)
        assert p.sync_broadcasts.rules[0] == "hugetlb-unshare-batched"


def test_hugetlb_per_table_and_none_eras(params):
    assert predict(unshare(hugetlb_unshare="per-table"), params).sync_broadcasts.value == 20
    assert predict(unshare(hugetlb_unshare="none"), params).sync_broadcasts.value == 0


def test_hugetlb_patched(params):
    assert predict(unshare(variant="patched", flush_mode="native"), params).sync_ipis.value == 0
    assert predict(unshare(variant="patched", flush_mode="pv"), params).sync_ipis.value == 5


def test_hugetlb_sharers_only_the_last_unsharer_syncs(params):
    # tlb_unshare_pmd_ptdesc() sets fully_unshared_tables only when the share count drops to 0
    p = predict(unshare(ops=300, sharers=4, tables_per_op=1), params)
    assert p.sync_broadcasts.value == 100
    # before 8ce720d5bd91 every huge_pmd_unshare() synced, whatever the share count
    old = predict(unshare(ops=300, sharers=4, tables_per_op=2, hugetlb_unshare="per-table"), params)
    assert old.sync_broadcasts.value == 600


def test_hugetlb_control_never_shares(params):
    for era in ("batched", "per-table"):
        p = predict(unshare(control=True, hugetlb_unshare=era), params)
        assert p.sync_broadcasts.value == 0 and p.sync_broadcasts.rules == ("hugetlb-no-share",)


def test_partial_munmap_unshares_one_table(params):
    p = predict(unshare(unshare_kind="partial-munmap", tables_per_op=4, hugetlb_unshare="per-table"), params)
    assert p.sync_broadcasts.value == 5


def test_hugetlb_tlb_not_modelled_with_threads(params):
    assert predict(unshare(mm_cpus=2), params).tlb_ipis.value is None
    assert predict(unshare(mm_cpus=1), params).tlb_ipis.value == 0


def test_partial_munmap_carries_a_note(params):
    p = predict(unshare(unshare_kind="partial-munmap"), params)
    assert any("hugetlb_unshare_pmds" in n for n in p.notes)


def test_size_helpers():
    assert tables_from_size(4 * GiB) == 4 and tables_from_size(GiB // 2) == 1
    assert ops_from_size("collapse", 256 << 20) == 128


@pytest.mark.parametrize(
    "bad",
    [
        dict(workload="swap"),
        dict(flush_mode="hyperv"),
        dict(variant="sort-of"),
        dict(online_cpus=0),
        dict(ops=-1),
        dict(mm_cpus=65),
        dict(sharers=1),
    ],
)
def test_bad_scenarios_raise_input_error(params, bad):
    with pytest.raises(InputError):
        predict(replace(collapse(), **bad), params)


# --- the command ------------------------------------------------------------------------------

def test_cli_text(capsys):
    rc = cli_main(["model", "--workload", "collapse", "--size", "20G", "--cpus", "64", "--kernel", "baseline",
                   "--flush", "native"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "645,120" in out and "10,240" in out
    assert "collapse_huge_page" in out and "mm/khugepaged.c" in out


def test_cli_json(capsys):
    rc = cli_main(["model", "--workload", "collapse", "--size", "20G", "--cpus", "64", "--kernel", "patched",
                   "--flush", "pv", "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["sync_broadcasts_expected"] == 10240
    assert data["sync_ipis_expected"] == 10240 * 63
    assert "patched-skip" in data["rules"]


def test_cli_hugetlb_json(capsys):
    rc = cli_main(["model", "--workload", "hugetlb-unshare", "--size", "4G", "--ops", "3", "--cpus", "8",
                   "--hugetlb-unshare", "per-table", "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["sync_broadcasts_expected"] == 12 and data["sync_ipis_expected"] == 84


@pytest.mark.parametrize(
    "argv",
    [
        ["--workload", "collapse", "--size", "20X", "--cpus", "64"],
        ["--workload", "collapse", "--size", "1G", "--cpus", "0"],
        ["--workload", "collapse", "--cpus", "4"],
        ["--workload", "collapse", "--size", "1G", "--cpus", "4", "--threads", "-1"],
    ],
)
def test_cli_bad_input_exits_2(capsys, argv):
    assert cli_main(["model"] + argv) == 2
    assert capsys.readouterr().err.startswith("tlbprobe: ")


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli_main(["model", "--help"])
    out = capsys.readouterr().out
    assert "tlbprobe model --workload collapse --size 20G" in out


def test_cli_params_file_missing(capsys, tmp_path: Path):
    rc = cli_main(["model", "--workload", "idle", "--cpus", "2", "--params", str(tmp_path / "none.yaml")])
    assert rc == 2 and "none.yaml" in capsys.readouterr().err
