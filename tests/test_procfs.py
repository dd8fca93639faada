"""Tests of tlbprobe.measure.procfs: /proc/interrupts, /proc/vmstat, /proc/meminfo parsing and diffs."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest

from conftest import STRICT_SKIP_TAG
from irqgen import arm64_interrupts, count_row, header, single_row, x86_interrupts
from tlbprobe.errors import InputError
from tlbprobe.measure.procfs import (
    Interrupts,
    IrqLine,
    diff_interrupts,
    diff_keyvalue,
    format_interrupts,
    parse_cpulist,
    parse_interrupts,
    parse_keyvalue,
    read_interrupts,
    read_meminfo,
    read_vmstat,
)
from tlbprobe.ui.numbers import format_cpulist

DATA = Path(__file__).parent / "data"
X86_BEFORE = DATA / "x86-kvm-2cpu.before.interrupts"
X86_AFTER = DATA / "x86-kvm-2cpu.after.interrupts"
ARM_BEFORE = DATA / "arm64-rpi4-4cpu.before.interrupts"
ARM_AFTER = DATA / "arm64-rpi4-4cpu.after.interrupts"


def parse(text: str) -> Interrupts:
    return parse_interrupts(text, "test")


# --- recorded samples ---------------------------------------------------------------------


def test_recorded_x86_sample_parses_with_exact_counts():
    snap = read_interrupts(str(X86_BEFORE))
    assert snap.cpus == (0, 1)
    assert len(snap.lines) == 35
    assert snap.lines["CAL"].per_cpu == {0: 22465, 1: 17811}
    assert snap.lines["TLB"].per_cpu == {0: 1021, 1: 1108}
    assert snap.lines["CAL"].total == 40276
    assert snap.lines["36"].description == "PCI-MSIX-0000:00:02.0 1-edge virtio1-req.0"
    assert snap.lines["24"].description == "IO-APIC 5-edge ACPI:Ged"
    assert snap.lines["ERR"].single == 0 and snap.lines["ERR"].per_cpu == {}
    assert snap.lines["MIS"].single == 0
    assert snap.by_canonical("function_call").label == "CAL"
    assert snap.by_canonical("tlb_shootdown").label == "TLB"
    assert snap.warnings == ()


def test_recorded_x86_pair_diff():
    diff = diff_interrupts(read_interrupts(str(X86_BEFORE)), read_interrupts(str(X86_AFTER)))
    assert diff.warnings == []
    assert diff.cpus == (0, 1)
    assert diff.lines["CAL"].per_cpu == {0: 6, 1: 1}
    assert diff.lines["TLB"].per_cpu == {0: 3, 1: 0}
    assert diff.lines["LOC"].per_cpu == {0: 81, 1: 46}
    assert diff.lines["ERR"].single == 0
    assert diff.canonical_per_cpu("function_call") == {0: 6, 1: 1}
    assert diff.canonical_per_cpu("tlb_shootdown") == {0: 3, 1: 0}
    assert sorted(label for label, line in diff.lines.items() if line.changed) == [
        "36", "42", "CAL", "LOC", "RES", "TLB",
    ]


def test_recorded_arm64_sample():
    before, after = read_interrupts(str(ARM_BEFORE)), read_interrupts(str(ARM_AFTER))
    assert before.cpus == (0, 1, 2, 3)
    assert [label for label in before.lines if label.startswith("IPI")] == [f"IPI{i}" for i in range(7)]
    assert before.by_canonical("function_call").label == "IPI1"
    assert before.by_canonical("tlb_shootdown") is None
    # the hwirq number after the chip name is description, not a count
    assert before.lines["15"].per_cpu == {0: 28, 1: 0, 2: 0, 3: 0}
    assert before.lines["15"].description == "GICv2 153 Level uart-pl011"
    assert before.lines["31"].description == "BRCM STB PCIe MSI 524288 Edge xhci_hcd"
    assert before.lines["Err"].single == 0
    diff = diff_interrupts(before, after)
    assert diff.warnings == []
    assert diff.canonical_per_cpu("function_call") == {0: 12, 1: 130, 2: 128, 3: 127}
    assert diff.canonical("function_call").total == 397
    assert diff.canonical_per_cpu("tlb_shootdown") == {0: 0, 1: 0, 2: 0, 3: 0}
    assert diff.lines["IPI0"].total == 72


# --- synthetic files: CPU counts, offline CPUs, arm64 ------------------------------------


@pytest.mark.parametrize("ncpus", [1, 64, 256])
def test_synthetic_x86_many_cpus(ncpus):
    cpus = list(range(ncpus))
    before = parse(x86_interrupts(cpus, {"CAL": lambda c: 1000 * c, "TLB": lambda c: 7, "ERR": 3}))
    after = parse(x86_interrupts(cpus, {"CAL": lambda c: 1000 * c + c + 1, "TLB": lambda c: 7 + (c % 2), "ERR": 5}))
    assert before.cpus == tuple(cpus)
    assert before.lines["CAL"].per_cpu[ncpus - 1] == 1000 * (ncpus - 1)
    assert before.lines["ERR"].single == 3  # single even with one CPU
    diff = diff_interrupts(before, after)
    assert diff.warnings == []
    assert diff.lines["CAL"].per_cpu == {c: c + 1 for c in cpus}
    assert diff.lines["CAL"].total == ncpus * (ncpus + 1) // 2
    assert diff.canonical("tlb_shootdown").total == ncpus // 2
    assert diff.lines["ERR"].single == 2
    assert diff.lines["24"].description == "PCI-MSI-0000:00:1f.2 0-edge ahci[0000:00:1f.2]"


def test_counts_wider_than_ten_digits_still_split():
    cpus = [0, 1, 2]
    big = 4294967295
    snap = parse(x86_interrupts(cpus, {"LOC": {0: big, 1: big, 2: 1}}))
    assert snap.lines["LOC"].per_cpu == {0: big, 1: big, 2: 1}


def test_offline_cpus_are_keyed_by_header_number():
    snap = parse(x86_interrupts([0, 2, 3], {"CAL": {0: 10, 2: 20, 3: 30}}))
    assert snap.cpus == (0, 2, 3)
    assert snap.lines["CAL"].per_cpu == {0: 10, 2: 20, 3: 30}


def test_cpu_went_offline_between_snapshots():
    before = parse(x86_interrupts([0, 1, 2, 3], {"CAL": {0: 10, 1: 10, 2: 10, 3: 10}}))
    after = parse(x86_interrupts([0, 2, 3], {"CAL": {0: 15, 2: 17, 3: 19}}))
    diff = diff_interrupts(before, after)
    assert diff.cpus == (0, 2, 3)
    assert diff.lines["CAL"].per_cpu == {0: 5, 2: 7, 3: 9}
    assert diff.canonical_per_cpu("function_call") == {0: 5, 2: 7, 3: 9}
    assert any("CPU 1 went offline" in w for w in diff.warnings)
    assert len(diff.warnings) == 1


def test_cpu_came_online_between_snapshots():
    before = parse(x86_interrupts([0, 2], {"CAL": {0: 1, 2: 1}}))
    after = parse(x86_interrupts([0, 1, 2, 3], {"CAL": {0: 2, 1: 50, 2: 4, 3: 60}}))
    diff = diff_interrupts(before, after)
    assert diff.cpus == (0, 2)
    assert diff.lines["CAL"].per_cpu == {0: 1, 2: 3}
    assert diff.warnings == ["CPU 1,3 came online between the snapshots; left out"]


@pytest.mark.parametrize("prec", [3, 4])
def test_synthetic_arm64(prec):
    cpus = list(range(8))
    before = parse(arm64_interrupts(cpus, {"IPI1": lambda c: 100 + c, "Err": 1}, prec=prec))
    after = parse(arm64_interrupts(cpus, {"IPI1": lambda c: 100 + 3 * c, "Err": 1}, prec=prec))
    assert [label for label in before.lines if label.startswith("IPI")] == [f"IPI{i}" for i in range(7)]
    assert before.lines["IPI3"].description == "CPU stop (for crash dump) interrupts"
    assert before.lines["11"].description == "GICv3 27 Level arch_timer"
    assert before.lines["Err"].single == 1
    diff = diff_interrupts(before, after)
    assert diff.canonical("function_call").label == "IPI1"
    assert diff.canonical_per_cpu("function_call") == {c: 2 * c for c in cpus}
    assert diff.canonical("tlb_shootdown") is None


def test_canonical_match_ignores_case_and_spacing():
    assert IrqLine("X", {0: 1}, "function  CALL interrupts").canonical == "function_call"
    assert IrqLine("X", {0: 1}, "Single function call interrupts").canonical is None


# --- short, long and single-value lines ------------------------------------------------


def test_line_with_fewer_columns_belongs_to_first_cpus():
    text = "\n".join([header([0, 1, 2, 3]), count_row("CAL", [5, 6], "Function call interrupts")]) + "\n"
    snap = parse(text)
    assert snap.lines["CAL"].per_cpu == {0: 5, 1: 6}
    assert snap.lines["CAL"].description == "Function call interrupts"
    assert snap.lines["CAL"].single is None


def test_diff_with_a_short_line_warns_and_leaves_cpus_out():
    cpus = [0, 1, 2, 3]
    full = "\n".join([header(cpus), count_row("CAL", [5, 6, 7, 8], "Function call interrupts")]) + "\n"
    short = "\n".join([header(cpus), count_row("CAL", [9, 9], "Function call interrupts")]) + "\n"
    diff = diff_interrupts(parse(full), parse(short))
    assert diff.lines["CAL"].per_cpu == {0: 4, 1: 3}
    assert diff.warnings == ["CAL: no count for CPU 2-3 in one snapshot (line with fewer columns); left out"]


def test_extra_counts_do_not_leak_into_description():
    text = header([0, 1]) + "\n" + count_row("CAL", [1, 2, 3], "Function call interrupts") + "\n"
    snap = parse(text)
    assert snap.lines["CAL"].per_cpu == {0: 1, 1: 2}
    assert snap.lines["CAL"].canonical == "function_call"
    assert len(snap.warnings) == 1 and "more counts than CPUs" in snap.warnings[0]


def test_single_value_lines():
    text = "\n".join([header([0, 1, 2]), single_row("ERR", 12), single_row("MIS", 0),
                      count_row("CAL", [1, 2, 3], "Function call interrupts")]) + "\n"
    snap = parse(text)
    assert snap.lines["ERR"] == IrqLine("ERR", {}, "", single=12)
    assert snap.lines["ERR"].total == 12
    assert snap.lines["MIS"].single == 0
    later = text.replace("        12", "        15")
    diff = diff_interrupts(snap, parse(later))
    assert diff.lines["ERR"].single == 3 and diff.lines["ERR"].per_cpu == {}
    assert diff.lines["ERR"].total == 3


# --- counters going backwards and wrapping --------------------------------------------


def test_counter_went_backwards_is_negative_with_warning():
    before = parse(x86_interrupts([0, 1], {"CAL": {0: 100, 1: 100}, "ERR": 9}))
    after = parse(x86_interrupts([0, 1], {"CAL": {0: 40, 1: 130}, "ERR": 2}))
    diff = diff_interrupts(before, after)
    assert diff.lines["CAL"].per_cpu == {0: -60, 1: 30}
    assert diff.lines["ERR"].single == -7
    assert any(w.startswith("CAL: counter went backwards on CPU 0 (CPU0: 100 -> 40)") for w in diff.warnings)
    assert "ERR: counter went backwards (9 -> 2)" in diff.warnings


def test_counter_wrapped_at_2_32():
    before = parse(x86_interrupts([0, 1], {"LOC": {0: 4294967290, 1: 10}}))
    after = parse(x86_interrupts([0, 1], {"LOC": {0: 5, 1: 20}}))
    diff = diff_interrupts(before, after)
    assert diff.lines["LOC"].per_cpu == {0: 11, 1: 10}
    assert diff.warnings == ["LOC: counter wrapped past 2^32 on CPU 0; assumed one wrap"]


def test_backwards_on_many_cpus_is_one_warning():
    cpus = list(range(64))
    diff = diff_interrupts(parse(x86_interrupts(cpus, {"CAL": lambda c: 50})),
                           parse(x86_interrupts(cpus, {"CAL": lambda c: 40 if c < 32 else 60})))
    backwards = [w for w in diff.warnings if "backwards" in w]
    assert len(backwards) == 1 and "CPU 0-31 " in backwards[0]
    assert diff.lines["CAL"].total == 32 * -10 + 32 * 10


# --- lines that come and go --------------------------------------------------------------


def test_lines_in_one_snapshot_only_are_left_out_with_warnings():
    cpus = [0, 1]
    base = [header(cpus), count_row("CAL", [1, 1], "Function call interrupts")]
    before = parse("\n".join(base + [count_row("30", [1, 1], "PCI-MSI eth0")]) + "\n")
    after = parse("\n".join(base + [count_row("31", [1, 1], "PCI-MSI eth1")]) + "\n")
    diff = diff_interrupts(before, after)
    assert set(diff.lines) == {"CAL"}
    assert diff.warnings == [
        "30: only in the first snapshot; left out",
        "31: only in the second snapshot; left out",
    ]


def test_irq_description_change_is_reported():
    cpus = [0, 1]
    before = parse(header(cpus) + "\n" + count_row("30", [1, 1], "PCI-MSI eth0") + "\n")
    after = parse(header(cpus) + "\n" + count_row("30", [2, 1], "PCI-MSI nvme0q1") + "\n")
    diff = diff_interrupts(before, after)
    assert diff.lines["30"].per_cpu == {0: 1, 1: 0}
    assert diff.lines["30"].description == "PCI-MSI nvme0q1"
    assert len(diff.warnings) == 1 and "description changed" in diff.warnings[0]


def test_duplicate_label_keeps_first():
    text = header([0]) + "\n" + count_row("CAL", [1], "A") + "\n" + count_row("CAL", [2], "B") + "\n"
    snap = parse(text)
    assert snap.lines["CAL"].per_cpu == {0: 1}
    assert snap.warnings == ("test:3: duplicate label 'CAL'; kept the first",)


# --- truncated copies and garbage -------------------------------------------------------


def test_truncated_mid_line_drops_the_cut_line():
    full = x86_interrupts([0, 1, 2, 3], {"CAL": {0: 111111, 1: 222222, 2: 333333, 3: 444444}})
    cut = full[: full.index("222222") + 3]  # "CAL:     111111     222"
    snap = parse(cut)
    assert "CAL" not in snap.lines and "TLB" not in snap.lines
    assert "RES" in snap.lines
    assert len(snap.warnings) == 1 and "cut short" in snap.warnings[0]


def test_truncated_after_description_keeps_complete_line():
    full = x86_interrupts([0, 1], {"CAL": {0: 7, 1: 8}})
    cut = full[: full.index("Function call interrupts") + len("Function call interrupts")]
    snap = parse(cut)
    assert snap.lines["CAL"].per_cpu == {0: 7, 1: 8}
    assert snap.warnings == ()


def test_truncated_single_value_line_is_dropped():
    full = x86_interrupts([0, 1], {"ERR": 123})
    cut = full[: full.index("123") + 2]
    snap = parse(cut)
    assert "ERR" not in snap.lines
    assert "cut short" in snap.warnings[0]


def test_diff_of_truncated_copy_warns_about_missing_lines():
    cpus = list(range(256))
    full = x86_interrupts(cpus, {"CAL": lambda c: c})
    cut = full[: full.index("TLB:") + 200]
    diff = diff_interrupts(parse(full), parse(cut))
    assert "CAL" in diff.lines and "TLB" not in diff.lines
    missing = [w for w in diff.warnings if "only in the first snapshot" in w]
    assert missing == ["TLB, TRM, THR, MCE, MCP, HYP, ERR, MIS (+2 more): only in the first snapshot; left out"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("\n\n  \n", "empty"),
        ("hello world\n", "not a /proc/interrupts header"),
        ("nr_free_pages 881165\nnr_zone_active_anon 380\n", "not a /proc/interrupts header"),
        ("           CPU0       CPU1\n", "no interrupt lines"),
        ("           CPU0       CP", "not a /proc/interrupts header"),
        ("CPU0 CPU0\nCAL: 1 2 Function call interrupts\n", "names a CPU twice"),
        ("CPU0 CPU1\nthis is not: 1 2 x\n", "test:2: not an interrupt line"),
        ("CPU0 CPU1\nCAL 1 2 Function call interrupts\n", "test:2: not an interrupt line"),
        ("CPU0 CPU1\n\nCAL: Function call interrupts\n", "test:3: no counts on line 'CAL'"),
        ("CPU0 CPU1\nCAL: -1 2 x\n", "no counts"),
        ("CPU0\nCAL: 1 x\n" + "CPU0\nCAL: 1 x\n", "test:3: not an interrupt line"),
        ("CPU0 CPU1\nCA", "no interrupt lines"),
    ],
)
def test_garbage_is_an_input_error(text, message):
    with pytest.raises(InputError) as err:
        parse(text)
    assert message in str(err.value)
    assert str(err.value).startswith("test")


def test_missing_and_binary_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_interrupts(str(tmp_path / "nope"))
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00")
    with pytest.raises(InputError, match="not a text file"):
        read_interrupts(str(binary))


def test_format_interrupts_round_trips():
    snap = parse(x86_interrupts([0, 3, 5], {"CAL": {0: 1, 3: 2, 5: 3}, "ERR": 4}))
    again = parse(format_interrupts(snap))
    assert again.cpus == snap.cpus
    assert again.lines == snap.lines


# --- vmstat, meminfo, cpulists ----------------------------------------------------------


def test_recorded_vmstat_and_meminfo():
    vm = read_vmstat(str(DATA / "x86-kvm-2cpu.vmstat"))
    assert len(vm) == 192
    assert vm["nr_free_pages"] > 0 and "thp_collapse_alloc" in vm
    mem = read_meminfo(str(DATA / "x86-kvm-2cpu.meminfo"))
    assert mem["MemTotal"] == 24684092 * 1024
    assert mem["HugePages_Total"] == 0  # no unit: a count, not bytes
    assert mem["Hugepagesize"] == 2048 * 1024


def test_keyvalue_garbage_and_diff():
    with pytest.raises(InputError, match="x:2: expected 'name value'"):
        parse_keyvalue("a 1\nb two\n", "x")
    with pytest.raises(InputError, match="empty"):
        parse_keyvalue("\n", "x")
    with pytest.raises(InputError):
        parse_keyvalue(X86_BEFORE.read_text(), "x")
    assert diff_keyvalue({"a": 1, "b": 5, "gone": 1}, {"a": 4, "b": 2, "new": 9}) == {"a": 3, "b": -3}


@pytest.mark.parametrize(
    "text, cpus",
    [("0-3,8,10-11", [0, 1, 2, 3, 8, 10, 11]), ("5", [5]), ("", []), ("0-1\n", [0, 1])],
)
def test_cpulist_round_trip(text, cpus):
    assert parse_cpulist(text) == cpus
    assert format_cpulist(cpus) == text.strip()


@pytest.mark.parametrize("text", ["0-", "a", "3-1", "0,,1", "-1"])
def test_bad_cpulist(text):
    with pytest.raises(InputError):
        parse_cpulist(text)


# --- the real files of this machine -------------------------------------------------------


def test_real_proc_interrupts():
    snap = read_interrupts()
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    assert list(snap.cpus) == online
    assert snap.warnings == ()
    assert snap.by_canonical("function_call") is not None
    assert all(v >= 0 for line in snap.lines.values() for v in line.per_cpu.values())


def test_real_proc_interrupts_two_reads_diff_non_negative():
    first = read_interrupts()
    time.sleep(0.2)
    os.sched_yield()
    second = read_interrupts()
    diff = diff_interrupts(first, second)
    assert diff.warnings == []
    cal = diff.canonical("function_call")
    assert cal is not None and set(cal.per_cpu) == set(first.cpus)
    assert all(d >= 0 for d in cal.per_cpu.values())
    assert all(d >= 0 for line in diff.lines.values() for d in line.per_cpu.values())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "i686", "i386"), reason=f"{STRICT_SKIP_TAG} x86 labels")
def test_real_x86_has_cal_and_tlb_with_canonical_names():
    snap = read_interrupts()
    assert snap.lines["CAL"].canonical == "function_call"
    assert snap.lines["TLB"].canonical == "tlb_shootdown"
    assert snap.by_canonical("tlb_shootdown").label == "TLB"
    assert snap.lines["ERR"].single is not None


def test_real_vmstat_and_meminfo():
    first = read_vmstat()
    second = read_vmstat()
    assert "nr_free_pages" in first and "pgfault" in first
    delta = diff_keyvalue(first, second)
    assert delta["pgfault"] >= 0
    mem = read_meminfo()
    assert mem["MemTotal"] > 0 and mem["MemTotal"] % 1024 == 0
