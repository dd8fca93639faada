"""Architectures as data (tlbprobe/arch/): the records are complete and agree with the
kernel source they cite, an x86_64 guest's QEMU command line and kernel cache key are
what they were before records existed, arm64's syscall numbers, interrupt lines and
flush mode are its own, an architecture that is not done yet is refused in one line, a
new record plugs in with no change of code, and kernel/, vm/ and measure/ never test an
architecture's name.

Nothing here builds a kernel or boots QEMU: the command lines are computed, the refusals
come before anything runs."""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from pathlib import Path
from types import MappingProxyType
from typing import List

import pytest

from conftest import STRICT_SKIP_TAG

from tlbprobe import arch as arches
from tlbprobe.arch import Arch, FlushDetection, IpiLines, IrqLine, KernelBuild, KernelImage, Qemu
from tlbprobe.cli import build_parser, main as cli_main
from tlbprobe.errors import InputError, PreflightError
from tlbprobe.kernel import build as kbuild
from tlbprobe.measure import procfs
from tlbprobe.vm import guest as g
from tlbprobe.vocab import FLUSH_MODES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
X86 = arches.get("x86_64")
ARM = arches.get("arm64")
ARM_BEFORE = DATA / "proc-interrupts-arm64-6.12-4cpu.txt"
ARM_AFTER = DATA / "proc-interrupts-arm64-6.12-4cpu.after.txt"


def constructed(path: Path) -> str:
    """A sample's /proc/interrupts text without its '#' provenance lines."""
    return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))


def ready(monkeypatch, record: Arch) -> Arch:
    """``record`` with nothing left to do, in the registry: what the next session's arm64
    will be once its cross-build and root exist (so the rest of the path can be checked)."""
    done = dataclasses.replace(record, not_done=MappingProxyType({}))
    monkeypatch.setitem(arches.registry(), done.name, done)
    return done


# -- the registry ---------------------------------------------------------------------------

def test_the_registry_has_x86_64_first_and_arm64():
    assert arches.names() == ("x86_64", "arm64") and arches.DEFAULT == "x86_64"
    assert arches.get("arm64") is ARM
    with pytest.raises(InputError, match=r"unknown architecture 'mips': choose x86_64, arm64"):
        arches.get("mips")
    assert arches.for_machine("aarch64") is ARM and arches.for_machine("x86_64") is X86
    assert arches.for_machine("ppc64le") is None


@pytest.mark.parametrize("name", arches.names())
def test_every_record_is_complete(name):
    a = arches.get(name)
    for f in dataclasses.fields(a):
        if f.name not in ("cost_events", "cost_missing", "not_done"):
            assert getattr(a, f.name) not in ("", (), None), f"{name}.{f.name} is empty"
    assert a.machines and a.syscall("perf_event_open") > 0
    assert set(a.flush.modes) <= set(FLUSH_MODES), "a flush mode outside vocab.FLUSH_MODES"
    assert a.flush.fixed is None or a.flush.fixed in a.flush.modes
    assert a.flush.broadcast_mode is None or a.flush.broadcast_mode in a.flush.modes
    assert bool(a.cost_events) != bool(a.cost_missing), "--cost: its events, or why it cannot run"
    assert set(a.not_done) <= {"build", "guest"}
    for q in (a.qemu.binary, a.qemu.package, a.qemu.tcg_cpu, a.qemu.kvm_cpu, a.qemu.console):
        assert q and " " not in q
    assert a.image.magic and a.image.header_size <= 0x1000
    assert a.interrupts.function_call.description
    # x86's CAL includes TLB: there is a TLB line exactly where it is subtracted
    assert a.interrupts.calls_include_shootdowns == (a.interrupts.tlb_shootdown is not None)


def test_the_flush_modes_of_the_records_cover_the_vocabulary():
    covered = {m for a in arches.registry().values() for m in a.flush.modes}
    assert covered == set(FLUSH_MODES)
    assert ARM.flush.modes == ("tlbi-broadcast",) and ARM.flush.fixed == "tlbi-broadcast"


def test_the_x86_record_mirrors_what_kernel_build_requires_today():
    """The x86 record's required options are REQUIRED's x86 entries: splitting REQUIRED into
    a common part and each record's share keeps x86 builds as they are."""
    assert set(X86.build.required) <= set(kbuild.REQUIRED)
    assert not set(ARM.build.required) & set(kbuild.REQUIRED)


# -- the records against the kernel source they cite ----------------------------------------

@pytest.fixture(scope="module")
def tree() -> Path:
    t = kbuild.unpacked(Path("/usr/src/linux-source-6.12.tar.xz"))
    if t is None:
        pytest.skip(f"{STRICT_SKIP_TAG} linux-source-6.12 is not unpacked in the cache (a kernel build unpacks it)")
    return t


def syscall_numbers(tree: Path, table: str) -> dict:
    text = (tree / table).read_text()
    if table.endswith(".tbl"):  # "298  common  perf_event_open  sys_perf_event_open"
        return {f[2]: int(f[0]) for f in (line.split() for line in text.splitlines())
                if len(f) >= 3 and f[0].isdigit() and f[1] in ("common", "64")}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text)}


@pytest.mark.parametrize("name", arches.names())
def test_syscall_numbers_are_the_kernels(tree, name):
    a = arches.get(name)
    table = syscall_numbers(tree, a.syscall_table)
    for call, number in a.syscalls.items():
        assert table[call] == number, (name, call)


def test_perf_event_open_is_298_on_x86_64_and_241_on_arm64(tree):
    from tlbprobe.measure.perfcount import CounterUnavailable, perf_event_open_number

    assert perf_event_open_number(X86) == 298 and perf_event_open_number(ARM) == 241
    with pytest.raises(CounterUnavailable, match="no record in tlbprobe/arch/"):
        perf_event_open_number(None)
    code = (ROOT / "tlbprobe" / "measure" / "perfcount.py").read_text()
    assert not re.search(r"syscall\(\s*\d", code) and "NR_PERF_EVENT_OPEN" not in code


@pytest.mark.parametrize("name", arches.names())
def test_machine_image_and_config_names_are_the_kernels(tree, name):
    a = arches.get(name)
    makefile = (tree / "arch" / a.build.srcarch / "Makefile").read_text()
    assert any(re.search(rf"UTS_MACHINE\s*:=\s*{m}$", makefile, re.M) for m in a.machines)
    # the Makefile's help names the target and where it leaves the image
    t = re.escape(a.image.target)
    assert re.search(rf"echo\s+'[* ] {t}\s+- .*\(arch/(\$\(ARCH\)|{a.build.srcarch})/boot/{t}\)'", makefile)
    assert a.image.path == f"arch/{a.build.srcarch}/boot/{a.image.target}"
    assert (tree / "arch" / a.build.srcarch / "configs" / a.build.defconfig).is_file()
    for frag in a.build.defconfig_fragments:
        assert (tree / frag).is_file(), frag
    kconfig = (tree / "arch" / a.build.srcarch / "Kconfig").read_text()
    assert str(a.nr_cpus_max) in kconfig


def test_the_image_headers_are_the_kernels(tree):
    assert '#define ARM64_IMAGE_MAGIC\t"ARM\\x64"' in (tree / "arch/arm64/include/asm/image.h").read_text()
    # the header's fields before magic: two le32 and six le64 (struct arm64_image_header)
    assert ARM.image.magic == ((4 + 4 + 6 * 8, b"ARM\x64"),)
    boot = (tree / "Documentation/arch/x86/boot.rst").read_text()
    assert re.search(r"0202/4\s+2\.00\+\s+header\s+Magic signature \"HdrS\"", boot)
    assert re.search(r"01FE/2\s+ALL\s+boot_flag\s+0xAA55", boot)


@pytest.mark.parametrize("name", arches.names())
def test_the_ipi_lines_are_printed_so(tree, name):
    a = arches.get(name)
    source = (tree / a.interrupts.source.split()[0]).read_text()
    for line in a.interrupts.lines():
        assert f'"{line.description}"' in source or f'"  {line.description}\\n"' in source, line
    if a.interrupts.tlb_shootdown is None:
        assert "TLB shootdowns" not in source


def test_arm64_ipi1_is_the_function_call_ipi(tree):
    smp = (tree / "arch/arm64/kernel/smp.c").read_text()
    enum = re.search(r"enum ipi_msg_type \{(.*?)\};", smp, re.S).group(1)
    order = re.findall(r"^\s*(IPI_\w+)", enum, re.M)
    assert order.index("IPI_CALL_FUNC") == int(ARM.interrupts.function_call.label[3:])
    assert '[IPI_CALL_FUNC]\t\t= "Function call interrupts"' in smp
    assert "smp_cross_call(mask, IPI_CALL_FUNC);" in smp  # arch_send_call_function_ipi_mask()


def test_x86_cost_events_exist_in_its_trace_headers(tree):
    vectors = (tree / "arch/x86/include/asm/trace/irq_vectors.h").read_text()
    for ev in X86.cost_events:
        assert f"DEFINE_IRQ_VECTOR_EVENT({ev.split('/')[1].rsplit('_', 1)[0]})" in vectors


# -- x86_64: what it always was --------------------------------------------------------------

#: `qemu_command` before architectures were records (main at 2782403), for these specs.
X86_COMMANDS = {
    ("tcg", ()): "/usr/bin/qemu-system-x86_64 -accel tcg,thread=single -cpu max -smp 4 -m 4G -nographic -no-reboot "
                 "-nodefaults -serial stdio -display none -kernel /k/bzImage -append 'root=/dev/root rootfstype=9p "
                 "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro init=/o/init.sh console=ttyS0 panic=-1 "
                 "oops=panic loglevel=6 tsc=reliable lpj=2100000 transparent_hugepage=madvise' -fsdev "
                 "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap -device "
                 "virtio-9p-pci,fsdev=root,mount_tag=/dev/root -fsdev local,id=out,path=/o,security_model=none "
                 "-device virtio-9p-pci,fsdev=out,mount_tag=tlbprobe_out",
    ("kvm", (("pv_tlb_flush", "on"), ("smp", 8), ("memory", "8G"))):
        "/usr/bin/qemu-system-x86_64 -accel kvm -cpu host,+kvm-pv-tlb-flush -smp 8 -m 8G -nographic -no-reboot "
        "-nodefaults -serial stdio -display none -kernel /k/bzImage -append 'root=/dev/root rootfstype=9p "
        "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro init=/o/init.sh console=ttyS0 panic=-1 "
        "oops=panic loglevel=6 tsc=reliable transparent_hugepage=madvise' -fsdev "
        "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap -device "
        "virtio-9p-pci,fsdev=root,mount_tag=/dev/root -fsdev local,id=out,path=/o,security_model=none "
        "-device virtio-9p-pci,fsdev=out,mount_tag=tlbprobe_out",
    ("tcg", (("pv_tlb_flush", "wrapper"), ("tcg_thread", "multi"), ("extra_append", "foo=1"))):
        "/usr/bin/qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 4 -m 4G -nographic -no-reboot "
        "-nodefaults -serial stdio -display none -kernel /k/bzImage -append 'root=/dev/root rootfstype=9p "
        "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro init=/o/init.sh console=ttyS0 panic=-1 "
        "oops=panic loglevel=6 tsc=reliable lpj=2100000 tlbprobe_wrap_flush transparent_hugepage=madvise foo=1' "
        "-fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap -device "
        "virtio-9p-pci,fsdev=root,mount_tag=/dev/root -fsdev local,id=out,path=/o,security_model=none "
        "-device virtio-9p-pci,fsdev=out,mount_tag=tlbprobe_out",
    ("kvm", (("pv_tlb_flush", "wrapper"),)):
        "/usr/bin/qemu-system-x86_64 -accel kvm -cpu host,-kvm-pv-tlb-flush -smp 4 -m 4G -nographic -no-reboot "
        "-nodefaults -serial stdio -display none -kernel /k/bzImage -append 'root=/dev/root rootfstype=9p "
        "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro init=/o/init.sh console=ttyS0 panic=-1 "
        "oops=panic loglevel=6 tsc=reliable tlbprobe_wrap_flush transparent_hugepage=madvise' -fsdev "
        "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap -device "
        "virtio-9p-pci,fsdev=root,mount_tag=/dev/root -fsdev local,id=out,path=/o,security_model=none "
        "-device virtio-9p-pci,fsdev=out,mount_tag=tlbprobe_out",
}


@pytest.fixture
def binaries(monkeypatch):
    """Every QEMU 'installed' in /usr/bin: command lines without the binaries."""
    monkeypatch.setattr(g.shutil, "which", lambda name: f"/usr/bin/{name}")


@pytest.mark.parametrize("accel, kw", list(X86_COMMANDS), ids=[f"{a}-{dict(k)}" for a, k in X86_COMMANDS])
def test_the_x86_64_command_line_is_byte_identical(binaries, accel, kw):
    for spec in (g.GuestSpec(kernel=Path("/k/bzImage"), **dict(kw)),
                 g.GuestSpec(kernel=Path("/k/bzImage"), arch="x86_64", **dict(kw))):
        cmd = g.qemu_command(spec, accel, Path("/o/init.sh"), Path("/o"))
        assert shlex.join(cmd) == X86_COMMANDS[(accel, kw)]


@pytest.fixture
def source_tree(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TLBPROBE_CACHE", str(tmp_path / "cache"))
    t = tmp_path / "linux"
    (t / "mm").mkdir(parents=True)
    (t / "Makefile").write_text("all:\n")
    return t


@pytest.mark.parametrize("base", ["defconfig", "minimal"])
def test_the_x86_64_cache_keys_are_unchanged(source_tree, base):
    """The key as plan_build() computed it before KernelSpec had an arch (the same formula,
    spelled out), with the arch left out and given."""
    frag = kbuild.DEFAULT_FRAGMENT
    parts = [frag.read_bytes()]
    if base == "minimal":
        b = kbuild.CONFIG_BASES["minimal"]
        parts = [f"base:minimal:tinyconfig:".encode()] + [f.read_bytes() for f in b.all_fragments()] + parts
    tree_key = kbuild._sha(str(kbuild.KBUILD_FORMAT).encode(), kbuild.tree_identity(source_tree), *parts)
    for spec in (kbuild.KernelSpec(source=source_tree, base=base),
                 kbuild.KernelSpec(source=source_tree, base=base, arch="x86_64")):
        plan = kbuild.plan_build(spec)
        assert plan.tree_key == tree_key and plan.key == kbuild._sha(tree_key.encode())
        assert plan.image == plan.entry / "bzImage"
    assert kbuild.CONFIG_BASES["defconfig"].for_arch(X86) == kbuild.CONFIG_BASES["defconfig"]


def test_an_arm64_kernel_has_its_own_key_image_and_defconfig(source_tree, monkeypatch):
    ready(monkeypatch, ARM)
    x86 = kbuild.plan_build(kbuild.KernelSpec(source=source_tree))
    arm = kbuild.plan_build(kbuild.KernelSpec(source=source_tree, arch="arm64"))
    assert arm.key != x86.key and arm.tree_key != x86.tree_key  # its own build directory too
    assert arm.image == arm.entry / "Image"
    base = kbuild.CONFIG_BASES["defconfig"].for_arch(arches.get("arm64"))
    assert base.target == "defconfig" and "arch/arm64/configs/virt.config" in base.tree_fragments
    assert kbuild.CONFIG_BASES["minimal"].for_arch(arches.get("arm64")) == kbuild.CONFIG_BASES["minimal"]
    # a cross-build names ARCH and CROSS_COMPILE; a native one adds nothing to make
    assert ARM.make_args("x86_64") == ("ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-")
    assert ARM.make_args("aarch64") == () and X86.make_args("x86_64") == ()
    assert ARM.compiler("x86_64") == "aarch64-linux-gnu-gcc" and X86.compiler("x86_64") == "gcc"


# -- arm64's guest -----------------------------------------------------------------------------

def test_the_arm64_command_line(binaries):
    spec = g.GuestSpec(kernel=Path("/k/Image"), smp=16, arch="arm64")
    cmd = g.qemu_command(spec, "tcg", Path("/o/init.sh"), Path("/o"))
    assert cmd[:3] == ["/usr/bin/qemu-system-aarch64", "-M", "virt,gic-version=3"]  # GICv2 stops at 8 CPUs
    assert cmd[cmd.index("-cpu") + 1] == "max,pauth-impdef=on"
    append = cmd[cmd.index("-append") + 1].split()
    assert "console=ttyAMA0" in append
    # no lpj= (arm64 delays by loops_per_jiffy from its timer) and no x86 tsc=
    assert not [w for w in append if w.startswith(("lpj=", "tsc="))]
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=single"
    assert g.cpu_model("kvm", None, ARM) == "host"


def test_kvm_runs_only_guests_of_the_hosts_architecture():
    assert g.kvm_runs(X86, "x86_64") is None and g.kvm_runs(ARM, "aarch64") is None
    assert g.kvm_runs(ARM, "x86_64") == "KVM on this x86_64 host cannot run an arm64 guest"


def test_an_arm64_image_is_recognised_by_its_header(tmp_path):
    image = tmp_path / "Image"
    head = bytearray(64)
    head[0x38:0x3C] = b"ARM\x64"
    image.write_bytes(bytes(head))
    assert g.not_an_image(image, ARM) is None
    assert g.not_an_image(image, X86) == "no x86 boot protocol header (HdrS at 0x202)"
    bz = tmp_path / "bzImage"
    header = bytearray(0x300)
    header[0x1FE:0x200], header[0x202:0x206] = b"\x55\xaa", b"HdrS"
    bz.write_bytes(bytes(header))
    assert g.not_an_image(bz) is None and g.not_an_image(bz, ARM) == "no arm64 Image header (magic ARM\\x64 at 0x38)"
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF" + bytes(100))
    assert g.not_an_image(elf, ARM) == "an ELF file: a vmlinux, not an Image"


def test_arm64_guest_options_that_cannot_hold_are_refused(tmp_path, monkeypatch):
    ready(monkeypatch, ARM)
    image = tmp_path / "Image"
    head = bytearray(64)
    head[0x38:0x3C] = b"ARM\x64"
    image.write_bytes(bytes(head))
    g.check_spec(g.GuestSpec(kernel=image, arch="arm64", accel="tcg"))
    with pytest.raises(InputError, match="arm64 guests have no paravirtual TLB flush to switch"):
        g.check_spec(g.GuestSpec(kernel=image, arch="arm64", pv_tlb_flush="wrapper"))
    monkeypatch.setattr(g.os, "uname", lambda: type("U", (), {"machine": "x86_64"})())
    with pytest.raises(InputError, match="--accel kvm: KVM on this x86_64 host cannot run an arm64 guest"):
        g.check_spec(g.GuestSpec(kernel=image, arch="arm64", accel="kvm"))
    blank = tmp_path / "blank"
    blank.write_bytes(bytes(64))
    with pytest.raises(InputError, match=r"not a bootable arm64 kernel image \(no arm64 Image header .*give the "
                                         r"Image, e.g. arch/arm64/boot/Image"):
        g.check_spec(g.GuestSpec(kernel=blank, arch="arm64"))


# -- what is not done yet, refused in one line --------------------------------------------------

@pytest.mark.parametrize("argv, missing", [
    (["kernel", "build", "--arch", "arm64"], ["the cross-build"]),
    (["kernel", "build", "--arch", "arm64", "--dry-run"], ["the cross-build"]),
    (["qemu", "collect", "--arch", "arm64", "--kernel", "/no/such/Image", "--", "--size", "64M"],
     ["an arm64 root file system"]),
    (["repro", "--arch", "arm64"], ["the cross-build", "an arm64 root file system"]),
])
def test_arm64_is_refused_naming_what_is_not_done(argv, missing, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("tlbprobe: ") and "not done yet for arm64" in err and "Traceback" not in err
    for m in missing:
        assert m in err
    assert not list(tmp_path.iterdir()), "a refused command created something"


def test_arch_is_an_option_of_the_three_commands_with_the_registrys_choices(capsys):
    for argv in (["kernel", "build"], ["qemu", "collect", "--kernel", "k"], ["repro"]):
        args = build_parser().parse_args(argv + ["--arch", "arm64"])
        assert args.arch == "arm64"
        assert build_parser().parse_args(argv).arch == "x86_64"
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv + ["--arch", "sparc"])
        assert "invalid choice: 'sparc' (choose from 'x86_64', 'arm64')" in capsys.readouterr().err


# -- /proc/interrupts and the sync-IPI arithmetic -----------------------------------------------

def test_the_constructed_arm64_sample_parses_with_ipi1_as_function_calls():
    snap = procfs.parse_interrupts(constructed(ARM_BEFORE), str(ARM_BEFORE))
    assert snap.cpus == (0, 1, 2, 3) and not snap.warnings
    assert [label for label in snap.lines if label.startswith("IPI")] == [f"IPI{i}" for i in range(8)]
    fc = snap.by_canonical("function_call")
    assert fc.label == ARM.interrupts.function_call.label == "IPI1"
    assert fc.per_cpu == {0: 301, 1: 612, 2: 587, 3: 598}
    assert snap.by_canonical("tlb_shootdown") is None
    assert snap.lines["Err"].single == 0
    assert "virtio0-requests" in snap.lines["15"].description
    assert ARM_BEFORE.read_text().startswith("# CONSTRUCTED, NOT RECORDED")


def test_two_arm64_snapshots_diff_and_count_sync_ipis_from_ipi1_alone():
    from tlbprobe.run.summary import PhaseRecord, ipi_lines, phase_record
    from tlbprobe.workloads.base import PhaseOutcome

    before = procfs.parse_interrupts(constructed(ARM_BEFORE))
    after = procfs.parse_interrupts(constructed(ARM_AFTER))
    assert procfs.incomplete_copy(before, after, ("before", "after")) is None
    d = procfs.diff_interrupts(before, after)
    assert d.canonical_per_cpu("function_call") == {0: 2, 1: 66, 2: 65, 3: 64}
    assert d.canonical_per_cpu("tlb_shootdown") == {0: 0, 1: 0, 2: 0, 3: 0}
    rec = PhaseRecord(0, "workload", 0.0, 1.0, PhaseOutcome(ops=64, ops_expected=64), d, {}, None)
    figs = phase_record(rec, 0, 0.0, ipi_lines("arm64"))
    assert (figs.cal_other_cpus, figs.tlb_other_cpus, figs.sync_raw) == (195, 0, 195)


def test_the_arithmetic_is_the_records_not_the_files():
    """A snapshot with both lines: x86's record subtracts the shootdowns, arm64's does not
    (its function-call line counts no shootdown: there is nothing to subtract)."""
    assert X86.interrupts.sync_ipis(100, 30) == 70 and ARM.interrupts.sync_ipis(100, 30) == 100
    from tlbprobe.run.summary import DEFAULT_LINES, ipi_lines

    assert DEFAULT_LINES is X86.interrupts and ipi_lines(None) is X86.interrupts and ipi_lines("arm64") is ARM.interrupts


def test_the_x86_sample_still_counts_cal_minus_tlb():
    from tlbprobe.run.summary import PhaseRecord, phase_record
    from tlbprobe.workloads.base import PhaseOutcome

    before = procfs.parse_interrupts((DATA / "x86-kvm-2cpu.before.interrupts").read_text())
    after = procfs.parse_interrupts((DATA / "x86-kvm-2cpu.after.interrupts").read_text())
    d = procfs.diff_interrupts(before, after)
    figs = phase_record(PhaseRecord(0, "idle", 0.0, 2.0, PhaseOutcome(ops=0, ops_expected=0), d, {}, None), None, 0.0)
    assert (figs.cal_other_cpus, figs.tlb_other_cpus, figs.sync_raw) == (7, 3, 4)  # CAL 6/1, TLB 3/0


# -- the host facts on arm64 ----------------------------------------------------------------------

ARM64_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 125.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                 "atomics cpuid\nCPU implementer\t: 0x00\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                 "CPU part\t: 0x051\nCPU revision\t: 0\n\n")


def test_an_arm64_host_is_always_tlbi_broadcast(tmp_path, monkeypatch):
    from tlbprobe.measure import host
    from tlbprobe.measure.paths import KernelPaths

    mode, evidence = host.detect_flush_mode(["hypervisor"], "KVM setup pv remote TLB flush", True, ARM)
    assert mode == "tlbi-broadcast" and "broadcast TLBI" in evidence
    assert host.detect_flush_mode(["hypervisor"], "[    0.000000] Linux\n", True) == \
        ("native", "guest, and the kernel log from boot has no PV TLB flush line")
    assert host.detect_flush_mode(["invlpgb"], "", False) == ("invlpgb", "cpu flag invlpgb on bare metal")
    assert host.detect_flush_mode([], "", False)[1] == "no hypervisor cpu flag: bare metal, native IPIs"
    paths = KernelPaths.under(tmp_path)
    paths.cpuinfo.parent.mkdir(parents=True)
    paths.cpuinfo.write_text(ARM64_CPUINFO)
    paths.meminfo.write_text("MemTotal:        4000000 kB\nMemAvailable:    3000000 kB\nHugepagesize:       2048 kB\n")
    (tmp_path / "dmesg.txt").write_text("[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]\n")
    real = host.os.uname()
    fake = type("U", (), {"machine": "aarch64", "release": real.release, "version": real.version,
                          "nodename": "arm-guest", "sysname": "Linux"})()
    monkeypatch.setattr(host.os, "uname", lambda: fake)
    facts = host.gather(paths=paths)
    assert (facts.machine, facts.arch, facts.flush_mode) == ("aarch64", "arm64", "tlbi-broadcast")
    assert facts.cpu_flags == {} and facts.hypervisor is None
    fake.machine = "ppc64le"
    facts = host.gather(paths=paths)
    assert (facts.arch, facts.flush_mode) == (None, "unknown") and "no record of it" in facts.flush_mode_evidence


def test_cost_on_arm64_says_plainly_why_not():
    from tlbprobe.measure.cost import CostObserver

    with pytest.raises(PreflightError, match="--cost cannot time the handlers here: arm64 has no irq_vectors events"):
        CostObserver(machine=ARM).preflight(None)
    assert CostObserver(machine=X86).vector_events == X86.cost_events


# -- the model's rule for arm64 ----------------------------------------------------------------

@pytest.mark.parametrize("workload, ops", [("collapse", 512), ("khugepaged", 40)])
def test_the_model_keeps_every_broadcast_under_tlbi_broadcast(workload, ops):
    from tlbprobe.model import Scenario, load_params, predict

    params = load_params()
    base = predict(Scenario(workload, ops, 16, flush_mode="tlbi-broadcast", variant="baseline"), params)
    patched = predict(Scenario(workload, ops, 16, flush_mode="tlbi-broadcast", variant="patched"), params)
    native = predict(Scenario(workload, ops, 16, flush_mode="native", variant="patched"), params)
    assert patched.sync_broadcasts.value == base.sync_broadcasts.value == ops
    assert patched.sync_ipis.value == ops * 15 and native.sync_broadcasts.value == 0
    assert base.tlb_ipis.value == 0 and base.tlb_ipis.rules == ("tlb-tlbi-broadcast",)


def test_the_models_cpu_limit_is_the_architectures():
    from tlbprobe.model import Scenario

    Scenario("collapse", 1, 4096, flush_mode="tlbi-broadcast").checked()
    with pytest.raises(InputError, match=r"no arm64 kernel runs more than 4096 \(NR_CPUS at its maximum"):
        Scenario("collapse", 1, 4097, flush_mode="tlbi-broadcast").checked()
    with pytest.raises(InputError, match="no x86_64 kernel runs more than 8192"):
        Scenario("collapse", 1, 8193, flush_mode="native").checked()


# -- a new architecture is one record ----------------------------------------------------------

RISCV = Arch(
    name="riscv64",
    machines=("riscv64",),
    debian="riscv64",
    syscalls=MappingProxyType({"perf_event_open": 241}),
    syscall_table="include/uapi/asm-generic/unistd.h",
    nr_cpus_max=512,
    nr_cpus_source="arch/riscv/Kconfig NR_CPUS",
    interrupts=IpiLines(IrqLine("IPI1", "Function-call IPIs (test)"), None, False, "arch/riscv/kernel/smp.c"),
    flush=FlushDetection(modes=("unknown",), fixed="unknown", fixed_evidence="a test's record"),
    qemu=Qemu("qemu-system-riscv64", "qemu-system-misc", ("-M", "virt"), "rv64", "host", MappingProxyType({}),
              "ttyS0", ("earlycon=sbi",), None, ("riscv64",)),
    image=KernelImage("Image", "arch/riscv/boot/Image", "Image", ((0x38, b"RISCV\0\0\0"),), "RISC-V Image header",
                      "Documentation/arch/riscv/boot-image-header.rst"),
    build=KernelBuild("riscv", "riscv64-linux-gnu-", "gcc-riscv64-linux-gnu", "defconfig", (), (), ()),
    cost_missing="a test's record",
)


def test_a_riscv64_record_plugs_in_without_code_changes(monkeypatch, binaries, source_tree, capsys):
    monkeypatch.setitem(arches.registry(), "riscv64", RISCV)
    assert arches.for_machine("riscv64") is RISCV and "riscv64" in arches.names()
    # the guest
    cmd = g.qemu_command(g.GuestSpec(kernel=Path("/k/Image"), arch="riscv64"), "tcg", Path("/i"), Path("/o"))
    assert cmd[:3] == ["/usr/bin/qemu-system-riscv64", "-M", "virt"] and cmd[cmd.index("-cpu") + 1] == "rv64"
    assert "console=ttyS0" in cmd[cmd.index("-append") + 1] and "earlycon=sbi" in cmd[cmd.index("-append") + 1]
    # the build: its own key and image, cross-built from this host
    plan = kbuild.plan_build(kbuild.KernelSpec(source=source_tree, arch="riscv64"))
    assert plan.image.name == "Image" and plan.key != kbuild.plan_build(kbuild.KernelSpec(source=source_tree)).key
    assert RISCV.make_args("x86_64") == ("ARCH=riscv", "CROSS_COMPILE=riscv64-linux-gnu-")
    # its interrupt line is recognised by description
    text = "           CPU0       CPU1\nIPI1:        3          4       Function-call IPIs (test)\n"
    assert procfs.parse_interrupts(text).by_canonical("function_call").per_cpu == {0: 3, 1: 4}
    # the command line offers it
    assert build_parser().parse_args(["kernel", "build", "--arch", "riscv64"]).arch == "riscv64"
    # the host facts take its fixed mode
    from tlbprobe.measure import host
    assert host.detect_flush_mode([], "", True, RISCV) == ("unknown", "a test's record")


# -- the rule: kernel/, vm/ and measure/ ask the record -------------------------------------------

def arch_words() -> set:
    words = set()
    for a in arches.registry().values():
        words |= {a.name, a.debian, *a.machines}
    return words


def literal_arch_tests(path: Path, root: Path = ROOT) -> List[str]:
    """Comparisons of anything with an architecture's or machine's name written as a
    literal (``arch == "arm64"``, ``machine in ("x86_64", ...)``), and such names written
    anywhere but in a docstring or comment."""
    words = arch_words()
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in words or any(re.search(rf"\b{re.escape(w)}\b", node.value) and
                                          re.fullmatch(r"[\w.-]+", node.value) for w in words):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def test_kernel_vm_and_measure_never_test_an_architectures_name():
    bad = []
    for folder in ("kernel", "vm", "measure"):
        for path in sorted((ROOT / "tlbprobe" / folder).glob("*.py")):
            bad += literal_arch_tests(path)
    assert bad == [], "ask the architecture's record (tlbprobe/arch/) instead:\n" + "\n".join(bad)


def test_the_rule_finds_what_it_forbids(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""arm64 in a docstring is fine."""\n'
                     'def f(arch, machine):\n'
                     '    # and so in a comment: x86_64\n'
                     '    if arch == "arm64":\n'
                     '        return 1\n'
                     '    return machine in ("aarch64", "ppc") or "qemu-system-x86_64"\n')
    assert [b.split(": ", 1)[1] for b in literal_arch_tests(probe, tmp_path)] == \
        ["'arm64'", "'aarch64'", "'qemu-system-x86_64'"]
