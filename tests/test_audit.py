"""`tlbprobe audit` (tlbprobe/audit/): the scanner on a small tree of corner cases, the
audit on Debian's real 6.12 and 6.1 trees, a copy of the tree with a new caller behind a
new inline wrapper and another behind a new macro (both must fail the audit), and bad
input (a malformed table, a --source that is no kernel tree, a patch that does not apply).

The real-tree tests need the unpacked linux-source trees in the cache (a kernel build
unpacks them; install.sh --with-qemu installs the packages): each scan greps the whole
tree once, a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import STRICT_SKIP_TAG
from tlbprobe import cli
from tlbprobe.audit.callsites import FILE_SCOPE, find_call_sites
from tlbprobe.audit.cscan import CFile
from tlbprobe.audit.source import open_view
from tlbprobe.audit.static import run_audit
from tlbprobe.audit.table import DEFAULT_TABLE, job_names, load_table
from tlbprobe.errors import InputError
from tlbprobe.kernel import build

ROOT = Path(__file__).resolve().parents[1]
SYNC = "tlb_remove_table_sync_one"
HOOK = "tlb_table_flush_implies_ipi_broadcast"
TARGETS = [SYNC, HOOK]
SERIES = build.OUR_PATCHES


def tree_of(version: str) -> Path:
    tarball = Path(f"/usr/src/linux-source-{version}.tar.xz")
    if not tarball.is_file():
        pytest.skip(f"{STRICT_SKIP_TAG} linux-source-{version} is not installed (install.sh --with-qemu)")
    # unpacked into the cache as a kernel build would (once, about 30 s): on a fresh
    # machine these tests run before any build has unpacked it (CI's strict skips saw this)
    return build.unpacked(tarball) or build.unpack(tarball, lambda s: None)


def run_cli(argv: List[str], capsys) -> tuple:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def keyed(audit) -> Dict[tuple, object]:
    return {(a.site.file, a.site.function, a.site.via, a.site.target): a for a in audit.answers}


# -- the scanner on a small synthetic tree ---------------------------------------------------

TLB_H = """\
#ifndef _ASM_GENERIC_TLB_H
#define _ASM_GENERIC_TLB_H
/* tlb_remove_table_sync_one() in a comment is no call */
void tlb_remove_table_sync_one(void);
#ifdef CONFIG_X
#define sync_alias() \\
	do { \\
		tlb_remove_table_sync_one(); /* a comment \\
		   in the macro */ \\
	} while (0)
#else
#define sync_alias() do { } while (0)
#endif
static inline void inline_alias(int x)
{
	if (x)
		sync_alias();
}
#define tlb_table_flush_implies_ipi_broadcast tlb_table_flush_implies_ipi_broadcast
#define DEFINE_SYNCER(name) static void name(void) { tlb_remove_table_sync_one(); }
#if 0
static inline void dead(void) { tlb_remove_table_sync_one(); }
#endif
#endif /* _ASM_GENERIC_TLB_H */
"""

A_C = """\
#include <asm-generic/tlb.h>
static const char *s = "tlb_remove_table_sync_one() in a string";
static const char c = '"'; // tlb_remove_table_sync_one(); in a line comment
void tlb_remove_table_sync_one(void)	/* the definition: not a call */
{
	if (tlb_table_flush_implies_ipi_broadcast())
		return;
	smp_call_function(x, NULL, 1);
}
EXPORT_SYMBOL_GPL(tlb_remove_table_sync_one);

static void direct(void)
{
	struct foo f = { .tlb_remove_table_sync_one = 1 };
	f.tlb_remove_table_sync_one = 2;
	tlb_remove_table_sync_one();
}

#ifdef CONFIG_A
static void branchy(int a)
{
	if (a) {
#else
static void branchy(int a)
{
	if (!a) {
#endif
		inline_alias(a);
	}
}

int via_macro(void) __acquires(x)
{
	sync_alias();
	return 0;
}

static void (*hook)(void) = tlb_remove_table_sync_one;

static void after(void)
{
	dead();
}

DEFINE_SYNCER(made_by_a_macro)
"""


@pytest.fixture
def small_tree(tmp_path) -> Path:
    t = tmp_path / "linux"
    (t / "mm").mkdir(parents=True)
    (t / "include" / "asm-generic").mkdir(parents=True)
    (t / "Makefile").write_text("VERSION = 9\nPATCHLEVEL = 9\nSUBLEVEL = 0\n")
    (t / "include" / "asm-generic" / "tlb.h").write_text(TLB_H)
    (t / "mm" / "a.c").write_text(A_C)
    (t / "mm" / "notes.txt").write_text("tlb_remove_table_sync_one(); in a text file\n")
    return t


def test_scanner_corner_cases(small_tree):
    with open_view(small_tree, str(small_tree), []) as view:
        scan = find_call_sites(view, TARGETS)
    sites = {(s.function, s.chain, s.kind): s for s in scan.sites}
    assert set(sites) == {
        ("tlb_remove_table_sync_one", (HOOK,), "call"),
        (FILE_SCOPE, (SYNC,), "export"),
        ("direct", (SYNC,), "call"),
        ("branchy", ("inline_alias", "sync_alias", SYNC), "call"),
        ("via_macro", ("sync_alias", SYNC), "call"),
        (FILE_SCOPE, (SYNC,), "reference"),
        ("after", ("dead", SYNC), "call"),
        (FILE_SCOPE, ("DEFINE_SYNCER", SYNC), "call"),   # a macro that makes a function, invoked at file scope
    }, sorted(sites)
    assert set(scan.aliases) == {"sync_alias", "inline_alias", "dead", "DEFINE_SYNCER"}
    assert sites[("direct", (SYNC,), "call")].line == 16
    branchy = sites[("branchy", ("inline_alias", "sync_alias", SYNC), "call")]
    assert branchy.line == 28 and branchy.file == "mm/a.c"
    inline_hop, macro_hop = branchy.hops
    assert [d.kind for d in inline_hop.real] == ["inline function"] and inline_hop.real[0].line == 14
    assert [(d.kind, d.line, d.when) for d in macro_hop.real] == [("macro", 6, ("CONFIG_X",))]
    assert [(d.line, d.when, d.empty) for d in macro_hop.otherwise] == [(12, ("!CONFIG_X",), True)]
    dead = sites[("after", ("dead", SYNC), "call")]
    assert dead.hops[0].real[0].when == ("0",)  # under #if 0: never real
    sync_defs = scan.targets[0].definitions
    assert [(d.file, d.line, d.kind) for d in sync_defs] == [("mm/a.c", 4, "function")]  # not the prototype


def test_the_include_guard_is_not_a_condition_and_branches_stay_balanced():
    f = CFile(TLB_H)
    assert f.conditions_at(TLB_H.index("static inline void inline_alias")) == ()
    g = CFile(A_C)
    fns = {d.name: d for d in g.definitions if d.kind == "function"}
    assert set(fns) == {"tlb_remove_table_sync_one", "direct", "branchy", "via_macro", "after"}
    first, other = g.definitions_of("branchy")
    assert (first.when, other.when) == (("CONFIG_A",), ("!CONFIG_A",))
    assert first.body[1] == other.body[1] < fns["via_macro"].body[0]  # both close at the shared brace
    assert fns["via_macro"].line == 32


_PIECES = st.sampled_from(["{", "}", "(", ")", ";", "\n", "\\\n", "#if A\n", "#ifdef B\n", "#else\n", "#elif C\n",
                           "#endif\n", "#define M(x) ", "/*", "*/", "//", "\"", "'", " = ", "static inline void f(void)",
                           "tlb_remove_table_sync_one", "x->", ".", "EXPORT_SYMBOL(", "int g(int a)", " __acquires(l) "])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join))
def test_the_scanner_reads_any_text_without_an_exception(text):
    f = CFile(text)
    for o in f.occurrences([SYNC, "f", "M"]):
        assert o.kind in ("call", "reference", "export", "definition", "declaration") and 1 <= o.line
    for d in f.definitions:
        assert 0 <= d.body[0] <= d.body[1] <= len(text)


def test_hints_widen_the_search_but_change_no_answer(small_tree):
    with open_view(small_tree, str(small_tree), []) as view:
        plain = find_call_sites(view, TARGETS)
    with open_view(small_tree, str(small_tree), []) as view:
        hinted = find_call_sites(view, TARGETS, hints=["direct", "inline_alias", "no_such_name"])
    assert plain.sites == hinted.sites and plain.aliases == hinted.aliases
    assert plain.rounds >= 3 and hinted.rounds < plain.rounds  # aliases two deep, then the paths


def test_a_small_tree_the_table_does_not_know_fails(small_tree, capsys):
    code, out, err = run_cli(["audit", "--source", str(small_tree), "--variant", "baseline", "--format", "json"],
                             capsys)
    assert code == 1, err
    res = json.loads(out)
    assert res["ok"] is False and res["counts"]["unaudited"] == res["counts"]["sites"] == 8
    assert {s["status"] for s in res["sites"]} == {"unaudited"}


# -- the shipped table --------------------------------------------------------------------

def test_the_shipped_table_loads_and_names_real_jobs():
    t = load_table()
    assert {x.name: x.role for x in t.targets} == {SYNC: "sync", HOOK: "hook"}
    jobs = set(job_names())
    for e in t.callers:
        assert e.job is None or e.job in jobs
        assert all(f in t.facts for f in e.rests_on)
    assert {e.function for e in t.callers} >= {"collapse_huge_page", "tlb_remove_table_one", "huge_pmd_unshare_flush",
                                               "collapse_pte_mapped_thp", "retract_page_tables", SYNC}


def _broken(tmp_path, old: str, new: str) -> Path:
    text = DEFAULT_TABLE.read_text()
    assert old in text, old
    p = tmp_path / "callers.yaml"
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize("old, new, words", [
    ("    verdict: not-skipped\n", "    verdict: probably-fine\n",
     ["callers[1] (tlb_remove_table_one in mm/mmu_gather.c)", "verdict 'probably-fine'"]),
    ("    job: hugetlb-unshare\n", "    job: no-such-job\n",
     ["callers[2] (huge_pmd_unshare_flush in mm/hugetlb.c)", "job 'no-such-job'"]),
    ("    flush: pmdp_collapse_flush() -> flush_tlb_range() -> flush_tlb_mm_range(freed_tables=true)\n"
     "    reaches: every other CPU in mm_cpumask(mm), lazy ones included (freed_tables)",
     "    flsuh: pmdp_collapse_flush()\n    reaches: every other CPU in mm_cpumask(mm), lazy ones included (freed_tables)",
     ["callers[0] (collapse_huge_page in mm/khugepaged.c)", "unknown key(s): flsuh"]),
    ("    reachable: {x86_64_native: no, x86_64_pv: yes, arm64: yes}",
     "    reachable: {x86_64_native: no, arm64: yes}",
     ["callers[1] (tlb_remove_table_one in mm/mmu_gather.c)", "reachable"]),
    ("    rests_on: [sync-skips-on-hook, x86-hook-native-only]",
     "    rests_on: [sync-skips-on-hook, no-such-fact]",
     ["callers[5] (tlb_remove_table_sync_one in mm/mmu_gather.c)", "no-such-fact"]),
    ("expect: ['pv_ops\\.mmu\\.flush_tlb_multi == native_flush_tlb_multi']",
     "expect: ['pv_ops\\.mmu\\.flush_tlb_multi == (native']",
     ["facts.x86-hook-native-only.expect", "not a regular expression"]),
    ("    cite: [mm/mmu_gather.c:269-285,", "    cite: [mm/mmu_gather.c,",
     ["callers[5] (tlb_remove_table_sync_one in mm/mmu_gather.c).cite", "not a citation"]),
])
def test_a_malformed_table_is_refused_naming_the_entry(tmp_path, capsys, old, new, words):
    p = _broken(tmp_path, old, new)
    with pytest.raises(InputError) as e:
        load_table(p)
    for w in words:
        assert w in str(e.value), str(e.value)
    code, out, err = run_cli(["audit", "--table", str(p), "--source", str(tmp_path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert words[0] in err


def test_a_table_entry_twice_is_refused(tmp_path):
    text = DEFAULT_TABLE.read_text()
    start = text.index("  - function: collapse_huge_page")
    end = text.index("  - function: tlb_remove_table_one")
    p = tmp_path / "callers.yaml"
    p.write_text(text[:end] + text[start:end] + text[end:])
    with pytest.raises(InputError, match=r"callers\[1\] \(collapse_huge_page in mm/khugepaged.c\): the same caller "
                                         r"as callers\[0\]"):
        load_table(p)


# -- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, words", [
    (lambda d: d / "nowhere", "no such file or directory"),
    (lambda d: d, "not a kernel source tree"),
    (lambda d: (d / "README").write_text("hello") and d / "README", "neither a kernel source tree nor a source tarball"),
])
def test_a_bad_source_is_one_clear_line(tmp_path, capsys, make, words):
    src = make(tmp_path)
    code, out, err = run_cli(["audit", "--source", str(src)], capsys)
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err


def test_a_patch_that_does_not_apply_is_named(small_tree, tmp_path, capsys):
    bad = tmp_path / "0001-bad.patch"
    bad.write_text("--- a/mm/a.c\n+++ b/mm/a.c\n@@ -1,3 +1,3 @@\n-no such line\n+other\n context\n context\n")
    code, out, err = run_cli(["audit", "--source", str(small_tree), "--patch", str(bad)], capsys)
    assert code == 2 and "0001-bad.patch: does not apply" in err and "mm/a.c hunk #1" in err, err
    assert str(small_tree) in err and "tlbprobe-audit-" not in err
    code, out, err = run_cli(["audit", "--source", str(small_tree), "--patch", str(bad), "--variant", "baseline"],
                             capsys)
    assert code == 2 and "--patch goes with the patched variant" in err


# -- Debian's real trees -------------------------------------------------------------------

def _stat(tree: Path, rels) -> dict:
    out = {}
    for rel in rels:
        st = os.stat(tree / rel)
        out[rel] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


@pytest.fixture(scope="module")
def audits_612():
    """Baseline and patched audits of the 6.12 tree (one grep of the tree for both), and
    the tree's state around them."""
    tree = tree_of("6.12")
    table = load_table()
    touched = build.touched_files(SERIES)
    before = _stat(tree, touched)
    applied = sorted(p.name for p in (tree / build.APPLIED).iterdir()) if (tree / build.APPLIED).is_dir() else []
    with open_view(tree, str(tree), []) as base_view:
        baseline = run_audit(base_view, table, "baseline")
        with open_view(tree, str(tree), SERIES) as patched_view:
            patched_view.share_grep(base_view)
            patched = run_audit(patched_view, table, "patched")
    now_applied = sorted(p.name for p in (tree / build.APPLIED).iterdir()) if (tree / build.APPLIED).is_dir() else []
    return {"baseline": baseline, "patched": patched, "before": before, "after": _stat(tree, touched),
            "tree": tree, "stable": applied == now_applied}


KNOWN_612 = {
    ("mm/khugepaged.c", "collapse_huge_page", (), SYNC): 1184,
    ("mm/mmu_gather.c", "tlb_remove_table_one", (), SYNC): 323,
    ("mm/hugetlb.c", "huge_pmd_unshare_flush", ("tlb_flush_unshared_tables",), SYNC): 7388,
    ("mm/khugepaged.c", "collapse_pte_mapped_thp", ("pmdp_get_lockless_sync",), SYNC): 1663,
    ("mm/khugepaged.c", "retract_page_tables", ("pmdp_get_lockless_sync",), SYNC): 1764,
    ("mm/mmu_gather.c", SYNC, (), HOOK): 282,
}


def test_612_with_the_series_every_call_site_is_audited(audits_612):
    a = audits_612["patched"]
    assert a.ok and not a.unaudited and a.skip_in_tree, [x.reason for x in a.unaudited]
    sites = keyed(a)
    assert {k: v.site.line for k, v in sites.items()} == KNOWN_612
    assert a.release == "6.12.118" and set(a.scan.aliases) == {"pmdp_get_lockless_sync", "tlb_flush_unshared_tables"}
    assert all(not x.failed_facts for x in a.answers), [(x.id, x.failed_facts) for x in a.answers]
    pmdp = sites[("mm/khugepaged.c", "retract_page_tables", ("pmdp_get_lockless_sync",), SYNC)].site.hops[0]
    assert [(d.where, d.kind) for d in pmdp.real] == [("include/linux/pgtable.h:579", "macro")]
    assert "CONFIG_GUP_GET_PXX_LOW_HIGH" in pmdp.real[0].when
    assert [(d.where, d.empty) for d in pmdp.otherwise] == [("include/linux/pgtable.h:598", True)]
    unshare = sites[("mm/hugetlb.c", "huge_pmd_unshare_flush", ("tlb_flush_unshared_tables",), SYNC)].site
    assert {p.function for p in unshare.paths} == {"__unmap_hugepage_range", "hugetlb_change_protection",
                                                    "hugetlb_unshare_pmds", "move_hugetlb_page_tables",
                                                    "try_to_unmap_one", "try_to_migrate_one"}
    assert a.scan.seconds < 60


def test_612_baseline_has_no_hook_and_says_which_facts_only_the_series_makes(audits_612):
    a = audits_612["baseline"]
    assert a.ok and not a.skip_in_tree
    assert set(keyed(a)) == set(KNOWN_612) - {("mm/mmu_gather.c", SYNC, (), HOOK)}
    assert keyed(a)[("mm/mmu_gather.c", "tlb_remove_table_one", (), SYNC)].site.line == 317  # 6 lines fewer
    failing = {f for f, r in a.facts.items() if not r.holds}
    assert {"x86-tlb-flush-unshared-as-freed", "sync-skips-on-hook", "x86-hook-native-only"} <= failing
    assert audits_612["patched"].facts["x86-tlb-flush-unshared-as-freed"].holds


def test_the_audit_never_writes_to_the_tree(audits_612):
    if not audits_612["stable"]:
        pytest.skip("a kernel build applied or reversed its patches during the test")
    assert audits_612["before"] == audits_612["after"]
    tree = audits_612["tree"]
    for rel in build.touched_files(SERIES):
        assert not (tree / (rel + ".orig")).exists() and not (tree / (rel + ".rej")).exists()


def test_612_json_output_is_stable(audits_612, capsys):
    from tlbprobe.audit.render import to_dict

    d = to_dict(audits_612["patched"])
    assert d["format"] == "tlbprobe-audit-result/1" and d["ok"] is True and d["counts"]["unaudited"] == 0
    for s in d["sites"]:
        assert {"id", "function", "file", "line", "chain", "target", "status", "verdict", "job", "reachable",
                "facts", "paths", "hops", "when"} <= set(s)
        assert ":" in s["id"] and str(s["line"]) not in s["id"].split(":", 1)[0]
    ids = {s["id"] for s in d["sites"]}
    assert "mm/khugepaged.c:collapse_huge_page -> tlb_remove_table_sync_one" in ids
    assert json.loads(json.dumps(d)) == d


def test_61_differs_as_doc_audit_md_says():
    tree = tree_of("6.1")
    with open_view(tree, str(tree), SERIES) as view:
        a = run_audit(view, load_table(), "patched")
    assert a.ok, [x.reason for x in a.unaudited] + [x.id for x in a.unsupported]
    assert a.release.startswith("6.1.")
    sites = keyed(a)
    assert set(sites) == {
        ("mm/khugepaged.c", "collapse_huge_page", (), SYNC),
        ("mm/khugepaged.c", "collapse_and_free_pmd", (), SYNC),      # 6.1 only: frees the PTE table at once
        ("mm/mmu_gather.c", "tlb_remove_table_one", (), SYNC),
        ("mm/hugetlb.c", "huge_pmd_unshare_flush", ("tlb_flush_unshared_tables",), SYNC),  # Debian's backport
        ("mm/mmu_gather.c", SYNC, (), HOOK),
    }
    assert "pmdp_get_lockless_sync" not in a.scan.aliases            # 6.12's alias does not exist in 6.1
    assert {e.function for e in a.not_in_tree} == {"collapse_pte_mapped_thp", "retract_page_tables"}
    assert a.facts["x86-native-frees-tables-as-pages"].holds          # 6.1 spells it as a cast of tlb_remove_page


# -- a copy of the tree with two new callers ----------------------------------------------

WRAPPER = """
/* added by tlbprobe's test: a new inline wrapper in front of an old alias */
static inline void audit_test_wrapper(void)
{
	pmdp_get_lockless_sync();
}
"""
MACRO = """
/* added by tlbprobe's test: a new macro */
#define AUDIT_TEST_SYNC() \\
	tlb_remove_table_sync_one()
"""


def _copy(tree: Path, dest: Path, rels) -> None:
    """Copies of ``rels`` of the tree, as unpacked: when a kernel build has its series
    applied to the tree right now, the copy gets its record and the series is reversed
    in the copy (kernel/build.py reverse_series())."""
    for rel in rels:
        if (tree / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tree / rel, dest / rel)  # a copy of the bytes: the tree is never written
    if (tree / build.APPLIED).is_dir():
        shutil.copytree(tree / build.APPLIED, dest / build.APPLIED)
        build.reverse_series(dest)


@pytest.fixture
def copy_612(audits_612, tmp_path) -> Path:
    """The files of the 6.12 tree the audit reads (and those its facts and the series
    name, and a few more to change), copied: a small tree that audits as the real one."""
    tree = audits_612["tree"]
    copy = tmp_path / "linux"
    rels = set(audits_612["patched"].scan.read) | {f.file for f in load_table().facts.values()}
    rels |= {"Makefile", "include/linux/mm_inline.h", "include/linux/swap.h", "mm/memory.c", "mm/swap.c",
             *build.touched_files(SERIES)}
    _copy(tree, copy, sorted(rels))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_new_callers_behind_a_new_wrapper_and_a_new_macro_are_unaudited(copy_612, capsys):
    copy = copy_612
    # the copy as it is passes
    code, out, err = run_cli(["audit", "--source", str(copy), "--format", "json"], capsys)
    assert code == 0, err
    # a new inline wrapper in one header, called from one file; a new macro in another, called from another
    with open(copy / "include/linux/mm_inline.h", "a") as f:
        f.write(WRAPPER)
    with open(copy / "include/linux/swap.h", "a") as f:
        f.write(MACRO)
    with open(copy / "mm/memory.c", "a") as f:
        f.write("\nvoid audit_test_inline_caller(void)\n{\n\taudit_test_wrapper();\n}\n")
    with open(copy / "mm/swap.c", "a") as f:
        f.write("\nvoid audit_test_macro_caller(void)\n{\n\tAUDIT_TEST_SYNC();\n}\n")
    code, out, err = run_cli(["audit", "--source", str(copy), "--format", "json"], capsys)
    assert code == 1, err
    res = json.loads(out)
    bad = {(s["file"], s["function"], tuple(s["chain"])): s for s in res["sites"] if s["status"] == "unaudited"}
    assert set(bad) == {
        ("mm/memory.c", "audit_test_inline_caller", ("audit_test_wrapper", "pmdp_get_lockless_sync", SYNC)),
        ("mm/swap.c", "audit_test_macro_caller", ("AUDIT_TEST_SYNC", SYNC)),
    }
    wrapper = bad[("mm/memory.c", "audit_test_inline_caller", ("audit_test_wrapper", "pmdp_get_lockless_sync", SYNC))]
    assert wrapper["hops"][0]["real"][0]["kind"] == "inline function"
    assert wrapper["hops"][0]["real"][0]["at"].startswith("include/linux/mm_inline.h:")
    assert res["counts"]["audited"] == len(KNOWN_612)
    code, out, err = run_cli(["audit", "--source", str(copy)], capsys)
    assert code == 1 and "UNAUDITED: no entry for audit_test_macro_caller in mm/swap.c" in out
    assert "audit FAILED: 2 unaudited" in out
    assert "audit_test_inline_caller -> audit_test_wrapper -> pmdp_get_lockless_sync -> tlb_remove_table_sync_one" in out


def test_a_second_call_in_a_reviewed_function_is_unaudited(copy_612, capsys):
    _edit(copy_612 / "mm/khugepaged.c", "\ttlb_remove_table_sync_one();\n",
          "\ttlb_remove_table_sync_one();\n\ttlb_remove_table_sync_one();\n")
    code, out, err = run_cli(["audit", "--source", str(copy_612)], capsys)
    assert code == 1, err
    assert "UNAUDITED: the table reviewed 1 such call(s) in collapse_huge_page; this is call 2" in out
    assert "mm/khugepaged.c:1185  collapse_huge_page -> tlb_remove_table_sync_one" in out


def test_a_skip_whose_flush_no_longer_reaches_the_lazy_cpus_fails(copy_612, capsys):
    """x86's flush_tlb_range() passing freed_tables=false: collapse's fact fails, and the
    patched tree, which skips, fails the audit; the baseline, which does not, passes."""
    _edit(copy_612 / "arch/x86/include/asm/tlbflush.h", ": PAGE_SHIFT, true)", ": PAGE_SHIFT, false)")
    code, out, err = run_cli(["audit", "--source", str(copy_612)], capsys)
    assert code == 1, err
    assert "not here: x86-flush-range-frees: flush_tlb_range in arch/x86/include/asm/tlbflush.h" in out
    assert "justified skip(s) whose facts do not hold here: collapse_huge_page -> tlb_remove_table_sync_one" in out
    code, out, err = run_cli(["audit", "--source", str(copy_612), "--variant", "baseline"], capsys)
    assert code == 0 and "x86-flush-range-frees" in out, err


def test_a_build_that_has_its_series_applied_is_read_as_unpatched(audits_612, tmp_path):
    """The cached tree with a build's series applied (kernel/build.py apply_series()):
    the baseline audit reverses it in its copy, and the tree keeps its patches."""
    tree = audits_612["tree"]
    copy = tmp_path / "linux"
    rels = set(audits_612["baseline"].scan.read) | {"Makefile", *build.touched_files(SERIES)}
    _copy(tree, copy, sorted(rels))
    build.apply_series(SERIES, copy)
    patched_bytes = (copy / "mm/mmu_gather.c").read_bytes()
    with open_view(copy, str(copy), []) as view:
        a = run_audit(view, load_table(), "baseline")
        assert view.reversed_in_copy == tuple(p.name for p in sorted((copy / build.APPLIED).iterdir()))
    assert not a.skip_in_tree and ("mm/mmu_gather.c", SYNC, (), HOOK) not in keyed(a)
    assert (copy / "mm/mmu_gather.c").read_bytes() == patched_bytes


def test_audit_help_runs_without_the_library(capsys):
    res = subprocess.run([sys.executable, "-m", "tlbprobe", "audit", "--help"], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0 and "--source DIR|TARBALL" in res.stdout and "examples:" in res.stdout
