"""The QEMU layer: command lines, console parsing, and real QEMU boots of a real kernel
built from Debian's linux-source (panic, timeout, a collect inside the guest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import STRICT_SKIP_TAG

from tlbprobe.errors import InputError
from tlbprobe.vm import guest as g
from tlbprobe.kernel.build import KernelSpec, OUR_PATCHES, build_kernel, check_patch, variant_patches

KERNEL_SOURCE = sorted(Path("/usr/src").glob("linux-source-*.tar.xz"))
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason=f"{STRICT_SKIP_TAG} qemu-system-x86 not installed (install.sh --with-qemu)")
needs_source = pytest.mark.skipif(not KERNEL_SOURCE,
                                  reason=f"{STRICT_SKIP_TAG} linux-source not installed (install.sh --with-qemu)")


# -- pure functions -----------------------------------------------------------------------

def test_qemu_command_shares_root_read_only_and_output_writable(tmp_path):
    spec = g.GuestSpec(kernel=tmp_path / "bzImage", smp=4, memory="4G")
    cmd = g.qemu_command(spec, "tcg", tmp_path / "init.sh", tmp_path / "out")
    line = " ".join(cmd)
    # single-threaded TCG: multi-threaded TCG panics at boot now and then (int3 oops)
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=single" and cmd[cmd.index("-cpu") + 1] == "max"
    assert g.qemu_command(spec, "kvm", tmp_path / "i", tmp_path / "o")[2] == "kvm"
    assert cmd[cmd.index("-smp") + 1] == "4" and cmd[cmd.index("-m") + 1] == "4G"
    assert "path=/,security_model=none,readonly=on" in line
    assert f"path={tmp_path / 'out'},security_model=none" in line and "readonly" not in line.split("id=out")[1]
    append = cmd[cmd.index("-append") + 1]
    assert f"init={tmp_path / 'init.sh'}" in append and "panic=-1" in append and "rootfstype=9p" in append
    assert "-no-reboot" in cmd


@pytest.mark.parametrize("pv, expected", [(None, "host"), ("off", "host,-kvm-pv-tlb-flush"),
                                          ("on", "host,+kvm-pv-tlb-flush"),
                                          # KVM's own flush, installed later in boot, would replace the wrapper
                                          ("wrapper", "host,-kvm-pv-tlb-flush")])
def test_kvm_cpu_model_follows_pv_tlb_flush(pv, expected):
    assert g.cpu_model("kvm", pv) == expected
    assert g.cpu_model("tcg", pv) == "max"


def test_the_wrapper_is_switched_on_by_the_command_line_and_read_as_pv(tmp_path):
    from tlbprobe.kernel.build import WRAP_FLUSH_PARAM, WRAP_FLUSH_PATCH
    from tlbprobe.measure.host import detect_flush_mode

    spec = g.GuestSpec(kernel=tmp_path / "bzImage", pv_tlb_flush="wrapper")
    append = lambda s: g.qemu_command(s, "tcg", tmp_path / "i", tmp_path / "o")[-9]
    assert WRAP_FLUSH_PARAM in append(spec).split()
    assert WRAP_FLUSH_PARAM not in append(g.GuestSpec(kernel=tmp_path / "bzImage"))
    # the patch's own pr_notice() is what the host facts recognise
    line = next(l for l in WRAP_FLUSH_PATCH.read_text().splitlines() if "pr_notice(" in l)
    printed = line.split('"')[1].replace("\\n", "")
    log = f"[    0.000000] Linux version 6.12.118\n[    0.000000] {printed}\n"
    mode, evidence = detect_flush_mode(["hypervisor"], log, True)
    assert mode == "pv" and "test-only wrapper" in evidence and "tlbprobe: test-only paravirtual TLB flush" in evidence
    assert detect_flush_mode(["hypervisor"], "[    0.000000] Linux version 6.12.118\n", True)[0] == "native"
    image = tmp_path / "bzImage"
    header = bytearray(0x300)  # just the boot protocol's two magic numbers
    header[0x1FE:0x200], header[0x202:0x206] = b"\x55\xaa", b"HdrS"
    image.write_bytes(bytes(header))
    with pytest.raises(InputError, match="choose on, off or wrapper"):
        g.check_spec(g.GuestSpec(kernel=image, pv_tlb_flush="maybe"))


@needs_source
def test_the_wrapper_patch_applies_with_and_without_the_series(tmp_path):
    """Both kernels of a --pv-tlb-flush wrapper A/B carry it, the patched one after the series."""
    from tlbprobe.kernel.build import WRAP_FLUSH_PATCH, debian_tarball, unpacked

    tree = unpacked(debian_tarball())
    if tree is None:
        pytest.skip(f"{STRICT_SKIP_TAG} the Debian tree is not unpacked yet (a kernel build unpacks it)")
    check_patch(WRAP_FLUSH_PATCH, tree)
    copy = tmp_path / "tree"
    for rel in ("arch/x86/mm/tlb.c", "arch/x86/include/asm/tlb.h", "include/asm-generic/tlb.h", "mm/mmu_gather.c"):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / rel, copy / rel)
    for p in OUR_PATCHES:
        check_patch(p, copy)
        import subprocess
        subprocess.run(["patch", "-s", "-p1", "-i", str(p)], cwd=copy, check=True)
    check_patch(WRAP_FLUSH_PATCH, copy)


@needs_source
@pytest.mark.parametrize("extra", [[], ["wrapper"], ["fault"]])
def test_the_check_patch_goes_under_the_series_the_wrapper_and_the_fault(tmp_path, extra):
    """repro --audit applies the instrumentation first, then the wrapper (--pv-tlb-flush
    wrapper), then the series, then a --patch such as the 0003 fault injection."""
    import subprocess
    from tlbprobe.kernel.build import CHECK_PATCH, WRAP_FLUSH_PATCH, debian_tarball, unpacked

    tree = unpacked(debian_tarball())
    if tree is None:
        pytest.skip(f"{STRICT_SKIP_TAG} the Debian tree is not unpacked yet (a kernel build unpacks it)")
    fault = sorted((CHECK_PATCH.parents[1] / "fault-injection").glob("0003-*.patch"))
    chain = [CHECK_PATCH] + ([WRAP_FLUSH_PATCH] if "wrapper" in extra else []) + list(OUR_PATCHES) + \
        (fault if "fault" in extra else [])
    copy = tmp_path / "tree"
    for rel in ("arch/x86/mm/tlb.c", "arch/x86/include/asm/tlb.h", "arch/x86/include/asm/paravirt.h",
                "arch/x86/kernel/paravirt.c", "include/asm-generic/tlb.h", "mm/mmu_gather.c"):
        if (tree / rel).exists():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / rel, copy / rel)
    for p in chain:
        check_patch(p, copy)
        subprocess.run(["patch", "-s", "-p1", "-i", str(p)], cwd=copy, check=True)


def test_console_parsing_finds_statuses_and_panics():
    console = ("[    0.1] Linux version 6.12.117\nTLBPROBE-INIT-START\nhello\nTLBPROBE-EXIT=0:0\n"
               "TLBPROBE-EXIT=1:3\n")
    assert g.find_panic(console) is None
    panic = console + "[   9.9] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n"
    assert g.find_panic(panic) == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    assert g.find_panic("[ 5.1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [python3:77]") is None


def test_the_newest_debian_source_is_picked_by_version_not_by_name(tmp_path, monkeypatch):
    from tlbprobe.kernel import build as kbuild

    for v in ("6.1", "6.9", "6.12"):
        (tmp_path / f"linux-source-{v}.tar.xz").write_bytes(b"")
    monkeypatch.setattr(kbuild, "DEBIAN_TARBALLS", str(tmp_path / "linux-source-*.tar.xz"))
    assert kbuild.debian_tarball().name == "linux-source-6.12.tar.xz"  # by name, 6.9 would win
    assert kbuild.is_tarball(tmp_path / "linux-source-6.1.tar.xz") and not kbuild.is_tarball(tmp_path)


def test_source_that_is_neither_tree_nor_tarball_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for bad in (tmp_path, tmp_path / "notes.txt"):
        with pytest.raises(InputError, match="not a kernel source tree"):
            build_kernel(KernelSpec(source=bad, fragments=[], patches=[]))


def test_config_check_accepts_either_name_of_hugetlb_pmd_sharing(tmp_path):
    from tlbprobe.kernel.build import REQUIRED_OPTIONS, BuildError, check_config

    common = [o.split("|")[0] for o in REQUIRED_OPTIONS if "HUGE_PMD" not in o and "PMD_PAGE" not in o]
    for sharing in ("CONFIG_HUGETLB_PMD_PAGE_TABLE_SHARING", "CONFIG_ARCH_WANT_HUGE_PMD_SHARE"):  # 6.8+, 6.1
        (tmp_path / ".config").write_text("".join(f"{o}=y\n" for o in common + [sharing]) + "CONFIG_NR_CPUS=64\n")
        check_config(tmp_path)
    (tmp_path / ".config").write_text("".join(f"{o}=y\n" for o in common) + "# CONFIG_9P_FS is not set\n"
                                      "CONFIG_NR_CPUS=64\n")
    with pytest.raises(BuildError, match="CONFIG_HUGETLB_PMD_PAGE_TABLE_SHARING or CONFIG_ARCH_WANT_HUGE_PMD_SHARE"):
        check_config(tmp_path)


@needs_source
@pytest.mark.slow
def test_minimal_base_has_what_jobs_need_and_a_lost_dependency_is_named(tmp_path):
    """The real tree's Kconfig (configuring only, seconds): the minimal base passes the
    check; a .config that drops PARAVIRT (and with it MMU_GATHER_RCU_TABLE_FREE, which x86
    selects only with PARAVIRT, and KVM_GUEST, which depends on it) and THP fails after
    olddefconfig, naming each option lost."""
    import re
    import subprocess

    from tlbprobe.kernel import build as kb

    tree = kb.unpack(kb.debian_tarball(), log=print)
    build = tmp_path / "o"
    kb.configure(tree, build, [kb.DEFAULT_FRAGMENT], kb.CONFIG_BASES["minimal"])
    kb.check_config(build)
    config = (build / ".config").read_text()
    for option in ("CONFIG_PARAVIRT", "CONFIG_TRANSPARENT_HUGEPAGE"):
        config = re.sub(rf"^{option}=y$", f"# {option} is not set", config, flags=re.M)
    (build / ".config").write_text(config)
    subprocess.run(["make", "-s", "-C", str(tree), f"O={build}", "olddefconfig"], check=True, capture_output=True)
    with pytest.raises(kb.BuildError) as e:
        kb.check_config(build)
    for option in ("CONFIG_PARAVIRT", "CONFIG_KVM_GUEST", "CONFIG_MMU_GATHER_RCU_TABLE_FREE",
                   "CONFIG_TRANSPARENT_HUGEPAGE"):
        assert f"{option} (" in str(e.value)


def test_statuses_come_from_the_share_not_from_the_console(tmp_path):
    (tmp_path / ".status-0").write_text("0\n")
    (tmp_path / ".status-1").write_text("3\n")
    (tmp_path / ".status-3").write_text("0\n")  # after a gap: not counted
    assert g.read_statuses(tmp_path) == [0, 3]
    script = g.init_script([["true"]])
    assert f"echo $rc > {g.GUEST_OUT}/.status-0" in script


def test_init_script_reports_each_status_and_powers_off():
    text = g.init_script([["python3", "-m", "tlbprobe", "collect", "--size", "1G"], ["true"]], Path("/repo"))
    assert text.startswith("#!/bin/sh")
    assert 'echo "TLBPROBE-EXIT=0:$rc"' in text and 'echo "TLBPROBE-EXIT=1:$rc"' in text
    assert "python3 -m tlbprobe collect --size 1G" in text
    assert "mount -t 9p" in text and "echo o > /proc/sysrq-trigger" in text and "cd /repo" in text
    # the host's /tmp must stay visible in the guest: checkouts (CI clones) live there
    assert "tmpfs /tmp" not in text


def test_bad_guest_options_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such kernel"):
        g.run_guest(g.GuestSpec(kernel=tmp_path / "nope"), [["true"]], tmp_path / "o")
    k = tmp_path / "bzImage"
    k.write_bytes(b"x")
    with pytest.raises(InputError, match="not a bootable x86 kernel image"):
        g.run_guest(g.GuestSpec(kernel=k), [["true"]], tmp_path / "o")
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF" + bytes(0x300))
    with pytest.raises(InputError, match="a vmlinux, not a bzImage"):
        g.run_guest(g.GuestSpec(kernel=elf), [["true"]], tmp_path / "o")
    header = bytearray(0x300)  # just the boot protocol's two magic numbers
    header[0x1FE:0x200], header[0x202:0x206] = b"\x55\xaa", b"HdrS"
    k.write_bytes(bytes(header))
    with pytest.raises(InputError, match="needs KVM"):
        g.run_guest(g.GuestSpec(kernel=k, accel="tcg", pv_tlb_flush="on"), [["true"]], tmp_path / "o")


def test_our_patch_is_the_patched_variant():
    assert OUR_PATCHES and all(p.suffix == ".patch" for p in OUR_PATCHES)
    assert variant_patches("baseline") == []
    assert variant_patches("patched") == OUR_PATCHES
    assert variant_patches("patched", [Path("mine.patch")]) == [Path("mine.patch")]


def test_a_patch_that_does_not_apply_names_file_and_hunk(tmp_path):
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "x.c").write_text("one\ntwo\nthree\n")
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,3 +1,3 @@\n one\n-TWO\n+2\n three\n")
    with pytest.raises(InputError, match=r"bad.patch: does not apply .*mm/x.c hunk #1"):
        check_patch(bad, tmp_path)
    good = tmp_path / "good.patch"
    good.write_text("--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three\n")
    check_patch(good, tmp_path)  # no exception
    assert (tmp_path / "mm" / "x.c").read_text() == "one\ntwo\nthree\n", "a dry run changes nothing"


# -- real QEMU, real kernel -------------------------------------------------------------------

@pytest.fixture(scope="session")
def baseline_kernel():
    """Debian's linux-source built with our guest config (cached; the first build takes ~15 min)."""
    return build_kernel(KernelSpec(), log=print)


DEBIAN12_SOURCE = Path("/usr/src/linux-source-6.1.tar.xz")
needs_debian12_source = pytest.mark.skipif(not DEBIAN12_SOURCE.exists(),
                                           reason=f"{STRICT_SKIP_TAG} linux-source-6.1 not installed (install.sh --with-qemu)")


@needs_qemu
@needs_debian12_source
@pytest.mark.slow
def test_debian12_kernel_without_csd_events_is_attributed_with_kprobes(tmp_path, capsys):
    """Debian 12's own kernel version (6.1) has no csd/ipi trace events; this host's kernel
    has no kprobe events, so the fallback runs here only in a guest. 6.1.y has the batched
    hugetlb unshare backport: one sync per unshare, and remote wake-ups beside it."""
    from tlbprobe.cli import main

    kernel = build_kernel(KernelSpec(source=DEBIAN12_SOURCE), log=print)  # cached; ~6 min cold
    assert kernel.release.startswith("6.1.")
    out = tmp_path / "guest-6.1"
    rc = main(["qemu", "collect", "--kernel", str(kernel.bzimage), "--smp", "2", "--memory", "3G", "--accel", "tcg",
               "--out", str(out), "--", "--workload", "hugetlb-unshare", "--size", "1G", "--cycles", "50",
               "--repeat", "1", "--idle-seconds", "1", "--kernel-variant", "baseline"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["ops"] == 50 and "queued" not in s
    assert s["attributed"]["tlb_remove_table_smp_sync"] == 50, s["attributed"]
    log = (out / "log.txt").read_text()
    assert "attributing with kprobes on tlb_remove_table_smp_sync" in log
    assert log.count("restored kprobe") == log.split("attributing with kprobes on ")[1].split(" (")[0].count(",") + 1
    import pandas as pd
    attr = pd.read_csv(out / "attribution.csv")
    assert "kprobe" in set(attr.event) and not any(e.startswith(("csd_", "ipi_")) for e in attr.event)
    from tlbprobe.report import build_report
    (a,) = build_report([str(out)]).runs
    assert a.verdict.basis == "traced" and a.verdict.status == "matches", a.verdict


@needs_qemu
@needs_source
@pytest.mark.slow
def test_guest_that_panics_is_reported_with_console_tail(baseline_kernel, tmp_path):
    spec = g.GuestSpec(kernel=baseline_kernel.bzimage, smp=2, memory="512M", accel="tcg", timeout=300,
                       extra_append="init=/no/such/init")
    with pytest.raises(g.GuestError) as e:
        g.run_guest(spec, [["true"]], tmp_path / "share")
    msg = str(e.value)
    assert "panicked" in msg and "Kernel panic" in msg
    # no init to run: a second boot would panic the same way, so there is none
    assert not (tmp_path / "share" / "console-first-boot.log").exists()
    assert (tmp_path / "share" / "console.log").exists()


def test_only_early_panics_that_may_not_repeat_are_retried():
    early = "Kernel panic - not syncing: Fatal exception in interrupt"
    assert g.retry_boot_panic(early, "[ 0.3] Linux version 6.12.117\n")
    assert not g.retry_boot_panic(early, f"{g.START_MARK}\n")  # our init ran: the panic is the workload's
    assert not g.retry_boot_panic("Kernel panic - not syncing: Requested init /x/init.sh failed (error -2).", "")
    assert not g.retry_boot_panic("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", "")
    assert not g.retry_boot_panic(None, "")


@needs_qemu
@needs_source
@pytest.mark.slow
def test_guest_that_hangs_is_killed_at_the_timeout(baseline_kernel, tmp_path):
    spec = g.GuestSpec(kernel=baseline_kernel.bzimage, smp=2, memory="512M", accel="tcg", timeout=3)
    with pytest.raises(g.GuestError, match="did not finish within 3 s"):
        g.run_guest(spec, [["sleep", "600"]], tmp_path / "share")


@needs_qemu
@needs_source
@pytest.mark.slow
def test_guest_runs_host_commands_and_returns_their_statuses(baseline_kernel, tmp_path):
    spec = g.GuestSpec(kernel=baseline_kernel.bzimage, smp=2, memory="1G", accel="auto", timeout=600)
    marker = tmp_path / "marker"  # under the host's /tmp, like a CI clone
    marker.write_text("seen from the guest\n")
    res = g.run_guest(spec, [["sh", "-c", f"uname -r > {g.GUEST_OUT}/release; grep -c processor /proc/cpuinfo"],
                             ["sh", "-c", "exit 7"], ["grep", "-q", "seen from the guest", str(marker)]],
                      tmp_path / "share")
    assert res.statuses == [0, 7, 0]
    assert (tmp_path / "share" / "release").read_text().strip() == baseline_kernel.release
    assert res.accel == "tcg" or res.accel == "kvm"


@needs_qemu
@needs_source
@pytest.mark.slow
def test_qemu_collect_brings_the_run_back_with_the_guest_facts(baseline_kernel, tmp_path, capsys, monkeypatch):
    import yaml

    from tlbprobe.cli import main

    monkeypatch.chdir(tmp_path)  # a relative --out: the guest's init= must still be absolute
    out = tmp_path / "guest-run"
    rc = main(["qemu", "collect", "--kernel", str(baseline_kernel.bzimage), "--smp", "2", "--memory", "1G",
               "--accel", "tcg", "--out", "guest-run", "--", "--size", "64M", "--repeat", "1", "--idle-seconds", "0"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["ops"] == 32 and summary["online_cpus"] == 2
    assert summary["kernel_release"] == baseline_kernel.release and summary["flush_mode"] == "native"
    assert summary["queued"]["tlb_remove_table_smp_sync"] == 32
    assert 28 <= summary["attributed"]["tlb_remove_table_smp_sync"] <= 32  # a polling vCPU takes a call without IPI
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["qemu"]["accel"] == "tcg" and run["qemu"]["smp"] == 2 and run["qemu"]["cmdline"][0].endswith("qemu-system-x86_64")
    assert (out / "guest" / "console.log").read_text().count("TLBPROBE-EXIT=0:0") == 1
    assert "32 collapses" in capsys.readouterr().out


def test_qemu_collect_refuses_out_after_the_separator(tmp_path):
    from tlbprobe.cli import main

    k = tmp_path / "bzImage"
    k.write_bytes(b"x")
    assert main(["qemu", "collect", "--kernel", str(k), "--", "--out", str(tmp_path / "x")]) == 2


def test_a_series_applies_in_order_and_a_failure_leaves_the_tree_pristine(tmp_path):
    from tlbprobe.kernel.build import APPLIED, apply_series, reverse_series

    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "x.c").write_text("one\ntwo\nthree\n")
    p1 = tmp_path / "0001.patch"
    p1.write_text("--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three\n")
    p2 = tmp_path / "0002.patch"  # only applies on top of 0001
    p2.write_text("--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,3 +1,3 @@\n one\n-2\n+II\n three\n")
    apply_series([p1, p2], tree)
    assert (tree / "mm" / "x.c").read_text() == "one\nII\nthree\n"
    reverse_series(tree)
    assert (tree / "mm" / "x.c").read_text() == "one\ntwo\nthree\n" and not (tree / APPLIED).exists()
    bad = tmp_path / "0003.patch"
    bad.write_text("--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,3 +1,3 @@\n one\n-nope\n+3\n three\n")
    with pytest.raises(InputError, match=r"0003.patch: does not apply .*mm/x.c hunk #1"):
        apply_series([p1, p2, bad], tree)
    assert (tree / "mm" / "x.c").read_text() == "one\ntwo\nthree\n" and not (tree / APPLIED).exists()
    # a build killed with its patches applied is undone by the next one
    apply_series([p1], tree)
    reverse_series(tree)
    assert (tree / "mm" / "x.c").read_text() == "one\ntwo\nthree\n"


@needs_qemu
@needs_source
@pytest.mark.slow
def test_an_overflowing_trace_buffer_in_a_guest_keeps_the_run_and_the_exact_count(baseline_kernel, tmp_path):
    """The 4 GiB / 64-vCPU crash in CI time: a 4 KiB buffer overflows at 4 vCPUs. Both runs
    complete; the in-kernel counter keeps the sync count exact, the ring-buffer count falls
    back to CAL minus TLB; neither dies on the refused trace_marker."""
    from tlbprobe.vm.collect import run_jobs
    from tlbprobe.report import build_report

    spec = g.GuestSpec(kernel=baseline_kernel.bzimage, smp=4, memory="2G", accel="tcg", timeout=900)
    common = ["--size", "512M", "--repeat", "1", "--idle-seconds", "1", "--trace-buffer-kb", "4",
              "--kernel-variant", "baseline"]
    outs = [tmp_path / "perf", tmp_path / "trace"]
    statuses, _ = run_jobs(spec, [("perf", common), ("trace", common + ["--sync-counter", "trace"])], outs)
    assert statuses == [0, 0]
    for out in outs:
        s = json.loads((out / "summary.json").read_text())
        assert s["complete"] and s["ops"] == 256 and s["online_cpus"] == 4
        assert s["trace_lost_events"] > 0 or s.get("trace_errors"), s
    perf = json.loads((outs[0] / "summary.json").read_text())
    assert perf["queued_by"] == "perf-counter" and perf["queued"]["tlb_remove_table_smp_sync"] == 256 * 3
    a, b = build_report([str(o) for o in outs]).runs
    assert a.verdict.basis == "traced" and a.verdict.status == "matches", a.verdict
    assert b.verdict.basis == "CAL-TLB" and b.verdict.status == "matches", b.verdict


def test_guest_memory_follows_the_jobs_size_and_the_host_must_have_it(monkeypatch):
    from tlbprobe.commands import qemu as cmd
    from tlbprobe.errors import PreflightError

    assert cmd.guest_memory_for(None) == "4G" and cmd.guest_memory_for(256 << 20) == "4G"
    assert cmd.guest_memory_for(12 << 30) == "14G" and cmd.guest_memory_for(20 << 30) == "22G"
    from tlbprobe.measure import procfs
    from tlbprobe.run.job import build_job

    # a streamed collapse holds its window: 20G through 1G boots a 4G guest
    assert cmd.guest_memory_for_jobs([build_job({"size": 20 << 30, "window": 1 << 30})]) == "4G"
    assert cmd.guest_memory_for_jobs([build_job({"size": 20 << 30, "window": 6 << 30})]) == "8G"
    monkeypatch.setattr(procfs, "read_meminfo", lambda: {"MemAvailable": 23 << 30})
    cmd.check_host_memory("22G")
    with pytest.raises(PreflightError, match="needs --memory 23G .* MemAvailable is 23.0G"):
        cmd.check_host_memory("23G")
    cmd.check_host_memory("2048")  # QEMU's plain number is MiB


def test_smp_lists_and_the_sweep_table_fit_the_cover_letter():
    import argparse

    from tlbprobe.commands.qemu import smp_list
    from tlbprobe.report.sweep import SweepRow, render_table

    assert smp_list("64,4,16,4") == [4, 16, 64] and smp_list("8") == [8]
    for bad in ("1", "4,x", "", "300"):
        with pytest.raises(argparse.ArgumentTypeError):
            smp_list(bad)
    rows = [SweepRow(n, v, 6144, 1.0 if v == "baseline" else 0.0, 0.999 if v == "baseline" else 0.0,
                     6144.0 * (n - 1) if v == "baseline" else 3.0, 6144.0 * (n - 1) if v == "baseline" else 0.0,
                     6144.0 * (n - 1) if v == "baseline" else 0.0, 11.8, "matches", "tcg")
            for n in (4, 16, 64, 256) for v in ("baseline", "patched")]
    table = render_table(rows)
    assert max(len(line) for line in table.splitlines()) <= 72
    assert "1,566,720" in table and "ms/op under TCG" in table


@needs_qemu
@needs_source
@pytest.mark.slow
def test_repro_sweeps_vcpu_counts(tmp_path, capsys):
    """The sweep's whole code path in CI time: 2 and 8 vCPUs, both kernels, a small collapse."""
    from tlbprobe.cli import main

    out = tmp_path / "sweep"
    rc = main(["repro", "--smp", "2,8", "--size", "64M", "--accel", "tcg", "--out", str(out),
               "--junit", str(tmp_path / "junit.xml"), "--json", str(tmp_path / "repro.json")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads((out / "repro.json").read_text())
    rows = {(r["cpus"], r["variant"]): r for r in data["sweep"]}
    assert set(rows) == {(2, "baseline"), (2, "patched"), (8, "baseline"), (8, "patched")}
    for n in (2, 8):
        assert rows[(n, "baseline")]["traced_per_op_cpu"] == 1.0 and rows[(n, "patched")]["traced_per_op_cpu"] == 0.0
        assert rows[(n, "baseline")]["model_total"] == 32 * (n - 1)
    assert (out / "sweep.png").stat().st_size > 1000 and "vCPUs kernel" in printed
    import xml.etree.ElementTree as ET
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "0"
    assert json.loads((tmp_path / "repro.json").read_text())["ok"] is True
    assert max(len(line) for line in (out / "sweep.txt").read_text().splitlines()) <= 72


@needs_qemu
@needs_source
@pytest.mark.slow
def test_repro_with_the_wrapper_keeps_every_broadcast_on_the_patched_kernel(tmp_path, capsys):
    """The series' other branch under TCG: with tlbprobe's test-only paravirtual flush the
    patched kernel must send what the baseline sends, exactly, and the runs say why."""
    import yaml
    from tlbprobe.cli import main

    job = tmp_path / "collapse-64M.yaml"
    job.write_text("workload: collapse\nsize: 64M\nrepeat: 3\ncpu: 0\nidle_seconds: 1\n")
    out = tmp_path / "ab"
    rc = main(["repro", "--pv-tlb-flush", "wrapper", "--accel", "tcg", "--smp", "4", "--job", str(job),
               "--out", str(out), "--json", str(tmp_path / "repro.json")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    traced = {}
    for variant in ("baseline", "patched"):
        run = out / variant / "collapse-64M"
        meta = yaml.safe_load((run / "run.yaml").read_text())
        assert meta["host"]["flush_mode"] == "pv", meta["host"]["flush_mode_evidence"]
        assert "test-only wrapper" in meta["host"]["flush_mode_evidence"]
        assert meta["qemu"]["pv_tlb_flush"] == "wrapper"
        assert "tlbprobe_wrap_flush" in " ".join(meta["qemu"]["cmdline"])
        s = json.loads((run / "summary.json").read_text())
        assert s["ops"] == 3 * 32
        traced[variant] = s["queued"]["tlb_remove_table_smp_sync"]
    assert traced["baseline"] == traced["patched"] == 3 * 32 * 3, traced
    assert json.loads((tmp_path / "repro.json").read_text())["ok"] is True


@needs_qemu
@needs_source
@pytest.mark.slow
def test_repro_audit_sees_every_skip_covered_on_a_small_collapse(tmp_path, capsys):
    """repro --audit end to end on the smallest job: both kernels with the check
    instrumentation, the check in both guests, the static audit of the patched tree, and
    the per-caller join: the baseline skips nothing, the patched kernel skips every sync
    of the collapse and sees each covered, nothing violates, nothing is unaudited."""
    from tlbprobe.cli import main

    out = tmp_path / "audit"
    rc = main(["repro", "--audit", "--accel", "tcg", "--smp", "4", "--job", "audit-collapse", "--out", str(out),
               "--json", str(tmp_path / "repro.json")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    checks = {v: json.loads((out / v / "audit-collapse" / "summary.json").read_text())["check"]
              for v in ("baseline", "patched")}
    assert checks["baseline"]["hook"] == "absent" and checks["patched"]["hook"] == "present"
    [(fn, base)] = checks["baseline"]["callers"].items()
    patched = checks["patched"]["callers"][fn]
    assert base["calls"] == 32 and base["skipped"] == 0
    assert patched["skipped"] == patched["calls"] == 32 and patched["covered"] == patched["skipped"]
    assert patched["violations"] == 0 == base["violations"]
    audit = json.loads((out / "repro.json").read_text())["audit"]
    assert audit["ok"] is True and audit["unaudited"] == [] and audit["violations"] == 0
    row = next(r for r in audit["callers"] if r["caller"] == "collapse_huge_page")
    assert row["sent_baseline"] == 32 and row["skipped_patched"] == 32
    assert json.loads((tmp_path / "repro.json").read_text())["audit"]["ok"] is True
    table = printed.split("===== audit =====")[1].split("===== verdict")[0]
    assert "collapse_huge_page" in table and max(len(line) for line in table.splitlines()) <= 72


@pytest.mark.parametrize("name", ["/etc/passwd", "a/../../etc/passwd", "a/mm/../../../x"])
def test_a_patch_that_writes_outside_the_tree_is_refused_before_patch_runs(tmp_path, name):
    from tlbprobe.kernel.build import check_patch

    patch = tmp_path / "evil.patch"
    patch.write_text(f"--- a/mm/x.c\n+++ {name}\n@@ -0,0 +1 @@\n+x\n")
    with pytest.raises(InputError, match="outside the kernel tree"):
        check_patch(patch, tmp_path)
    fine = tmp_path / "fine.patch"
    fine.write_text("--- a/mm/x.c\n+++ b/mm/x.c\n@@ -0,0 +1 @@\n+x\n")
    check_patch(fine, tmp_path)  # a patch that creates mm/x.c inside the tree is fine


def test_junit_has_a_case_per_job_and_kernel_failing_with_the_verdict():
    import xml.etree.ElementTree as ET

    from tlbprobe.workflows.results import Case, junit_xml

    xml = junit_xml("tlbprobe repro", [
        Case("collapse-1G[baseline]", True, "matches", "table"),
        Case("collapse-1G[patched]", False, "differs: 3072 vs 0 expected", "table <&>"),
        Case("hugetlb[patched]", None, "no data")])
    suite = ET.fromstring(xml.split("\n", 1)[1])
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failed = suite.find("testcase[@name='collapse-1G[patched]']/failure")
    assert failed.get("message") == "differs: 3072 vs 0 expected"
    assert suite.find("testcase[@name='collapse-1G[patched]']/system-out").text == "table <&>"


def pristine_source():
    """The unpacked Debian source, unless a build is applying its patches right now."""
    from tlbprobe.kernel.build import APPLIED, debian_tarball, unpack

    src = unpack(debian_tarball(), log=lambda s: None)
    if (src / APPLIED).is_dir() and any((src / APPLIED).iterdir()):
        pytest.skip("a kernel build has its patches applied to the source right now")
    return src


def _split_our_patch() -> str:
    """Our one patch as a two-patch mbox, the way `git format-patch --stdout` would send
    it: 1/2 the generic hook (include/asm-generic, mm/), 2/2 the x86 side."""
    text = OUR_PATCHES[0].read_text()
    head, _, body = text.partition("\n---\n")
    files = ["diff " + f for f in ("\n" + body).split("\ndiff ")[1:]]
    generic = [f for f in files if "arch/x86" not in f.splitlines()[0]]
    x86 = [f for f in files if "arch/x86" in f.splitlines()[0]]
    mails = []
    for i, (subj, part) in enumerate((("mm/mmu_gather: add tlb_table_flush_implies_ipi_broadcast()", generic),
                                      ("x86/mm: skip the table sync after an IPI flush", x86)), 1):
        mails.append(f"From 0123456789abcdef0123456789abcdef0123456{i} Mon Sep 17 00:00:00 2001\n"
                     f"From: A Developer <dev@example.invalid>\nSubject: [PATCH v2 {i}/2] {subj}\n\n"
                     f"explained\n---\n" + "".join(p if p.endswith("\n") else p + "\n" for p in part) + "-- \n2.39.5\n\n")
    return "".join(mails)


def test_an_mbox_series_splits_into_patches_named_by_subject(tmp_path):
    from tlbprobe.kernel.series import expand, subject

    mbox = tmp_path / "series.mbx"
    mbox.write_text(_split_our_patch())
    parts = expand([mbox], tmp_path / "work")
    assert [p.name for p in parts] == ["0001-mm-mmu-gather-add-tlb-table-flush-implies-ipi-broadcast.patch",
                                       "0002-x86-mm-skip-the-table-sync-after-an-IPI-flush.patch"]
    assert subject("Subject: [PATCH v7 2/2] x86/mm: a\n  folded title\n") == "x86/mm: a folded title"
    d = tmp_path / "dir"
    d.mkdir()
    for p in reversed(parts):
        (d / p.name).write_text(p.read_text())
    assert [p.name for p in expand([d], tmp_path / "work")] == [p.name for p in parts]
    assert expand([OUR_PATCHES[0]], tmp_path / "work") == [OUR_PATCHES[0]]  # a plain diff stays as it is
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without \\*.patch files"):
        expand([tmp_path / "empty"], tmp_path / "work")


@needs_source
@pytest.mark.slow
def test_the_split_series_gives_the_same_tree_as_the_single_patch(tmp_path):
    from tlbprobe.kernel.build import apply_series
    from tlbprobe.kernel.series import expand

    src = pristine_source()
    touched = ["arch/x86/include/asm/tlb.h", "include/asm-generic/tlb.h", "mm/mmu_gather.c"]
    trees = []
    for name, patches in (("single", [OUR_PATCHES[0]]), ("series", None)):
        tree = tmp_path / name
        for f in touched:
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / f, tree / f)
        if patches is None:
            mbox = tmp_path / "series.mbx"
            mbox.write_text(_split_our_patch())
            patches = expand([mbox], tmp_path / "work")
        apply_series(patches, tree)
        trees.append({f: (tree / f).read_text() for f in touched})
    assert trees[0] == trees[1]


def test_commits_of_a_git_tree_become_an_export_and_a_series(tmp_path):
    """--commits A..B: A exported, A..B formatted; the series on the export gives B's
    files, and the user's tree (its checkout, its index) is not touched."""
    import subprocess

    from tlbprobe.kernel.series import from_commits

    tree = tmp_path / "linux"
    tree.mkdir()

    def git(*a):
        return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                               *a], check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    (tree / "Makefile").write_text("VERSION = 6\n")
    (tree / "mm").mkdir()
    (tree / "mm" / "mmu_gather.c").write_text("void sync(void) {}\n")
    git("add", "-A")
    git("commit", "-qm", "base")
    git("tag", "base")
    (tree / "mm" / "mmu_gather.c").write_text("void sync(void) { if (skip) return; }\n")
    git("commit", "-qam", "mm: skip the sync")
    (tree / "arch").mkdir()
    (tree / "arch" / "tlb.h").write_text("#define SKIP 1\n")
    git("add", "-A")
    git("commit", "-qm", "x86: say when")
    (tree / "mm" / "mmu_gather.c").write_text("uncommitted\n")  # the user's work in progress
    export, patches = from_commits(tree, "base..HEAD", tmp_path / "cache")
    assert [p.name for p in patches] == ["0001-mm-skip-the-sync.patch", "0002-x86-say-when.patch"]
    assert (export / "mm" / "mmu_gather.c").read_text() == "void sync(void) {}\n" and not (export / "arch").exists()
    from tlbprobe.kernel.build import apply_series
    apply_series(patches, export)
    assert (export / "arch" / "tlb.h").read_text() == "#define SKIP 1\n"
    assert (tree / "mm" / "mmu_gather.c").read_text() == "uncommitted\n" and git("status", "--short") == "M mm/mmu_gather.c"
    with pytest.raises(InputError, match="not a commit"):
        from_commits(tree, "base..nosuch", tmp_path / "cache")


@needs_source
@pytest.mark.slow
def test_the_split_series_has_the_cache_key_of_the_single_patch(tmp_path):
    """The same change cut into two patches is the same kernel: one cache entry."""
    from tlbprobe.kernel.build import plan_build

    pristine_source()
    mbox = tmp_path / "series.mbx"
    mbox.write_text(_split_our_patch())
    single = plan_build(KernelSpec(patches=[OUR_PATCHES[0]]))
    split = plan_build(KernelSpec(patches=[mbox]))
    assert len(split.spec.patches) == 2 and split.key == single.key
    assert plan_build(KernelSpec()).key != single.key


@needs_source
@pytest.mark.slow
def test_commits_of_a_linux_source_git_tree_with_our_patch(tmp_path, capsys):
    """A git tree made from Debian's linux-source (the files our patch touches, and the
    top Makefile) with our patch as a commit: `kernel build --commits` resolves it to the
    export of the base and a one-patch series that applies, and the key of a tree built
    from it differs between the variants. (The build itself is the --source/--patch one.)"""
    import subprocess

    from tlbprobe.cli import main

    src = pristine_source()
    tree = tmp_path / "linux"
    for f in ["Makefile", "arch/x86/include/asm/tlb.h", "include/asm-generic/tlb.h", "mm/mmu_gather.c"]:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f, tree / f)

    def git(*a):
        return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *a],
                              check=True, capture_output=True, text=True)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "linux-source 6.12")
    git("apply", str(OUR_PATCHES[0]))
    git("commit", "-qam", "mm/mmu_gather: skip the table-sync IPI when the TLB flush was an IPI")
    assert main(["kernel", "build", "--source", str(tree), "--commits", "HEAD~1..HEAD", "--variant", "patched",
                 "--dry-run", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["patches"]) == 1
    assert Path(plan["patches"][0]).name.startswith("0001-mm-mmu_gather-skip-the-table-sync-IPI")  # git's name
    assert main(["kernel", "build", "--source", str(tree), "--commits", "HEAD~1..HEAD", "--dry-run",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] != plan["key"]
    assert git("status", "--short").stdout == ""  # the user's tree untouched


@pytest.mark.slow
def test_gup_fast_through_gup_test_in_a_guest_with_the_guest_config(baseline_kernel, tmp_path):
    """The guest config has CONFIG_GUP_TEST: gup-fast's auto path finds
    /sys/kernel/debug/gup_test (debugfs mounted for the run) and pins through the kernel's
    own PIN_FAST_BENCHMARK loop, in 4 KiB and 2 MiB pages."""
    from tlbprobe.vm.collect import run_jobs

    spec = g.GuestSpec(kernel=baseline_kernel.bzimage, smp=2, memory="2G", accel="tcg", timeout=900)
    common = ["--workload", "gup-fast", "--threads", "2", "--calls", "20000", "--repeat", "1", "--idle-seconds", "1"]
    outs = [tmp_path / "small", tmp_path / "huge"]
    statuses, _ = run_jobs(spec, [("small", common), ("huge", common + ["--backing", "2m"])], outs)
    assert statuses == [0, 0]
    for out, huge in zip(outs, (0.0, 1.0)):
        s = json.loads((out / "summary.json").read_text())
        f = s["repeats"][0]["phases"]["workload"]["workload_figures"]
        assert f["gup_path"] == 1.0, "pinned through gup_test"              # PATH_CODES["gup_test"]
        assert f["threads"] == 2 and f["calls_per_s"] > 0 and f["ns_per_page"] > 0
        assert f["huge_fraction"] == huge
        assert s["ops"] == s["ops_expected"] == 40000
    log = (outs[0] / "log.txt").read_text()
    assert "the kernel has gup_test" in log
