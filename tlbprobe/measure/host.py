"""Facts about the machine a run measures, and how its kernel flushes remote TLBs.

The flush mode decides what the model predicts for a patched kernel: the series that skips
tlb_remove_table_sync_one() only does so when the preceding flush went out as real IPIs
(x86 native_flush_tlb_multi(), arch/x86/mm/tlb.c). A paravirtual flush (KVM's
kvm_flush_tlb_multi() in arch/x86/kernel/kvm.c, Hyper-V's hyperv_flush_tlb_multi(), Xen
PV's xen_flush_tlb_multi()) skips preempted vCPUs, and INVLPGB flushes without IPIs, so
there the sync broadcast stays.

How the flush mode is found (first match wins; the evidence is recorded with the run):
1. the kernel log: kvm_guest_init() prints "KVM setup pv remote TLB flush" when it
   installs kvm_flush_tlb_multi; Hyper-V prints "Using hypercall for remote TLB flush";
   tlbprobe's test-only wrapper (kernels/test-only/) prints "tlbprobe: test-only
   paravirtual TLB flush";
2. the CPU flag ``invlpgb`` in /proc/cpuinfo without a hypervisor: the kernel uses
   broadcast invalidation (Linux 6.15+ on AMD Zen 3 and later);
3. no ``hypervisor`` flag: bare metal, native IPIs;
4. a guest whose kernel log still starts at boot and shows no PV flush line: native (e.g.
   a QEMU TCG guest, or KVM with -cpu ...,-kvm-pv-tlb-flush);
5. otherwise ``unknown`` (a long-running guest whose boot messages have rotated away).
The log is read with ``dmesg`` (root); `--flush-mode` on the command line overrides all this.

Those rules are x86's; what they look for (the log lines, the flags) is the running
machine's architecture record (tlbprobe/arch/, found from os.uname().machine). An
architecture with one flush mode says so in its record and gets it without a look: arm64
is always ``tlbi-broadcast`` (broadcast TLBI instructions, arch/arm64/include/asm/
tlbflush.h; its /proc/cpuinfo lists "Features", with no flag that tells a guest). A
machine tlbprobe has no record of gets ``unknown``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import __version__
from .. import arch as arches
from ..arch import Arch
from .paths import REAL, KernelPaths
from .procfs import parse_cpulist, read_meminfo, read_text
from ..vocab import KHUGEPAGED

THP_DIR = REAL.thp_dir
CPU_DIR = REAL.cpu_dir


@dataclass
class HostFacts:
    """What the run records about its host; see doc/run-format.md (run.yaml ``host``)."""

    kernel_release: str
    kernel_version: str
    cmdline: str
    cpu_model: str
    cpu_flags: Dict[str, bool]
    online_cpus: List[int]
    possible_cpus: List[int]
    hypervisor: Optional[str]
    flush_mode: str
    flush_mode_evidence: str
    thp: Dict[str, str]
    mem_total: int
    mem_available: int
    hugepage_size: int
    preempt: Optional[str]
    tool_version: str = __version__
    notes: List[str] = field(default_factory=list)
    #: the machine's name: `tlbprobe report` over a fleet groups runs by it
    hostname: str = ""
    #: os.uname().machine ('x86_64', 'aarch64'), and the name of tlbprobe's record of
    #: that architecture (tlbprobe/arch/; None: a machine it has no record of)
    machine: str = ""
    arch: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def kernel_version_tuple(release: str) -> Tuple[int, int]:
    """(major, minor) from a release string such as '6.12.117+deb12-amd64'."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def read_cpuinfo(path: Path = REAL.cpuinfo) -> Tuple[str, List[str]]:
    """CPU model name and the flags of the first CPU."""
    model, flags = "unknown", []
    try:
        text = read_text(str(path))
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "CPU part", "cpu model") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
    return model, flags


def read_cpu_list(name: str, cpu_dir: Path = CPU_DIR) -> List[int]:
    """Online or possible CPUs from /sys/devices/system/cpu/<name>."""
    try:
        return parse_cpulist(read_text(str(cpu_dir / name)))
    except OSError:
        return list(range(os.cpu_count() or 1))


def sysfs_choice(text: str) -> str:
    """The selected value of a sysfs choice file: 'always [madvise] never' -> 'madvise'."""
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text.strip()


def read_thp_settings(root: Path = THP_DIR) -> Dict[str, str]:
    """Every THP knob (enabled, defrag, khugepaged/*, per-size hugepages-*/enabled), selected values only."""
    out: Dict[str, str] = {}
    if not root.is_dir():
        return out
    knobs = list(root.iterdir()) + list((root / KHUGEPAGED).glob("*")) + list(root.glob("hugepages-*/enabled"))
    for path in sorted(knobs):
        if path.is_file():
            try:
                out[str(path.relative_to(root))] = sysfs_choice(path.read_text())
            except OSError:
                continue
    return out


def read_kernel_log(path: Optional[Path] = None) -> Tuple[str, bool]:
    """The kernel log and whether it still reaches back to boot.

    Uses dmesg (needs root, or kernel.dmesg_restrict=0), or reads ``path`` (a recorded
    log) when given. The log reaches back to boot when its first line is the kernel's
    banner at time zero.
    """
    if path is not None:
        try:
            text = read_text(str(path))
        except OSError:
            return "", False
    else:
        try:
            out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "", False
        if out.returncode != 0:
            return "", False
        text = out.stdout
    first = text.splitlines()[:1]
    from_boot = bool(first) and bool(re.match(r"\[\s*0\.000000\]", first[0]))
    return text, from_boot


def detect_flush_mode(cpu_flags: List[str], log: str, log_from_boot: bool,
                      arch: Optional[Arch] = None) -> Tuple[str, str]:
    """(flush mode, evidence) by the rules in this module's docstring, with what the
    architecture's record says to look for (``arch``: the default record, x86_64's,
    unless given)."""
    if arch is None:
        arch = arches.get(arches.DEFAULT)
    rules = arch.flush
    if rules.fixed:
        return rules.fixed, rules.fixed_evidence
    for pattern, who in rules.pv_log:
        m = re.search(pattern, log)
        if m:
            return "pv", f"kernel log ({who}): {m.group(0)}"
    is_guest = rules.guest_flag is not None and rules.guest_flag in cpu_flags
    flag = rules.broadcast_flag
    if flag is not None and flag in cpu_flags and not is_guest:
        return rules.broadcast_mode or flag, f"cpu flag {flag} on bare metal"
    if not is_guest:
        told = f"no {rules.guest_flag} cpu flag" if rules.guest_flag else f"no cpu flag of {arch.name} tells a guest"
        return "native", f"{told}: bare metal, native IPIs"
    if log_from_boot:
        return "native", "guest, and the kernel log from boot has no PV TLB flush line"
    return "unknown", "guest, but the kernel log no longer reaches back to boot"


def detect_hypervisor(cpu_flags: List[str], log: str, type_file: Path = REAL.hypervisor_type,
                      guest_flag: Optional[str] = None) -> Optional[str]:
    """The hypervisor's name (/sys/hypervisor/type, the kernel log's "Hypervisor
    detected"), "unknown" when only the CPUs' ``guest_flag`` says there is one (the
    architecture's record names it; None: it has none), else None."""
    try:
        return type_file.read_text().strip() or None
    except OSError:
        pass
    m = re.search(r"Hypervisor detected: (\S+)", log)
    if m:
        return m.group(1).lower()
    return "unknown" if guest_flag is not None and guest_flag in cpu_flags else None


def detect_preempt(log: str) -> Optional[str]:
    m = re.search(r"Dynamic Preempt: (\w+)", log)
    if m:
        return m.group(1)
    version = os.uname().version
    for model in ("PREEMPT_RT", "PREEMPT_DYNAMIC", "PREEMPT"):
        if model in version:
            return model.lower()
    return None


def gather(flush_mode_override: Optional[str] = None, paths: KernelPaths = REAL) -> HostFacts:
    """Collect the host facts. Cheap (a few file reads and one dmesg), safe to call often.
    ``paths``: where the kernel's files are (the real ones unless a test says otherwise)."""
    uname = os.uname()
    here = arches.for_machine(uname.machine)
    model, flags = read_cpuinfo(paths.cpuinfo)
    log, from_boot = read_kernel_log(paths.kernel_log)
    if here is None:
        mode, evidence = "unknown", f"machine {uname.machine}: tlbprobe has no record of it (tlbprobe/arch/)"
    else:
        mode, evidence = detect_flush_mode(flags, log, from_boot, here)
    rules = here.flush if here is not None else None
    notes = []
    if flush_mode_override:
        notes.append(f"flush mode detected as {mode} ({evidence}); overridden to {flush_mode_override}")
        mode, evidence = flush_mode_override, "given on the command line"
    mem = read_meminfo(str(paths.meminfo))
    try:
        cmdline = read_text(str(paths.cmdline)).strip()
    except OSError:
        cmdline = ""
    return HostFacts(
        kernel_release=uname.release,
        kernel_version=uname.version,
        cmdline=cmdline,
        cpu_model=model,
        cpu_flags={f: f in flags for f in (rules.recorded_flags if rules else ())},
        online_cpus=read_cpu_list("online", paths.cpu_dir),
        possible_cpus=read_cpu_list("possible", paths.cpu_dir),
        hypervisor=detect_hypervisor(flags, log, paths.hypervisor_type, rules.guest_flag if rules else None),
        flush_mode=mode,
        flush_mode_evidence=evidence,
        thp=read_thp_settings(paths.thp_dir),
        mem_total=mem.get("MemTotal", 0),
        mem_available=mem.get("MemAvailable", 0),
        hugepage_size=mem.get("Hugepagesize", 2 << 20),
        preempt=detect_preempt(log),
        notes=notes,
        hostname=uname.nodename,
        machine=uname.machine,
        arch=here.name if here is not None else None,
    )
